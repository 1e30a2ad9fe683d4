"""The jitted training step of any model (its spec's pure step, sagan_jax.methods) and its
data-parallel form over a one-axis device mesh with ``jax.shard_map``."""
from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from sagan_jax import methods
from sagan_jax.config import ConfigError
from sagan_jax.devices import DATA_AXIS, devices_for_batch


def make_mesh(num_devices: int = 0, batch_size: int = 0):
    """A one-axis mesh over the first ``num_devices`` local devices (0 = all, or with
    ``batch_size`` the most of them that split it evenly, so a batch is never resized); in a
    multi-process run, over every device of every process."""
    if jax.process_count() > 1:  # one global mesh over every process's devices
        if num_devices:
            raise ConfigError("--num_devices must be 0 (all devices) in a multi-process run")
        return jax.sharding.Mesh(np.array(jax.devices()), (DATA_AXIS,))
    devices = jax.local_devices()
    n = num_devices or (devices_for_batch(len(devices), batch_size) if batch_size
                        else len(devices))
    if n > len(devices):
        raise ConfigError(f"--num_devices={n} but only {len(devices)} local devices exist; "
                          f"use --num_devices between 1 and {len(devices)} (0 = all)")
    return jax.sharding.Mesh(devices[:n], (DATA_AXIS,))


def make_train_step(cfg, g_tx, d_tx, mesh=None, donate: bool = True):
    """The jitted step. With a mesh, the per-device step runs under ``jax.shard_map``: the
    state and rng are replicated, the batch is split along the mesh axis."""
    fn = functools.partial(methods.get(cfg.model).step, cfg=cfg, g_tx=g_tx, d_tx=d_tx)
    donate_argnums = (0,) if donate else ()
    if mesh is None:
        return jax.jit(fn, donate_argnums=donate_argnums)
    per_device = functools.partial(fn, axis_name=DATA_AXIS)
    sharded = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P(), P(DATA_AXIS), P()),
        out_specs=(P(), P()),
        check_vma=False,
    )
    return jax.jit(sharded, donate_argnums=donate_argnums)
