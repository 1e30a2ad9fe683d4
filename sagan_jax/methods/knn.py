"""kNN baseline: distance in pixel space to the nearest normal training images (a non-GAN
reference for the same protocols, splits, metrics and score mode).

Fit: nothing to learn; the normal training images are kept as uint8 (N x D, D = isize *
isize * 3), cut into equal chunks of at most ``CHUNK`` images (the last padded, the padding
masked). No training loop, no epochs.

Score of an image x in [-1, 1] (flattened), with t_1 .. t_k its k = --knn_k nearest training
images (squared Euclidean distance, exact: every training image is compared, not an index):
  reconstruction  x_hat = mean of t_1 .. t_k (k = 1: the nearest training image);
  R(x)            mean over the k neighbours of mean over the D values of (x - t_j)^2: the
                  squared distance per value, in the same units as the GANs' R (k = 1: exactly
                  the mean squared residual of x against x_hat);
  L(x)            0: the model has a single term (its AUC alone is 0.5 by construction);
  score           R(x), whatever --score_lambda.

On the device (jnp, under jit): a lax.scan over the chunks keeps the k best distances of each
image of the batch, so memory is bounded by one chunk (CHUNK x D float32 plus a batch x CHUNK
distance matrix) whatever N; the search uses ||x||^2 - 2 x.t + ||t||^2 at HIGHEST precision,
and R is recomputed directly from the k chosen images. Ties go to the lower training index.
"""
from __future__ import annotations

import math

import numpy as np

from sagan_jax.config import ConfigError
from sagan_jax.data.pipeline import to_float_np
from sagan_jax.methods.spec import ModelSpec

CHUNK = 1024  # training images per step of the search (bounds memory)
SCORE_FORMULA = ("R = mean over the k nearest normal training images t_j (pixel space, exact) "
                 "of mean (x - t_j)^2; L = 0; score = R")


def fit(cfg, train_u8: np.ndarray, chunk: int = CHUNK) -> dict:
    """{"train": uint8 (chunks, C, D), "valid": uint8 (chunks, C)} of the training images."""
    n = len(train_u8)
    if cfg.knn_k > n:
        raise ConfigError(f"--knn_k={cfg.knn_k} exceeds the {n} training images; lower --knn_k")
    flat = np.ascontiguousarray(train_u8.reshape(n, -1))
    n_chunks = math.ceil(n / chunk)
    c = math.ceil(n / n_chunks)
    padded = np.zeros((n_chunks * c, flat.shape[1]), np.uint8)
    padded[:n] = flat
    valid = np.zeros(n_chunks * c, np.uint8)
    valid[:n] = 1
    return {"train": padded.reshape(n_chunks, c, -1), "valid": valid.reshape(n_chunks, c)}


def nearest(cfg, params, flat):
    """(indices (B, k) into the flattened training set, nearest first) of a batch (B, D)."""
    import jax
    import jax.numpy as jnp

    k = cfg.knn_k
    b = flat.shape[0]
    train_u8, valid = params["train"], params["valid"]
    c = train_u8.shape[1]
    q2 = jnp.sum(jnp.square(flat), axis=1)

    def body(carry, chunk):
        best_d, best_i = carry
        t_u8, ok, j = chunk
        t = to_float_np(t_u8)
        dots = jnp.matmul(flat, t.T, precision=jax.lax.Precision.HIGHEST)
        d2 = jnp.maximum(q2[:, None] - 2.0 * dots + jnp.sum(jnp.square(t), axis=1)[None], 0.0)
        d2 = jnp.where(ok[None] > 0, d2, jnp.inf)
        idx = jnp.broadcast_to(j * c + jnp.arange(c, dtype=jnp.int32), (b, c))
        all_d = jnp.concatenate([best_d, d2], axis=1)
        all_i = jnp.concatenate([best_i, idx], axis=1)
        neg, pos = jax.lax.top_k(-all_d, k)  # equal values: the lower position first
        return (-neg, jnp.take_along_axis(all_i, pos, axis=1)), None

    init = (jnp.full((b, k), jnp.inf, jnp.float32), jnp.zeros((b, k), jnp.int32))
    steps = (train_u8, valid, jnp.arange(train_u8.shape[0], dtype=jnp.int32))
    (_, best_i), _ = jax.lax.scan(body, init, steps)
    return best_i


def components(cfg, variables, x, train):
    """(R, L = 0, x_hat) of a batch x in [-1, 1] (B, H, W, 3); traceable under jit/grad."""
    import jax
    import jax.numpy as jnp

    p = variables["g_params"]
    b = x.shape[0]
    flat = x.reshape(b, -1).astype(jnp.float32)
    idx = jax.lax.stop_gradient(nearest(cfg, p, jax.lax.stop_gradient(flat)))
    neighbours = to_float_np(p["train"].reshape(-1, flat.shape[1])[idx])  # (B, k, D)
    r = jnp.mean(jnp.square(flat[:, None, :] - neighbours), axis=(1, 2))
    recon = jnp.mean(neighbours, axis=1).reshape(x.shape)
    return r, jnp.zeros_like(r), recon


def final_score(cfg, r, lat):
    return r


def validate(cfg):
    if cfg.knn_k < 1:
        raise ConfigError(f"--knn_k={cfg.knn_k} must be >= 1 (the number of nearest training "
                          "images averaged)")


def describe(cfg, counts=None):
    d = cfg.isize * cfg.isize * 3
    return [f"kNN baseline: no trained parameters; keeps every normal training image (N x "
            f"{d:,} uint8, N = the training set's size) and searches them exactly, "
            f"k = {cfg.knn_k}, in chunks of {CHUNK}",
            f"Anomaly score: {SCORE_FORMULA}"]


SPEC = ModelSpec(
    name="knn",
    description="kNN baseline: mean squared pixel distance to the --knn_k nearest normal "
                "training images (exact; no training loop)",
    build=None, step=None, components=components, final_score=final_score,
    score_formula=SCORE_FORMULA, flagfile="experiments/model_knn.cfg", validate=validate,
    describe=describe, fit=fit, checkpoint_flags=("model", "isize", "knn_k"),
)
