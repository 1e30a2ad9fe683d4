"""Flax Linen models: layers, the SAGAN generator, the DCGAN discriminator."""
from __future__ import annotations

from typing import Optional

from sagan_jax.models.discriminator import DCGANDiscriminator
from sagan_jax.models.generator import SAGANGenerator

__all__ = ["DCGANDiscriminator", "SAGANGenerator", "build_models"]


def build_models(cfg, axis_name: Optional[str] = None):
    """(generator, discriminator) for a Config. ``axis_name`` syncs BatchNorm statistics over
    a mapped axis (data parallelism); the parameters do not depend on it."""
    if cfg.model != "sagan":  # the baselines (SPEC section 8): sagan_jax.models.registry
        from sagan_jax.models.registry import build

        return build(cfg, axis_name)
    g = SAGANGenerator(
        ngf=cfg.ngf,
        use_dsc=cfg.use_dsc,
        use_cbam=cfg.use_cbam,
        kernels_per_layer=cfg.kernels_per_layer,
        dsc_impl=cfg.dsc_impl,
        pool_after_cbam=cfg.pool_after_cbam,
        axis_name=axis_name,
    )
    d = DCGANDiscriminator(ndf=cfg.ndf, nz=cfg.nz, axis_name=axis_name)
    return g, d
