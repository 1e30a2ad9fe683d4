"""Every random stream of a run, derived from its ``--seed`` in one place.

A run's results are a pure function of its flags: initialisation, the per-step randomness
(EGBAD's z, D's re-initialisation), the data order, the splits and the precise-BN batches each
come from their own named stream below, so that no two uses share random numbers and a resumed
run draws exactly what the uninterrupted one drew.
"""
from __future__ import annotations

import numpy as np

# Streams folded into jax.random.key(seed).
INIT_STREAM = 0       # network initialisation (G, D) and optimiser states
STEP_STREAM = 1       # per-step randomness, folded with the global step number
# NumPy streams.
RECALIBRATION_STREAM = 7  # precise-BN batches: default_rng([seed * 1000 + epoch, 7])


def init_key(seed: int):
    import jax

    return jax.random.fold_in(jax.random.key(seed), INIT_STREAM)


def step_base_key(seed: int):
    """Folded with the step number inside the jitted program: fold_in(step_base_key, step)."""
    import jax

    return jax.random.fold_in(jax.random.key(seed), STEP_STREAM)


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The permutation of the training images in epoch ``epoch``."""
    return np.random.default_rng([seed, epoch])


def recalibration_seed(seed: int, epoch: int) -> int:
    """Seed of the precise-BN batches drawn after epoch ``epoch``."""
    return seed * 1000 + epoch


def recalibration_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, RECALIBRATION_STREAM])


def split_rng(seed: int) -> np.random.Generator:
    """Dataset splits (the digits' train/test split, the validation hold-out)."""
    return np.random.default_rng(seed)


def subsample_rng(seed: int) -> np.random.Generator:
    """--max_train_images: the seeded subset of normal training images."""
    return np.random.default_rng(seed + 1)
