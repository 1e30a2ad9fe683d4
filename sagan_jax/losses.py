"""Losses of SAGAN / Skip-GANomaly (docs/design.md, section 5). All are batch means."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def bce_with_logits(logits, target: float):
    """Mean binary cross-entropy of sigmoid(logits) against a constant target (0 or 1).

    Equal to torch.nn.BCELoss on the probabilities, without its log clamp at -100."""
    return jnp.mean(target * jax.nn.softplus(-logits) + (1.0 - target) * jax.nn.softplus(logits))


def l1(x, y):
    """L_con: mean |x - y|."""
    return jnp.mean(jnp.abs(x - y))


def l2(x, y):
    """L_lat: mean (x - y)^2."""
    return jnp.mean(jnp.square(x - y))
