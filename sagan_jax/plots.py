"""Pictures written to the workdir (matplotlib, PNG, no display needed)."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from sagan_jax.scoring import anomaly_maps  # noqa: E402


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def score_histogram(labels, scores, path, title="Anomaly scores"):
    """Normal vs abnormal histograms of min-max-scaled scores (the paper's Fig. 3)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(0, 1, 41)
    ax.hist(scores[labels == 0], bins, alpha=0.6, label=f"normal ({np.sum(labels == 0)})", density=True)
    ax.hist(scores[labels == 1], bins, alpha=0.6, label=f"abnormal ({np.sum(labels == 1)})", density=True)
    ax.set_xlabel("scaled anomaly score")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def roc(labels, scores, auc, path):
    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, label=f"AUC {auc:.4f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    return _save(fig, path)


def to_uint8(x):
    """[-1, 1] floats -> uint8 pixels."""
    return np.clip(np.round((np.asarray(x) * 0.5 + 0.5) * 255), 0, 255).astype(np.uint8)


def reconstruction_grid(x, recon, labels, path, n=8):
    """Rows: inputs, reconstructions, residual maps; columns: up to n/2 normal and n/2
    abnormal test images."""
    labels = np.asarray(labels)
    idx = list(np.flatnonzero(labels == 0)[: n // 2]) + list(np.flatnonzero(labels == 1)[: n // 2])
    res = anomaly_maps(x, recon)
    fig, axes = plt.subplots(3, len(idx), figsize=(1.3 * len(idx), 4.2), squeeze=False)
    vmax = float(res[idx].max()) or 1.0
    for col, i in enumerate(idx):
        axes[0, col].imshow(to_uint8(x[i]))
        axes[1, col].imshow(to_uint8(recon[i]))
        axes[2, col].imshow(res[i], cmap="inferno", vmin=0, vmax=vmax)
        axes[0, col].set_title("abnormal" if labels[i] else "normal", fontsize=8)
        for r in range(3):
            axes[r, col].axis("off")
    for r, name in enumerate(("input", "G(x)", "|x - G(x)|")):
        axes[r, 0].text(-0.1, 0.5, name, transform=axes[r, 0].transAxes, ha="right", va="center",
                        fontsize=8)
    return _save(fig, path)


def loss_curves(step_records, path):
    """L_G terms and L_D against the step, from metrics.jsonl step records."""
    if not step_records:
        return None
    steps = [r["step"] for r in step_records]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for name in ("l_adv", "l_con", "l_lat"):
        axes[0].plot(steps, [r[name] for r in step_records], label=name)
    axes[0].set_yscale("log")
    axes[0].set_title("generator loss terms (unweighted)")
    axes[0].legend()
    axes[1].plot(steps, [r["l_d"] for r in step_records], label="l_d", color="C3")
    axes[1].set_title("discriminator loss")
    for ax in axes:
        ax.set_xlabel("step")
    return _save(fig, path)


def save_map_png(residual, path, vmax=None):
    """One anomaly map as a PNG (inferno colour map from 0 to ``vmax``; --mode=score passes
    the checkpoint's fixed scale, so colours mean the same in every map). Without ``vmax``:
    the map's own maximum."""
    if vmax is None:
        vmax = float(residual.max()) or 1.0
    plt.imsave(path, residual, cmap="inferno", vmin=0, vmax=vmax, format="png")
    return path


def write_all(workdir, labels, scaled_scores, auc, x, recon, step_records):
    """The standard set: histogram, ROC, reconstruction grid, loss curves."""
    out = os.path.join(workdir, "plots")
    os.makedirs(out, exist_ok=True)
    paths = [
        score_histogram(labels, scaled_scores, os.path.join(out, "score_histogram.png")),
        roc(labels, scaled_scores, auc, os.path.join(out, "roc.png")),
        reconstruction_grid(x, recon, labels, os.path.join(out, "reconstructions.png")),
        loss_curves(step_records, os.path.join(out, "loss_curves.png")),
    ]
    return [p for p in paths if p]
