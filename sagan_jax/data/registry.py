"""The dataset registry: one entry per ``--dataset``, naming its loader and what config
validation must know about it.

``load_source`` reads a dataset through its entry, and config validation (the allowed
``--dataset`` values, known class names, whether ``--data_root`` is required) reads the same
entries, installed into sagan_jax.config when this module is imported. Adding a dataset is one
loader function plus one entry here; a dataset defined outside the package registers itself
with ``register(DatasetSpec(...))`` (docs/extending.md).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from sagan_jax.config import (CIFAR10_CLASSES, DIGIT_CLASSES, flags_not_read,
                              use_dataset_registry)
from sagan_jax.data.anomaly_folder import load_anomaly_folder
from sagan_jax.data.base import AnomalyData, DataError
from sagan_jax.data.cifar10 import load_cifar10
from sagan_jax.data.digits import load_digits_anomaly
from sagan_jax.data.image_folder import load_image_folder


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One ``--dataset``: ``load(cfg)`` returns its AnomalyData as its protocol defines it (no
    training subset, no validation split: load_data applies those). ``classes``: the names an
    ``--abnormal_class`` must be one of (None: any, e.g. read from disk); ``needs_data_root``:
    whether ``--data_root`` must name its folder (and so reads it). ``options``: the flags of
    some datasets only (--data_dir, --download, ...) that this one reads; ``ignores``:
    {flag: why} of common data flags it does not read. A passed flag a dataset does not read
    is named as changing nothing."""
    name: str
    load: Callable[..., AnomalyData]
    classes: Optional[tuple] = None
    needs_data_root: bool = False
    options: tuple = ()
    ignores: dict = dataclasses.field(default_factory=dict)

    def reads(self) -> tuple:
        return self.options + (("data_root",) if self.needs_data_root else ())


def _digits(cfg) -> AnomalyData:
    return load_digits_anomaly(cfg.abnormal_class, cfg.isize, cfg.digits_test_fraction, cfg.seed)


def _cifar10(cfg) -> AnomalyData:
    return load_cifar10(cfg.abnormal_class, cfg.protocol, cfg.isize, cfg.data_dir,
                        cfg.download, cfg.on_small_image, resize=cfg.resize,
                        progress=cfg.progress)


def _image_folder(cfg) -> AnomalyData:
    return load_image_folder(cfg.data_root, cfg.abnormal_class, cfg.protocol, cfg.isize,
                             cfg.on_bad_image, cfg.on_small_image, cfg.resize)


def _anomaly_folder(cfg) -> AnomalyData:
    return load_anomaly_folder(cfg.data_root, cfg.isize, cfg.on_bad_image,
                               cfg.on_small_image, cfg.data_dir, cfg.resize, cfg.mask_root,
                               progress=cfg.progress)


REGISTRY = {spec.name: spec for spec in (
    DatasetSpec("digits", _digits, classes=DIGIT_CLASSES, options=("digits_test_fraction",),
                ignores={"protocol": "it has one fixed test set"}),
    DatasetSpec("cifar10", _cifar10, classes=CIFAR10_CLASSES, options=("data_dir", "download")),
    DatasetSpec("image_folder", _image_folder, needs_data_root=True),
    DatasetSpec("anomaly_folder", _anomaly_folder, needs_data_root=True, options=("data_dir",),
                ignores={"protocol": "it has one fixed test set",
                         "abnormal_class": "abnormal images are in their own folders"}),
)}


def names() -> tuple:
    return tuple(REGISTRY)


def get(name: str) -> DatasetSpec:
    """The DatasetSpec of ``--dataset=name``."""
    if name not in REGISTRY:
        raise DataError(f"--dataset={name} is not registered; choose one of: "
                        f"{', '.join(REGISTRY)}")
    return REGISTRY[name]


def register(spec: DatasetSpec) -> None:
    """Register a dataset defined outside this package under ``spec.name``."""
    if spec.name in REGISTRY and REGISTRY[spec.name] is not spec:
        raise ValueError(f"--dataset={spec.name} is registered already; choose another name")
    REGISTRY[spec.name] = spec


def classes_of(name: str) -> Optional[tuple]:
    """Known class names of a dataset (None for unknown names and for folders: read from disk)."""
    spec = REGISTRY.get(name)
    return None if spec is None else spec.classes


def needs_data_root(name: str) -> bool:
    spec = REGISTRY.get(name)
    return spec is not None and spec.needs_data_root


def unused_flags(cfg) -> dict:
    """{flag: why} of the data flags ``cfg.dataset`` does not read: other datasets' options
    and the common flags its entry ignores."""
    spec = get(cfg.dataset)
    return flags_not_read("dataset", cfg.dataset, spec.reads(),
                          (other.reads() for other in REGISTRY.values()), spec.ignores)


use_dataset_registry(names, classes_of, needs_data_root, unused_flags)
