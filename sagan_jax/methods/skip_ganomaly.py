"""Skip-GANomaly (Akcay et al. 2019): pix2pix U-Net generator and the DCGAN discriminator,
trained with the SAGAN step; the same feature-matching score (its originals weight R by 0.9,
set in experiments/model_skip_ganomaly.cfg)."""
from __future__ import annotations

from sagan_jax.config import ConfigError
from sagan_jax.methods.sagan import FEATURE_SCORE, feature_components, train_step
from sagan_jax.methods.spec import ModelSpec, power_of_two_isize, weighted_score
from sagan_jax.models.discriminator import DCGANDiscriminator
from sagan_jax.models.skip_ganomaly import UNetGenerator


def build(cfg, axis_name=None):
    import jax.numpy as jnp

    dtype = None if cfg.compute_dtype == "float32" else jnp.dtype(cfg.compute_dtype)
    return (UNetGenerator(ngf=cfg.ngf, axis_name=axis_name, dtype=dtype),
            DCGANDiscriminator(ndf=cfg.ndf, nz=cfg.nz, axis_name=axis_name, dtype=dtype))


def validate(cfg):
    if cfg.isize < 32:
        raise ConfigError(
            f"--isize={cfg.isize} is too small for --model=skip_ganomaly: its U-Net halves "
            "log2(isize) >= 5 times; use 32, 64, 128, ..."
        )
    power_of_two_isize(cfg)


SPEC = ModelSpec(
    name="skip_ganomaly",
    description="Skip-GANomaly: pix2pix U-Net generator, DCGAN discriminator, SAGAN step",
    build=build, step=train_step, components=feature_components, final_score=weighted_score,
    score_formula=FEATURE_SCORE, flagfile="experiments/model_skip_ganomaly.cfg",
    validate=validate,
)
