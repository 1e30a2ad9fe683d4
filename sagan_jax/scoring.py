"""Anomaly score and detection metrics (SPEC section 6)."""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def per_image_scores(x, recon, feat_real, feat_fake):
    """R(x) = mean over pixels and channels of (x - G(x))^2; L(x) = mean (f(x) - f(G(x)))^2.

    Works on NumPy or JAX arrays; returns (R, L), each of shape (batch,)."""
    b = x.shape[0]
    r = ((x - recon) ** 2).reshape(b, -1).mean(axis=1)
    lat = ((feat_real - feat_fake) ** 2).reshape(b, -1).mean(axis=1)
    return r, lat


def anomaly_score(r, lat, lam: float):
    """A(x) = lambda R(x) + (1 - lambda) L(x); higher = more anomalous."""
    return lam * np.asarray(r, np.float64) + (1.0 - lam) * np.asarray(lat, np.float64)


def minmax(scores):
    """Scale scores to [0, 1] over the set (Eq. 6). A constant set maps to zeros."""
    s = np.asarray(scores, np.float64)
    span = s.max() - s.min()
    return np.zeros_like(s) if span == 0 else (s - s.min()) / span


def detection_metrics(labels, scores) -> dict:
    """ROC AUC, average precision and ``f1_oracle``, the best F1 over every threshold (label 1
    = abnormal): that threshold is chosen on these labels, so it is an oracle's, never a
    result; the F1 of a model's own decisions is ``f1_at`` of its calibrated threshold."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, np.float64)
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    if set(np.unique(labels)) != {0, 1}:
        raise ValueError("metrics need both normal (0) and abnormal (1) labels")
    precision, recall, thresholds = skm.precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return {
        "auc": float(skm.roc_auc_score(labels, scores)),
        "ap": float(skm.average_precision_score(labels, scores)),
        "f1_oracle": float(f1[best]),
        "f1_oracle_threshold": float(thresholds[best]) if len(thresholds) else float("nan"),
    }


def f1_at(labels, raw_scores, threshold: float) -> float:
    """F1 of the decisions ``raw score > threshold`` (label 1 = abnormal)."""
    labels = np.asarray(labels).astype(int)
    pred = np.asarray(raw_scores, np.float64) > threshold
    return float(skm.f1_score(labels, pred.astype(int), zero_division=0))


def anomaly_maps(x, recon):
    """Per-pixel anomaly map: |x - G(x)| averaged over channels, (N, H, W)."""
    return np.abs(np.asarray(x, np.float32) - np.asarray(recon, np.float32)).mean(axis=-1)


def pixel_auroc(masks, maps):
    """ROC AUC of anomaly-map values against binary ground-truth masks (mask > 0 = defect),
    over all pixels of all images; NaN when the masks hold no defect or no clean pixel."""
    truth = (np.asarray(masks) > 0).reshape(-1)
    if truth.all() or not truth.any():
        return float("nan")
    return float(skm.roc_auc_score(truth, np.asarray(maps, np.float64).reshape(-1)))
