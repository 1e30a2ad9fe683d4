"""The machine a figure was measured on, and the benchmarks' guard against a loaded one.

- ``machine_header``: CPU, cores, Python and package versions, date, git commit, and (given a
  ``LoadReport``) the machine's load during the run.
- ``LoadMonitor`` / ``LoadReport``: load average before and after, and the CPU time other
  processes took while the script ran (/proc/stat against this process's own CPU time).
- ``wait_for_quiet``, ``add_load_arguments``: a benchmark's wait for a quiet machine.
- ``write_benchmark_section`` / ``publish``: quiet-machine figures go to the docs section
  NAME, figures from a loaded machine are refused unless ``allow_loaded``, and then go,
  labelled, to the section NAME_loaded.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Optional, Sequence

from experiments.common import ROOT, short_path
from experiments.sections import replace_section

DEFAULT_PACKAGES = ("jax", "jaxlib", "flax", "torch")


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


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (getrusage's ru_maxrss: KiB on
    Linux): what the benchmarks report as peak memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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


def add_output_arguments(parser: argparse.ArgumentParser, doc: str) -> None:
    """A docs-writing benchmark's --no-write, --doc (default ``doc``) and --json options, the
    ones :func:`publish` reads."""
    parser.add_argument("--no-write", dest="write", action="store_false",
                        help=f"print the table only (default: also write {short_path(doc)})")
    parser.add_argument("--doc", default=doc, help="the Markdown file to write")
    parser.add_argument("--json", default="", help="also write the raw figures to this JSON file")
    parser.add_argument("--section", default="", metavar="NAME",
                        help="write the table to this marked section of --doc instead of the "
                             "benchmark's own (e.g. a second machine's table beside the "
                             "headline one); a new name is appended at the end of the file")


def publish(args, name: str, text: str, load: LoadReport, raw=None) -> None:
    """A benchmark's ending: print ``text``; with ``args.json`` write ``raw`` and the load
    there; with ``args.write`` put ``text`` in section NAME of ``args.doc`` through the load
    guard (write_benchmark_section), exiting with status 3 when it refuses. ``args.section``,
    where given, replaces NAME."""
    print(text)
    name = getattr(args, "section", "") or name
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
        replace_section(path, name, body, heading=f"### {name}")
        return name
    if not allow_loaded:
        print(f"not writing {short_path(path)}: the machine was loaded (1-min load average "
              f"{load.load_before[0]:.2f} before the run; other processes used "
              f"{load.others_cores if load.others_cores is not None else float('nan'):.2f} "
              f"CPUs during it; threshold {load.threshold:g}). Rerun on a quiet machine, or "
              "pass --allow_loaded to record these figures as loaded.", file=sys.stderr)
        return None
    label = ("**Loaded-machine figures** (written with --allow_loaded; not comparable with the "
             "quiet-machine table).")
    replace_section(path, f"{name}_loaded", f"{label}\n\n{body}")
    return f"{name}_loaded"
