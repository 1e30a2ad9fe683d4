"""The input arithmetic shared by training, scoring and the PyTorch reference (no TensorFlow).

The images are decoded once by the data sources (sagan_jax.data) and held in memory as uint8;
no epoch re-reads or re-decodes a file. Training: each epoch is an exact seeded permutation cut
into global batches (``epoch_order``; the remainder dropped, as PyTorch's drop_last=True), and
the training program gathers each batch by index from the split's uint8 array on the device
and converts it with ``to_float_np`` (sagan_jax.training.program): images reach the device once
per run, and each step only its indices. Scoring: fixed-order batches, the last one padded
only as far as ``padded_batch_size``.
"""
from __future__ import annotations

import numpy as np

from sagan_jax import seeds


def to_float_np(images_u8: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1]: (p / 255 - 0.5) / 0.5 (docs/design.md, section 2);
    NumPy arrays on the host, JAX arrays (traced or not) on the devices. The same formula, not
    always the same bits: under jit XLA may divide by 255 as a multiplication by its reciprocal
    (255 becomes 1.0000001 on the device, 1.0 on the host), so values can differ by 1 ulp."""
    return ((images_u8.astype(np.float32) / 255.0) - 0.5) / 0.5


def epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """(steps, batch_size) image indices of one epoch: a permutation seeded by (seed, epoch)."""
    perm = seeds.epoch_rng(seed, epoch).permutation(n)
    steps = n // batch_size
    return perm[: steps * batch_size].reshape(steps, batch_size)


def padded_batch_size(n: int, batch_size: int) -> int:
    """The batch shape that scores ``n`` images (n >= 1) with ``--eval_batch_size``
    ``batch_size``: the batch size, or for fewer images the smallest power of two >= n. A
    scoring pass pads a short batch only to this, never to a huge --eval_batch_size, and
    compiles at most one program per power of two (scores use running BatchNorm averages, so
    an image's score does not depend on its batch, up to float rounding: XLA may round a
    convolution of a batch of 1 and one of 4 differently in the last bit)."""
    return min(batch_size, 1 << max(n - 1, 0).bit_length())


def eval_batches(images: np.ndarray, batch_size: int):
    """Fixed-order float32 batches of a split; the last one may be smaller."""
    for start in range(0, len(images), batch_size):
        yield to_float_np(images[start:start + batch_size])
