"""Numpy input pipelines that feed global batches to the devices (no TensorFlow).

The images are decoded once by the data sources (sagan_jax.data) and held in memory as uint8;
no epoch re-reads or re-decodes a file.

Training batches: an exact seeded permutation per epoch (numpy, from (seed, epoch), so a resumed
run sees the same order), cut into global batches (the remainder dropped, as PyTorch's
drop_last=True); each batch is gathered from the uint8 array and converted to float32 in
[-1, 1] on the host, then ``prefetch_to_devices`` places it on the devices already split evenly
along the data axis, ``size`` batches ahead of the step (device_put is asynchronous).
"""
from __future__ import annotations

import collections
import itertools

import numpy as np

from sagan_jax import seeds


def to_float_np(images_u8: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1]: (p / 255 - 0.5) / 0.5 (docs/design.md, section 2);
    NumPy arrays on the host, JAX arrays (traced or not) on the devices, the same arithmetic."""
    return ((images_u8.astype(np.float32) / 255.0) - 0.5) / 0.5


def epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """(steps, batch_size) image indices of one epoch: a permutation seeded by (seed, epoch)."""
    perm = seeds.epoch_rng(seed, epoch).permutation(n)
    steps = n // batch_size
    return perm[: steps * batch_size].reshape(steps, batch_size)


def _check_one_batch(n: int, batch_size: int) -> None:
    if n < batch_size:
        raise ValueError(
            f"{n} training images are fewer than one batch of {batch_size}; "
            "lower --batch_size or add images"
        )


def train_batches(images: np.ndarray, batch_size: int, seed: int, epoch: int):
    """One epoch of shuffled global batches (float32 NHWC in [-1, 1], drop remainder)."""
    _check_one_batch(len(images), batch_size)
    order = epoch_order(len(images), batch_size, seed, epoch)
    return (to_float_np(images[idx]) for idx in order)


class _Epoch:
    """``train_dataset``'s result: iterable, with ``len`` and the ``as_numpy_iterator()`` of
    the tf.data pipeline it replaces (so callers written for tf.data keep working)."""

    def __init__(self, images, batch_size, seed, epoch):
        _check_one_batch(len(images), batch_size)
        self._args = (images, batch_size, seed, epoch)

    def __len__(self):
        return len(self._args[0]) // self._args[1]

    def __iter__(self):
        return train_batches(*self._args)

    def as_numpy_iterator(self):
        return iter(self)


def train_dataset(images: np.ndarray, batch_size: int, seed: int, epoch: int) -> _Epoch:
    """One epoch of shuffled global batches, as ``train_batches`` (iterable; also
    ``.as_numpy_iterator()``). Raises ValueError at once when there is not one full batch."""
    return _Epoch(images, batch_size, seed, epoch)


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


def shard_batch(batch: np.ndarray, sharding):
    """A host global batch -> one jax.Array split evenly over the sharding's devices."""
    import jax

    n_dev = len(sharding.device_set)
    if len(batch) % n_dev:
        raise ValueError(f"a batch of {len(batch)} does not split evenly over {n_dev} devices")
    return jax.device_put(batch, sharding)


def prefetch_to_devices(batches, sharding, size: int = 2):
    """Place host batches on the devices with ``sharding`` ``size`` batches ahead (device_put
    is asynchronous, so the copies overlap the running step)."""
    queue = collections.deque()
    batches = iter(batches)

    def enqueue(n):
        for b in itertools.islice(batches, n):
            queue.append(shard_batch(b, sharding))

    enqueue(size)
    while queue:
        yield queue.popleft()
        enqueue(1)
