"""Scoring a split with a trained state: per-image R(x) and L(x) (SPEC section 6).

Default: BatchNorm running averages, so an image's score does not depend on the other images
in its batch, nor on the order of the test set. ``cfg.eval_batch_stats`` reproduces the
PyTorch originals, which score in training mode with each test batch's own statistics.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sagan_jax import scoring
from sagan_jax.data.pipeline import eval_batches, to_float_np
from sagan_jax import methods
from sagan_jax.methods.spec import variables_of


@functools.partial(jax.jit, static_argnames=("cfg",))
def _score_batch(variables, x, cfg):
    # Per-model components (R, L) and reconstruction: the model's spec (sagan_jax.methods).
    return methods.get(cfg.model).components(cfg, variables, x, cfg.eval_batch_stats)


def score_images(cfg, state, images_u8: np.ndarray, keep_recon: bool = False):
    """(R, L[, reconstructions]) for uint8 images, in their order. With running averages the
    last batch is padded to the batch size (no recompilation) and the padding dropped."""
    variables = variables_of(state)
    bs = cfg.eval_batch_size
    rs, ls, recons = [], [], []
    for x in eval_batches(images_u8, bs):
        n = len(x)
        if n < bs and not cfg.eval_batch_stats:
            x = np.concatenate([x, np.zeros((bs - n,) + x.shape[1:], x.dtype)])
        r, lat, recon = _score_batch(variables, jnp.asarray(x), cfg)
        rs.append(np.asarray(r)[:n])
        ls.append(np.asarray(lat)[:n])
        if keep_recon:
            recons.append(np.asarray(recon)[:n])
    out = (np.concatenate(rs), np.concatenate(ls))
    return out + (np.concatenate(recons),) if keep_recon else out


def final_score(cfg, r, lat) -> np.ndarray:
    """The model's raw anomaly score of each image, in float64 (higher = more anomalous)."""
    return np.asarray(methods.get(cfg.model).final_score(
        cfg, np.asarray(r, np.float64), np.asarray(lat, np.float64)), np.float64)


def split_metrics(cfg, labels, r, lat) -> dict:
    """Metrics of the model's min-max scaled score, the AUC of each term alone (what each
    contributes), and the raw score and terms. Shared with the PyTorch reference's loop."""
    raw = final_score(cfg, r, lat)  # per model; SAGAN: lam R + (1 - lam) L
    result = scoring.detection_metrics(labels, scoring.minmax(raw))
    result["auc_r"] = scoring.detection_metrics(labels, r)["auc"]
    result["auc_lat"] = scoring.detection_metrics(labels, lat)["auc"]
    result.update(scores=raw, r=r, lat=lat)
    return result


def evaluate(cfg, state, split, keep_recon: bool = False) -> dict:
    """Scores and metrics of a labelled split. With defect masks (anomaly-folder ground
    truth) also the pixel-level AUROC of the anomaly maps |x - G(x)|."""
    need_recon = keep_recon or split.masks is not None
    out = score_images(cfg, state, split.images, keep_recon=need_recon)
    r, lat = out[:2]
    result = split_metrics(cfg, split.labels, r, lat)
    if need_recon:
        result["recon"] = out[2]
    if split.masks is not None:
        maps = scoring.anomaly_maps(to_float_np(split.images), out[2])
        result["pixel_auc"] = scoring.pixel_auroc(split.masks, maps)
    return result
