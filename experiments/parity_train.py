"""Training parity (issue 4, item 3): the same protocol trained in JAX and in PyTorch, N seeds.

For every seed, the JAX loop (sagan_jax.training.loop) and the PyTorch reference's loop
(sagan_jax.torch_ref.train) train SAGAN on the same data, batch order, hyperparameters and
evaluation (precise BN, 0.2 R + 0.8 L, last-epoch AUC); frameworks alternate within each seed
(JAX first on even seeds, PyTorch first on odd ones) so that machine load hits both alike. Each
framework draws its own initial weights from the seed. Finished runs are read back, so an
interrupted sweep resumes.

Protocols:
  digits           experiments/quickstart.cfg (embedded digits, digit 0 abnormal, ngf 32,
                   3 epochs)
  cifar10_reduced  experiments/model_sagan.cfg + table2.py's reduced budget (4,000 normal
                   training images, 3 epochs, ngf 32) on the JPEG copy, --abnormal_class; the
                   JAX runs live in table2.py's layout OUT/runs/sagan/CLASS/seedS, so a
                   table2.py sweep with the same --out shares them

Writes OUT/parity_<protocol>.json and, unless --no-write, a section of docs/results.md: per
seed AUC, mean, sample standard deviation, range, and whether the JAX mean lies within the
PyTorch seeds' range.

  python experiments/parity_train.py --protocol digits --seeds 0,1,2 --out workdirs/parity
  python experiments/parity_train.py --protocol cifar10_reduced --abnormal_class bird \\
      --data_root ~/.cache/sagan_jax/cifar10_jpg --out workdirs/table2_reduced
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from experiments import table2  # noqa: E402
from experiments.doc_section import replace_section  # noqa: E402
from sagan_jax.config import Config  # noqa: E402

log = logging.getLogger("parity_train")
PROTOCOLS = ("digits", "cifar10_reduced")


def make_config(args, seed: int) -> Config:
    if args.protocol == "digits":
        flags = table2.read_flagfile(os.path.join(HERE, "quickstart.cfg"))
        flags.update(seed=seed, progress=False, plots=False,
                     workdir=os.path.join(args.out, "jax", "digits", f"seed{seed}"))
        for item in args.set:
            name, _, value = item.partition("=")
            flags[name] = value
        return Config(**{k: table2._convert(k, v) for k, v in flags.items()})
    t2 = argparse.Namespace(budget="reduced", dataset="image_folder", protocol="ganomaly",
                            isize=32, data_root=args.data_root, data_dir=None, set=args.set,
                            out=args.out)
    return table2.run_config(t2, "sagan", args.abnormal_class, seed)


def torch_result_path(args, cfg: Config) -> str:
    name = "digits" if args.protocol == "digits" else os.path.join("sagan", cfg.abnormal_class)
    return os.path.join(args.out, "torch", name, f"seed{cfg.seed}", "metrics.json")


def _read_done(path: str, epochs: int):
    if os.path.exists(path):
        with open(path) as f:
            m = json.load(f)
        if m.get("last_epoch") == epochs:
            return m
    return None


def run_jax(cfg: Config, data) -> dict:
    from sagan_jax.training.loop import train_and_evaluate

    done = _read_done(os.path.join(cfg.workdir, "metrics.json"), cfg.epochs)
    return done if done is not None else train_and_evaluate(cfg, data)


def run_torch(args, cfg: Config, data) -> dict:
    from sagan_jax.torch_ref.train import train_and_evaluate

    path = torch_result_path(args, cfg)
    done = _read_done(path, cfg.epochs)
    if done is not None:
        return done
    m = train_and_evaluate(cfg, data, threads=args.torch_threads)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(m, f, indent=2)
    return m


def run_all(args) -> list:
    from sagan_jax.data import load_data

    rows = []
    for seed in args.seeds:
        cfg = make_config(args, seed)
        data = None
        order = ("jax", "torch") if seed % 2 == 0 else ("torch", "jax")
        for fw in order:
            if fw not in args.frameworks:
                continue
            if data is None:
                data = load_data(cfg)
            t = time.time()
            m = run_jax(cfg, data) if fw == "jax" else run_torch(args, cfg, data)
            log.info("%s seed %d: AUC %.4f (%.0f s in this process)", fw, seed, m["auc"],
                     time.time() - t)
            rows.append({"framework": fw, "seed": seed, "auc": m["auc"], "ap": m["ap"],
                         "auc_r_alone": m["auc_r_alone"], "auc_lat_alone": m["auc_lat_alone"],
                         "wall_time_s": m["wall_time_s"]})
    return rows


def summarise(rows: list) -> dict:
    out = {}
    for fw in ("jax", "torch"):
        aucs = [r["auc"] for r in rows if r["framework"] == fw]
        if aucs:
            out[fw] = {"n": len(aucs), "aucs": aucs, "mean": statistics.fmean(aucs),
                       "std": statistics.stdev(aucs) if len(aucs) > 1 else float("nan"),
                       "min": min(aucs), "max": max(aucs),
                       "median_wall_s": statistics.median(
                           r["wall_time_s"] for r in rows if r["framework"] == fw)}
    if "jax" in out and "torch" in out:
        j, t = out["jax"], out["torch"]
        out["jax_mean_within_torch_range"] = t["min"] <= j["mean"] <= t["max"]
        out["mean_difference"] = j["mean"] - t["mean"]
        out["difference_in_torch_std"] = (j["mean"] - t["mean"]) / t["std"] if t["std"] else None
        se = (j["std"] ** 2 / j["n"] + t["std"] ** 2 / t["n"]) ** 0.5
        out["welch_t"] = (j["mean"] - t["mean"]) / se if se > 0 else None
    return out


def markdown(args, rows: list, summary: dict, command: str, started: str) -> str:
    import jax
    import torch

    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"Command: `{command}`. Run {started} to "
        f"{datetime.datetime.now(datetime.timezone.utc):%H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores; Python {platform.python_version()}, jax {jax.__version__}, "
        f"torch {torch.__version__}. Result = last-epoch AUC (no selection); each framework "
        "draws its own initial weights from the seed; same data, batch order, hyperparameters "
        "and evaluation (precise BN, 0.2 R + 0.8 L).",
        "",
        "| framework | " + " | ".join(f"seed {s}" for s in seeds)
        + " | mean | std (n-1) | range | median wall time (s) |",
        "|---|" + "---:|" * (len(seeds) + 4),
    ]
    for fw, name in (("jax", "JAX (sagan_jax)"), ("torch", "PyTorch (sagan_jax.torch_ref)")):
        if fw not in summary:
            continue
        by_seed = {r["seed"]: r["auc"] for r in rows if r["framework"] == fw}
        s = summary[fw]
        lines.append(f"| {name} | " + " | ".join(
            f"{by_seed[x]:.4f}" if x in by_seed else "" for x in seeds)
            + f" | {s['mean']:.4f} | {s['std']:.4f} | {s['min']:.4f}-{s['max']:.4f} | "
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
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--protocol", choices=PROTOCOLS, default="digits")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--frameworks", default="jax,torch")
    p.add_argument("--abnormal_class", default="bird", help="cifar10_reduced only")
    p.add_argument("--data_root", default="~/.cache/sagan_jax/cifar10_jpg")
    p.add_argument("--out", default="workdirs/parity")
    p.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                   help="override a flag of both frameworks' runs (e.g. eval_every=0; the "
                        "last-epoch result does not depend on it)")
    p.add_argument("--torch_threads", type=int, default=0, help="0 = torch's default")
    p.add_argument("--doc", default=os.path.join(os.path.dirname(HERE), "docs", "results.md"))
    p.add_argument("--no-write", dest="write", action="store_false")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.frameworks = args.frameworks.split(",")
    args.data_root = os.path.expanduser(args.data_root)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"
    command = "python experiments/parity_train.py " + " ".join(argv if argv else sys.argv[1:])
    rows = run_all(args)
    summary = summarise(rows)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"parity_{args.protocol}.json"), "w") as f:
        json.dump({"rows": rows, "summary": summary, "command": command}, f, indent=2)
    body = markdown(args, rows, summary, command, started)
    print(body)
    if args.write:
        name = f"parity_{args.protocol}"
        heading = {"digits": "## Training parity, JAX vs PyTorch: embedded digits (quickstart)",
                   "cifar10_reduced": "## Training parity, JAX vs PyTorch: CIFAR-10 JPEG copy, "
                                      "reduced budget"}[args.protocol]
        replace_section(args.doc, name, heading, body)
    return summary


if __name__ == "__main__":
    main()
