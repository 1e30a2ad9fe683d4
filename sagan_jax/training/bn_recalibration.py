"""Recompute BatchNorm running statistics for the current weights ("precise BN").

Running averages lag the weights: with Adam at lr 2e-3 the weights move a lot within the
~10-step memory of a 0.1-momentum average, so evaluation-mode outputs can be far from what the
network computes in training mode (experiments/bn_staleness.py on the digits quickstart:
reconstruction error 0.33 with the training run's averages, 0.0026 with batch statistics). Before every evaluation
the loop therefore sets them to the average batch statistics of the frozen networks over
``bn_recalibration_batches`` training batches (the "precise BN" of Wu & Johnson, 2021). The statistics come from training
images only, so test scores stay independent of the test set's order and batch size.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sagan_jax import methods, seeds
from sagan_jax.data.pipeline import to_float_np
from sagan_jax.devices import local_mesh, put_batch, put_replicated
from sagan_jax.models.layers import BatchNorm


def _zeros(tree):
    return jax.tree.map(jnp.zeros_like, tree)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _batch_statistics(variables, x, cfg):
    """Per-layer batch mean and unbiased variance of one training-mode pass with frozen
    weights, as (g_stats, d_stats) trees. Read off a BatchNorm update from zero running
    statistics (new = momentum * batch), so no layer code is duplicated. D's statistics average
    its real pass and its G(x) pass, the two inputs it normalises during its training step and
    at scoring; EGBAD's joint D(x, z) keeps its training averages."""
    m = BatchNorm.momentum
    spec = methods.get(cfg.model)
    g, d = spec.build(cfg)
    out, g_new = g.apply({"params": variables["g_params"], "batch_stats": _zeros(variables["g_stats"])},
                         x, train=True, mutable=["batch_stats"])
    g_batch = jax.tree.map(lambda s: s / m, g_new["batch_stats"])
    if not spec.recalibrate_d:  # e.g. EGBAD's joint D(x, z) keeps its training averages
        return g_batch, variables["d_stats"]
    recon = out[0] if isinstance(out, tuple) else out
    d_batches = []
    for inp in (x, recon):
        _, new = d.apply({"params": variables["d_params"], "batch_stats": _zeros(variables["d_stats"])},
                         inp, train=True, mutable=["batch_stats"])
        d_batches.append(jax.tree.map(lambda s: s / m, new["batch_stats"]))
    return g_batch, jax.tree.map(lambda a, b: 0.5 * (a + b), *d_batches)


def recalibrate_batchnorm(cfg, state, images_u8: np.ndarray, seed: int, mesh=None):
    """``state`` with G's and D's running statistics replaced by the average batch statistics
    of ``cfg.bn_recalibration_batches`` seeded training batches, under the current weights;
    each batch split over ``mesh`` (default: this process's devices; the training loop passes
    the devices it trains on, so the state never spans two device sets)."""
    n_batches = cfg.bn_recalibration_batches
    if n_batches <= 0:
        return state
    mesh = mesh if mesh is not None else local_mesh()
    variables = put_replicated({"g_params": state.g_params, "g_stats": state.g_stats,
                                "d_params": state.d_params, "d_stats": state.d_stats}, mesh)
    total = None
    for idx in recalibration_batches(len(images_u8), cfg.batch_size, n_batches, seed):
        stats = _batch_statistics(variables, put_batch(to_float_np(images_u8[idx]), mesh), cfg)
        # One batch at a time: the batches do not depend on each other, so without this wait
        # several all-reducing programs can be in flight at once, and on host devices one of
        # them was seen to wait forever for a device busy with the next one.
        stats = jax.block_until_ready(stats)
        total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    g_stats, d_stats = jax.tree.map(lambda t: t / n_batches, total)
    return state.replace(g_stats=g_stats, d_stats=d_stats)


def recalibration_batches(n_images: int, batch_size: int, n_batches: int, seed: int):
    """The sorted image indices of each recalibration batch: ``n_batches`` batches of
    min(batch_size, n_images) images, drawn without replacement from seeded permutations
    (a new permutation when one runs out). Shared with the PyTorch reference's loop."""
    bs = min(batch_size, n_images)
    rng = seeds.recalibration_rng(seed)
    order = np.zeros(0, int)
    for _ in range(n_batches):
        if len(order) < bs:
            order = rng.permutation(n_images)
        idx, order = np.sort(order[:bs]), order[bs:]
        yield idx
