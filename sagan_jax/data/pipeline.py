"""tf.data input pipelines that feed global batches to the devices.

The images are decoded once, in parallel, by the data sources (sagan_jax.data) and held in
memory as uint8; here they are copied once into a host tensor (cached per array), so no epoch
re-reads or re-decodes a file.

Training batches: an exact seeded permutation per epoch (numpy, from (seed, epoch), so a resumed
run sees the same order), cut into global batches (the remainder dropped, as PyTorch's
drop_last=True); each batch is gathered and converted to float32 in [-1, 1] in parallel
tf.data map calls, prefetched on the host, then placed on the devices already split evenly
along the data axis, ``size`` batches ahead of the step.
"""
from __future__ import annotations

import collections
import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # TF only feeds data; keep its logs quiet

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], "GPU")  # tf.data only; the accelerator belongs to JAX.

_TENSORS: "collections.OrderedDict[int, tuple]" = collections.OrderedDict()
_MAX_CACHED = 4


def to_float(images_u8):
    """uint8 pixels -> float32 in [-1, 1]: (p / 255 - 0.5) / 0.5 (SPEC section 1)."""
    return (tf.cast(images_u8, tf.float32) / 255.0 - 0.5) / 0.5


def to_float_np(images_u8: np.ndarray) -> np.ndarray:
    return ((images_u8.astype(np.float32) / 255.0) - 0.5) / 0.5


def host_tensor(images: np.ndarray) -> tf.Tensor:
    """``images`` as a host tf tensor, copied once per array (the last few arrays are cached)."""
    key = id(images)
    hit = _TENSORS.get(key)
    if hit is not None and hit[0] is images:
        _TENSORS.move_to_end(key)
        return hit[1]
    tensor = tf.constant(images)
    _TENSORS[key] = (images, tensor)  # keeps ``images`` alive so its id stays unique
    while len(_TENSORS) > _MAX_CACHED:
        _TENSORS.popitem(last=False)
    return tensor


def epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """(steps, batch_size) image indices of one epoch: a permutation seeded by (seed, epoch)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    steps = n // batch_size
    return perm[: steps * batch_size].reshape(steps, batch_size)


def train_dataset(images: np.ndarray, batch_size: int, seed: int, epoch: int) -> tf.data.Dataset:
    """One epoch of shuffled global batches (float32 NHWC in [-1, 1], drop remainder)."""
    if len(images) < batch_size:
        raise ValueError(
            f"{len(images)} training images are fewer than one batch of {batch_size}; "
            "lower --batch_size or add images"
        )
    source = host_tensor(images)
    order = epoch_order(len(images), batch_size, seed, epoch)
    ds = tf.data.Dataset.from_tensor_slices(order)
    ds = ds.map(lambda idx: to_float(tf.gather(source, idx)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_batches(images: np.ndarray, batch_size: int):
    """Fixed-order float32 batches of a split; the last one may be smaller."""
    source = host_tensor(images)
    n = len(images)
    starts = np.arange(0, n, batch_size)
    ds = tf.data.Dataset.from_tensor_slices((starts, np.minimum(starts + batch_size, n)))
    ds = ds.map(lambda a, b: to_float(source[a:b]), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def shard_batch(batch: np.ndarray, sharding):
    """A host global batch -> one jax.Array split evenly over the sharding's devices."""
    n_dev = len(sharding.device_set)
    if len(batch) % n_dev:
        raise ValueError(f"a batch of {len(batch)} does not split evenly over {n_dev} devices")
    return jax.device_put(batch, sharding)


def prefetch_to_devices(batches, sharding, size: int = 2):
    """Place host batches on the devices with ``sharding`` ``size`` batches ahead (device_put
    is asynchronous, so the copies overlap the running step)."""
    queue = collections.deque()

    def enqueue(n):
        for b in itertools.islice(batches, n):
            queue.append(shard_batch(b, sharding))

    enqueue(size)
    while queue:
        yield queue.popleft()
        enqueue(1)
