"""Training state: both networks' parameters, BatchNorm statistics and optimiser states."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from sagan_jax.methods import build_models
from sagan_jax.methods.gan_step import init_discriminator
from sagan_jax.methods.state import TrainState
from sagan_jax.models import layers


def lambda_decay(epoch, lr: float, niter: int, niter_decay: int, start_epoch: int = 0):
    """docs/design.md, section 5: lr * (1 - max(0, epoch + 1 + start_epoch - niter) / (niter_decay
    + 1))."""
    return lr * (1.0 - jnp.maximum(0, epoch + 1 + start_epoch - niter) / (niter_decay + 1.0))


def make_optimizers(cfg, steps_per_epoch: int):
    """Two Adam optimisers with the lambda-decay rule applied per epoch."""
    def schedule(count):
        return lambda_decay(count // steps_per_epoch, cfg.lr, cfg.niter, cfg.niter_decay)

    def adam():
        return optax.adam(schedule, b1=cfg.beta1, b2=cfg.beta2)

    return adam(), adam()


def init_state(cfg, rng, g_tx, d_tx) -> TrainState:
    """The initial TrainState, a pure function of ``rng``, computed by one jitted program.

    Run op by op (:func:`init_state_eager`), Flax's initialisation dispatches, and XLA:CPU
    compiles, every random initialiser separately: about 24 s at ngf 64 on the 2-core machine.
    Here it is one program, and inside it all normal initialisers draw their values with one
    random-number call (sagan_jax.models.layers.deferred_normals: compiling ~80 separate
    threefry samplers cost most of the time). The values are bit-identical to the op-by-op
    initialisation (tests/test_init_jit.py), and the persistent compilation cache keeps the
    program. Under an outer transformation (jit, vmap over a run axis, eval_shape) it is
    inlined like any jitted call.
    """
    return _init_state_jit(cfg, rng, g_tx, d_tx)


def init_state_eager(cfg, rng, g_tx, d_tx) -> TrainState:
    """:func:`init_state` op by op (the reference it is tested against)."""
    return _init_state(cfg, rng, g_tx, d_tx, batched=False)


def _init_state(cfg, rng, g_tx, d_tx, batched: bool) -> TrainState:
    g, d = build_models(cfg)
    g_rng, d_rng = jax.random.split(rng)
    x = jnp.zeros((1, cfg.isize, cfg.isize, 3), jnp.float32)
    if batched and layers.batched_normals_supported():
        with layers.deferred_normals() as rec:
            g_vars = g.init(g_rng, x, train=False)
            d_vars = init_discriminator(d, d_rng, cfg.isize, batched=False)
        g_vars, d_vars = rec.materialise((g_vars, d_vars))
    else:
        g_vars = g.init(g_rng, x, train=False)
        d_vars = init_discriminator(d, d_rng, cfg.isize, batched=False)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_vars["params"],
        g_stats=g_vars["batch_stats"],
        d_params=d_vars["params"],
        d_stats=d_vars["batch_stats"],
        g_opt_state=g_tx.init(g_vars["params"]),
        d_opt_state=d_tx.init(d_vars["params"]),
    )


_init_state_jit = jax.jit(functools.partial(_init_state, batched=True),
                          static_argnums=(0, 2, 3))
