"""Training parity: the same protocol trained in JAX and in PyTorch, N seeds.

For every seed, the JAX loop (sagan_jax.training.loop) and the PyTorch reference's loop
(sagan_jax.torch_ref.train) train SAGAN on the same data, batch order, hyperparameters and
evaluation (precise BN, 0.2 R + 0.8 L, last-epoch AUC). The JAX seeds train together as one
program (the run axis: ``train(cfg)`` with --seeds; each seed's result equals its run alone),
then the PyTorch seeds one after another; a JAX run's wall time is its program's, so the table
divides it by the runs in the program. Each framework draws its own initial weights from the
seed. Finished runs are read back (JAX: also from the earlier one-process-per-seed layout), so
an interrupted sweep resumes.

Protocols:
  digits           experiments/quickstart.cfg (embedded digits, digit 0 abnormal, 3 epochs;
                   the docs' parity figures used its previous ngf 32); JAX runs in OUT/jax/digits/runs/0_seedS (earlier layout:
                   OUT/jax/digits/seedS)
  cifar10_reduced  experiments/model_sagan.cfg + table2.py's reduced budget (4,000 normal
                   training images, 3 epochs, ngf 32) on the JPEG copy, --abnormal_class; the
                   JAX runs live in table2.py's layout OUT/runs/sagan/runs/CLASS_seedS (earlier:
                   OUT/runs/sagan/CLASS/seedS), so a table2.py sweep with the same --out
                   shares them

Writes OUT/parity_<protocol>.json and, unless --no-write, a section of docs/results.md: per
seed AUC, mean, sample standard deviation, range, and whether the JAX mean lies within the
PyTorch seeds' range.

  python -m experiments.results.parity_train --protocol digits --seeds 0,1,2 --out workdirs/parity
  python -m experiments.results.parity_train --protocol cifar10_reduced --abnormal_class bird \\
      --data_root ~/.cache/sagan_jax/cifar10_jpg --out workdirs/table2_reduced
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time

from experiments import common, machine, sections
from experiments.results import table2_record, table2_runner
from sagan_jax.config import Config

MODULE = "experiments.results.parity_train"
log = logging.getLogger("parity_train")
PROTOCOLS = ("digits", "cifar10_reduced")


def _digits_config(args, **overrides) -> Config:
    return common.config_from_flagfiles(
        common.flagfile("quickstart.cfg"),
        overrides=dict(progress=False, plots=False, **overrides), args=common.set_args(args.set))


def _table2_args(args) -> argparse.Namespace:
    return argparse.Namespace(budget="reduced", dataset="image_folder", protocol="ganomaly",
                              isize=32, data_root=args.data_root, data_dir=None, set=args.set,
                              out=args.out)


def digits_workdir(args) -> str:
    return os.path.join(args.out, "jax", "digits")


def make_config(args, seed: int) -> Config:
    """One seed's JAX run (as the training loop derives it from the program's Config)."""
    if args.protocol == "digits":
        cfg = _digits_config(args, seed=seed)
        return cfg.replace(workdir=os.path.join(digits_workdir(args), "runs",
                                                f"{cfg.abnormal_class}_seed{seed}"))
    return table2_runner.run_config(_table2_args(args), "sagan", args.abnormal_class, seed)


def legacy_workdir(args, cfg: Config) -> str:
    """Where a seed's JAX run lived before the run axis (one process per seed)."""
    if args.protocol == "digits":
        return os.path.join(digits_workdir(args), f"seed{cfg.seed}")
    return table2_record.legacy_workdir(args.out, "sagan", cfg.abnormal_class, cfg.seed)


def program_config(args, seeds: list) -> Config:
    """The JAX program that trains ``seeds`` together (a lone seed: its run's Config)."""
    if len(seeds) == 1:
        return make_config(args, seeds[0])
    if args.protocol == "digits":
        return _digits_config(args, seed=seeds[0], seeds=",".join(map(str, seeds)),
                              workdir=digits_workdir(args))
    return table2_runner.program_config(_table2_args(args), "sagan", [args.abnormal_class], seeds)


def torch_workdir(args, cfg: Config) -> str:
    name = "digits" if args.protocol == "digits" else os.path.join("sagan", cfg.abnormal_class)
    return os.path.join(args.out, "torch", name, f"seed{cfg.seed}")


def run_jax(args, seeds: list, cache) -> dict:
    """{seed: metrics} of the JAX runs: finished ones read back (either layout); a run
    stopped half-way in the earlier layout resumes there alone; the others train together."""
    from sagan_jax.training.loop import train

    out, pending = {}, []
    for seed in seeds:
        cfg = make_config(args, seed)
        old = legacy_workdir(args, cfg)
        for workdir in (cfg.workdir, old):
            done = common.done_metrics(workdir, cfg.epochs)
            if done is not None:
                out[seed] = done
                break
        else:
            if os.path.exists(os.path.join(old, "metrics.jsonl")):
                out[seed] = train(cfg.replace(workdir=old), load=cache.load)
            else:
                pending.append(seed)
    if pending:
        t = time.time()
        result = train(program_config(args, pending), load=cache.load)
        results = result["results"] if "per_class" in result else [result]
        out.update(zip(pending, results))
        log.info("jax seeds %s in one program: %.0f s", pending, time.time() - t)
    return out


def run_torch(args, cfg: Config, cache) -> dict:
    from sagan_jax.torch_ref.train import train_and_evaluate

    workdir = torch_workdir(args, cfg)
    done = common.done_metrics(workdir, cfg.epochs)
    if done is not None:
        return done
    m = train_and_evaluate(cfg, cache.load(cfg), threads=args.torch_threads)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(m, f, indent=2)
    return m


def _row(fw: str, seed: int, m: dict) -> dict:
    return {"framework": fw, "seed": seed, "auc": m["auc"], "ap": m["ap"],
            "auc_r_alone": m["auc_r_alone"], "auc_lat_alone": m["auc_lat_alone"],
            "wall_time_s": m["wall_time_s"], "runs_in_program": m.get("runs_in_program", 1)}


def run_all(args) -> tuple:
    """(rows of the finished runs, [(framework, seed, why)] of the runs with no result: a run
    that diverged, even after scored epochs, or stopped short of its epochs is no row)."""
    cache = table2_runner.DataCache()
    rows, failed = [], []
    if "jax" in args.frameworks:
        epochs = make_config(args, args.seeds[0]).epochs
        for seed, m in sorted(run_jax(args, args.seeds, cache).items()):
            why = common.no_result(m, epochs)
            if why:
                log.warning("jax seed %d: no result, %s", seed, why)
                failed.append(("jax", seed, why))
                continue
            log.info("jax seed %d: AUC %.4f", seed, m["auc"])
            rows.append(_row("jax", seed, m))
    if "torch" in args.frameworks:
        for seed in args.seeds:
            cfg = make_config(args, seed)
            t = time.time()
            m = run_torch(args, cfg, cache)
            log.info("torch seed %d: AUC %.4f (%.0f s in this process)", seed, m["auc"],
                     time.time() - t)
            rows.append(_row("torch", seed, m))
    return rows, failed


def summarise(rows: list) -> dict:
    out = {}
    for fw in ("jax", "torch"):
        aucs = [r["auc"] for r in rows if r["framework"] == fw]
        if aucs:
            out[fw] = {"n": len(aucs), "aucs": aucs, "mean": statistics.fmean(aucs),
                       "std": statistics.stdev(aucs) if len(aucs) > 1 else None,  # n = 1
                       "min": min(aucs), "max": max(aucs),
                       # runs trained together record their program's wall time
                       "median_wall_s": statistics.median(
                           r["wall_time_s"] / (r.get("runs_in_program") or 1)
                           for r in rows if r["framework"] == fw),
                       "runs_in_program": max(r.get("runs_in_program") or 1
                                              for r in rows if r["framework"] == fw)}
    if "jax" in out and "torch" in out:
        j, t = out["jax"], out["torch"]
        out["jax_mean_within_torch_range"] = t["min"] <= j["mean"] <= t["max"]
        out["mean_difference"] = j["mean"] - t["mean"]
        out["difference_in_torch_std"] = (j["mean"] - t["mean"]) / t["std"] if t["std"] else None
        se = (None if j["std"] is None or t["std"] is None
              else (j["std"] ** 2 / j["n"] + t["std"] ** 2 / t["n"]) ** 0.5)
        out["welch_t"] = (j["mean"] - t["mean"]) / se if se else None
    return out


def markdown(args, rows: list, summary: dict, command: str, load=None, failed=()) -> str:
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"Command: `{command}`. " + machine.machine_header(load)
        + " Result = last-epoch AUC (no selection); each framework "
        "draws its own initial weights from the seed; same data, batch order, hyperparameters "
        "and evaluation (precise BN, 0.2 R + 0.8 L).",
        "",
        "| framework | " + " | ".join(f"seed {s}" for s in seeds)
        + " | mean | std (n-1) | range | median wall time per run (s) |",
        "|---|" + "---:|" * (len(seeds) + 4),
    ]
    for fw, name in (("jax", "JAX (sagan_jax)"), ("torch", "PyTorch (sagan_jax.torch_ref)")):
        if fw not in summary:
            continue
        by_seed = {r["seed"]: r["auc"] for r in rows if r["framework"] == fw}
        s = summary[fw]
        lines.append(f"| {name} | " + " | ".join(
            f"{by_seed[x]:.4f}" if x in by_seed else "" for x in seeds)
            + f" | {s['mean']:.4f} | {'–' if s['std'] is None else format(s['std'], '.4f')} | "
            f"{s['min']:.4f}-{s['max']:.4f} | "
            f"{s['median_wall_s']:.0f} |")
    if "jax_mean_within_torch_range" in summary:
        ok = summary["jax_mean_within_torch_range"]
        k = summary["difference_in_torch_std"]
        lines += ["", f"JAX mean - PyTorch mean = {summary['mean_difference']:+.4f}"
                  + (f" ({k:+.2f} PyTorch standard deviations)" if k is not None else "")
                  + "; the JAX mean lies " + ("**within**" if ok else "**outside**")
                  + " the PyTorch seeds' range"
                  + (f"; Welch t = {summary['welch_t']:+.2f}" if summary.get("welch_t") else "")
                  + "."]
    if failed:
        lines += ["", "No result (not in the table, not in the means): " + "; ".join(
            f"{fw} seed {seed}: {why}" for fw, seed, why in failed) + "."]
    k = summary.get("jax", {}).get("runs_in_program", 1)
    if k > 1:
        lines += ["", f"JAX trained its seeds together, up to {k} in one program (the run axis); "
                  "its wall time per run is the program's divided by the runs in it."]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--protocol", choices=PROTOCOLS, default="digits")
    p.add_argument("--seeds", type=common.int_list, default="0,1,2")
    p.add_argument("--frameworks", default="jax,torch", help="jax and/or torch")
    p.add_argument("--abnormal_class", default="bird", help="cifar10_reduced only")
    p.add_argument("--data_root", default="~/.cache/sagan_jax/cifar10_jpg")
    p.add_argument("--out", default="workdirs/parity")
    p.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                   help="override a flag of both frameworks' runs (e.g. eval_every=0; the "
                        "last-epoch result does not depend on it)")
    p.add_argument("--torch_threads", type=int, default=0, help="0 = torch's default")
    p.add_argument("--doc", default=common.RESULTS_MD, help="the Markdown file to write")
    p.add_argument("--no-write", dest="write", action="store_false")
    args = p.parse_args(argv)
    args.frameworks = [f for f in args.frameworks.split(",") if f.strip()]
    if not args.frameworks or len(set(args.frameworks)) < len(args.frameworks) or any(
            f not in ("jax", "torch") for f in args.frameworks):
        p.error(f"--frameworks={','.join(args.frameworks)}: give jax and/or torch, each once "
                "(e.g. --frameworks=jax,torch)")
    if not args.seeds:
        p.error("--seeds: give at least one seed, e.g. --seeds=0,1,2")
    if args.torch_threads < 0:
        p.error(f"--torch_threads={args.torch_threads}: give 0 (torch's default) or more")
    args.data_root = os.path.expanduser(args.data_root)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    command = common.command_line(MODULE, argv)
    try:  # every seed's flags, checked before the first run starts
        for seed in args.seeds:
            make_config(args, seed)
        program_config(args, args.seeds)
    except common.FlagError as e:
        common.fail(str(e))
    monitor = machine.LoadMonitor()
    rows, failed = run_all(args)
    summary = summarise(rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"parity_{args.protocol}.json"), "w") as f:
        json.dump({"rows": rows, "failed": failed, "summary": summary, "command": command}, f,
                  indent=2)
    body = markdown(args, rows, summary, command, monitor.report(), failed)
    print(body)
    if args.write:
        name = f"parity_{args.protocol}"
        heading = {"digits": "## Training parity, JAX vs PyTorch: embedded digits (quickstart)",
                   "cifar10_reduced": "## Training parity, JAX vs PyTorch: CIFAR-10 JPEG copy, "
                                      "reduced budget"}[args.protocol]
        sections.replace_section(args.doc, name, body, heading=heading)
    return summary


if __name__ == "__main__":
    common.run_script(main)
