"""DCGAN discriminator ("BasicDiscriminator", docs/design.md, section 4)."""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn

from sagan_jax.models.layers import BatchNorm, Conv, at_least_f32, cast


class DCGANDiscriminator(nn.Module):
    """Returns (logit, features): features f(x) of shape (B, 1, 1, nz) and the logit of D(x)
    (D(x) = sigmoid(logit)); losses use the logit for numerical stability.

    conv4x4/2 (3->ndf, no bias) -> LReLU(0.2); while the map is larger than 4x4:
    conv4x4/2 (c->2c, no bias) -> BN -> LReLU(0.2); conv4x4/1 valid (c->nz): features;
    classifier conv3x3 'same' (nz->1, no bias).

    Mixed precision: computes in ``dtype`` (None: the input's; parameters and BatchNorm
    statistics float32) and returns logit and features in at least float32.
    """

    ndf: int = 64
    nz: int = 100
    axis_name: Optional[str] = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = True, update_stats: bool = True):
        size = x.shape[1]
        if size % 16:
            raise ValueError(f"image size {size} must be a multiple of 16")
        pad = ((1, 1), (1, 1))
        dt = self.dtype
        x = cast(x, dt)
        h = Conv(self.ndf, 4, 2, pad, use_bias=False, name="initial_conv", dtype=dt)(x)
        h = nn.leaky_relu(h, 0.2)
        size, c, i = size // 2, self.ndf, 0
        while size > 4:
            h = Conv(2 * c, 4, 2, pad, use_bias=False, name=f"pyramid_conv{i}", dtype=dt)(h)
            h = BatchNorm(axis_name=self.axis_name, dtype=dt, name=f"pyramid_bn{i}")(
                h, train, update_stats)
            h = nn.leaky_relu(h, 0.2)
            size, c, i = size // 2, 2 * c, i + 1
        features = Conv(self.nz, 4, 1, "VALID", use_bias=False, name="final_conv", dtype=dt)(h)
        logit = Conv(1, 3, 1, "SAME", use_bias=False, name="classifier", dtype=dt)(features)
        return at_least_f32(logit.reshape(x.shape[0])), at_least_f32(features)
