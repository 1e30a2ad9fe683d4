"""Scoring a split with a trained state: per-image R(x) and L(x) (docs/design.md, section 7).

Default: BatchNorm running averages, so an image's score does not depend on the other images
in its batch, nor on the order of the test set. ``cfg.eval_batch_stats`` reproduces the
PyTorch originals, which score in training mode with each test batch's own statistics.
"""
from __future__ import annotations

import functools
import os

import jax
import numpy as np

from sagan_jax import methods, overlays
from sagan_jax.anomaly_maps import map_scales, maps
from sagan_jax.config import RunNeutral
from sagan_jax.data.pipeline import eval_batches, padded_batch_size, to_float_np
from sagan_jax.devices import local_mesh, put_batch, put_replicated
from sagan_jax.methods.spec import variables_of
from sagan_jax.training import metrics
from sagan_jax.training.checkpoints import CheckpointError, all_finite, restore_for_inference
from sagan_jax.training.results import write_json


@functools.partial(jax.jit, static_argnames=("static",))
def _score_batch(variables, x, static):
    # Per-model components (R, L) and reconstruction: the model's spec (sagan_jax.methods).
    # ``static``: the run's Config as a RunNeutral, so runs that differ only in seed, class
    # or workdir share one compiled program.
    cfg = static.cfg
    return methods.get(cfg.model).components(cfg, variables, x, cfg.eval_batch_stats)


def score_images(cfg, state, images_u8: np.ndarray, keep_recon: bool = False):
    """(R, L[, reconstructions]) for uint8 images, in their order. With running averages a
    short batch is zero-padded to pipeline.padded_batch_size (few compilations, never beyond
    what the images need) and the padding dropped.

    An image's score reads only that image, so it does not depend on the other images or
    their order; bit for bit only where the image keeps its batch position and batch shape
    (the same input in the same order gives the same bits). Elsewhere a CPU's convolution
    kernels may sum in another order: a few float32 ulps (1 ulp, 9.4e-8 relative, seen on an
    AVX2 machine; tests/test_scoring.py bounds it at 5e-6)."""
    mesh = local_mesh()  # each batch split over the local devices (one per core on CPU)
    variables = put_replicated(variables_of(state), mesh)
    bs = cfg.eval_batch_size
    if not cfg.eval_batch_stats:
        bs = padded_batch_size(len(images_u8), bs)
    rs, ls, recons = [], [], []
    for x in eval_batches(images_u8, bs):
        n = len(x)
        if not cfg.eval_batch_stats and n < padded_batch_size(n, bs):
            x = np.concatenate([x, np.zeros((padded_batch_size(n, bs) - n,) + x.shape[1:],
                                            x.dtype)])
        r, lat, recon = _score_batch(variables, put_batch(x, mesh), RunNeutral(cfg))
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


def split_metrics(cfg, labels, r, lat, **context) -> dict:
    """The raw score and terms of each image and every registered metric that applies
    (sagan_jax.training.metrics): without ``context`` those of the labels alone (AUC, AP,
    oracle F1 of the model's min-max scaled score, the AUC of each term alone); ``context``:
    MetricContext's threshold, classes, class_names, masks, make_maps. Shared with the
    PyTorch reference's loop. A normal-only split holds ``n_normal`` and ``metrics_absent``."""
    raw = final_score(cfg, r, lat)  # per model; SAGAN: lam R + (1 - lam) L
    result = {"scores": raw, "r": r, "lat": lat}
    ctx = metrics.MetricContext(cfg, np.asarray(labels), raw, r, lat, **context)
    result.update(metrics.compute(ctx))
    return result


def originals_auc(cfg, state, split) -> float:
    """AUC of ``split`` scored as the PyTorch originals score (``--eval_originals``; evaluation (a)
    of docs/design.md, section 8): BatchNorm in training mode (each batch normalised with its own
    statistics), the images in their stored order (the GANomaly protocol's: normal test
    images, then abnormal ones), batches of the training batch size, and the originals' score
    weight ``--originals_score_lambda``. Each image's score depends on its batch, so this is a
    comparison with the published numbers, never a result."""
    c = cfg.replace(eval_batch_stats=True, eval_batch_size=cfg.batch_size,
                    score_lambda=cfg.originals_score_lambda)
    r, lat = score_images(c, state, split.images)
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(lat))):
        raise FloatingPointError("the test scores under the originals' evaluation are not finite")
    return float(split_metrics(c, split.labels, r, lat)["auc"])


def calibration_images(data, n_max: int = 1000):
    """NORMAL images for the decision threshold: the validation split when there is one, else
    the first ``n_max`` training normals (labelled as such)."""
    if data.val is not None:
        return data.val.images, "validation normals"
    return data.train.images[:n_max], "training normals (no val split)"


def calibration_from_scores(cfg, r, lat, source: str) -> dict:
    """Decision threshold and normalisation range from the raw scores of normal images:
    threshold = the (1 - fpr) quantile, so about ``fpr`` of normal images are flagged. Saved
    with each checkpoint; scoring new images uses it unchanged. Non-finite scores are refused
    (a threshold must never be NaN)."""
    raw = final_score(cfg, r, lat)
    if not np.all(np.isfinite(raw)):
        raise FloatingPointError(
            f"{int(np.sum(~np.isfinite(raw)))} of {len(raw)} calibration scores are not finite")
    return {
        "source": source, "n": int(len(raw)), "fpr": cfg.threshold_fpr,
        "threshold": float(np.quantile(raw, 1.0 - cfg.threshold_fpr)),
        "min": float(raw.min()), "max": float(raw.max()),
        "mean": float(raw.mean()),
    }


def calibration(cfg, variables, images, source: str, r, lat, recon=None) -> dict:
    """calibration_from_scores of the normal ``images`` scored (R, L), with the anomaly maps'
    colour scale on the same images (anomaly_maps.map_scales; residual maps from ``recon``
    where scoring kept it). The one calibration step of the GAN loop and the fitted models."""
    calib = calibration_from_scores(cfg, r, lat, source)
    calib["map_scale"] = map_scales(cfg, variables, images, recon=recon)
    return calib


def calibrate(cfg, state, data) -> dict:
    """Calibration of one state on its data's calibration images (see calibration)."""
    images, source = calibration_images(data)
    r, lat = score_images(cfg, state, images)
    return calibration(cfg, variables_of(state), images, source, r, lat)


def pixel_maps(cfg, split, recon=None, variables=None) -> np.ndarray:
    """The ``--anomaly_map`` maps of a split's images: residual from ``recon`` (or G(x)),
    grad from ``variables`` (sagan_jax.anomaly_maps)."""
    return maps(cfg, variables, to_float_np(split.images), cfg.anomaly_map, recon=recon)


def write_scores_csv(path: str, split, result: dict) -> str:
    """The test set's per-image scores: index, source file, label, class, raw score (the
    model's), its R and L terms."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "path", "label", "class", "raw_score", "r", "lat"])
        for i in range(len(split)):
            w.writerow([i, split.paths[i] if split.paths is not None else "",
                        int(split.labels[i]),
                        "" if split.classes is None else int(split.classes[i]),
                        f"{result['scores'][i]:.8g}", f"{result['r'][i]:.8g}",
                        f"{result['lat'][i]:.8g}"])
    return path


def metrics_from_scores(cfg, split, r, lat, recon=None, threshold=None, variables=None,
                        class_names=None) -> dict:
    """split_metrics of a test split in its full context: with a calibrated ``threshold``
    (chosen without test labels) ``f1``, the F1 of its decisions, and ``threshold`` itself
    (beside ``f1_oracle``, the best F1 over thresholds chosen on the test labels); with defect
    masks the pixel metrics of the ``--anomaly_map`` maps (residual: needs ``recon``; grad:
    needs ``variables``, variables_of(state)); with several abnormal classes (defect types)
    the AUC of each; with good images only the false-positive rate at the threshold."""
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(lat))):
        raise FloatingPointError("the test scores are not finite")
    make_maps = None
    if recon is not None or variables is not None:
        make_maps = functools.partial(pixel_maps, cfg, split, recon, variables)
    result = split_metrics(cfg, split.labels, r, lat, threshold=threshold,
                           classes=split.classes, class_names=class_names, masks=split.masks,
                           make_maps=make_maps)
    if recon is not None:
        result["recon"] = recon
    return result


def evaluate(cfg, state, split, keep_recon: bool = False) -> dict:
    """Scores and metrics of a labelled split. With defect masks (anomaly-folder ground
    truth) also the pixel-level AUROC of the ``--anomaly_map`` maps."""
    need_recon = keep_recon or split.masks is not None
    out = score_images(cfg, state, split.images, keep_recon=need_recon)
    return metrics_from_scores(cfg, split, out[0], out[1], out[2] if need_recon else None,
                               variables=variables_of(state))


def evaluate_checkpoint(cfg, data) -> dict:
    """Score the test set with the newest checkpoint in ``cfg.workdir``; writes eval.json,
    eval_scores.csv and, for up to ``--max_pictures`` test images, overlays/ beside it. A
    normal-only test set reports the false-positive rate at the checkpoint's threshold."""
    state, meta = restore_for_inference(cfg)
    if not all_finite(state):
        raise CheckpointError(f"the checkpoint in {cfg.workdir} holds non-finite weights; "
                              "it cannot be scored")
    calib = meta.get("calibration")
    r, lat, recon = score_images(cfg, state, data.test.images, keep_recon=True)
    variables = variables_of(state)
    test = metrics_from_scores(cfg, data.test, r, lat, recon,
                               threshold=None if calib is None else calib["threshold"],
                               variables=variables, class_names=data.class_names)
    result = {k: test[k] for k in metrics.names() if k in test}
    if calib is not None:  # the run's own decisions, at its calibrated threshold
        result["threshold_source"] = calib["source"]
    result["scores_csv"] = write_scores_csv(os.path.join(cfg.workdir, "eval_scores.csv"),
                                            data.test, test)
    if calib is not None and not cfg.max_pictures:  # none asked for: none left from before
        overlays.write_overlays(os.path.join(cfg.workdir, "overlays"), [], [], [], [], 0.0, [],
                                max_pictures=0)
    elif calib is not None:
        k = min(cfg.max_pictures, len(data.test))  # maps of the pictures drawn only
        maps = pixel_maps(cfg, data.test.take(np.arange(k)), recon[:k], variables)
        paths = data.test.paths if data.test.paths is not None else [None] * len(data.test)
        result["overlays"] = overlays.write_overlays(
            os.path.join(cfg.workdir, "overlays"), data.test.images, maps, test["scores"],
            test["scores"] > calib["threshold"], overlays.map_vmax(cfg, calib, maps),
            names=[overlays.overlay_name(p, i) for i, p in enumerate(paths)],
            masks=data.test.masks, max_pictures=cfg.max_pictures)
    result.update(step=int(state.step), epoch=meta["epoch"] + 1,
                  eval_batch_stats=cfg.eval_batch_stats, data=data.counts(),
                  flags=cfg.to_dict())  # what this evaluation used (the run's, checked)
    write_json(os.path.join(cfg.workdir, "eval.json"), result)
    return result
