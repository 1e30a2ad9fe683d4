"""Result assembly: one run's metrics.json fields from its per-epoch history (shared with the
PyTorch reference loop), and the summary of many runs (summary.json, summary.md)."""
from __future__ import annotations

import json
import math
import os
import resource

import numpy as np

from sagan_jax.training import metrics

TEST_SELECTED = "selected on the test set (the paper's protocol); not the result"
VAL_SELECTED = ("the scored epoch with the lowest mean score on the validation normals "
                "(--val_fraction); chosen without the test set")
ORIGINALS = ("the PyTorch originals' evaluation (--eval_originals): training-mode BatchNorm, "
             "test set in stored order, batches of --batch_size, --originals_score_lambda, best "
             "epoch on the test set; order-dependent, not the result")


F1_ORACLE = ("the best F1 over every threshold, the threshold chosen on the test labels: an "
             "oracle, not the result; f1 is the F1 at the calibrated threshold")


def current_names(record: dict) -> dict:
    """An epoch record with today's names: records written before the rename held the
    oracle F1 as test_f1 and the calibrated threshold's F1 as test_f1_at_threshold."""
    if "test_f1_at_threshold" not in record and ("test_f1" not in record
                                                 or "test_f1_oracle" in record):
        return record
    out = dict(record)
    out["test_f1_oracle"] = out.pop("test_f1", None)
    if "test_f1_at_threshold" in out:
        out["test_f1"] = out.pop("test_f1_at_threshold")
    return out


def _registered(final: dict, out: dict) -> dict:
    """``out`` with every other registered metric of the record ``final`` under its own name
    (one registered outside the package among them)."""
    for name in metrics.names():
        if f"test_{name}" in final and name not in out and name not in ("auc_r", "auc_lat"):
            out[name] = final[f"test_{name}"]
    return out


def summarise_history(history: list) -> dict:
    """The reported result of a run: the LAST scored epoch's test metrics (f1 at the threshold
    calibrated on normal images, beside it), plus the best epoch on the test set and the
    oracle F1, labelled as test-selected; with good images only, the false-positive rate."""
    scored = [current_names(r) for r in history if "test_auc" in r]
    normal_only = [r for r in history if "test_fpr_at_threshold" in r]
    if not scored and normal_only:  # good images only: no AUC, the false-positive rate
        final = normal_only[-1]
        out = {"fpr_at_threshold": final["test_fpr_at_threshold"]}
        for key, name in (("test_threshold", "threshold"), ("threshold_source",
                                                            "threshold_source"),
                          ("test_n_normal", "n_normal")):
            if key in final:
                out[name] = final[key]
        out.update(metrics_absent=final.get("test_metrics_absent"),
                   last_epoch=final["epoch"] + 1)
        return _registered(final, out)
    if not scored:
        raise ValueError("no epoch was scored on the test set")
    final, best = scored[-1], max(scored, key=lambda r: r["test_auc"])
    out = {"auc": final["test_auc"], "ap": final["test_ap"]}
    if final.get("test_f1") is not None:  # the F1 of the run's own decisions
        out["f1"] = final["test_f1"]
        for key, name in (("test_threshold", "threshold"),
                          ("threshold_source", "threshold_source")):
            if key in final:
                out[name] = final[key]
    out.update({
        "f1_oracle": final["test_f1_oracle"], "f1_oracle_note": F1_ORACLE,
        "auc_r_alone": final["test_auc_r"], "auc_lat_alone": final["test_auc_lat"],
        "last_epoch": final["epoch"] + 1,
        "best_epoch_on_test_set": {"epoch": best["epoch"] + 1, "auc": best["test_auc"],
                                   "note": TEST_SELECTED},
    })
    for key in ("pixel_auc", "pixel_aupro", "auc_per_class", "auc_per_defect"):
        if f"test_{key}" in final:
            out[key] = final[f"test_{key}"]
    _registered(final, out)
    with_val = [r for r in scored if r.get("val_score_mean") is not None]
    if with_val:  # chosen without the test set: lowest mean score on validation normals
        chosen = min(with_val, key=lambda r: r["val_score_mean"])
        out["val_selected_epoch"] = {"epoch": chosen["epoch"] + 1, "auc": chosen["test_auc"],
                                     "note": VAL_SELECTED}
    originals = [r for r in scored if r.get("test_auc_originals") is not None]
    if originals:
        top = max(originals, key=lambda r: r["test_auc_originals"])
        out["originals_evaluation"] = {"epoch": top["epoch"] + 1,
                                       "auc": top["test_auc_originals"], "note": ORIGINALS}
    return out


def peak_memory() -> dict:
    """Peak resident memory of this process and, where the backend reports it, of device 0."""
    import jax

    out = {"peak_host_memory_mb": round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # backends without memory statistics
        stats = {}
    if "peak_bytes_in_use" in stats:
        out["peak_device_memory_mb"] = round(stats["peak_bytes_in_use"] / 2 ** 20, 1)
    return out


def _mean_std(values):
    a = np.asarray(values, np.float64)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else 0.0)


def summarise_runs(runs, results) -> dict:
    """Per abnormal class: mean and std over seeds of the last-epoch AUC (and of the
    test-selected best epoch's AUC, labelled); diverged runs are listed, not averaged."""
    by_class = {}
    for run, res in zip(runs, results):
        by_class.setdefault(run.cfg.abnormal_class, []).append((run, res))
    rows, finished = [], []
    for cls, items in by_class.items():
        ok = [(r, res) for r, res in items if "auc" in res]
        row = {"abnormal_class": cls, "seeds": [r.cfg.seed for r, _ in ok],
               "diverged": [r.name for r, res in items if "diverged" in res]}
        if ok:
            row["auc_mean"], row["auc_std"] = _mean_std([res["auc"] for _, res in ok])
            for key in ("f1", "f1_oracle"):
                if all(res.get(key) is not None for _, res in ok):
                    row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([res[key] for _, res in ok])
            row["best_epoch_auc_mean"], row["best_epoch_auc_std"] = _mean_std(
                [res["best_epoch_on_test_set"]["auc"] for _, res in ok])
            finished += [res["auc"] for _, res in ok]
            for key in ("pixel_auc", "pixel_aupro"):  # with defect masks only
                values = [res.get(key) for _, res in ok]
                if all(v is not None and math.isfinite(v) for v in values):
                    row[f"{key}_mean"], row[f"{key}_std"] = _mean_std(values)
        rows.append(row)
    out = {"runs": [r.name for r in runs], "per_class": rows,
           "note": ("auc, f1: last epoch (f1 at the threshold calibrated on normal images); "
                    "best_epoch_auc: " + TEST_SELECTED + "; f1_oracle: " + F1_ORACLE)}
    per_class_means = [r["auc_mean"] for r in rows if "auc_mean" in r]
    if per_class_means:
        out["mean_auc_over_classes"] = float(np.mean(per_class_means))
    return out


def summary_markdown(summary: dict, model: str) -> str:
    lines = [f"| abnormal class | {model} AUC, last epoch (mean ± std over seeds) | F1 at the "
             "calibrated threshold | seeds | best epoch on the test set (test-selected, not the "
             "result) | diverged |",
             "|---|---:|---:|---|---:|---|"]

    def pm(r, key):
        return (f"{r[key + '_mean']:.4f} ± {r[key + '_std']:.4f}" if key + "_mean" in r
                else "n/a")

    for r in summary["per_class"]:
        lines.append(f"| {r['abnormal_class']} | {pm(r, 'auc')} | {pm(r, 'f1')} | "
                     f"{','.join(map(str, r['seeds']))} | {pm(r, 'best_epoch_auc')} | "
                     f"{', '.join(r['diverged']) or '-'} |")
    if "mean_auc_over_classes" in summary:
        lines.append(f"| **mean over classes** | {summary['mean_auc_over_classes']:.4f} | | | "
                     "| |")
    pixel = [r for r in summary["per_class"]
             if "pixel_auc_mean" in r and "pixel_aupro_mean" in r]
    if pixel:  # defect masks: the pixel metrics, mean ± std over seeds
        lines += ["", "| abnormal class | pixel AUROC | pixel AUPRO (to 30% FPR) |",
                  "|---|---:|---:|"]
        lines += [f"| {r['abnormal_class']} | {r['pixel_auc_mean']:.4f} ± "
                  f"{r['pixel_auc_std']:.4f} | {r['pixel_aupro_mean']:.4f} ± "
                  f"{r['pixel_aupro_std']:.4f} |" for r in pixel]
    return "\n".join(lines) + "\n"


def write_json(path: str, obj) -> None:
    """Atomic JSON write (a crash never leaves a torn file). An undefined number (NaN, e.g. a
    pixel AUROC without defect pixels) is written as null, never as NaN."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(finite_or_none(obj), f, indent=2, allow_nan=False)
    os.replace(tmp, path)


def finite_or_none(o):
    """``o`` with NumPy scalars/arrays as Python values and non-finite floats as None."""
    if isinstance(o, dict):
        return {k: finite_or_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite_or_none(v) for v in o]
    if isinstance(o, np.ndarray):
        return finite_or_none(o.tolist())
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(float(o)) else None
    return o
