"""--mode=score's output: the CSV, one anomaly-map PNG per scored image and the overlays
(formats: sagan_jax.inference); the scoring itself is sagan_jax.api.Detector's."""
from __future__ import annotations

import csv
import logging
import os
import shutil

from sagan_jax import overlays, plots
from sagan_jax.api import Detector
from sagan_jax.data.base import DataError
from sagan_jax.data.images import decode_images
from sagan_jax.inference import CSV_COLUMNS, input_files, map_file_name, output_paths

log = logging.getLogger("sagan_jax")


# ---- scoring --------------------------------------------------------------------------------
def score_new_images(cfg) -> dict:
    """--mode=score: the CSV, one map PNG per scored image and up to --max_pictures overlays
    (sagan_jax.overlays) in ``<csv name>_overlays/``; the scoring is sagan_jax.api's."""
    cfg = cfg.replace(eval_batch_stats=False)  # per-image scores: running averages only
    out_csv, map_dir = output_paths(cfg)
    files, unfollowed = input_files(cfg.input)
    det = Detector(cfg)
    calib, vmax = det.calibration, det.map_scale
    decoded = decode_images(files, cfg.isize, on_bad_image=cfg.on_bad_image,
                            on_small_image=cfg.on_small_image, resize=cfg.resize)
    if len(decoded.images) == 0:
        raise DataError(f"--input={cfg.input!r}: no readable image ({len(decoded.skipped)} skipped)")
    res = det.score_arrays(decoded.images, tuple(decoded.paths), tuple(decoded.skipped))
    raw, normalised, abnormal, r, lat, maps = (res.scores, res.normalised, res.abnormal, res.r,
                                               res.lat, res.maps)
    base = cfg.input if os.path.isdir(cfg.input) else os.path.dirname(cfg.input)
    kept = {path: i for i, path in enumerate(decoded.paths)}
    skipped = dict(decoded.skipped)
    rows = []
    overlay_dir = os.path.splitext(os.path.abspath(out_csv))[0] + "_overlays"
    # The maps go to a fresh folder that replaces the old one only once complete: no map of
    # an earlier --input ever remains beside this one's.
    new_maps, tmp = f"{map_dir}.tmp{os.getpid()}", f"{out_csv}.tmp{os.getpid()}"
    try:
        shutil.rmtree(new_maps, ignore_errors=True)
        os.makedirs(new_maps)
        for path in files:
            if path in kept:
                i = kept[path]
                name = map_file_name(os.path.relpath(path, base))
                map_path = os.path.join(map_dir, name)
                plots.save_map_png(maps[i], os.path.join(new_maps, name), vmax)
                rows.append([path, f"{raw[i]:.8g}", f"{normalised[i]:.8g}",
                             "abnormal" if abnormal[i] else "normal", f"{r[i]:.8g}",
                             f"{lat[i]:.8g}", map_path, ""])
            else:
                reason = skipped.get(path, "not decoded")
                if reason.startswith(f"{path}: "):
                    reason = reason[len(path) + 2:]
                rows.append([path, "", "", "skipped", "", "", "", reason])
        rows += [[path, "", "", "skipped", "", "", "", why] for path, why in unfollowed]
        drawn = overlays.write_overlays(
            overlay_dir, decoded.images, maps, raw, abnormal, vmax,
            [map_file_name(os.path.relpath(p, base)) for p in decoded.paths],
            max_pictures=cfg.max_pictures)
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            w.writerows(rows)
        overlays.replace_folder(new_maps, map_dir)  # both complete: the maps, then the CSV
        os.replace(tmp, out_csv)
    except OSError as e:
        raise DataError(f"cannot write the scores to {out_csv!r} ({e.strerror or e}); pass "
                        "--output=FILE.csv in a folder you can write") from None
    finally:  # an error or Ctrl-C leaves no temporary file or folder behind
        shutil.rmtree(new_maps, ignore_errors=True)
        if os.path.exists(tmp):
            os.remove(tmp)
    for path, why in unfollowed:
        log.warning("--input: %s: %s", path, why)
    log.info("scored %d images (%d skipped): %d abnormal at threshold %.6g (fpr %.3f on %s)",
             len(raw), len(decoded.skipped) + len(unfollowed), int(abnormal.sum()),
             calib["threshold"],
             calib["fpr"], calib["source"])
    return {"csv": out_csv, "maps": map_dir, "n": int(len(raw)), "abnormal": int(abnormal.sum()),
            "skipped": len(decoded.skipped) + len(unfollowed), "threshold": calib["threshold"],
            "map_scale": vmax, "overlays": drawn}
