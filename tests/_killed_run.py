"""Run by test_checkpoints.py: the CLI's training, SIGKILLed by itself partway through its
second epoch (after the first epoch's checkpoint), as a crash would end it."""
import os
import signal
import sys

from sagan_jax.training import loop

KILL_AT_STEP = int(os.environ["KILL_AT_STEP"])
_make = loop.make_train_step


def make_train_step(*args, **kwargs):
    step_fn = _make(*args, **kwargs)
    calls = [0]

    def killing_step(*a, **k):
        calls[0] += 1
        if calls[0] > KILL_AT_STEP:
            os.kill(os.getpid(), signal.SIGKILL)
        return step_fn(*a, **k)

    return killing_step


loop.make_train_step = make_train_step

if __name__ == "__main__":
    from absl import app

    from sagan_jax import main

    sys.argv[0] = "sagan_jax.main"
    app.run(main.main, flags_parser=main.flags_parser)
