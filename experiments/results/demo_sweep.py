"""The measured sweep behind the quickstart's flags (`make demo`): SAGAN on the embedded digits,
three seeds per setting trained together as one program (--seeds), the last-epoch test AUC at
several score weights, beside the PCA and kNN baselines on the same splits; the table goes to
the section `demo_sweep` of docs/results.md.

    python -m experiments.results.demo_sweep [--digits 0,1] [--isize 16] [--ngf 16,32] [--kpl 1,2] [--epochs 3,6]
        [--lambdas 0.2,0.5,0.9] [--seeds 0,1,2] [--out workdirs/demo_sweep] [--set FLAG=VALUE]

Grid: abnormal digit x generator width (--ngf) x DSC channel multiplier (--kernels_per_layer);
for each, the epochs in increasing order, the longer ones by resuming the shorter run's
workdir (the learning rate is constant for the first --niter = 15 epochs, the data order and
randomness are functions of (seed, epoch, step), so 3 + 3 epochs equal 6 at once). The score
weight lambda (A = lambda R + (1 - lambda) L) does not change training: after each stage every
run's checkpoint is re-scored on its test set once and the AUC computed for each lambda (the
lambda the runs were trained with is checked against their metrics.json). Seed s also draws
the digits' train/test split, so the baselines run with the same --seeds and see the same
splits. Finished stages are kept in OUT/sweep.json: rerunning resumes, and only rebuilds the
table when everything is done.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
import time

from experiments import common, machine, sections

MODULE = "experiments.results.demo_sweep"
SECTION = "demo_sweep"
HEADING = "## Quickstart flags: measured sweep"
# The quickstart's fixed settings; everything swept comes after them. The fixed DSC rule
# (--nodsc_autotune) keeps every machine on the same implementations (their rounding differs).
BASE = ["--flagfile=" + common.flagfile("model_sagan.cfg"), "--mode=train", "--dataset=digits",
        "--batch_size=64", "--eval_every=0", "--noplots", "--noprogress", "--notensorboard",
        "--nodsc_autotune"]


def csv(kind):
    return lambda s: [kind(v) for v in s.split(",") if v.strip()]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--digits", type=csv(str), default=["0", "1"])
    ap.add_argument("--isize", type=int, default=16,
                    help="image size (the digits are 8x8 upsampled; 16 is 4x cheaper than 32)")
    ap.add_argument("--ngf", type=common.int_list, default=[16, 32])
    ap.add_argument("--kpl", type=common.int_list, default=[1, 2], help="--kernels_per_layer values")
    ap.add_argument("--epochs", type=common.int_list, default=[3, 6])
    ap.add_argument("--lambdas", type=csv(float), default=[0.2, 0.5, 0.9])
    ap.add_argument("--seeds", type=common.int_list, default=[0, 1, 2],
                    help="trained together as one program per setting (sagan_jax --seeds)")
    ap.add_argument("--out", default=os.path.join("workdirs", "demo_sweep"))
    ap.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                    help="extra flag for every SAGAN run (repeatable)")
    ap.add_argument("--doc", default=common.RESULTS_MD)
    ap.add_argument("--report_only", action="store_true",
                    help="rebuild the table from OUT/sweep.json; train nothing")
    args = ap.parse_args(argv)
    for name in ("digits", "ngf", "kpl", "epochs", "lambdas", "seeds"):
        if not getattr(args, name):
            ap.error(f"--{name}: give at least one value")
    args.seeds = ",".join(str(s) for s in args.seeds)  # as sagan_jax's --seeds takes them
    bad = [lam for lam in args.lambdas if not 0.0 <= lam <= 1.0]  # NaN fails this too
    if bad or len(set(args.lambdas)) < len(args.lambdas):
        ap.error(f"--lambdas={','.join(f'{lam:g}' for lam in args.lambdas)}: give distinct "
                 "score weights in [0, 1], e.g. --lambdas 0.2,0.5,0.9")
    return args


def settings(args) -> dict:
    """What a stored result depends on beyond its key (sweep.json's keys name the digit and
    sizes only): the seeds trained together, the extra flags, the lambdas re-scored."""
    return {"seeds": args.seeds, "set": sorted(args.set),
            "lambdas": [f"{lam:g}" for lam in args.lambdas]}


def stored_settings(state: dict) -> dict:
    """sweep.json's settings; a file written before they were stored: read off its runs."""
    if "settings" in state:
        return state["settings"]
    runs = next(iter(state["sagan"].values()), {})
    return {"seeds": ",".join(str(r["seed"]) for r in runs.values()), "set": [],
            "lambdas": list(next(iter(runs.values()), {}).get("auc", {}))}


def check_settings(args, state: dict, path: str) -> None:
    """A sweep.json written with other seeds, --set flags or fewer lambdas would be reused as
    if it held this sweep's results: refused, one line."""
    if not state["sagan"] and "settings" not in state:
        return
    old, new = stored_settings(state), settings(args)
    same_seeds = sorted(old["seeds"].split(",")) == sorted(new["seeds"].split(","))
    wrong = [] if same_seeds else [f"--seeds={old['seeds']} (now {new['seeds']})"]
    if old["set"] != new["set"]:
        wrong.append(f"--set {old['set'] or 'nothing'} (now {new['set'] or 'nothing'})")
    missing = [lam for lam in new["lambdas"] if lam not in old["lambdas"]]
    if missing:
        wrong.append(f"lambdas {','.join(old['lambdas'])} re-scored (now also {','.join(missing)})")
    if wrong:
        common.fail(f"{path} holds a sweep with other settings: {'; '.join(wrong)}; use another "
                    "--out, or the same flags", prog="demo_sweep")


def sagan_flags(args, digit, ngf, kpl, epochs) -> list:
    workdir = os.path.join(args.out, f"isize{args.isize}_digit{digit}_ngf{ngf}_kpl{kpl}")
    return [*BASE, f"--isize={args.isize}", f"--abnormal_class={digit}", f"--ngf={ngf}",
            f"--kernels_per_layer={kpl}", f"--epochs={epochs}", f"--seeds={args.seeds}", f"--workdir={workdir}",
            *common.set_args(args.set)]


def key(args, digit, ngf, kpl, epochs) -> str:
    return f"isize{args.isize}_digit{digit}_ngf{ngf}_kpl{kpl}_e{epochs}"


def run_main(flags) -> float:
    cmd = [sys.executable, "-m", "sagan_jax.main", *flags]
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - t0


def rescore(cfg, lambdas) -> dict:
    """Every run of ``cfg``: its test set re-scored from its newest checkpoint, AUC per lambda,
    of R alone and of L alone, and the wall time its metrics.json records."""
    import numpy as np

    from sagan_jax import scoring
    from sagan_jax.training.checkpoints import restore_for_inference
    from sagan_jax.data import load_data
    from sagan_jax.training.evaluate import score_images
    from sagan_jax.training.runs import plan_runs

    out = {}
    for run in plan_runs(cfg):
        with open(os.path.join(run.cfg.workdir, "metrics.json")) as f:
            m = json.load(f)
        state, _ = restore_for_inference(run.cfg.replace(mode="eval"))
        data = load_data(run.cfg)
        r, lat = (np.asarray(a, np.float64) for a in score_images(run.cfg, state,
                                                                   data.test.images))
        labels = data.test.labels
        auc = {f"{lam:g}": scoring.detection_metrics(
            labels, scoring.minmax(lam * r + (1 - lam) * lat))["auc"] for lam in lambdas}
        check = scoring.detection_metrics(labels, scoring.minmax(
            cfg.score_lambda * r + (1 - cfg.score_lambda) * lat))["auc"]
        if abs(check - m["auc"]) > 1e-3:  # float noise may swap near-tied scores, no more
            raise RuntimeError(f"{run.name}: re-scored AUC {check:.6f} differs from the run's "
                               f"{m['auc']:.6f}")
        out[run.name] = {"seed": run.cfg.seed, "auc": auc, "auc_r": m["auc_r_alone"],
                         "auc_lat": m["auc_lat_alone"], "wall_time_s": m["wall_time_s"],
                         "epochs": m["last_epoch"]}
    return out


def baseline(args, model, digit) -> dict:
    workdir = os.path.join(args.out, f"{model}_isize{args.isize}_digit{digit}")
    flags = [f"--flagfile={common.flagfile(f'model_{model}.cfg')}", "--mode=train",
             "--dataset=digits", f"--isize={args.isize}", f"--abnormal_class={digit}",
             f"--seeds={args.seeds}", f"--workdir={workdir}", "--noplots", "--noprogress",
             "--notensorboard"]
    wall = run_main(flags)
    with open(os.path.join(workdir, "summary.json")) as f:
        row = json.load(f)["per_class"][0]
    return {"auc_mean": row["auc_mean"], "auc_std": row["auc_std"], "wall_s": wall}


def mean_std(values):
    import numpy as np

    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def fmt(values) -> str:
    m, s = mean_std(values)
    return f"{m:.3f} ± {s:.3f}"


def write_table(args, state, monitor):
    lams = [f"{lam:g}" for lam in args.lambdas]
    n_seeds = len(args.seeds.split(","))
    lines = [
        f"Command: `{common.command_line(MODULE)}`",
        "",
        machine.machine_header(monitor.report() if monitor else None,
                              packages=("jax", "jaxlib", "flax", "scikit-learn")),
        "",
        f"Each row: SAGAN trained with seeds {args.seeds} together as one program "
        f"(`--seeds={args.seeds}`), `experiments/model_sagan.cfg` (lr 2e-3, w_con 40) on the "
        f"embedded digits at isize {args.isize}, batch 64, ndf 64, fixed DSC rule "
        "(`--nodsc_autotune`); "
        "the result is the last epoch's test AUC, mean ± std (n-1) over the seeds. The seed "
        "also draws the train/test split; the baselines below use the same seeds, so the same "
        "splits. lambda columns: AUC of the min-max scaled lambda R + (1 - lambda) L of the "
        "same checkpoints (the score weight does not change training). Wall time: the "
        f"{n_seeds}-seed program's, as its metrics.json records it (longer epochs resumed the "
        "shorter run: its time included), on the machine described above.",
        "",
        "| abnormal digit | ngf | kernels_per_layer | epochs | "
        + " | ".join(f"SAGAN AUC, lambda {lam}" for lam in lams)
        + " | R alone | L alone | worst seed (lambda " + lams[0] + ") | wall time (s) |",
        "|---|---:|---:|---:|" + "---:|" * (len(lams) + 4),
    ]
    missing = []
    for digit, ngf, kpl, epochs in itertools.product(args.digits, args.ngf, args.kpl,
                                                     sorted(args.epochs)):
        runs = state["sagan"].get(key(args, digit, ngf, kpl, epochs))
        if runs is None:
            missing.append(f"digit {digit}, ngf {ngf}, kernels_per_layer {kpl}, {epochs} epochs")
            continue
        rs = list(runs.values())
        cells = [fmt([r["auc"][lam] for r in rs]) for lam in lams]
        worst = min(r["auc"][lams[0]] for r in rs)
        wall = max(r["wall_time_s"] for r in rs)
        lines.append(f"| {digit} | {ngf} | {kpl} | {epochs} | " + " | ".join(cells)
                     + f" | {fmt([r['auc_r'] for r in rs])} | {fmt([r['auc_lat'] for r in rs])}"
                     f" | {worst:.3f} | {wall:.0f} |")
    if missing:
        lines += ["", f"Not run yet ({len(missing)} of the sweep's settings; the same command "
                  "trains them): " + "; ".join(missing) + "."]
    lines += ["", "Baselines on the same splits (`--model=pca`, 16 components; `--model=knn`, "
              "k = 1; the same seeds):", "",
              "| abnormal digit | PCA AUC | kNN AUC |", "|---|---:|---:|"]
    for digit in args.digits:
        b = state["baselines"].get(f"isize{args.isize}_digit{digit}")
        if b:
            lines.append(f"| {digit} | {b['pca']['auc_mean']:.3f} ± {b['pca']['auc_std']:.3f} | "
                         f"{b['knn']['auc_mean']:.3f} ± {b['knn']['auc_std']:.3f} |")
    sections.replace_section(args.doc, SECTION, "\n".join(lines), heading=HEADING)


def main(argv=None):
    args = parse_args(argv)
    try:  # every run's flags, checked before the first one starts
        configs = {}
        for digit, ngf, kpl, epochs in itertools.product(args.digits, args.ngf, args.kpl,
                                                         sorted(args.epochs)):
            configs[(digit, ngf, kpl, epochs)] = common.config_from_flagfiles(
                args=sagan_flags(args, digit, ngf, kpl, epochs))
    except common.FlagError as e:
        common.fail(str(e))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "sweep.json")
    state = {"sagan": {}, "baselines": {}}
    if os.path.exists(path):
        with open(path) as f:
            state = json.load(f)
        check_settings(args, state, path)
    if not args.report_only:  # this run's lambdas are a subset of any stored: what all hold
        state["settings"] = settings(args)

    def save():
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(tmp, path)

    monitor = None if args.report_only else machine.LoadMonitor()
    if not args.report_only:
        for digit in args.digits:
            if f"isize{args.isize}_digit{digit}" not in state["baselines"]:
                state["baselines"][f"isize{args.isize}_digit{digit}"] = {
                    m: baseline(args, m, digit) for m in ("pca", "knn")}
                save()
        for (digit, ngf, kpl, epochs), cfg in configs.items():
            k = key(args, digit, ngf, kpl, epochs)
            if k in state["sagan"]:
                continue
            stage_wall = run_main(sagan_flags(args, digit, ngf, kpl, epochs))
            state["sagan"][k] = rescore(cfg, args.lambdas)
            save()
            aucs = [r["auc"][f"{args.lambdas[0]:g}"] for r in state["sagan"][k].values()]
            print(f"{k}: AUC (lambda {args.lambdas[0]:g}) {fmt(aucs)}; this stage "
                  f"{stage_wall:.0f} s", flush=True)
            write_table(args, state, monitor)
    write_table(args, state, monitor)


if __name__ == "__main__":
    common.run_script(main)
