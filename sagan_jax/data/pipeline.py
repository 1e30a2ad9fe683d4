"""tf.data input pipelines that feed global batches to the devices.

Training batches: seeded shuffle (a new order every epoch, the same for the same seed), batched
to the global batch size (the remainder dropped, as PyTorch's drop_last=True), decoded to
float32 in [-1, 1] in parallel, prefetched on the host, then placed on the devices already
split along the data axis, one batch ahead of the step.
"""
from __future__ import annotations

import collections
import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], "GPU")  # tf.data only; the accelerator belongs to JAX.


def to_float(images_u8):
    """uint8 pixels -> float32 in [-1, 1]: (p / 255 - 0.5) / 0.5 (SPEC section 1)."""
    return (tf.cast(images_u8, tf.float32) / 255.0 - 0.5) / 0.5


def to_float_np(images_u8: np.ndarray) -> np.ndarray:
    return ((images_u8.astype(np.float32) / 255.0) - 0.5) / 0.5


def train_dataset(images: np.ndarray, batch_size: int, seed: int, epoch: int) -> tf.data.Dataset:
    """One epoch of shuffled, batched training images (float32 NHWC, [-1, 1])."""
    if len(images) < batch_size:
        raise ValueError(
            f"{len(images)} training images are fewer than one batch of {batch_size}; "
            "lower --batch_size or add images"
        )
    ds = tf.data.Dataset.from_tensor_slices(images)
    ds = ds.shuffle(len(images), seed=seed * 100_003 + epoch, reshuffle_each_iteration=False)
    ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_batches(images: np.ndarray, batch_size: int):
    """Fixed-order float32 batches of a split; the last one may be smaller."""
    ds = tf.data.Dataset.from_tensor_slices(images).batch(batch_size)
    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()


def prefetch_to_devices(batches, sharding, size: int = 2):
    """Place host batches on the devices with ``sharding`` ``size`` batches ahead."""
    queue = collections.deque()

    def enqueue(n):
        for b in itertools.islice(batches, n):
            queue.append(jax.device_put(b, sharding))

    enqueue(size)
    while queue:
        yield queue.popleft()
        enqueue(1)
