"""Training state: both networks' parameters, BatchNorm statistics and optimiser states."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from sagan_jax.models import build_models


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray
    g_params: Any
    g_stats: Any
    d_params: Any
    d_stats: Any
    g_opt_state: Any
    d_opt_state: Any


def lambda_decay(epoch, lr: float, niter: int, niter_decay: int, start_epoch: int = 0):
    """SPEC section 5: lr * (1 - max(0, epoch + 1 + start_epoch - niter) / (niter_decay + 1))."""
    return lr * (1.0 - jnp.maximum(0, epoch + 1 + start_epoch - niter) / (niter_decay + 1.0))


def make_optimizers(cfg, steps_per_epoch: int):
    """Two Adam optimisers with the lambda-decay rule applied per epoch."""
    def schedule(count):
        return lambda_decay(count // steps_per_epoch, cfg.lr, cfg.niter, cfg.niter_decay)

    def adam():
        return optax.adam(schedule, b1=cfg.beta1, b2=cfg.beta2)

    return adam(), adam()


def init_discriminator(d, rng, isize: int):
    return d.init(rng, jnp.zeros((1, isize, isize, 3), jnp.float32), train=False)


def init_state(cfg, rng, g_tx, d_tx) -> TrainState:
    g, d = build_models(cfg)
    g_rng, d_rng = jax.random.split(rng)
    x = jnp.zeros((1, cfg.isize, cfg.isize, 3), jnp.float32)
    g_vars = g.init(g_rng, x, train=False)
    d_vars = init_discriminator(d, d_rng, cfg.isize)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_vars["params"],
        g_stats=g_vars["batch_stats"],
        d_params=d_vars["params"],
        d_stats=d_vars["batch_stats"],
        g_opt_state=g_tx.init(g_vars["params"]),
        d_opt_state=d_tx.init(d_vars["params"]),
    )
