"""Plumbing shared by the scripts in experiments/ (run them as ``python -m experiments.NAME``
from the repository root).

- ``config_from_flagfiles``: flagfiles + flags -> ``sagan_jax.config.Config``, parsed by absl
  itself (a fresh ``FlagValues`` holding one flag per Config field), so flagfiles mean here
  exactly what they mean to ``python -m sagan_jax.main``: nested ``--flagfile=``, comments,
  ``--noflag``, last value wins, absl's errors.
- ``done_metrics``: a run's metrics.json if that run finished all its epochs (resuming sweeps).
- ``replace_section``: rewrite one ``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->`` section of
  a Markdown file, nothing else.
- ``machine_header``: CPU, cores, Python and package versions, date, git commit, and (given a
  ``LoadReport``) the machine's load during the run.
- ``LoadMonitor`` / ``LoadReport``: load average before and after, and the CPU time other
  processes took while the script ran (/proc/stat against this process's own CPU time).
- ``write_benchmark_section``: the benchmarks' guard: quiet-machine figures go to the section
  NAME, figures from a loaded machine are refused unless ``allow_loaded``, and then go,
  labelled, to the section NAME_loaded.

Nothing here imports JAX, TensorFlow or PyTorch, so a script's ``--help`` is quick.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
import typing
from typing import Iterable, Mapping, Optional, Sequence

from absl import flags

from sagan_jax.config import Config, ConfigError

EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(EXPERIMENTS)
DOCS = os.path.join(ROOT, "docs")
BENCHMARKS_MD = os.path.join(DOCS, "benchmarks.md")
RESULTS_MD = os.path.join(DOCS, "results.md")
DEFAULT_PACKAGES = ("jax", "jaxlib", "flax", "torch")


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
    where = ", ".join(_short_path(f) for f in flagfiles)
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


def _short_path(path: str) -> str:
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


# --- Markdown sections -------------------------------------------------------------------------
def markers(name: str) -> tuple:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_section(path: str, name: str, body: str, heading: Optional[str] = None) -> None:
    """Put ``body`` between the ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers of
    the Markdown file ``path``, leaving every other byte of the file as it was. If the markers
    are missing: with ``heading``, append ``heading`` and a new marked section at the end;
    without, raise ValueError."""
    begin, end = markers(name)
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    block = f"{begin}\n{body.strip(chr(10))}\n{end}"
    i = text.find(begin)
    j = text.find(end, i + len(begin)) if i >= 0 else -1
    if i >= 0 and j >= 0:
        text = text[:i] + block + text[j + len(end):]
    elif heading is not None:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + f"{heading}\n{block}\n"
    else:
        raise ValueError(f"{path} lacks the section markers {begin} ... {end}")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_section(path: str, name: str) -> Optional[str]:
    """The body of section NAME of ``path`` (None if it has no such section)."""
    begin, end = markers(name)
    with open(path) as f:
        text = f.read()
    i = text.find(begin)
    j = text.find(end, i + len(begin)) if i >= 0 else -1
    return text[i + len(begin):j].strip("\n") if i >= 0 and j >= 0 else None


# --- machine, versions, commit -----------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str:
    for dist in (name, f"{name}-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    module = sys.modules.get(name.replace("-", "_"))
    return getattr(module, "__version__", "not installed")


def git_commit() -> str:
    """Short hash of HEAD, '+ uncommitted changes' when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (" + uncommitted changes" if head and dirty else "")


def machine_header(load: Optional["LoadReport"] = None,
                   packages: Sequence[str] = DEFAULT_PACKAGES) -> str:
    """One paragraph: date, CPU, cores, OS, Python and package versions, commit, and the
    load during the run when ``load`` is given."""
    now = datetime.datetime.now(datetime.timezone.utc)
    started = f"{load.started:%Y-%m-%d %H:%M}-{now:%H:%M} UTC" if load else \
        f"{now:%Y-%m-%d %H:%M} UTC"
    text = (f"Run {started} on {cpu_model()}, {os.cpu_count()} logical CPUs, "
            f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
            + ", ".join(f"{p} {package_version(p)}" for p in packages)
            + f"{jax_devices()}; commit {git_commit()}.")
    return text + (" " + load.describe() if load else "")


def jax_devices() -> str:
    """'; JAX on cpu (1 device)' when this process has imported JAX, else ''."""
    jax = sys.modules.get("jax")
    if jax is None:
        return ""
    try:
        n = jax.device_count()
        return f"; JAX on {jax.default_backend()} ({n} device{'s' if n != 1 else ''})"
    except Exception:  # noqa: BLE001 - a header must not fail the run
        return ""


# --- machine load ------------------------------------------------------------------------------
def _busy_cpu_seconds() -> Optional[tuple]:
    """(busy CPU seconds of the whole machine since boot, number of CPUs) from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    total = [int(v) for v in lines[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user/nice)
    busy = sum(total[:3]) + sum(total[5:8])
    ncpu = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return busy / os.sysconf("SC_CLK_TCK"), ncpu


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """How busy the machine was during a run. ``others_cores``: the average number of CPUs
    that other processes kept busy (None without /proc/stat); ``own_cores`` likewise for this
    process and its finished children."""
    cores: int
    started: datetime.datetime
    wall_s: float
    load_before: tuple
    load_after: tuple
    others_cores: Optional[float]
    own_cores: float

    @property
    def threshold(self) -> float:
        return self.cores / 2

    @property
    def loaded(self) -> bool:
        """The 1-minute load average before the run, or the CPUs other processes used during
        it, above half the cores."""
        return max(self.load_before[0], self.others_cores or 0.0) > self.threshold

    def describe(self) -> str:
        others = ("other processes' CPU use not measured (no /proc/stat)"
                  if self.others_cores is None else
                  f"other processes kept {self.others_cores:.2f} of the {self.cores} CPUs busy "
                  f"({100 * self.others_cores / self.cores:.0f}%) during the "
                  f"{_fmt_duration(self.wall_s)} run (this run: {self.own_cores:.2f})")
        verdict = (f"**Loaded machine** (above {self.threshold:g}, half the cores): timings "
                   "are slower than a quiet machine's and not comparable with them"
                   if self.loaded else
                   f"Quiet machine (at most {self.threshold:g}, half the cores)")
        return (f"Load average (1/5/15 min) {_fmt_load(self.load_before)} before, "
                f"{_fmt_load(self.load_after)} after (includes this run); {others}. "
                f"{verdict}.")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(started=f"{self.started:%Y-%m-%d %H:%M:%S} UTC", loaded=self.loaded)
        return d


def _fmt_duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _fmt_load(load: Sequence[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


class LoadMonitor:
    """Starts measuring when created; ``report()`` gives the load from then until now (call
    it after the run's worker processes have been waited for, so their CPU time counts as
    this run's, not as other processes')."""

    def __init__(self):
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.t0 = time.monotonic()
        self.load_before = os.getloadavg()
        self.machine0 = _busy_cpu_seconds()
        self.own0 = _own_cpu_seconds()

    def report(self) -> LoadReport:
        wall = max(time.monotonic() - self.t0, 1e-9)
        own = (_own_cpu_seconds() - self.own0) / wall
        machine = _busy_cpu_seconds()
        others = None
        if self.machine0 is not None and machine is not None:
            others = max(0.0, (machine[0] - self.machine0[0]) / wall - own)
        return LoadReport(cores=os.cpu_count() or 1, started=self.started, wall_s=wall,
                          load_before=tuple(self.load_before), load_after=tuple(os.getloadavg()),
                          others_cores=others, own_cores=own)


def wait_for_quiet(max_wait_s: float, poll_s: float = 10.0) -> float:
    """Wait up to ``max_wait_s`` for the 1-minute load average to fall to half the cores (a
    previous benchmark's load takes a minute or two to decay). Returns the load average."""
    limit = (os.cpu_count() or 1) / 2
    deadline = time.monotonic() + max_wait_s
    load = os.getloadavg()[0]
    if load > limit and max_wait_s > 0:
        print(f"load average {load:.2f} > {limit:g}: waiting up to {max_wait_s:.0f} s for it "
              "to fall", file=sys.stderr, flush=True)
    while load > limit and time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        load = os.getloadavg()[0]
    if load > limit:
        print(f"warning: load average {load:.2f} is above half the cores ({limit:g}): the "
              "figures will be labelled as loaded (and written to the docs only with "
              "--allow_loaded)", file=sys.stderr, flush=True)
    return load


def add_load_arguments(parser: argparse.ArgumentParser, writes_docs: bool = True) -> None:
    """The benchmarks' --wait_quiet option, and --allow_loaded for those that write docs."""
    if writes_docs:
        parser.add_argument("--allow_loaded", action="store_true",
                            help="write figures measured on a loaded machine (load above half "
                                 "the cores) to the docs; they go, labelled, to the 'loaded' "
                                 "section")
    parser.add_argument("--wait_quiet", type=float, default=120.0, metavar="SECONDS",
                        help="before starting, wait up to this long for the 1-minute load "
                             "average to fall to half the cores (0 = start at once)")


def publish(args, name: str, text: str, load: LoadReport, raw=None) -> None:
    """A benchmark's ending: print ``text``; with ``args.json`` write ``raw`` and the load
    there; with ``args.write`` put ``text`` in section NAME of ``args.doc`` through the load
    guard (write_benchmark_section), exiting with status 3 when it refuses."""
    print(text)
    if raw is not None and getattr(args, "json", ""):
        with open(args.json, "w") as f:
            json.dump({**raw, "load": load.to_dict()}, f, indent=1, default=str)
    if args.write and not write_benchmark_section(args.doc, name, text, load,
                                                  args.allow_loaded):
        sys.exit(3)


def write_benchmark_section(path: str, name: str, body: str, load: LoadReport,
                            allow_loaded: bool = False) -> Optional[str]:
    """The benchmarks' guard. On a quiet machine, write ``body`` (which should include
    ``load.describe()``) to section NAME of ``path``; on a loaded one, refuse unless
    ``allow_loaded``, and then write it with a 'loaded' label to section NAME_loaded. Returns
    the section written, or None when refused (with the reason on stderr)."""
    if not load.loaded:
        replace_section(path, name, body)
        return name
    if not allow_loaded:
        print(f"not writing {_short_path(path)}: the machine was loaded (1-min load average "
              f"{load.load_before[0]:.2f} before the run; other processes used "
              f"{load.others_cores if load.others_cores is not None else float('nan'):.2f} "
              f"CPUs during it; threshold {load.threshold:g}). Rerun on a quiet machine, or "
              "pass --allow_loaded to record these figures as loaded.", file=sys.stderr)
        return None
    label = ("**Loaded-machine figures** (written with --allow_loaded; not comparable with the "
             "quiet-machine table).")
    replace_section(path, f"{name}_loaded", f"{label}\n\n{body}")
    return f"{name}_loaded"


def command_line(module: str, argv: Optional[Sequence[str]] = None) -> str:
    """How this script was run, as ``python -m experiments.NAME ARGS``."""
    argv = sys.argv[1:] if argv is None else argv
    return " ".join(["python", "-m", module, *argv])
