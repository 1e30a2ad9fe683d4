"""The embedded default dataset: scikit-learn's handwritten digits (1,797 real 8x8 images),
upsampled to isize x isize RGB, in a leave-one-digit-out protocol. Needs no download."""
from __future__ import annotations

import numpy as np
from PIL import Image

from sagan_jax import seeds
from sagan_jax.data.base import AnomalyData, Split


def digits_to_rgb(images8: np.ndarray, isize: int) -> np.ndarray:
    """(N, 8, 8) values 0..16 -> uint8 (N, isize, isize, 3), bilinear upsampling."""
    u8 = np.round(images8 * (255.0 / 16.0)).astype(np.uint8)
    out = np.stack(
        [np.asarray(Image.fromarray(im, "L").resize((isize, isize), Image.BILINEAR)) for im in u8]
    )
    return np.repeat(out[..., None], 3, axis=-1)


def load_digits_anomaly(abnormal_class: str, isize: int, test_fraction: float, seed: int) -> AnomalyData:
    """Digit ``abnormal_class`` is abnormal. Train: (1 - test_fraction) of the other digits;
    test: the rest of them (label 0) plus every image of the abnormal digit (label 1).
    The split is stratified by digit and seeded."""
    from sklearn.datasets import load_digits  # scikit-learn (with SciPy) only when used

    ds = load_digits()
    target = ds.target.astype(np.int32)
    abnormal = int(abnormal_class)
    images = digits_to_rgb(ds.images, isize)
    rng = seeds.split_rng(seed)
    train_idx, test_idx = [], []
    for digit in range(10):
        idx = np.flatnonzero(target == digit)
        if digit == abnormal:
            test_idx.extend(idx)
            continue
        idx = rng.permutation(idx)
        n_test = int(round(test_fraction * len(idx)))
        test_idx.extend(idx[:n_test])
        train_idx.extend(idx[n_test:])
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    labels = (target == abnormal).astype(np.int32)
    train = Split(images[train_idx], labels[train_idx], classes=target[train_idx])
    test = Split(images[test_idx], labels[test_idx], classes=target[test_idx])
    return AnomalyData(name=f"digits(abnormal={abnormal})", train=train, test=test)
