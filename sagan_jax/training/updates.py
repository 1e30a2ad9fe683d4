"""The optimiser update shared by every model's training step."""
from __future__ import annotations

import jax
import optax


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
