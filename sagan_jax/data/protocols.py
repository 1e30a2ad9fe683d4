"""Leave-one-class-out anomaly protocols on a labelled train/test dataset (docs/design.md, section
8).

- ``ganomaly`` (the paper's): train on the training images of the normal classes; test on the
  normal test images (label 0), then ALL images of the abnormal class: its training images,
  then its test images (label 1). This is the originals' concatenation order. CIFAR-10:
  45,000 train; 9,000 + 6,000 test.
- ``clean``: abnormal test images from the test split only. CIFAR-10: 45,000; 9,000 + 1,000.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from sagan_jax.data.base import AnomalyData, Split


def _take_paths(paths, mask):
    return None if paths is None else tuple(p for p, m in zip(paths, mask) if m)


def leave_one_class_out(
    name: str,
    train_images: np.ndarray, train_classes: np.ndarray,
    test_images: np.ndarray, test_classes: np.ndarray,
    abnormal: int, protocol: str,
    train_paths: Optional[Sequence[str]] = None, test_paths: Optional[Sequence[str]] = None,
) -> AnomalyData:
    """The AnomalyData of ``protocol`` with class index ``abnormal`` abnormal."""
    if protocol not in ("ganomaly", "clean"):
        raise ValueError(f"unknown protocol {protocol!r}; choose ganomaly or clean")
    train_classes = np.asarray(train_classes, np.int32)
    test_classes = np.asarray(test_classes, np.int32)
    nrm_trn, abn_trn = train_classes != abnormal, train_classes == abnormal
    nrm_tst, abn_tst = test_classes != abnormal, test_classes == abnormal

    train = Split(train_images[nrm_trn], np.zeros(int(nrm_trn.sum()), np.int32),
                  _take_paths(train_paths, nrm_trn), classes=train_classes[nrm_trn])
    blocks = [(test_images, test_classes, test_paths, nrm_tst, 0)]
    if protocol == "ganomaly":
        blocks.append((train_images, train_classes, train_paths, abn_trn, 1))
    blocks.append((test_images, test_classes, test_paths, abn_tst, 1))
    images = np.concatenate([im[m] for im, _, _, m, _ in blocks])
    labels = np.concatenate([np.full(int(m.sum()), lab, np.int32) for _, _, _, m, lab in blocks])
    classes = np.concatenate([c[m] for _, c, _, m, _ in blocks])
    paths = None
    if train_paths is not None and test_paths is not None:
        paths = sum((_take_paths(p, m) for _, _, p, m, _ in blocks), ())
    test = Split(images, labels, paths, classes=classes)
    return AnomalyData(name=name, train=train, test=test)
