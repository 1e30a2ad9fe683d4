"""What every GAN's training step shares: the optimiser update (gradients averaged over the
device axis), D's training-mode pass, D's initialisation and the end of a step (D re-initialised
when L_D collapses, the new state, the step metrics)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sagan_jax import methods
from sagan_jax.models import layers


def pmean(tree, axis_name):
    """Mean over the mapped device axis (identity on one device)."""
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def grad_update(loss_fn, params, opt_state, tx, axis_name):
    """One optimiser update of ``params`` on ``loss_fn(params) -> (loss, aux)``, with the
    gradients averaged over ``axis_name``. Returns (loss, aux, grads, new params, new
    optimiser state); the loss is this device's (callers average the scalars they report)."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads = pmean(grads, axis_name)
    updates, opt_state = tx.update(grads, opt_state, params)
    return loss, aux, grads, optax.apply_updates(params, updates), opt_state


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
    """The end of every GAN step: re-initialise D when L_D < --reinit_d_threshold (docs/design.md,
    section 5), assemble the new state and the step metrics (losses, norms)."""
    reinit = scalars["l_d"] < cfg.reinit_d_threshold
    d_params = jax.lax.cond(
        reinit,
        lambda: init_discriminator(methods.build_models(cfg)[1], rng, x.shape[1])["params"],
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


def init_discriminator(d, rng, isize: int, batched: bool = True):
    """D's initial variables. ``batched``: all normal initialisers from one random-number call
    (same values; compiles in a fraction of the time, which matters inside the training step,
    where D's re-initialisation is a branch of every step)."""
    x = jnp.zeros((1, isize, isize, 3), jnp.float32)
    if not (batched and layers.batched_normals_supported()):
        return d.init(rng, x, train=False)
    with layers.deferred_normals() as rec:
        variables = d.init(rng, x, train=False)
    return rec.materialise(variables)
