"""Flax Linen models: layers, the SAGAN generator, the DCGAN discriminator, the baselines."""
from __future__ import annotations

from typing import Optional

from sagan_jax.models.discriminator import DCGANDiscriminator
from sagan_jax.models.generator import SAGANGenerator

__all__ = ["DCGANDiscriminator", "SAGANGenerator", "build_models"]


def build_models(cfg, axis_name: Optional[str] = None):
    """(generator, discriminator) of ``cfg.model`` (its spec in sagan_jax.methods).
    ``axis_name`` syncs BatchNorm statistics over a mapped axis (data parallelism); the
    parameters do not depend on it."""
    from sagan_jax import methods

    return methods.get(cfg.model).build(cfg, axis_name)
