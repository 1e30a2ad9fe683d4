"""The Skip-GANomaly generator: the pix2pix U-Net (docs/design.md, section 9), in Flax Linen, NHWC.

num_downs = log2(isize) blocks (isize >= 32), outermost to innermost with (outer, inner)
channels (3, w), (w, 2w), (2w, 4w), (4w, 8w), (8w, 8w) x (num_downs - 5), (8w, 8w) innermost.
Block k, input a:
  down: outermost conv(a); middle BN(conv(LReLU_0.2(a))); innermost conv(LReLU_0.2(a))
        (conv 4x4 stride 2 pad 1, no bias)
  up:   convT 4x4 stride 2 pad 1 of ReLU(child's output); BN after it except outermost, whose
        convT has a bias and is followed by tanh. Every block but the outermost returns
        concat[a, up] (skip first, as pix2pix's torch.cat([x, model(x)], 1)).
(pix2pix's in-place LeakyReLU turns the skip a into LReLU(a), but the parent's ReLU follows
the concatenation and ReLU(LReLU(a)) = ReLU(a), so the arithmetic is the same as here.)
The discriminator is the SAGAN one (DCGANDiscriminator).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from sagan_jax.models.ganomaly import ConvT
from sagan_jax.models.layers import BatchNorm, Conv, at_least_f32, cast


def unet_channels(isize: int, ngf: int, in_channels: int = 3):
    """[(outer, inner), ...] from the outermost block to the innermost."""
    num_downs = int(round(math.log2(isize)))
    if 2 ** num_downs != isize or num_downs < 5:
        raise ValueError(f"image size {isize} must be a power of two >= 32 for the U-Net")
    w = ngf
    return ([(in_channels, w), (w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w)]
            + [(8 * w, 8 * w)] * (num_downs - 5) + [(8 * w, 8 * w)])


class UNetGenerator(nn.Module):
    """Computes in ``dtype`` (None: the input's; float32 parameters and BatchNorm
    statistics); output at least float32."""

    ngf: int = 64
    axis_name: Optional[str] = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = True, update_stats: bool = True):
        chans = unet_channels(x.shape[1], self.ngf, x.shape[-1])
        n = len(chans)
        pad = ((1, 1), (1, 1))
        dt = self.dtype

        def bn(name, h):
            return BatchNorm(axis_name=self.axis_name, dtype=dt, name=name)(h, train, update_stats)

        inputs, h = [], cast(x, dt)
        for k, (_, inner) in enumerate(chans):
            inputs.append(h)
            if k > 0:
                h = nn.leaky_relu(h, 0.2)
            h = Conv(inner, 4, 2, pad, use_bias=False, name=f"down{k}", dtype=dt)(h)
            if 0 < k < n - 1:
                h = bn(f"down_bn{k}", h)
        # h: innermost down output; climb back up.
        for k in reversed(range(n)):
            outer = chans[k][0]
            h = nn.relu(h)
            if k == 0:
                up = ConvT(outer, 4, 2, 1, use_bias=True, name="up0", dtype=dt)(h)
                return at_least_f32(jnp.tanh(up))
            h = bn(f"up_bn{k}", ConvT(outer, 4, 2, 1, name=f"up{k}", dtype=dt)(h))
            h = jnp.concatenate([inputs[k], h], axis=-1)
