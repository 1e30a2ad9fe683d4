"""Data sources (embedded digits, CIFAR-10, image folders, anomaly folders incl. MVTec AD) as
in-memory anomaly splits.

Each source is one entry of the dataset registry (sagan_jax.data.registry) and decodes its
images once into uint8 arrays (sagan_jax.data.base); the numpy pipeline
(sagan_jax.data.pipeline) then feeds them to the devices. Only cifar10 and the
anomaly-folder cache import TensorFlow / tensorflow-datasets, lazily.
"""
from __future__ import annotations

from sagan_jax.data import registry
from sagan_jax.data.base import AnomalyData, DataError, Split, hold_out_validation, subsample_train
from sagan_jax.data.registry import DatasetSpec, register

__all__ = ["AnomalyData", "DataError", "DatasetSpec", "Split", "load_data", "load_source",
           "register"]


def load_source(cfg) -> AnomalyData:
    """The dataset a Config names, as its protocol defines it (no subset, no validation): its
    registered loader (sagan_jax.data.registry)."""
    return registry.get(cfg.dataset).load(cfg)


def load_data(cfg) -> AnomalyData:
    """The dataset a Config names, with its training subset and validation split applied.

    Only normal training images are subsampled or held out; the test split is never touched.
    Counts per split and label (and skipped bad files) are always logged."""
    data = load_source(cfg)
    check_normal_training_images(data, cfg)
    data = subsample_train(data, cfg.max_train_images, cfg.seed)
    data = hold_out_validation(data, cfg.val_fraction, cfg.seed)
    data.log_counts()
    return data


def check_normal_training_images(data: AnomalyData, cfg) -> None:
    """Every model is fitted or trained on normal images only: refuse data without any, with
    advice that fits the dataset (one check here, not a later failure inside each model)."""
    if len(data.train):
        return
    if cfg.dataset == "anomaly_folder":
        fix = (f"put normal images in {cfg.data_root}/train/ (train/0.normal or MVTec's "
               "train/good)")
    else:
        fix = (f"every training image is of the abnormal class {cfg.abnormal_class!r}; choose "
               "another --abnormal_class or add folders of normal classes")
    raise DataError(f"{data.name}: no normal training images to learn from; {fix}")
