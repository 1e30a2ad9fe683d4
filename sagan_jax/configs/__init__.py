"""The model and experiment flagfiles, shipped with the package (the only copy: in a checkout,
experiments/NAME.cfg links here).

``--flagfile=NAME.cfg`` (or ``experiments/NAME.cfg``) names the packaged file when no such
path exists, so an installed package runs ``sagan-jax --flagfile=quickstart.cfg`` from any
folder. A path that exists always wins.
"""
from __future__ import annotations

import os
from typing import Optional

DIR = os.path.dirname(os.path.abspath(__file__))


def names() -> list:
    """The packaged flagfiles' names (``quickstart.cfg``, ``model_sagan.cfg``, ...)."""
    return sorted(n for n in os.listdir(DIR) if n.endswith(".cfg"))


def resolve(path: str) -> Optional[str]:
    """``path`` when it is a file; else the packaged flagfile it names (a bare name, or
    ``experiments/NAME``); else None."""
    if os.path.isfile(path):
        return path
    folder, name = os.path.split(path)
    if folder in ("", "experiments") and name in names():
        return os.path.join(DIR, name)
    return None
