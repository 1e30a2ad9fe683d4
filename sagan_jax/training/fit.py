"""--mode=train for models fitted without a training loop (ModelSpec.fit: PCA, kNN).

Each run (one of --seeds x --abnormal_classes, sagan_jax.training.runs) is fitted on its normal
training images in one call, then treated exactly as a GAN run after its last epoch: the test
set is scored with the model's components (R, L) and final score, the decision threshold is
calibrated on normal images the model was not fitted to (evaluate.calibrate on the validation
split; without one, cross_fitted_calibration on training normals, each scored by the model
refitted without it), and the run goes through a GAN epoch's end (training/epoch_end.py, with
no BatchNorm to recalibrate): WORKDIR/metrics.json with a GAN run's keys (auc, ap, f1,
threshold, f1_oracle, ...; history with one record, epoch 0; best_epoch_on_test_set labelled as
test-selected), metrics.jsonl, pictures, and an orbax checkpoint (the fitted arrays, the
calibration and the arrays' shapes in its metadata) that --mode=eval and --mode=score restore.
Rerunning a finished run with the same flags reads its metrics.json back; other flags in the
same workdir are refused.
"""
from __future__ import annotations

import json
import logging
import os
import time

import jax
import numpy as np

from sagan_jax import methods
from sagan_jax.anomaly_maps import KINDS, SCALE_IMAGES, SCALE_QUANTILE, maps
from sagan_jax.config import ConfigError
from sagan_jax.data.pipeline import to_float_np
from sagan_jax.methods.spec import variables_of
from sagan_jax.methods.state import fitted_state
from sagan_jax.training import checkpoints
from sagan_jax.training.epoch_end import (add_record, epoch_record, log_test, run_result,
                                          save_checkpoint, test_metrics, write_plots,
                                          write_result)
from sagan_jax.training.evaluate import calibrate, calibration_from_scores, score_images
from sagan_jax.training.metric_writer import MetricWriter

log = logging.getLogger("sagan_jax")


def fit_runs(runs, load) -> list:
    """Fit and evaluate each run on its data (``load(run.cfg)``), one after the other."""
    return [fit_and_evaluate(run, load(run.cfg)) for run in runs]


def fit_and_evaluate(run, data) -> dict:
    """Fit one run, score its test set, calibrate, checkpoint; its result (metrics.json)."""
    cfg, label = run.cfg, run.name or "run"
    prefix = f"{run.name}: " if run.name else ""
    spec = methods.get(cfg.model)
    t0 = time.time()
    os.makedirs(cfg.workdir, exist_ok=True)
    mngr = checkpoints.manager(cfg.workdir, cfg.keep_checkpoints)
    finished = _finished(mngr, cfg, label)
    if finished is not None:
        return finished

    params = spec.fit(cfg, data.train.images)
    state = jax.device_put(fitted_state(params))
    fit_s = time.time() - t0

    need_recon = cfg.plots or data.test.masks is not None
    out = score_images(cfg, state, data.test.images, keep_recon=need_recon)
    # as the GANs: normal images not fitted to, threshold, map scale
    calib = calibrate(cfg, state, data) if data.val is not None else cross_fitted_calibration(
        cfg, data.train.images)
    test = test_metrics(cfg, data, out[0], out[1], out[2] if need_recon else None, calib,
                        variables_of(state))
    # no BatchNorm, no epochs, no score weight: the originals' evaluation is the AUC itself
    record = epoch_record({"epoch": 0, "step": 0, "fit_s": round(fit_s, 2)}, calib,
                          data.val is not None, test,
                          test["auc"] if cfg.eval_originals and "auc" in test else None)
    log_test(f"{prefix}{cfg.model} fitted in {fit_s:.1f} s", test, calib)
    history = []
    writer = None
    if jax.process_index() == 0:
        writer = MetricWriter(cfg.workdir, tensorboard=cfg.tensorboard)
        writer.truncate(first_step=0, first_epoch=0)
    add_record(history, record, writer)
    if mngr.latest_step() is not None:  # a fit that stopped before its metrics.json: redo it
        for step in mngr.all_steps():
            mngr.delete(step)
    save_checkpoint(mngr, state, 0, cfg, history, calib, None, time.time() - t0,
                    fitted_shapes=checkpoints.fitted_shapes(params))
    mngr.close()

    result = run_result({
        "run": run.name or None, "epochs": 1, "fitted": True,
        "wall_time_s": round(time.time() - t0, 2), "fit_s": round(fit_s, 2),
        "time_to_first_step_s": None, "runs_in_program": 1, "run_axis_impl": None,
        "devices": [str(d) for d in jax.local_devices()[:1]], "processes": jax.process_count(),
        "data": {"name": data.name, "counts": data.counts()}, "flags": cfg.to_dict()}, history)
    if writer is not None:
        writer.close()
        # per-image scores, pictures and metrics.json, as a GAN run writes them
        write_result(cfg, result, data.test, test,
                     lambda: write_plots(cfg, data.test, test, []))
    return result


CALIBRATION_FOLDS = 5


def cross_fitted_calibration(cfg, train_u8, folds: int = CALIBRATION_FOLDS) -> dict:
    """Calibration (evaluate.calibration_from_scores and the maps' colour scales) on training
    normals the scoring model was NOT fitted to, for a run without a validation split: a
    fitted model reproduces its own training images (kNN: each is its own nearest neighbour,
    R = 0), so a threshold measured on them flags nearly everything. The calibration images
    (evaluate.calibration_images: the first ones) are cut into ``folds`` folds (image i in
    fold i mod folds); each fold is scored by the model refitted on every training image but
    that fold (cross-fitting). The model that is kept and scores the test set is the one
    fitted on all images; its held-out threshold is slightly conservative."""
    spec = methods.get(cfg.model)
    n_cal = min(len(train_u8), 1000)
    k = min(folds, n_cal)
    fold_of = np.arange(n_cal) % k
    r, lat = np.zeros(n_cal, np.float64), np.zeros(n_cal, np.float64)
    scale_maps = {kind: [] for kind in KINDS}
    for f in range(k):
        held = np.flatnonzero(fold_of == f)
        rest = np.delete(np.arange(len(train_u8)), held)
        try:
            params = spec.fit(cfg, train_u8[rest])
        except ConfigError as e:
            raise ConfigError(
                f"--model={cfg.model} calibrates its threshold on training images it was not "
                f"fitted to, refitting without 1/{k} of them ({len(rest)} left), and that fit "
                f"fails ({e}); pass --val_fraction (e.g. 0.2) or add training images") from None
        state = jax.device_put(fitted_state(params))
        fr, fl, recon = score_images(cfg, state, train_u8[held], keep_recon=True)
        r[held], lat[held] = fr, fl
        shown = held < SCALE_IMAGES
        x = to_float_np(train_u8[held[shown]])
        for kind in KINDS:
            scale_maps[kind].append(maps(cfg, variables_of(state), x, kind, recon=recon[shown]
                                         if kind == "residual" else None))
    calib = calibration_from_scores(
        cfg, r, lat, f"training normals (no val split), each scored by the model refitted "
                     f"without it ({k}-fold cross-fitting)")
    scales = {"quantile": SCALE_QUANTILE, "n_images": int(min(n_cal, SCALE_IMAGES))}
    for kind in KINDS:
        values = np.concatenate(scale_maps[kind])
        if not np.all(np.isfinite(values)):
            raise FloatingPointError(f"the {kind} anomaly maps of the calibration images are "
                                     "not finite")
        scales[kind] = float(np.quantile(values, SCALE_QUANTILE)) if values.size else 0.0
    calib["map_scale"] = scales
    return calib


def _finished(mngr, cfg, label):
    """The stored result of a finished fit with the same flags, else None (a checkpoint of
    another experiment is refused: checkpoints.check_same_experiment)."""
    step = mngr.latest_step()
    if step is None:
        return None
    import orbax.checkpoint as ocp

    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    checkpoints.check_same_experiment(meta["config"], cfg, str(mngr.directory), 0)
    path = os.path.join(cfg.workdir, "metrics.json")
    if not os.path.exists(path):
        return None
    log.info("%s: already fitted: %s", label, path)
    with open(path) as f:
        return json.load(f)


def fit_summary_text(cfg) -> str:
    """--mode=summary for a fitted model: no trained parameters, what the fit keeps."""
    spec = methods.get(cfg.model)
    lines = [f"{cfg.model} at isize {cfg.isize}: {spec.description}",
             "  trained parameters          0 (no training loop; fitted in one call)"]
    return "\n".join(lines + list(spec.describe(cfg, None)))
