"""The run list of one invocation: ``--seeds`` x ``--abnormal_classes`` (each run is a Config
with its own seed and abnormal class), where each run writes, and how runs are grouped into
programs (``--max_runs_per_program``)."""
from __future__ import annotations

import dataclasses
import os

from sagan_jax.config import Config, ConfigError, classes_of, parse_seeds
from sagan_jax.data.image_folder import scan


@dataclasses.dataclass(frozen=True)
class Run:
    name: str      # "" for a lone run (files at the workdir's top level)
    cfg: Config    # this run's flags: its own seed and abnormal class, its own workdir


def parse_classes(cfg) -> list:
    spec = cfg.abnormal_classes.strip()
    if not spec:
        return [cfg.abnormal_class]
    if spec == "all":
        known = classes_of(cfg.dataset)
        if known is None:
            if cfg.dataset == "image_folder":  # its class folders (layout checked)
                return list(scan(cfg.data_root)["train"])
            raise ConfigError(f"--abnormal_classes=all: --dataset={cfg.dataset} has no classes "
                              "to hold out in turn; omit --abnormal_classes")
        return list(known)
    classes = [c.strip() for c in spec.split(",") if c.strip()]
    if len(set(classes)) != len(classes):
        raise ConfigError(f"--abnormal_classes={spec!r} lists a class twice; list each once")
    return classes


def plan_runs(cfg) -> list:
    """The runs of ``cfg``: one per (abnormal class, seed), classes outer. A single run keeps
    today's layout (the workdir itself); several runs write to WORKDIR/runs/<class>_seed<s>/."""
    seeds, classes = parse_seeds(cfg), parse_classes(cfg)
    one = len(seeds) == 1 and len(classes) == 1
    runs = []
    for c in classes:
        for s in seeds:
            name = "" if one else f"{c}_seed{s}"
            workdir = cfg.workdir if one else os.path.join(cfg.workdir, "runs", name)
            runs.append(Run(name, cfg.replace(seeds="", abnormal_classes="", seed=s,
                                              abnormal_class=c, workdir=workdir)))
    return runs


def program_groups(runs: list, max_runs: int) -> list:
    """Runs split into consecutive groups of at most ``max_runs`` (0 = one group)."""
    if max_runs <= 0 or max_runs >= len(runs):
        return [runs]
    return [runs[i:i + max_runs] for i in range(0, len(runs), max_runs)]


def check_layout(cfg, runs: list) -> None:
    """A workdir holds one run at its top level or a run list under runs/, never both:
    refuse a single run in a workdir that holds a run list (it would be trained beside
    runs/, and score mode on the workdir would use it) and a run list in a workdir that
    holds a single run."""
    top = os.path.isdir(os.path.join(cfg.workdir, "checkpoints"))
    runs_dir = os.path.join(cfg.workdir, "runs")
    listed = sorted(n for n in os.listdir(runs_dir)
                    if os.path.isdir(os.path.join(runs_dir, n, "checkpoints"))) \
        if os.path.isdir(runs_dir) else []
    if len(runs) == 1 and listed:
        raise ConfigError(
            f"--workdir={cfg.workdir!r} holds a run list ({', '.join(listed)} under runs/); one "
            "run would be trained beside it: pass its --seeds/--abnormal_classes again, train "
            f"into --workdir={os.path.join(runs_dir, listed[0])} (one of its runs), or use a "
            "new --workdir")
    if len(runs) > 1 and top:
        raise ConfigError(
            f"--workdir={cfg.workdir!r} holds a single run; a run list of {len(runs)} runs "
            "would be trained beside it under runs/: use a new --workdir for the run list")
