"""PyTorch reference of SAGAN, written from docs/design.md (optional: ``pip install
sagan_jax[torch]``).

Only this subpackage imports torch. Module and attribute names mirror the Flax modules
(``inc``, ``down1.conv``, ``cbam1.channel.fc1``, ``conv1.depthwise`` ...) so that
:mod:`sagan_jax.torch_ref.convert` maps weights one to one.
"""
try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "sagan_jax.torch_ref needs PyTorch: pip install 'sagan_jax[torch]' (torch==2.13.0)"
    ) from e

from sagan_jax.torch_ref.models import (  # noqa: E402
    CBAM,
    DCGANDiscriminator,
    DepthwiseSeparableConv,
    DoubleConv,
    Down,
    SAGANGenerator,
    Up,
    build_models,
    init_weights,
)
from sagan_jax.torch_ref.step import TorchTrainer, bce, frozen_bn_stats  # noqa: E402

__all__ = [
    "CBAM", "DCGANDiscriminator", "DepthwiseSeparableConv", "DoubleConv", "Down",
    "SAGANGenerator", "Up", "build_models", "init_weights", "TorchTrainer", "bce",
    "frozen_bn_stats",
]
