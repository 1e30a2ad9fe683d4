"""PCA baseline: reconstruction error with k principal components of the normal training
images (a non-GAN reference for the same protocols, splits, metrics and score mode).

Fit (scikit-learn, truncated SVD by ARPACK, about a second on the digits): the normal
training images in [-1, 1], flattened to D = isize * isize * 3 values; their mean mu and the
top k = --pca_components principal directions W (k x D, orthonormal rows). No training loop,
no epochs.

Score of an image x (flattened):
  reconstruction  x_hat = mu + W^T W (x - mu), the projection of x onto the k-dimensional
                  affine subspace that best fits the normal images;
  R(x)            mean over the D values of (x - x_hat)^2: the squared distance of x from that
                  subspace per value, in the same units as the GANs' R (mean squared residual);
  L(x)            0: the model has a single term (its AUC alone is 0.5 by construction);
  score           R(x), whatever --score_lambda.
Score mode's anomaly maps are |x - x_hat| averaged over channels, as for the GANs.
"""
from __future__ import annotations

import numpy as np

from sagan_jax.config import ConfigError
from sagan_jax.data.pipeline import to_float_np
from sagan_jax.methods.spec import ModelSpec

SCORE_FORMULA = ("R = mean (x - x_hat)^2, x_hat = mu + W^T W (x - mu) (k principal components "
                 "of the normal training images); L = 0; score = R")


def fit(cfg, train_u8: np.ndarray) -> dict:
    """{"mean": (D,), "components": (k, D)} float32 of the normal training images."""
    from sklearn.decomposition import PCA


    n = len(train_u8)
    x = to_float_np(train_u8).reshape(n, -1)
    d = x.shape[1]
    k = cfg.pca_components
    if k > min(n, d):
        raise ConfigError(f"--pca_components={k} exceeds what {n} training images of {d:,} "
                          f"values allow (at most {min(n, d)}); lower --pca_components")
    # ARPACK (Lanczos: the top k singular vectors to machine tolerance, about 1 s on the
    # digits, where a full SVD takes 15 s on 2 cores); a full SVD when k = min(n, D), which
    # ARPACK cannot compute. Deterministic given the seed (ARPACK's start vector).
    solver = "arpack" if k < min(n, d) else "full"
    pca = PCA(n_components=k, svd_solver=solver, random_state=cfg.seed).fit(x)
    return {"mean": pca.mean_.astype(np.float32),
            "components": pca.components_.astype(np.float32)}


def components(cfg, variables, x, train):
    """(R, L = 0, x_hat) of a batch x in [-1, 1] (B, H, W, 3); traceable under jit/grad."""
    import jax
    import jax.numpy as jnp

    p = variables["g_params"]
    b = x.shape[0]
    flat = x.reshape(b, -1).astype(jnp.float32)
    w = p["components"]
    hi = jax.lax.Precision.HIGHEST  # no TF32 on GPUs: the score is an exact projection
    z = jnp.matmul(flat - p["mean"], w.T, precision=hi)
    recon = p["mean"] + jnp.matmul(z, w, precision=hi)
    r = jnp.mean(jnp.square(flat - recon), axis=1)
    return r, jnp.zeros_like(r), recon.reshape(x.shape)


def final_score(cfg, r, lat):
    return r


def validate(cfg):
    if cfg.pca_components < 1:
        raise ConfigError(f"--pca_components={cfg.pca_components} must be >= 1 (the number of "
                          "principal components kept)")
    d = cfg.isize * cfg.isize * 3
    if cfg.pca_components > d:
        raise ConfigError(f"--pca_components={cfg.pca_components} exceeds what images of {d:,} "
                          f"values (--isize={cfg.isize}) allow; lower --pca_components")


def describe(cfg, counts=None):
    d = cfg.isize * cfg.isize * 3
    k = cfg.pca_components
    return [f"PCA baseline: no trained parameters; fitted (scikit-learn, exact) from the normal "
            f"training images: mean {d:,} + {k} components x {d:,} = {(k + 1) * d:,} numbers",
            f"Anomaly score: {SCORE_FORMULA}"]


SPEC = ModelSpec(
    name="pca",
    description="PCA baseline: reconstruction error with --pca_components principal components "
                "(scikit-learn; no training loop)",
    build=None, step=None, components=components, final_score=final_score,
    score_formula=SCORE_FORMULA, flagfile="experiments/model_pca.cfg", validate=validate,
    describe=describe, fit=fit, checkpoint_flags=("model", "isize", "pca_components"),
)
