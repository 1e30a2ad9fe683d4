"""Errors raised by training."""


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the step and the loss."""
