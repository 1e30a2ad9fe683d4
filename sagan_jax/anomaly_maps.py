"""Pixel anomaly maps (``--anomaly_map``), per image, (N, H, W) float32:

- ``residual``: |x - G(x)| averaged over channels (scoring.anomaly_maps);
- ``grad``: |d A(x) / d x| averaged over channels, where A is the model's own per-image anomaly
  score (``final_score`` of its ``components``, sagan_jax.methods) with BatchNorm running
  statistics (train=False). One ``jax.grad`` of the one-image score, ``jax.vmap``-ed over the
  batch and jitted, so an image's map never depends on the other images of its batch.

``map_scales`` gives the colour scale of the maps that --mode=score writes: a high quantile of
each kind's map values on NORMAL images (the calibration images of training), stored with the
checkpoint's calibration, so a map's colours never depend on what else is scored.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from sagan_jax import methods, scoring
from sagan_jax.data.pipeline import padded_batch_size, to_float_np

KINDS = ("residual", "grad")
SCALE_QUANTILE = 0.999   # the map value shown as the top colour
SCALE_IMAGES = 256       # calibration images the scale is measured on (the first ones)


def _score_one(cfg, variables, x1):
    """The raw anomaly score of ONE image (H, W, C) (running BatchNorm statistics)."""
    spec = methods.get(cfg.model)
    r, lat, _ = spec.components(cfg, variables, x1[None], False)
    return spec.final_score(cfg, r, lat)[0].astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _grad_maps(variables, x, cfg):
    grads = jax.vmap(jax.grad(functools.partial(_score_one, cfg, variables)))(x)
    return jnp.abs(grads.astype(jnp.float32)).mean(axis=-1)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _residual_maps(variables, x, cfg):
    _, _, recon = methods.get(cfg.model).components(cfg, variables, x, False)
    return jnp.abs(x - recon.astype(jnp.float32)).mean(axis=-1)


def maps(cfg, variables, x_float, kind=None, recon=None, batch_size=None) -> np.ndarray:
    """Anomaly maps (N, H, W) of float images ``x_float`` (NHWC in [-1, 1]).

    ``kind``: "residual" | "grad" (default ``cfg.anomaly_map``). ``variables``: the four
    collections of sagan_jax.methods.spec.variables_of(state). A residual map uses ``recon``
    when given (the reconstructions scoring already made), else G(x) with running statistics.
    Computed in batches of ``batch_size`` (default ``cfg.eval_batch_size``), the last one
    zero-padded to data.pipeline.padded_batch_size."""
    kind = kind or cfg.anomaly_map
    if kind not in KINDS:
        raise ValueError(f"anomaly map kind {kind!r}; choose one of {', '.join(KINDS)}")
    x_float = np.asarray(x_float, np.float32)
    if kind == "residual" and recon is not None:
        return scoring.anomaly_maps(x_float, recon)
    if variables is None:
        raise ValueError(f"{kind} anomaly maps need the model's variables")
    fn = _grad_maps if kind == "grad" else _residual_maps
    n = len(x_float)
    bs = padded_batch_size(n, batch_size or cfg.eval_batch_size)
    out = []
    for i in range(0, n, bs):
        x = x_float[i:i + bs]
        m = len(x)
        if m < padded_batch_size(m, bs):
            x = np.concatenate([x, np.zeros((padded_batch_size(m, bs) - m,) + x.shape[1:],
                                            x.dtype)])
        out.append(np.asarray(fn(variables, jnp.asarray(x), cfg))[:m])
    if not out:
        return np.zeros((0,) + x_float.shape[1:3], np.float32)
    return np.concatenate(out).astype(np.float32)


def stored_kinds(cfg) -> tuple:
    """The map kinds whose colour scale training stores: residual (free: the calibration
    scoring's reconstructions) and ``cfg.anomaly_map``."""
    return tuple(k for k in KINDS if k in ("residual", cfg.anomaly_map))


def map_scales(cfg, variables, images_u8, kinds=None, recon=None,
               n_max: int = SCALE_IMAGES) -> dict:
    """Colour scale of each map kind in ``kinds`` (default ``stored_kinds(cfg)``): the
    SCALE_QUANTILE quantile of its values on the first ``n_max`` of ``images_u8`` (normal
    calibration images), e.g. {"residual": 0.41, "grad": 0.0032, "quantile": 0.999,
    "n_images": 256}. ``recon``: reconstructions of ``images_u8`` already made with running
    statistics (used for the residual maps). Raises FloatingPointError when a map is not
    finite (as calibration does for scores)."""
    kinds = stored_kinds(cfg) if kinds is None else tuple(kinds)
    x = to_float_np(np.asarray(images_u8)[:n_max])
    if recon is not None and not cfg.eval_batch_stats:
        recon = np.asarray(recon)[:n_max]
    else:
        recon = None
    out = {"quantile": SCALE_QUANTILE, "n_images": int(len(x))}
    for kind in kinds:
        values = maps(cfg, variables, x, kind, recon=recon)
        if not np.all(np.isfinite(values)):
            raise FloatingPointError(f"the {kind} anomaly maps of the calibration images are "
                                     "not finite")
        out[kind] = float(np.quantile(values, SCALE_QUANTILE)) if values.size else 0.0
    return out
