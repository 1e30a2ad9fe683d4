"""How stale are BatchNorm moving averages at evaluation? Trains the quickstart flags with
precise BN off (so the checkpoint holds the training run's moving averages), then scores the
test set three ways and prints the mean reconstruction error R and the AUC of each:
  moving averages | test-batch statistics | recomputed statistics (precise BN, 20 batches)
A finished training run in --workdir is reused.

    python -m experiments.results.bn_staleness [--workdir=workdirs/bn_staleness]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from experiments import common, machine

MODULE = "experiments.results.bn_staleness"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=os.path.join("workdirs", "bn_staleness"))
    args = ap.parse_args()
    flags = ["--flagfile=" + common.flagfile("quickstart.cfg"), f"--workdir={args.workdir}",
             "--bn_recalibration_batches=0", "--noprogress", "--noplots"]
    try:
        cfg = common.config_from_flagfiles(args=flags)
    except common.FlagError as e:
        common.fail(str(e))
    monitor = machine.LoadMonitor()
    if common.done_metrics(cfg.workdir, cfg.epochs) is None:
        subprocess.run([sys.executable, "-m", "sagan_jax.main", *flags], check=True)

    import numpy as np

    from sagan_jax import scoring
    from sagan_jax.training.checkpoints import restore_for_inference
    from sagan_jax.data import load_data
    from sagan_jax.training.bn_recalibration import recalibrate_batchnorm
    from sagan_jax.training.evaluate import score_images

    state, _ = restore_for_inference(cfg)
    data = load_data(cfg)
    y = data.test.labels
    ways = {
        "moving averages (training run)": (cfg, state),
        "test-batch statistics (originals)": (cfg.replace(eval_batch_stats=True), state),
        "recomputed, 20 training batches (default)": (
            cfg, recalibrate_batchnorm(cfg.replace(bn_recalibration_batches=20), state,
                                       data.train.images, 0)),
    }
    rows = []
    for name, (c, s) in ways.items():
        r, lat = score_images(c, s, data.test.images)
        auc = scoring.detection_metrics(y, scoring.anomaly_score(r, lat, 0.2))["auc"]
        rows.append(f"| {name} | {np.mean(r[y == 0]):.4f} | {np.mean(r[y == 1]):.4f} | {auc:.4f} |")
    print(f"Command: `{common.command_line(MODULE)}` (quickstart flags, digit 0 abnormal). "
          + machine.machine_header(monitor.report(), packages=("jax", "jaxlib", "flax")))
    print("| BatchNorm statistics | mean R normal | mean R abnormal | AUC (0.2 R + 0.8 L) |")
    print("|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    common.run_script(main)
