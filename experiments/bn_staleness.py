"""How stale are BatchNorm moving averages at evaluation? Trains the quickstart flags with
precise BN off (so the checkpoint holds the training run's moving averages), then scores the
test set three ways and prints the mean reconstruction error R and the AUC of each:
  moving averages | test-batch statistics | recomputed statistics (precise BN, 20 batches)

    python experiments/bn_staleness.py [--workdir=workdirs/bn_staleness]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default=os.path.join(ROOT, "workdirs", "bn_staleness"))
    args = ap.parse_args()
    flags = ["--flagfile=experiments/quickstart.cfg", f"--workdir={args.workdir}",
             "--bn_recalibration_batches=0", "--noprogress", "--noplots"]
    subprocess.run([sys.executable, "-m", "sagan_jax.main", *flags], cwd=ROOT, check=True)

    import jax
    import numpy as np

    from sagan_jax import scoring
    from sagan_jax.config import Config
    from sagan_jax.data import load_data
    from sagan_jax.training.bn_recalibration import recalibrate_batchnorm
    from sagan_jax.training.evaluate import score_images
    from sagan_jax.training.loop import restore_for_inference

    cfg = Config(ngf=32, epochs=3, workdir=args.workdir, bn_recalibration_batches=0)
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
    print(f"{datetime.date.today()} {platform.machine()} {os.cpu_count()} cores, "
          f"jax {jax.__version__}; quickstart flags, digit 0 abnormal")
    print("| BatchNorm statistics | mean R normal | mean R abnormal | AUC (0.2 R + 0.8 L) |")
    print("|---|---:|---:|---:|")
    for name, (c, s) in ways.items():
        r, lat = score_images(c, s, data.test.images)
        auc = scoring.detection_metrics(y, scoring.anomaly_score(r, lat, 0.2))["auc"]
        print(f"| {name} | {np.mean(r[y == 0]):.4f} | {np.mean(r[y == 1]):.4f} | {auc:.4f} |")


if __name__ == "__main__":
    main()
