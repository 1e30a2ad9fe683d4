"""CIFAR-10 through tensorflow-datasets (``cifar10``) as leave-one-class-out anomaly data.

Prepared data in ``data_dir`` (tfds' default ~/tensorflow_datasets when None) is read offline;
otherwise tfds downloads and prepares it when ``download`` is on. Examples are put back in the
binary release's order by their ``id`` (``train_00042``), since tfds stores them shuffled, so
the GANomaly protocol's test set is in the originals' order.
"""
from __future__ import annotations

import dataclasses
import re
import sys

import numpy as np

from sagan_jax.config import CIFAR10_CLASSES
from sagan_jax.data.base import AnomalyData, DataError
from sagan_jax.data.images import resize_array
from sagan_jax.data.protocols import leave_one_class_out

OFFLINE_HINT = ("offline, unpack the shared archive cifar10_jpg.tar.gz (shared/data/README.md) "
                "outside the repository and use --dataset=image_folder --data_root=DIR")


def _importlib_resources_shim() -> None:
    """tfds 4.9.10 checks ``importlib_resources.abc.Traversable`` when it prepares a built-in
    dataset, but declares that backport only for Python < 3.9; the standard library's
    ``importlib.resources`` has the same class, so stand it in when the backport is absent."""
    try:
        import importlib_resources  # noqa: F401
    except ImportError:
        import importlib.resources
        import importlib.resources.abc  # noqa: F401

        sys.modules["importlib_resources"] = importlib.resources


def _tfds():
    """tensorflow_datasets, or DataError when it (or TensorFlow) is not installed."""
    from sagan_jax.data.tfds_import import import_tfds

    try:
        return import_tfds()
    except ImportError as e:
        raise DataError(f"--dataset=cifar10 reads tensorflow-datasets, which does not import here "
                        f"({e}); pip install tensorflow-cpu tensorflow-datasets, or "
                        f"{OFFLINE_HINT}") from e


def _builder(data_dir, download: bool):
    tfds = _tfds()

    builder = tfds.builder("cifar10", data_dir=data_dir)
    if builder.is_prepared():
        return builder
    where = data_dir or "tfds' default data_dir (~/tensorflow_datasets)"
    if not download:
        raise DataError(f"{where}: tfds cifar10 is not prepared there and --nodownload is set; "
                        f"{OFFLINE_HINT}")
    try:
        _importlib_resources_shim()
        builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001 - no network, proxy, disk: all end the same way
        msg = " ".join(str(e).split()) or type(e).__name__
        msg = msg if len(msg) <= 160 else msg[:157] + "..."
        raise DataError(f"{where}: tfds cifar10 is not prepared there and downloading it failed "
                        f"({msg}); {OFFLINE_HINT}") from e
    return builder


def _order(ids) -> np.ndarray:
    """Permutation that sorts examples by the index in their id (identity if ids lack one)."""
    nums = []
    for i in ids:
        m = re.search(rb"(\d+)$", i if isinstance(i, bytes) else str(i).encode())
        if m is None:
            return np.arange(len(ids))
        nums.append(int(m.group(1)))
    return np.argsort(np.asarray(nums), kind="stable")


def read_cifar10(data_dir=None, download: bool = True, progress: bool = True) -> dict:
    """{split: (images uint8 (N, 32, 32, 3), labels int32)} in the binary release's order;
    ``progress``: tfds' progress bars."""
    from sagan_jax.data.tfds_import import progress_bars

    tfds = _tfds()
    out = {}
    with progress_bars(progress):
        builder = _builder(data_dir, download)
        for split in ("train", "test"):
            ex = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1,
                                                  shuffle_files=False))
            order = _order(ex["id"])
            out[split] = (ex["image"][order], ex["label"][order].astype(np.int32))
    return out


def load_cifar10(abnormal_class: str, protocol: str, isize: int, data_dir=None,
                 download: bool = True, on_small_image: str = "error", arrays=None,
                 resize: str = "crop", progress: bool = True) -> AnomalyData:
    """Leave-one-class-out CIFAR-10; ``arrays`` replaces reading tfds (tests); ``progress``:
    tfds' progress bars."""
    if abnormal_class not in CIFAR10_CLASSES:
        raise DataError(f"cifar10: --abnormal_class={abnormal_class!r} is not a class; "
                        f"classes: {', '.join(CIFAR10_CLASSES)}")
    arrays = read_cifar10(data_dir, download, progress) if arrays is None else arrays
    (trn_x, trn_y), (tst_x, tst_y) = arrays["train"], arrays["test"]
    if isize > trn_x.shape[1] and on_small_image == "error":
        raise DataError(f"tfds cifar10: images are {trn_x.shape[2]}x{trn_x.shape[1]}, smaller "
                        f"than --isize={isize}; expected at least {isize}x{isize} (lower --isize "
                        "or pass --on_small_image=upsample)")
    data = leave_one_class_out(
        f"cifar10(abnormal={abnormal_class}, {protocol})",
        resize_array(trn_x, isize, resize), trn_y, resize_array(tst_x, isize, resize), tst_y,
        CIFAR10_CLASSES.index(abnormal_class), protocol,
    )
    return dataclasses.replace(data, class_names=CIFAR10_CLASSES)
