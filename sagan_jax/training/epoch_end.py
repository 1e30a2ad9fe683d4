"""The end of a scored epoch and the run's result, one pipeline for the GAN loop
(loop.Trainer) and the fitted models (fit.py).

  calibrate (evaluate.calibration) -> test_metrics -> epoch_record -> log_test ->
  add_record (history, metrics.jsonl) -> save_checkpoint;  run_result -> write_result

Before it, the loop recalibrates BatchNorm and scores the test and calibration images of all
its runs together (the run axis); a fitted model has no BatchNorm and scores its one run. Both
then hand their scores to these steps, so an epoch record, its log line, a checkpoint's
metadata and metrics.json hold the same keys whichever way the run was trained.
"""
from __future__ import annotations

import logging
import os

from sagan_jax import plots, scoring
from sagan_jax.data.pipeline import to_float_np
from sagan_jax.training import checkpoints
from sagan_jax.training.evaluate import metrics_from_scores, write_scores_csv
from sagan_jax.training.metrics import test_record
from sagan_jax.training.results import peak_memory, summarise_history, write_json

log = logging.getLogger("sagan_jax")


def test_metrics(cfg, data, r, lat, recon, calib: dict, variables) -> dict:
    """The registered metrics of ``data``'s test split scored (R, L, reconstructions or
    None), at the threshold ``calib`` holds (chosen without test labels)."""
    return metrics_from_scores(cfg, data.test, r, lat, recon, threshold=calib["threshold"],
                               variables=variables, class_names=data.class_names)


def epoch_record(base: dict, calib: dict, has_val: bool, test=None, originals_auc=None) -> dict:
    """One history record: ``base`` (epoch, step, timings), then with a scored ``test`` its
    metrics as test_<name> and where the threshold came from, the AUC under the originals'
    evaluation where measured, and with a validation split the mean calibration score (what
    the val-selected epoch minimises)."""
    record = dict(base)
    if test is not None:
        record.update(test_record(test))
        record["threshold_source"] = calib["source"]
        if originals_auc is not None:
            record["test_auc_originals"] = originals_auc
    if has_val:
        record["val_score_mean"] = calib["mean"]
    return record


def log_test(head: str, test: dict, calib: dict, detail: str = "") -> None:
    """The log line of a scored test set, after ``head`` (which run, which epoch): AUC, AP
    and F1 at the calibrated threshold (``detail`` appended inside the parentheses), or with
    good images only the fraction flagged."""
    if "metrics_absent" in test:
        log.info("%s: %.4f of %d normal test images flagged at the threshold; %s", head,
                 test["fpr_at_threshold"], test["n_normal"], test["metrics_absent"])
    else:
        log.info("%s: test AUC %.4f AP %.4f F1 %.4f at the calibrated threshold %.6g (oracle "
                 "F1 %.4f, threshold chosen on the test set%s)", head, test["auc"], test["ap"],
                 test["f1"], calib["threshold"], test["f1_oracle"], detail)


def add_record(history: list, record: dict, writer=None) -> None:
    """Append an epoch record to the run's history and (process 0) to metrics.jsonl."""
    history.append(record)
    if writer is not None:
        writer.write("epoch", record["step"], record)
        writer.flush()


def save_checkpoint(mngr, state, epoch: int, cfg, history: list, calib: dict, best_val,
                    wall_time_s: float, **extra) -> dict:
    """Checkpoint ``state`` after ``epoch`` with what resuming, --mode=eval and --mode=score
    read back: the history, the calibration, the best validation score, the wall time so
    far, and ``extra`` (the loop's DSC forms, a fitted model's array shapes). Returns the
    metadata saved."""
    meta = {"history": history, "calibration": calib, **extra, "best_val": best_val,
            "wall_time_s": round(wall_time_s, 2)}
    checkpoints.save(mngr, state, epoch, cfg, meta)
    return meta


def is_scored(record: dict) -> bool:
    """Whether an epoch record holds test metrics (AUC, or the rate of good images only)."""
    return "test_auc" in record or "test_fpr_at_threshold" in record


def run_result(head: dict, history: list) -> dict:
    """A run's metrics.json: ``head`` (what ran, where), the result of its last scored epoch
    (results.summarise_history, where one was scored), peak memory, the history."""
    result = dict(head)
    if any(is_scored(r) for r in history):
        result.update(summarise_history(history))
    result.update(peak_memory())
    result["history"] = history
    return result


def write_plots(cfg, split, test: dict, steps: list) -> dict:
    """The run's pictures (plots.write_all) of a test ``split`` scored with reconstructions,
    and the per-step losses ``steps`` (none for a fitted model)."""
    return plots.write_all(cfg.workdir, split.labels, scoring.minmax(test["scores"]),
                           test["auc"], to_float_np(split.images), test["recon"], steps)


def write_result(cfg, result: dict, split, test=None, make_plots=None) -> dict:
    """Process 0's files of a finished run: the last scored test set's per-image scores
    (test_scores.csv), with --plots the pictures ``make_plots()`` writes (a ROC needs both
    labels: only with an AUC), and metrics.json."""
    if test is not None:
        result["scores_csv"] = write_scores_csv(os.path.join(cfg.workdir, "test_scores.csv"),
                                                split, test)
    if make_plots is not None and cfg.plots and "auc" in result:
        result["plots"] = make_plots()
    write_json(os.path.join(cfg.workdir, "metrics.json"), result)
    return result
