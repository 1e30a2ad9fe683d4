"""In-memory anomaly-detection splits shared by every data source.

Images are kept as uint8 NHWC RGB arrays of size isize (CIFAR-10's 45,000 training images are
138 MB); labels are 0 = normal, 1 = abnormal.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import numpy as np

from sagan_jax import seeds


class DataError(ValueError):
    """Bad input data; the message is one line naming the path and what was expected."""


@dataclasses.dataclass(frozen=True)
class Split:
    images: np.ndarray                     # uint8, (N, isize, isize, 3)
    labels: np.ndarray                     # int32, (N,): 0 normal, 1 abnormal
    paths: Optional[tuple] = None          # source file of each image, where there is one
    masks: Optional[np.ndarray] = None     # uint8 (N, isize, isize) defect masks, if any
    classes: Optional[np.ndarray] = None   # original class index of each image, if any

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}"
            )
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self):
        return len(self.images)

    def counts(self) -> dict:
        return {"normal": int(np.sum(self.labels == 0)), "abnormal": int(np.sum(self.labels == 1))}

    def take(self, idx) -> "Split":
        pick = lambda a: None if a is None else a[idx]
        paths = None if self.paths is None else tuple(self.paths[i] for i in np.asarray(idx))
        return Split(self.images[idx], self.labels[idx], paths, pick(self.masks), pick(self.classes))


@dataclasses.dataclass(frozen=True)
class AnomalyData:
    name: str
    train: Split             # normal images only
    test: Split
    val: Optional[Split] = None   # normal images held out from training (model selection)
    skipped: tuple = ()           # (path, reason) of bad files skipped (--on_bad_image=skip)
    class_names: Optional[tuple] = None  # names of the original class indices, if any

    def counts(self) -> dict:
        out = {"train": self.train.counts(), "test": self.test.counts()}
        if self.val is not None:
            out["val"] = self.val.counts()
        out["skipped_bad_images"] = len(self.skipped)
        return out

    def log_counts(self, logger=logging.getLogger("sagan_jax")) -> None:
        """One line per split (normal / abnormal, and per class where known), one for skips."""
        for name in ("train", "val", "test"):
            split = getattr(self, name)
            if split is None:
                continue
            c = split.counts()
            per_class = ""
            if split.classes is not None and self.class_names is not None:
                ids, n = np.unique(split.classes, return_counts=True)
                per_class = " (" + ", ".join(
                    f"{self.class_names[i]} {k}" for i, k in zip(ids, n)) + ")"
            logger.info("%s %s: %d normal, %d abnormal%s", self.name, name, c["normal"],
                        c["abnormal"], per_class)
        if self.skipped:
            logger.warning("%s: %d bad files skipped (--on_bad_image=skip), first: %s",
                           self.name, len(self.skipped), self.skipped[0][1])


def hold_out_validation(data: AnomalyData, fraction: float, seed: int) -> AnomalyData:
    """Move ``fraction`` of the normal training images into a validation split (seeded)."""
    if fraction <= 0:
        return data
    n = len(data.train)
    perm = seeds.split_rng(seed).permutation(n)
    n_val = int(round(fraction * n))
    if n_val < 1 or n_val >= n:
        raise DataError(
            f"--val_fraction={fraction} leaves {n - n_val} training and {n_val} validation images "
            f"out of {n}; choose a fraction that keeps both non-empty"
        )
    return dataclasses.replace(
        data, train=data.train.take(np.sort(perm[n_val:])), val=data.train.take(np.sort(perm[:n_val]))
    )


def subsample_train(data: AnomalyData, max_images: int, seed: int) -> AnomalyData:
    """Keep a seeded random subset of ``max_images`` normal training images (0 = all)."""
    if max_images <= 0 or max_images >= len(data.train):
        return data
    idx = np.sort(seeds.subsample_rng(seed).permutation(len(data.train))[:max_images])
    return dataclasses.replace(data, train=data.train.take(idx))
