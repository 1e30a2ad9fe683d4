"""--mode=score: score new images with a trained workdir.

``python -m sagan_jax.main --mode=score --workdir=W --input=IMAGE_OR_FOLDER [--output=CSV]``

- **Flags come from the checkpoint** (``score_config``): the model, data and scoring flags the
  run was trained with (network shape, ``--score_lambda``, ``--resize``, ...) are read from
  the newest checkpoint's metadata, so no flagfile or ``--data_root`` is needed. The command
  line sets only what scoring itself needs (SCORE_FLAGS, RUNTIME_FLAGS; ``--anomaly_map`` and
  ``--eval_batch_size`` when passed, else the run's). A model or data flag passed explicitly
  with another value than the run's is refused (one line); harmless training flags
  (checkpoints.RESUMABLE_CHANGES, e.g. ``--epochs``) are ignored.
- **Nothing is written to the workdir** unless the CSV goes there (the default,
  WORKDIR/scores.csv): the checkpoint is opened read-only, so a read-only workdir can be scored
  into ``--output``. An output that is a folder or cannot be written stops with one line before
  anything is scored.
- **CSV** (one row per input file, in input order): path, raw_score, normalised_score,
  decision (normal | abnormal | skipped), r, lat, map, reason (why a file was skipped, with
  ``--on_bad_image=skip``; empty otherwise). Written to a temporary file and renamed.
- **Anomaly maps** (``--anomaly_map``: residual |x - G(x)| or grad |d score / d x|, averaged
  over channels; sagan_jax.anomaly_maps), one PNG per scored image in the folder
  ``<CSV path without .csv>_maps/`` next to the CSV. File name: the image's path relative to
  --input (the folder, or the file's own folder), extension kept, percent-encoded as one name
  (``urllib.parse.quote(rel, safe="")``, so ``/`` becomes ``%2F`` and ``%`` becomes ``%25``),
  plus ``.png``: ``x.png`` -> ``x.png.png``, ``x.jpg`` -> ``x.jpg.png``, ``sub/y.png`` ->
  ``sub%2Fy.png.png``, ``sub__y.png`` -> ``sub__y.png.png``. The mapping is one-to-one, so
  two inputs never share a map; a name over 255 bytes is cut to 200 and given ``%%`` and a
  SHA-256 prefix of the relative path (``%%`` never occurs in an encoded name). The CSV's map
  column names each file. The folder is written anew and replaces the previous one only
  when complete, so maps of an earlier --input never remain beside the new ones.
- **Every reachable file is a row**: --input is walked through symbolic links to folders; a
  link that leads back into a folder it is in (a loop) is a skipped row with its reason.
- **Fixed colour scale**: black = 0, the top colour = the 0.999 quantile of the same kind of
  map on normal calibration images, measured at training time and stored with the checkpoint's
  calibration (anomaly_maps.map_scales); a checkpoint that lacks it for the requested kind
  (older ones; grad maps of a run trained with --anomaly_map=residual) has it measured now on
  the run's own calibration images (loaded from the run's data flags). So a map's colours, like
  its image's score, never depend on what else is scored with it (beyond float rounding: a
  short batch is padded only as far as data.pipeline.padded_batch_size).
- **Overlays** (sagan_jax.overlays): the image with its map blended in, the decision and score
  in the corner, into ``<csv name>_overlays/`` beside the CSV (same file names as the maps), at most
  ``--max_pictures`` (the first in input order; how many were not drawn is logged).
- The scoring itself is sagan_jax.api.Detector's (the Python API).
- The decision threshold and the normalisation range were fixed at training time on normal
  images (training.evaluate.calibration_from_scores) and are read from the checkpoint;
  BatchNorm uses its running averages. A checkpoint whose weights, threshold or map scale are
  not finite is refused (one line).
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import math
import os
import urllib.parse

import numpy as np

from sagan_jax.anomaly_maps import SCALE_IMAGES, map_scales
from sagan_jax.config import Config, ConfigError, flags_where
from sagan_jax.data import load_data
from sagan_jax.data.base import DataError
from sagan_jax.training.checkpoints import (CheckpointError, RESUMABLE_CHANGES, all_finite,
                                            saved_meta)
from sagan_jax.training.evaluate import calibration_images

log = logging.getLogger("sagan_jax")

# Taken from the command line (or its defaults), never from the checkpoint.
SCORE_FLAGS = flags_where(score="line", role=("data", "scoring_io"))
RUNTIME_FLAGS = flags_where(score="line", role=("runtime", "run_specific"))
# From the command line when passed there, else the run's.
RUN_DEFAULT_FLAGS = flags_where(score="line_if_passed")
# --mode=eval: also from the command line when passed (how the test set is read and scored).
EVAL_DEFAULT_FLAGS = ("eval_batch_stats", "on_bad_image", "on_small_image") + tuple(
    n for n in RESUMABLE_CHANGES if n not in ("mode", "workdir", "input", "output"))
CSV_COLUMNS = ["path", "raw_score", "normalised_score", "decision", "r", "lat", "map", "reason"]


# ---- configuration ------------------------------------------------------------------------
def score_config(values: dict, explicit, caller: str = "") -> Config:
    """The Config of --mode=score and --mode=eval (one check for both of what the checkpoint
    was trained and calibrated with): the run's flags from the newest checkpoint in
    ``values["workdir"]``, with the scoring flags of ``values`` (every flag's command-line
    value, defaults included). ``explicit``: the names of the flags passed on the command line
    (or in a flagfile). Raises ConfigError for an explicit model, data or score flag that
    differs from the run's (e.g. --abnormal_class, --score_lambda: the test set or the
    threshold would not be the run's), CheckpointError when the workdir holds no checkpoint.
    --mode=eval also takes --eval_batch_stats, --on_bad_image, --on_small_image and the
    harmless training flags (checkpoints.RESUMABLE_CHANGES, e.g. --data_dir) when passed.
    ``caller``: how the refusal names a Python caller (its flags as keyword arguments) instead
    of the command line."""
    workdir, mode = values["workdir"], values["mode"]
    saved = saved_meta(workdir).get("config", {})
    explicit = set(explicit)
    fields = [f.name for f in dataclasses.fields(Config)]
    line = SCORE_FLAGS + RUNTIME_FLAGS
    run_default = RUN_DEFAULT_FLAGS + (EVAL_DEFAULT_FLAGS if mode == "eval" else ())
    merged = {}
    for name in fields:
        from_line = (name in line or (name in run_default and name in explicit)
                     or name not in saved)
        merged[name] = values[name] if from_line else saved[name]
    dash = "" if caller else "--"
    conflicts = [f"{dash}{n}={values[n]!r} (the run's: {saved[n]!r})" for n in fields
                 if n in explicit and n in saved and values[n] != saved[n]
                 and n not in line + run_default
                 and n not in RESUMABLE_CHANGES and n != "eval_batch_stats"]
    if conflicts:
        raise ConfigError(
            f"{caller or f'--mode={mode}'} reads the model and data flags from the checkpoint "
            f"in {workdir}; "
            f"these differ from the run's: {', '.join(conflicts)}; drop them")
    ignored = [n for n in explicit if n in RESUMABLE_CHANGES and n in saved
               and n not in line + run_default and values[n] != saved[n]]
    if ignored:
        log.info("%s ignores the training flags %s", caller or f"--mode={mode}",
                 ", ".join(sorted(ignored)))
    merged.update(mode=mode)
    if mode in ("score", "export"):
        merged.update(eval_batch_stats=False)  # per image: running averages only
    return Config(**merged)


# ---- files ----------------------------------------------------------------------------------
def input_files(path: str) -> tuple:
    """(files, unfollowed): the file itself, or every file reachable under the folder (sorted,
    recursive, through symbolic links to folders; hidden files ignored); ``unfollowed`` =
    (path, reason) of each folder link not entered because it leads back into a folder it is
    in (a loop), which score mode lists as a skipped row. Non-image files are kept so that
    decoding reports them, never drops them."""
    if not os.path.exists(path):
        raise DataError(f"--input={path!r} does not exist; pass an image file or a folder of images")
    if os.path.isfile(path):
        return [path], []
    files, unfollowed = [], []
    for root, dirs, names in os.walk(path, followlinks=True):
        parts = [p for p in os.path.relpath(root, path).split(os.sep) if p != "."]
        ancestors = {os.path.realpath(os.path.join(path, *parts[:i]))
                     for i in range(len(parts) + 1)}  # the folders this one is in, resolved
        keep = []
        for d in sorted(d for d in dirs if not d.startswith(".")):
            link = os.path.join(root, d)
            if os.path.islink(link) and os.path.realpath(link) in ancestors:
                unfollowed.append((link, f"symbolic link to a folder it is in (-> "
                                         f"{os.readlink(link)}); not followed (a loop)"))
            else:
                keep.append(d)
        dirs[:] = keep
        files += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".")]
    if not files:
        loops = f" (only {len(unfollowed)} folder link loop(s), not followed)" if unfollowed else ""
        raise DataError(f"--input={path!r} is an empty folder{loops}; expected png, jpg or bmp "
                        "images")
    return files, unfollowed


def map_file_name(rel: str) -> str:
    """The anomaly map's file name of an input at ``rel`` (its path relative to --input):
    one-to-one (see the module doc): ``sub/y.png`` -> ``sub%2Fy.png.png``."""
    rel = rel.replace(os.sep, "/")
    name = urllib.parse.quote(rel, safe="") + ".png"
    if len(name.encode()) > 255:
        digest = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        name = name[:200] + "%%" + digest + ".png"
    return name


def output_paths(cfg) -> tuple:
    """(CSV path, map folder) of ``cfg``, checked writable before anything is scored:
    DataError (one line) for an --output that is a folder or cannot be written."""
    out_csv = cfg.output or os.path.join(cfg.workdir, "scores.csv")
    flag = f"--output={cfg.output!r}" if cfg.output else f"the default output {out_csv!r}"
    hint = ("; pass --output=FILE.csv in a folder you can write" if cfg.output else
            "; pass --output=FILE.csv in a folder you can write (the workdir is not writable)")
    if os.path.isdir(out_csv):
        raise DataError(f"{flag} is a folder; pass the path of a CSV file, e.g. "
                        f"{os.path.join(out_csv, 'scores.csv')}")
    map_dir = os.path.splitext(os.path.abspath(out_csv))[0] + "_maps"
    if os.path.exists(map_dir) and not os.path.isdir(map_dir):
        raise DataError(f"{flag}: its map folder {map_dir!r} exists and is not a folder{hint}")
    parent = os.path.dirname(os.path.abspath(out_csv))
    probe = os.path.join(parent, f".{os.path.basename(out_csv)}.probe{os.getpid()}")
    try:
        os.makedirs(parent, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno == errno.EEXIST or isinstance(e, (FileExistsError, NotADirectoryError)):
            reason = f"{reason}: a part of the path is a file"
        raise DataError(f"{flag} cannot be written ({reason}){hint}") from None
    return out_csv, map_dir


# ---- the checkpoint -------------------------------------------------------------------------
def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def checked_calibration(cfg, state, meta) -> dict:
    """The checkpoint's calibration; CheckpointError for a missing one, non-finite weights or
    a non-finite threshold or normalisation range."""
    if not all_finite(state):
        raise CheckpointError(f"the checkpoint in {cfg.workdir} holds non-finite weights; it "
                              "cannot score (retrain, or restore an earlier checkpoint)")
    calib = meta.get("calibration")
    if calib is None:
        raise CheckpointError(f"the checkpoint in {cfg.workdir} has no decision threshold; "
                              "retrain it with this version of sagan_jax")
    bad = [f"{k}={calib.get(k)!r}" for k in ("threshold", "min", "max")
           if not _finite(calib.get(k))]
    if bad:
        raise CheckpointError(f"the checkpoint in {cfg.workdir} has a non-finite calibration "
                              f"({', '.join(bad)}); it cannot decide normal vs abnormal "
                              "(retrain it)")
    return calib


def map_scale(cfg, variables, calib) -> float:
    """The colour scale of ``cfg.anomaly_map`` maps: stored with the calibration, else
    measured now on the run's calibration images (see the module doc)."""
    kind = cfg.anomaly_map
    stored = (calib.get("map_scale") or {}).get(kind)
    if stored is None:
        try:
            images, source = calibration_images(load_data(cfg))
        except Exception as e:  # noqa: BLE001 - any failure to read the run's data
            msg = " ".join(str(e).split()) or type(e).__name__
            raise DataError(
                f"the checkpoint in {cfg.workdir} stores no colour scale for --anomaly_map="
                f"{kind} maps, and the run's calibration images cannot be loaded to measure it "
                f"({msg}); score with --anomaly_map={'residual' if kind == 'grad' else 'grad'} "
                "or make the run's training data available") from None
        stored = map_scales(cfg, variables, images, kinds=(kind,))[kind]
        log.info("%s map colour scale %.6g measured on %d %s (not stored in the checkpoint)",
                 kind, stored, min(len(images), SCALE_IMAGES), source)
    if not _finite(stored) or stored < 0:
        raise CheckpointError(f"the checkpoint in {cfg.workdir} has a non-finite {kind} map "
                              f"scale ({stored!r}); retrain it")
    return float(stored) if stored > 0 else float(np.finfo(np.float32).tiny)
