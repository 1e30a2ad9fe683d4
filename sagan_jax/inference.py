"""--mode=score: score new images with a trained workdir.

Writes a CSV (path, raw score, normalised score, decision, R, L) and one anomaly map per image
(|x - G(x)| averaged over channels, PNG). The decision threshold and the normalisation range
were fixed at training time on normal images (see training.loop.calibrate) and are read from
the checkpoint, and BatchNorm uses its running averages, so an image's score never depends on
which other images are scored with it.
"""
from __future__ import annotations

import csv
import logging
import os

import numpy as np

from sagan_jax import plots, scoring
from sagan_jax.data.base import DataError
from sagan_jax.data.images import decode_images
from sagan_jax.data.pipeline import to_float_np
from sagan_jax.training.evaluate import final_score, score_images
from sagan_jax.training.loop import restore_for_inference

log = logging.getLogger("sagan_jax")


def input_files(path: str) -> list:
    """The file itself, or every file under the folder (sorted, recursive; hidden files
    ignored). Non-image files are kept so that decoding reports them, never drops them."""
    if not os.path.exists(path):
        raise DataError(f"--input={path!r} does not exist; pass an image file or a folder of images")
    if os.path.isfile(path):
        return [path]
    files = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".")]
    if not files:
        raise DataError(f"--input={path!r} is an empty folder; expected png, jpg or bmp images")
    return files


def score_new_images(cfg) -> dict:
    cfg = cfg.replace(eval_batch_stats=False)  # per-image scores: running averages only
    state, meta = restore_for_inference(cfg)
    calib = meta.get("calibration")
    if calib is None:
        raise DataError(f"the checkpoint in {cfg.workdir} has no decision threshold; "
                        "retrain it with this version of sagan_jax")
    decoded = decode_images(input_files(cfg.input), cfg.isize, on_bad_image=cfg.on_bad_image,
                            on_small_image=cfg.on_small_image)
    if len(decoded.images) == 0:
        raise DataError(f"--input={cfg.input!r}: no readable image ({len(decoded.skipped)} skipped)")
    r, lat, recon = score_images(cfg, state, decoded.images, keep_recon=True)
    raw = final_score(cfg, r, lat)
    span = (calib["max"] - calib["min"]) or 1.0
    normalised = (raw - calib["min"]) / span
    abnormal = raw > calib["threshold"]
    maps = scoring.anomaly_maps(to_float_np(decoded.images), recon)
    out_csv = cfg.output or os.path.join(cfg.workdir, "scores.csv")
    map_dir = os.path.join(os.path.dirname(os.path.abspath(out_csv)), "anomaly_maps")
    os.makedirs(map_dir, exist_ok=True)
    base = cfg.input if os.path.isdir(cfg.input) else os.path.dirname(cfg.input)
    vmax = float(np.quantile(maps, 0.999)) or 1.0
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "raw_score", "normalised_score", "decision", "r", "lat", "map"])
        for i, path in enumerate(decoded.paths):
            rel = os.path.splitext(os.path.relpath(path, base))[0].replace(os.sep, "__")
            map_path = plots.save_map_png(maps[i], os.path.join(map_dir, rel + ".png"), vmax)
            w.writerow([path, f"{raw[i]:.8g}", f"{normalised[i]:.6f}",
                        "abnormal" if abnormal[i] else "normal", f"{r[i]:.8g}", f"{lat[i]:.8g}",
                        map_path])
    log.info("scored %d images (%d skipped): %d abnormal at threshold %.6g (fpr %.3f on %s)",
             len(raw), len(decoded.skipped), int(abnormal.sum()), calib["threshold"],
             calib["fpr"], calib["source"])
    return {"csv": out_csv, "maps": map_dir, "n": int(len(raw)), "abnormal": int(abnormal.sum()),
            "skipped": len(decoded.skipped), "threshold": calib["threshold"]}
