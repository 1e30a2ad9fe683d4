"""Flax Linen models: layers, the SAGAN generator, the DCGAN discriminator, the baselines (networks
only; which model uses which is sagan_jax.methods)."""
from __future__ import annotations

from sagan_jax.models.discriminator import DCGANDiscriminator
from sagan_jax.models.generator import SAGANGenerator

__all__ = ["DCGANDiscriminator", "SAGANGenerator"]
