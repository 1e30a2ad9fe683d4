"""Train the quickstart configuration with each digit held out as the anomaly, one after the
other, and write a table of the last-epoch AUCs to docs/results.md.

    python -m experiments.results.digits_sweep [--digits 0,1,...] [--extra "--epochs=3"]

Every digit uses the same flags (experiments/quickstart.cfg), so the table shows how much the
result depends on which digit is abnormal; the quickstart's own digit is one row of it. Each
run is `python -m sagan_jax.main` in its own process; finished runs are read back, so an
interrupted sweep resumes.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys

from experiments import common, machine, sections

MODULE = "experiments.results.digits_sweep"


def run_flags(args, digit: str) -> list:
    return ["--flagfile=" + common.flagfile("quickstart.cfg"), f"--abnormal_class={digit}",
            f"--workdir={os.path.join(args.out, f'digit{digit}')}", "--noprogress", "--noplots",
            *shlex.split(args.extra)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--extra", default="", help="extra flags for every run")
    ap.add_argument("--out", default=os.path.join("workdirs", "digits_sweep"))
    ap.add_argument("--doc", default=common.RESULTS_MD, help="the Markdown file to write")
    args = ap.parse_args(argv)
    digits = [d.strip() for d in args.digits.split(",") if d.strip()]
    if not digits or len(set(digits)) < len(digits):
        ap.error(f"--digits={args.digits}: give distinct digits, e.g. --digits 0,1,2")
    try:  # every run's flags, checked before the first run starts
        cfgs = {d: common.config_from_flagfiles(args=run_flags(args, d)) for d in digits}
    except common.FlagError as e:
        common.fail(str(e))
    several = next((c for c in cfgs.values() if c.seeds.strip() or c.abnormal_classes.strip()),
                   None)
    if several is not None:
        ap.error("--extra sets --seeds or --abnormal_classes: this sweep trains one run per "
                 "digit (for several seeds per digit: python -m experiments.table2 "
                 "--dataset=digits --seeds=...)")
    monitor = machine.LoadMonitor()
    rows, failed = [], []
    for digit, cfg in cfgs.items():
        m = common.done_metrics(cfg.workdir, cfg.epochs)
        if m is None:
            cmd = [sys.executable, "-m", "sagan_jax.main", *run_flags(args, digit)]
            print(" ".join(cmd), flush=True)
            rc = subprocess.run(cmd).returncode
            m = common.done_metrics(cfg.workdir, cfg.epochs)
            if m is None or m.get("diverged"):  # no result: named under the table
                path = os.path.join(cfg.workdir, "metrics.json")
                stopped = {}
                if os.path.exists(path):
                    with open(path) as f:
                        stopped = json.load(f)
                why = (common.no_result(stopped, cfg.epochs) if stopped.get("diverged") else
                       f"the run exited with status {rc} before its {cfg.epochs} epochs")
                failed.append((digit, why))
                print(f"digit {digit}: no result, {why}", flush=True)
                write_table(args, rows, monitor, failed, len(cfgs))
                continue
        rows.append((digit, m))
        print(f"digit {digit}: AUC {m['auc']:.4f} ({m['wall_time_s']:.0f} s)", flush=True)
        # after every digit, so a partial sweep is recorded too (and says so)
        write_table(args, rows, monitor, failed, len(cfgs))


def write_table(args, rows, monitor, failed=(), n_digits=None):
    lines = [
        f"Command: `{common.command_line(MODULE)}` "
        f"(each run: `experiments/quickstart.cfg` with `--abnormal_class=D`).",
        machine.machine_header(monitor.report(), packages=("jax", "jaxlib", "flax")),
        "Result = last-epoch AUC (no selection). R and L columns: AUC of each score term alone.",
        "",
        "| abnormal digit | AUC | AP | AUC of R alone | AUC of L alone | best epoch AUC (test-selected) | wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for digit, m in rows:
        lines.append(
            f"| {digit} | {m['auc']:.4f} | {m['ap']:.4f} | {m['auc_r_alone']:.4f} | "
            f"{m['auc_lat_alone']:.4f} | {m['best_epoch_on_test_set']['auc']:.4f} | "
            f"{m['wall_time_s']:.0f} |")
    aucs = [m["auc"] for _, m in rows]
    n_digits = n_digits or len(rows)
    if aucs:
        label = "mean" if len(aucs) == n_digits else f"mean of {len(aucs)} of {n_digits} digits"
        lines.append(f"| {label} | {sum(aucs) / len(aucs):.4f} | | | | | |")
    if failed:
        lines += ["", "No result (not in the mean): " + "; ".join(
            f"digit {d}: {why}" for d, why in failed) + "."]
    if len(rows) + len(failed) < n_digits:
        lines += ["", f"PARTIAL: {n_digits - len(rows) - len(failed)} of {n_digits} digits "
                  "not run yet (the same command resumes the sweep)."]
    sections.replace_section(args.doc, "digits_sweep",
                           "\n".join(lines), heading="## Embedded digits: every digit as the anomaly")


if __name__ == "__main__":
    common.run_script(main)
