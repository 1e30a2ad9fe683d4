"""Which networks, training step and anomaly score each ``--model`` uses (SPEC section 8).

  model          G                        D                       step           final score
  sagan          SAGANGenerator           DCGANDiscriminator      SAGAN step     lam R + (1-lam) L
  skip_ganomaly  UNetGenerator (pix2pix)  DCGANDiscriminator      SAGAN step     lam R + (1-lam) L
  ganomaly       GANomalyGenerator        GANomalyDiscriminator   ganomaly_step  L (latent MSE)
  egbad          EGBADGenerator (E + G)   EGBADDiscriminator      egbad_step     lam R + (1-lam) L

Per-image components (both returned for every model, so the loop can log their AUCs alone):
  sagan, skip_ganomaly: R = mean (x - G(x))^2,  L = mean (f(x) - f(G(x)))^2  (f: D features)
  ganomaly:             R = mean (x - G(x))^2,  L = mean (E1(x) - E2(G(x)))^2 (the score)
  egbad:                R = mean |x - G(E(x))|, L = mean |f(x, E(x)) - f(G(E(x)), E(x))|
                        (Zenati et al.'s L1 residual and feature-matching score)
Higher is more anomalous for all. ``lam`` is --score_lambda: the paper's SAGAN 0.2; the
Skip-GANomaly and EGBAD originals weight the residual by 0.9 (set in
experiments/model_<name>.cfg, not in code). Per-model training defaults live in those
flagfiles too.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from sagan_jax import scoring

MODELS = ("sagan", "skip_ganomaly", "ganomaly", "egbad")


def build(cfg, axis_name: Optional[str] = None):
    """(generator, discriminator) of ``cfg.model``."""
    from sagan_jax.models.discriminator import DCGANDiscriminator

    if cfg.model == "sagan":
        from sagan_jax.models.generator import SAGANGenerator

        g = SAGANGenerator(
            ngf=cfg.ngf, use_dsc=cfg.use_dsc, use_cbam=cfg.use_cbam,
            kernels_per_layer=cfg.kernels_per_layer, dsc_impl=cfg.dsc_impl,
            pool_after_cbam=cfg.pool_after_cbam, axis_name=axis_name,
        )
        return g, DCGANDiscriminator(ndf=cfg.ndf, nz=cfg.nz, axis_name=axis_name)
    if cfg.model == "skip_ganomaly":
        from sagan_jax.models.skip_ganomaly import UNetGenerator

        return (UNetGenerator(ngf=cfg.ngf, axis_name=axis_name),
                DCGANDiscriminator(ndf=cfg.ndf, nz=cfg.nz, axis_name=axis_name))
    if cfg.model == "ganomaly":
        from sagan_jax.models.ganomaly import GANomalyDiscriminator, GANomalyGenerator

        return (GANomalyGenerator(ngf=cfg.ngf, nz=cfg.nz, axis_name=axis_name),
                GANomalyDiscriminator(ndf=cfg.ndf, axis_name=axis_name))
    if cfg.model == "egbad":
        from sagan_jax.models.egbad import EGBADDiscriminator, EGBADGenerator

        return (EGBADGenerator(ngf=cfg.ngf, nz=cfg.nz, isize=cfg.isize, axis_name=axis_name),
                EGBADDiscriminator(ndf=cfg.ndf, nz=cfg.nz, axis_name=axis_name))
    raise ValueError(f"unknown model {cfg.model!r}; allowed: {', '.join(MODELS)}")


def uses_sagan_step(model: str) -> bool:
    return model in ("sagan", "skip_ganomaly")


def score_batch(cfg, variables: dict, x, train: bool):
    """(R, L, reconstruction) of one batch; see the module docstring. Traceable (jit)."""
    import jax.numpy as jnp

    g, d = build(cfg)
    kw = dict(train=train, update_stats=False)
    g_vars = {"params": variables["g_params"], "batch_stats": variables["g_stats"]}
    d_vars = {"params": variables["d_params"], "batch_stats": variables["d_stats"]}
    b = x.shape[0]
    if uses_sagan_step(cfg.model):
        recon = g.apply(g_vars, x, **kw)
        _, feat_real = d.apply(d_vars, x, **kw)
        _, feat_fake = d.apply(d_vars, recon, **kw)
        r, lat = scoring.per_image_scores(x, recon, feat_real, feat_fake)
        return r, lat, recon
    if cfg.model == "ganomaly":
        recon, latent_i, latent_o = g.apply(g_vars, x, **kw)
        r = jnp.mean(jnp.square(x - recon).reshape(b, -1), axis=1)
        lat = jnp.mean(jnp.square(latent_i - latent_o), axis=1)
        return r, lat, recon
    if cfg.model == "egbad":
        recon, z = g.apply(g_vars, x, **kw)
        _, feat_real = d.apply(d_vars, x, z, **kw)
        _, feat_fake = d.apply(d_vars, recon, z, **kw)
        r = jnp.mean(jnp.abs(x - recon).reshape(b, -1), axis=1)
        lat = jnp.mean(jnp.abs(feat_real - feat_fake).reshape(b, -1), axis=1)
        return r, lat, recon
    raise ValueError(f"unknown model {cfg.model!r}; allowed: {', '.join(MODELS)}")


def final_score(cfg, r, lat) -> np.ndarray:
    """The raw anomaly score of ``cfg.model`` from the two components (higher = more
    anomalous; min-max scaling is applied by the caller)."""
    if cfg.model == "ganomaly":
        return np.asarray(lat, np.float64)
    return scoring.anomaly_score(r, lat, cfg.score_lambda)


SCORE_FORMULA = {
    "sagan": "lam * mean (x - G(x))^2 + (1 - lam) * mean (f(x) - f(G(x)))^2",
    "skip_ganomaly": "lam * mean (x - G(x))^2 + (1 - lam) * mean (f(x) - f(G(x)))^2",
    "ganomaly": "mean (E1(x) - E2(G(x)))^2",
    "egbad": "lam * mean |x - G(E(x))| + (1 - lam) * mean |f(x, E(x)) - f(G(E(x)), E(x))|",
}
