"""SAGAN (the paper): attention U-Net generator with CBAM skips and DSCs, DCGAN discriminator,
trained with the SAGAN step; A = lambda R + (1 - lambda) L with L on D's features."""
from __future__ import annotations

from sagan_jax import scoring
from sagan_jax.methods.spec import ModelSpec, split_variables, weighted_score
from sagan_jax.training.step import train_step

FEATURE_SCORE = "lam * mean (x - G(x))^2 + (1 - lam) * mean (f(x) - f(G(x)))^2"


def build(cfg, axis_name=None, dsc_impls=None):
    """``dsc_impls``: per-layer DSC impls ((layer, impl), ...); default: the autotuned mapping
    of sagan_jax.models.dsc_autotune.impls_for (cached choices; never times anything)."""
    import jax.numpy as jnp

    from sagan_jax.models import dsc_autotune
    from sagan_jax.models.discriminator import DCGANDiscriminator
    from sagan_jax.models.generator import SAGANGenerator

    if dsc_impls is None:
        dsc_impls = dsc_autotune.impls_for(cfg)
    dtype = None if cfg.compute_dtype == "float32" else jnp.dtype(cfg.compute_dtype)
    g = SAGANGenerator(
        ngf=cfg.ngf, use_dsc=cfg.use_dsc, use_cbam=cfg.use_cbam,
        kernels_per_layer=cfg.kernels_per_layer, dsc_impl=cfg.dsc_impl,
        pool_after_cbam=cfg.pool_after_cbam, axis_name=axis_name,
        dsc_impls=tuple(dsc_impls), dtype=dtype,
    )
    return g, DCGANDiscriminator(ndf=cfg.ndf, nz=cfg.nz, axis_name=axis_name, dtype=dtype)


def feature_components(cfg, variables, x, train):
    """R = mean (x - G(x))^2, L = mean (f(x) - f(G(x)))^2 with f the D features (also
    Skip-GANomaly's)."""
    from sagan_jax import methods

    g, d = methods.get(cfg.model).build(cfg)
    g_vars, d_vars = split_variables(variables)
    kw = dict(train=train, update_stats=False)
    recon = g.apply(g_vars, x, **kw)
    _, feat_real = d.apply(d_vars, x, **kw)
    _, feat_fake = d.apply(d_vars, recon, **kw)
    r, lat = scoring.per_image_scores(x, recon, feat_real, feat_fake)
    return r, lat, recon


def validate(cfg):
    from sagan_jax.config import ConfigError

    if cfg.ngf % 16 and cfg.use_cbam:
        raise ConfigError(
            f"--ngf={cfg.ngf} must be a multiple of 16 with CBAM (reduction ratio 16)"
        )


def describe(cfg, counts):
    from sagan_jax.models.summary import sagan_table1_lines

    return sagan_table1_lines(cfg)


SPEC = ModelSpec(
    name="sagan",
    description="SAGAN (the paper): CBAM-skip U-Net with DSCs, DCGAN discriminator",
    build=build, step=train_step, components=feature_components, final_score=weighted_score,
    score_formula=FEATURE_SCORE, flagfile="experiments/model_sagan.cfg", validate=validate,
    describe=describe,
)
