"""Errors raised by training."""


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the step and the loss."""


# ---- Ctrl-C ---------------------------------------------------------------------------------
# A SIGINT (main.main installs request_interrupt) is recorded here as well as raised, so that
# one raised where Python swallows exceptions (a garbage-collection callback, a __del__) still
# stops the run at the next check_interrupt, and a checkpoint being saved is completed first.
_interrupt = {"requested": False, "deferred": 0}


def request_interrupt(signum=None, frame=None):
    """SIGINT handler: record the request and raise KeyboardInterrupt, unless a checkpoint is
    being written (deferred_interrupt), which then raises as soon as the save is complete."""
    _interrupt["requested"] = True
    if not _interrupt["deferred"]:
        raise KeyboardInterrupt


def interrupt_requested() -> bool:
    return _interrupt["requested"]


def check_interrupt() -> None:
    """Raise KeyboardInterrupt when a Ctrl-C was recorded (training checks between chunks)."""
    if _interrupt["requested"] and not _interrupt["deferred"]:
        raise KeyboardInterrupt


def reset_interrupt() -> None:
    _interrupt["requested"] = False


class deferred_interrupt:
    """A section a Ctrl-C must not cut short (writing a checkpoint): the interrupt is
    recorded and raised when the section ends."""

    def __enter__(self):
        _interrupt["deferred"] += 1

    def __exit__(self, exc_type, *exc):
        _interrupt["deferred"] -= 1
        if exc_type is None:
            check_interrupt()
        return False
