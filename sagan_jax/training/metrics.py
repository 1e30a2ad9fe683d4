"""The metric registry: one entry per test metric a run records (as ``test_<name>``).

A metric is a function ``(labels, scores, ctx) -> value`` of the test labels (1 = abnormal),
the model's raw anomaly scores (float64, higher = more anomalous) and a MetricContext (the
threshold, the R and L terms, classes, defect masks and anomaly maps, the Config). It returns
None where it does not apply (e.g. no abnormal test image, no threshold, no masks), and then
no key is written. The training loop, the fitted baselines and ``--mode=eval`` all compute
the registered metrics, in registration order, and record them under these names, so a new
metric is one function plus one ``register()`` call (docs/extending.md).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable, Optional

import numpy as np

from sagan_jax import scoring

NORMAL_ONLY = ("auc, ap, f1, f1_oracle, auc_r, auc_lat and the pixel metrics are absent: "
               "the test set has no abnormal images (good images only); reported instead: "
               "fpr_at_threshold, the fraction of normal test images flagged abnormal")


@dataclasses.dataclass
class MetricContext:
    """What a metric may read beside the labels and raw scores. ``threshold``: the decision
    threshold calibrated on normal images (None: not calibrated); ``r``, ``lat``: the score's
    two terms; ``classes``, ``class_names``: each test image's original class and the names
    (None: unknown); ``masks``: defect masks (None: none); ``make_maps``: computes the
    ``--anomaly_map`` maps on first use of ``maps`` (None: no maps)."""
    cfg: Any
    labels: np.ndarray
    scores: np.ndarray
    r: np.ndarray
    lat: np.ndarray
    threshold: Optional[float] = None
    classes: Optional[np.ndarray] = None
    class_names: Optional[tuple] = None
    masks: Optional[np.ndarray] = None
    make_maps: Optional[Callable[[], np.ndarray]] = None

    @property
    def normal_only(self) -> bool:
        """Whether the test set holds normal images only (nothing to rank against)."""
        return normal_only(self.labels)

    @functools.cached_property
    def detection(self) -> dict:
        """scoring.detection_metrics of the min-max scaled score, computed once for the
        metrics that share it (auc, ap, f1_oracle)."""
        return scoring.detection_metrics(self.labels, scoring.minmax(self.scores))

    @functools.cached_property
    def maps(self) -> Optional[np.ndarray]:
        """The anomaly maps of the test images where there are masks to score them against."""
        if self.masks is None or self.make_maps is None:
            return None
        return self.make_maps()


def normal_only(labels) -> bool:
    """Whether a labelled split holds normal images only (nothing to rank against)."""
    labels = np.asarray(labels)
    return len(labels) > 0 and not np.any(labels == 1)


REGISTRY: dict = {}


# Keys beside the metrics in a split's result, a run's metrics.json and eval.json: not names.
RESERVED = ("scores", "r", "lat", "recon", "run", "epochs", "epoch", "step", "data", "flags",
            "history", "threshold_source", "scores_csv", "overlays", "last_epoch")


def register(name: str, metric: Callable) -> None:
    """Record ``metric(labels, scores, ctx)`` as ``test_<name>`` from now on."""
    if name in REGISTRY and REGISTRY[name] is not metric:
        raise ValueError(f"metric {name!r} is registered already; choose another name")
    if name in RESERVED:
        raise ValueError(f"metric {name!r} would overwrite the result's own {name!r}; choose "
                         "another name")
    REGISTRY[name] = metric


def names() -> tuple:
    """The registered metrics, in the order a record holds them."""
    return tuple(REGISTRY)


def compute(ctx: MetricContext) -> dict:
    """{name: value} of every registered metric that applies to ``ctx``, in registry order."""
    out = {}
    for name, metric in REGISTRY.items():
        value = metric(ctx.labels, ctx.scores, ctx)
        if value is not None:
            out[name] = value
    return out


def test_record(result: dict) -> dict:
    """The ``test_<name>`` entries of an epoch record: the registered metrics in ``result``."""
    return {f"test_{name}": result[name] for name in REGISTRY if name in result}


# ---- the built-in metrics -------------------------------------------------------------------
def _ranked(key):
    """A metric of the min-max scaled score's ranking (needs both labels)."""
    def metric(labels, scores, ctx):
        return None if ctx.normal_only else ctx.detection[key]
    return metric


def _term_auc(term):
    """AUC of one score term alone (what it contributes)."""
    def metric(labels, scores, ctx):
        if ctx.normal_only:
            return None
        return scoring.detection_metrics(labels, getattr(ctx, term))["auc"]
    return metric


def f1(labels, scores, ctx):
    """F1 of the decisions ``score > threshold`` at the calibrated threshold."""
    if ctx.normal_only or ctx.threshold is None:
        return None
    return scoring.f1_at(labels, scores, ctx.threshold)


def threshold(labels, scores, ctx):
    """The calibrated threshold itself, beside the F1 (or, good images only, the
    false-positive rate) it gives."""
    return None if ctx.threshold is None else float(ctx.threshold)


def auc_per_class(labels, scores, classes, class_names) -> dict:
    """AUC of each abnormal class (e.g. each MVTec defect type) against all normal images,
    when the abnormal test images come from two or more classes; else {}."""
    if classes is None or class_names is None:
        return {}
    labels, classes = np.asarray(labels), np.asarray(classes)
    abnormal = np.unique(classes[labels == 1])
    if len(abnormal) < 2:
        return {}
    out = {}
    for c in abnormal:
        keep = (labels == 0) | (classes == c)
        out[str(class_names[c])] = scoring.detection_metrics(labels[keep], scores[keep])["auc"]
    return out


def auc_per_defect(labels, scores, classes, class_names) -> dict:
    """AUC of each abnormal class (each defect type of an anomaly folder, one or more) against
    all normal images; {} without class names or abnormal images."""
    if classes is None or class_names is None:
        return {}
    labels, classes = np.asarray(labels), np.asarray(classes)
    out = {}
    for c in np.unique(classes[labels == 1]):
        keep = (labels == 0) | (classes == c)
        if np.any(labels[keep] == 0):
            out[str(class_names[c])] = scoring.detection_metrics(labels[keep], scores[keep])["auc"]
    return out


def _per_class(fn):
    """A per-class AUC table as a metric: None when it is empty."""
    def metric(labels, scores, ctx):
        if ctx.normal_only:
            return None
        return fn(labels, scores, ctx.classes, ctx.class_names) or None
    return metric


_PIXEL_AUC_WARNED = set()


def pixel_auc(masks, maps) -> float:
    """scoring.pixel_auroc of the maps against the defect masks, with a warning (once per mask
    set) when it is undefined: masks that hold no defect pixel (all empty), or no clean one,
    give NaN, recorded as null, and that must not pass unnoticed."""
    value = scoring.pixel_auroc(masks, maps)
    if not np.isfinite(value):
        truth = np.asarray(masks) > 0
        what = ("no defect pixel (every mask is empty)" if not truth.any()
                else "no defect-free pixel (every mask is full)")
        key = (truth.shape, bool(truth.any()))
        if key not in _PIXEL_AUC_WARNED:
            _PIXEL_AUC_WARNED.add(key)
            logging.getLogger("sagan_jax").warning(
                "pixel AUROC is undefined and recorded as null: the %d defect masks hold %s; "
                "check the masks (--mask_root)", len(truth), what)
    return value


def _pixel(fn):
    """A metric of the anomaly maps against the defect masks (None without either)."""
    def metric(labels, scores, ctx):
        if ctx.normal_only or ctx.maps is None:
            return None
        return fn(ctx.masks, ctx.maps)
    return metric


def fpr_at_threshold(labels, scores, ctx):
    """Good images only: the fraction of normal test images flagged at the threshold."""
    if not ctx.normal_only or ctx.threshold is None:
        return None
    return float(np.mean(scores > ctx.threshold))


def n_normal(labels, scores, ctx):
    """Good images only: how many normal test images the false-positive rate is over."""
    return int(len(scores)) if ctx.normal_only else None


def metrics_absent(labels, scores, ctx):
    """Good images only: which metrics are absent, and why."""
    return NORMAL_ONLY if ctx.normal_only else None


for _name, _metric in (
        ("auc", _ranked("auc")), ("ap", _ranked("ap")), ("f1", f1), ("threshold", threshold),
        ("f1_oracle", _ranked("f1_oracle")), ("auc_r", _term_auc("r")),
        ("auc_lat", _term_auc("lat")), ("pixel_auc", _pixel(pixel_auc)),
        ("pixel_aupro", _pixel(scoring.pixel_aupro)),
        ("auc_per_class", _per_class(auc_per_class)),
        ("auc_per_defect", _per_class(auc_per_defect)),
        ("fpr_at_threshold", fpr_at_threshold), ("n_normal", n_normal),
        ("metrics_absent", metrics_absent)):
    register(_name, _metric)
