"""Plumbing every script in experiments/ shares (run them as ``python -m experiments.NAME``,
``python -m experiments.results.NAME`` or ``python -m experiments.benchmarks.NAME`` from the
repository root).

- ``config_from_flagfiles``: flagfiles + flags -> ``sagan_jax.config.Config``, parsed by absl
  itself (a fresh ``FlagValues`` holding one flag per Config field), so flagfiles mean here
  exactly what they mean to ``python -m sagan_jax.main``: nested ``--flagfile=``, comments,
  ``--noflag``, last value wins, absl's errors.
- ``run_script``, ``fail``, ``package_errors``: a script's entry point, user errors in one line.
- ``int_list``, ``positive_int``: argparse types.
- ``done_metrics``, ``no_result``: a run's metrics.json if that run finished (resuming sweeps).

The docs' marked sections are in experiments/sections.py; the machine header, load monitor and
the benchmarks' quiet-machine guard in experiments/machine.py. Nothing here imports JAX,
TensorFlow or PyTorch, so a script's ``--help`` is quick.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import typing
from typing import Iterable, Mapping, Optional, Sequence

from absl import flags

from sagan_jax.config import Config, ConfigError

EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(EXPERIMENTS)
DOCS = os.path.join(ROOT, "docs")
BENCHMARKS_MD = os.path.join(DOCS, "benchmarks.md")
RESULTS_MD = os.path.join(DOCS, "results.md")


# --- flagfiles -> Config ------------------------------------------------------------------------
class FlagError(ValueError):
    """Bad flags or flagfile; the message is one line."""


def flagfile(name: str) -> str:
    """Absolute path of experiments/NAME (e.g. ``flagfile("quickstart.cfg")``)."""
    return os.path.join(EXPERIMENTS, name)


def define_config_flags(flag_values: flags.FlagValues) -> flags.FlagValues:
    """One absl flag per Config field (same name, default and help text) in ``flag_values``."""
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        args = (f.name, f.default, f.metadata.get("help", f.name))
        hint = hints[f.name]
        if hint is bool:
            flags.DEFINE_bool(*args, flag_values=flag_values)
        elif hint is int:
            flags.DEFINE_integer(*args, flag_values=flag_values)
        elif hint is float:
            flags.DEFINE_float(*args, flag_values=flag_values)
        else:
            flags.DEFINE_string(*args, flag_values=flag_values)
    return flag_values


def flag_args(values: Optional[Mapping[str, object]] = None, **kw) -> list:
    """Python values as command-line flags: True -> --name, False -> --noname, None -> left
    out (the flag keeps its earlier value), anything else -> --name=value."""
    out = []
    for name, value in {**(values or {}), **kw}.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out.append(f"--{name}" if value else f"--no{name}")
        else:
            out.append(f"--{name}={value}")
    return out


def set_args(items: Iterable[str]) -> list:
    """``NAME=VALUE`` items (a script's repeatable --set) as flags ``--NAME=VALUE``."""
    return ["--" + item.lstrip("-") for item in items]


def config_from_flagfiles(*flagfiles: str, overrides: Optional[Mapping[str, object]] = None,
                          args: Sequence[str] = ()) -> Config:
    """The Config that ``python -m sagan_jax.main --flagfile=F1 --flagfile=F2 ... OVERRIDES
    ARGS`` would build: flagfiles first, then ``overrides`` (see ``flag_args``), then ``args``
    (command-line strings such as ``--epochs=2``); later settings win. Relative paths, also of
    flagfiles nested in flagfiles, are relative to the working directory (absl's rule).
    Raises FlagError with one line naming the problem."""
    from sagan_jax import configs

    # a missing path that names a packaged flagfile (quickstart.cfg) is that file
    flagfiles = tuple(configs.resolve(f) or f for f in flagfiles)
    argv = [f"--flagfile={f}" for f in flagfiles] + flag_args(overrides) + list(args)
    fv = define_config_flags(flags.FlagValues())
    where = ", ".join(short_path(f) for f in flagfiles)
    where = f" (flags from {where}{' and the command line' if len(argv) > len(flagfiles) else ''})" \
        if flagfiles else ""
    try:
        rest = fv(["experiments", *argv])
    except flags.Error as e:
        raise FlagError(f"{' '.join(str(e).split())}{where}") from None
    if len(rest) > 1:
        raise FlagError(f"unexpected arguments {rest[1:]}{where}; flags look like --name=value")
    try:
        return Config(**{f.name: fv[f.name].value for f in dataclasses.fields(Config)})
    except ConfigError as e:
        raise FlagError(f"{e}{where}") from None


def short_path(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def fail(message: str, prog: Optional[str] = None) -> typing.NoReturn:
    """One line on stderr, exit status 2 (as ``python -m sagan_jax.main`` does)."""
    prog = prog or os.path.basename(sys.argv[0]).removesuffix(".py")
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


@contextlib.contextmanager
def package_errors(prog: Optional[str] = None):
    """Inside: an error a user's input causes in the package (a workdir trained with other
    flags, bad data, ...; sagan_jax.main.USER_ERRORS) ends the script with one line and exit
    status 2, as the CLI does; anything else propagates."""
    try:
        yield
    except Exception as e:
        from sagan_jax.main import USER_ERRORS

        if isinstance(e, USER_ERRORS):
            fail(str(e), prog)
        raise


def int_list(text: str) -> list:
    """argparse type of a comma-separated list of integers ("0,1,2"); a bad one is argparse's
    one-line usage error."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers (e.g. 0,1,2)") from None


def positive_int(text: str) -> int:
    """argparse type of a count (a batch size, steps, repeats, epochs): an integer >= 1; anything
    else is argparse's one-line usage error, given before any wait for a quiet machine."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer (e.g. 3)")
    return value


def run_script(main) -> None:
    """A script's entry point (``if __name__ == "__main__": common.run_script(main)``): main()
    with the package's user errors (bad data, a workdir trained with other flags, a bad flag
    combination: sagan_jax.main.USER_ERRORS) ending it in one line and exit status 2, named
    after the module it was started as. Called in-process, main() raises them unchanged."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    with package_errors(spec.name if spec is not None else None):
        configure_host_devices()
        main()


def configure_host_devices() -> int:
    """One XLA:CPU device per usable core for a script, as the CLI's --host_devices=auto
    (``$SAGAN_JAX_HOST_DEVICES`` = N or auto overrides); a batch that does not split evenly
    trains on fewer (sagan_jax.training.step.make_mesh). Before anything starts JAX."""
    from sagan_jax.devices import configure

    return configure(os.environ.get("SAGAN_JAX_HOST_DEVICES", "auto"))


# --- finished runs -----------------------------------------------------------------------------
def done_metrics(workdir: str, epochs: int, name: str = "metrics.json") -> Optional[dict]:
    """WORKDIR/metrics.json if it records a finished run of ``epochs`` epochs, else None (no
    run, or one stopped half-way, which the training loop resumes)."""
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        metrics = json.load(f)
    return metrics if metrics.get("last_epoch") == epochs else None


def no_result(metrics: dict, epochs: int) -> Optional[str]:
    """Why a run's metrics are not a result (None when they are): it diverged (an earlier
    scored epoch's AUC is not its result), or it stopped short of its ``epochs``."""
    diverged = metrics.get("diverged")
    if diverged:
        return f"diverged ({diverged.get('what')} at step {diverged.get('step')})"
    if "auc" not in metrics or metrics.get("last_epoch") != epochs:
        return f"stopped after epoch {metrics.get('last_epoch')} of {epochs}"
    return None


def command_line(module: str, argv: Optional[Sequence[str]] = None) -> str:
    """How this script was run, as ``python -m experiments.NAME ARGS``."""
    argv = sys.argv[1:] if argv is None else argv
    return " ".join(["python", "-m", module, *argv])
