"""The training state of every model: both networks' parameters, BatchNorm statistics and
optimiser states (a fitted model keeps its arrays as ``g_params``)."""
from __future__ import annotations

from typing import Any

import flax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray
    g_params: Any
    g_stats: Any
    d_params: Any
    d_stats: Any
    g_opt_state: Any
    d_opt_state: Any


def fitted_state(params: dict, step: int = 0):
    """A fitted model's parameters as a TrainState (so checkpoints, scoring, --mode=eval and
    --mode=score treat it as a GAN's): ``g_params`` = the fitted arrays, nothing else."""
    return TrainState(step=jnp.asarray(step, jnp.int32), g_params=dict(params), g_stats={},
                      d_params={}, d_stats={}, g_opt_state=(), d_opt_state=())
