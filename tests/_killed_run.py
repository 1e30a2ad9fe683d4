"""Run by test_checkpoints.py: the CLI's training, ended by itself as a crash would end it.

KILL_AT_STEP=N: SIGKILL just before the chunk program would run step N (so steps before N
ran, and possibly were logged, after the last checkpoint).
NAN_AT_STEP=N: the chunk program's states come back with NaN weights once step N has run (a
run whose weights go non-finite without a non-finite loss); NAN_GROUP=k: only the k-th group
of the run layout (with --run_axis_impl=unroll, the k-th run)."""
import os
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np

from sagan_jax.training import loop

KILL_AT_STEP = int(os.environ.get("KILL_AT_STEP", "-1"))
NAN_AT_STEP = int(os.environ.get("NAN_AT_STEP", "-1"))
NAN_GROUP = int(os.environ.get("NAN_GROUP", "-1"))  # only this group of the run layout (-1: all)
_make = loop.make_chunk_program


def make_chunk_program(*args, **kwargs):
    program = _make(*args, **kwargs)
    done = [0]

    def wrapped(states, images, idx, active, keys):
        if 0 <= KILL_AT_STEP <= done[0]:
            os.kill(os.getpid(), signal.SIGKILL)
        done[0] += int(max(np.asarray(jax.device_get(a)).sum() for a in active))
        states, metrics = program(states, images, idx, active, keys)
        if 0 <= NAN_AT_STEP < done[0]:
            poison = lambda t: jax.tree.map(
                lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x, t)
            states = tuple(poison(g) if NAN_GROUP in (-1, i) else g for i, g in enumerate(states))
        return states, metrics

    return wrapped


loop.make_chunk_program = make_chunk_program

if __name__ == "__main__":
    from absl import app

    from sagan_jax import main

    sys.argv[0] = "sagan_jax.main"
    app.run(main.main, flags_parser=main.flags_parser)
