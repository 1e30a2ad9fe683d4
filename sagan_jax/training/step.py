"""The SAGAN training step as a pure function of (state, batch, rng), and its data-parallel
form over a one-axis device mesh with ``jax.shard_map``.

Order per batch (SPEC section 5): forward G, update G, then update D on the G(x) computed
before G's update. BatchNorm statistics, decided explicitly:
  - G's running statistics are updated by its one training-mode forward pass.
  - D inside G's loss runs in training mode (batch statistics) but does NOT update D's
    running statistics.
  - D's own step runs the real batch, then the fake batch, each in training mode, and each
    updates D's running statistics (as two PyTorch forward calls would, in that order).
With ``axis_name`` set, gradients, losses and BatchNorm statistics are averaged over that axis,
so the step on N devices equals the step on the global batch.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from sagan_jax import losses
from sagan_jax.config import ConfigError
from sagan_jax.devices import DATA_AXIS, devices_for_batch
from sagan_jax.models import build_models
from sagan_jax.training.state import TrainState, init_discriminator
from sagan_jax.training.updates import grad_update, pmean



def train_step(state: TrainState, batch, rng, *, cfg, g_tx, d_tx, axis_name=None):
    """One SAGAN update. ``batch`` is a float32 NHWC array in [-1, 1] (this device's shard).

    Returns (new_state, metrics); metrics are averaged over ``axis_name``."""
    g, d = build_models(cfg, axis_name)
    x = batch

    # ---- generator ---------------------------------------------------------------------
    def g_loss_fn(g_params):
        fake, g_new = g.apply(
            {"params": g_params, "batch_stats": state.g_stats}, x, train=True,
            mutable=["batch_stats"],
        )
        logit_fake, feat_fake, _ = d_apply(d, state.d_params, state.d_stats, fake, update=False)
        _, feat_real, _ = d_apply(d, state.d_params, state.d_stats, x, update=False)
        l_adv = losses.bce_with_logits(logit_fake, 1.0)
        l_con = losses.l1(x, fake)
        l_lat = losses.l2(feat_real, feat_fake)
        l_g = cfg.w_adv * l_adv + cfg.w_con * l_con + cfg.w_lat * l_lat
        return l_g, (fake, g_new["batch_stats"], l_adv, l_con, l_lat)

    l_g, (fake, g_stats, l_adv, l_con, l_lat), g_grads, g_params, g_opt_state = grad_update(
        g_loss_fn, state.g_params, state.g_opt_state, g_tx, axis_name)

    # ---- discriminator (sees the G(x) computed before G's update) -------------------------
    fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(d_params):
        logit_real, feat_real, stats = d_apply(d, d_params, state.d_stats, x, update=True)
        logit_fake, feat_fake, stats = d_apply(d, d_params, stats, fake, update=True)
        l_d = losses.bce_with_logits(logit_real, 1.0) + losses.bce_with_logits(logit_fake, 0.0)
        if cfg.d_lat_loss:  # the authors' code also trains D on L_lat
            l_d = l_d + cfg.w_lat * losses.l2(feat_real, feat_fake)
        return l_d, stats

    l_d, d_stats, d_grads, d_params, d_opt_state = grad_update(
        d_loss_fn, state.d_params, state.d_opt_state, d_tx, axis_name)

    l_g, l_adv, l_con, l_lat, l_d = pmean((l_g, l_adv, l_con, l_lat, l_d), axis_name)

    scalars = {"l_g": l_g, "l_adv": l_adv, "l_con": l_con, "l_lat": l_lat, "l_d": l_d}
    return finish_step(state, cfg, rng, x, g_params, g_stats, g_opt_state, d_params, d_stats,
                       d_opt_state, g_grads, d_grads, scalars)


def d_apply(d, params, stats, *inputs, update):
    """D's (logit, features, batch_stats) in training mode; ``update`` also returns the
    running statistics that this pass updates (else they are returned unchanged)."""
    variables = {"params": params, "batch_stats": stats}
    if update:
        (logit, feat), new = d.apply(variables, *inputs, train=True, mutable=["batch_stats"])
        return logit, feat, new["batch_stats"]
    logit, feat = d.apply(variables, *inputs, train=True, update_stats=False)
    return logit, feat, stats


def finish_step(state, cfg, rng, x, g_params, g_stats, g_opt_state, d_params, d_stats, d_opt_state,
                g_grads, d_grads, scalars):
    """The end of every GAN step: re-initialise D when L_D < --reinit_d_threshold (SPEC
    section 5), assemble the new state and the step metrics (losses, norms)."""
    reinit = scalars["l_d"] < cfg.reinit_d_threshold
    d_params = jax.lax.cond(
        reinit,
        lambda: init_discriminator(build_models(cfg)[1], rng, x.shape[1])["params"],
        lambda: d_params,
    )
    new_state = state.replace(
        step=state.step + 1, g_params=g_params, g_stats=g_stats, d_params=d_params,
        d_stats=d_stats, g_opt_state=g_opt_state, d_opt_state=d_opt_state,
    )
    metrics = dict(scalars)
    metrics.update(
        d_reinit=reinit.astype(jnp.int32),
        g_grad_norm=optax.global_norm(g_grads), d_grad_norm=optax.global_norm(d_grads),
        g_param_norm=optax.global_norm(g_params), d_param_norm=optax.global_norm(d_params),
    )
    return new_state, metrics



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
    from sagan_jax import methods

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
