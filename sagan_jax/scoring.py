"""Anomaly score and detection metrics (docs/design.md, section 7)."""
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


AUPRO_MAX_FPR = 0.3   # MVTec AD's evaluation integrates the PRO curve up to 30% FPR


def _regions(masks: np.ndarray) -> np.ndarray:
    """Connected defect regions of binary masks (N, H, W): int labels (0 = clean pixel),
    unique over all images; 8-connected, as MVTec AD's evaluation labels them."""
    from scipy import ndimage

    labels = np.zeros(masks.shape, np.int64)
    offset = 0
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3), int))
        labels[i] = np.where(lab > 0, lab + offset, 0)
        offset += n
    return labels


def pixel_aupro(masks, maps, max_fpr: float = AUPRO_MAX_FPR) -> float:
    """Area under the per-region-overlap (PRO) curve up to ``max_fpr``, divided by ``max_fpr``
    (MVTec AD's evaluation): at each threshold t, PRO = mean over the connected defect regions
    of all images of the fraction of the region's pixels with map > t, FPR = fraction of clean
    pixels with map > t; the exact curve over every distinct map value is integrated with the
    trapezoid rule from FPR 0 to ``max_fpr`` (linearly interpolated there). Unlike pixel AUROC
    it weighs a small defect as much as a large one. NaN without a defect region or a clean
    pixel."""
    masks = np.asarray(masks) > 0
    maps = np.asarray(maps, np.float64)
    if masks.shape != maps.shape:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} differ in shape")
    if masks.ndim == 2:
        masks, maps = masks[None], maps[None]
    regions = _regions(masks).reshape(-1)
    n_regions = int(regions.max()) if regions.size else 0
    n_clean = int((regions == 0).sum())
    if n_regions == 0 or n_clean == 0:
        return float("nan")
    sizes = np.bincount(regions, minlength=n_regions + 1).astype(np.float64)
    # Each pixel's step up the curve when the threshold falls below its value.
    fp_step = np.where(regions == 0, 1.0 / n_clean, 0.0)
    pro_step = np.where(regions > 0, 1.0 / (n_regions * sizes[regions]), 0.0)
    values = maps.reshape(-1)
    order = np.argsort(-values, kind="stable")
    values = values[order]
    fpr = np.cumsum(fp_step[order])
    pro = np.cumsum(pro_step[order])
    last = np.r_[values[1:] != values[:-1], True]   # a threshold between distinct values
    fpr = np.r_[0.0, np.minimum(fpr[last], 1.0)]
    pro = np.r_[0.0, np.minimum(pro[last], 1.0)]
    keep = fpr <= max_fpr
    x, y = fpr[keep], pro[keep]
    if x[-1] < max_fpr and keep.sum() < len(fpr):  # interpolate the curve at max_fpr
        j = int(keep.sum())
        x0, x1, y0, y1 = fpr[j - 1], fpr[j], pro[j - 1], pro[j]
        y_end = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
        x, y = np.r_[x, max_fpr], np.r_[y, y_end]
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return area / max_fpr
