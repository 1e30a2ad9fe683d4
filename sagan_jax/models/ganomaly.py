"""GANomaly (docs/design.md, section 9): generator = encoder -> decoder -> encoder, DCGAN
discriminator with a 1-channel output. Also the DCGAN encoder/decoder that EGBAD reuses.

PyTorch layer for layer (NHWC here), isize a power of two >= 16, no extra layers:
  DCGANEncoder(nz, w): conv4x4/2 pad1 (3->w, no bias) -> LReLU(0.2); while the map is
      larger than 4x4: conv4x4/2 pad1 (c->2c, no bias) -> BN -> LReLU(0.2);
      conv4x4/1 pad0 (c->nz, no bias). ``features`` is the map before that last conv.
  DCGANDecoder(w): c = w * isize / 8; convT4x4/1 pad0 (nz->c, no bias) -> BN -> ReLU
      (1x1 -> 4x4); while the map is smaller than isize/2: convT4x4/2 pad1 (c->c/2, no bias)
      -> BN -> ReLU; convT4x4/2 pad1 (c->3, no bias) -> tanh.
Every weight ~ N(0, 0.02), BN scale ~ N(1, 0.02) (docs/design.md, section 4).
Mixed precision: every module computes in ``dtype`` (None: the inputs' dtype) with float32
parameters and BatchNorm statistics; the networks' outputs are at least float32.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from sagan_jax.models.layers import (BatchNorm, Conv, at_least_f32, bias_init, cast,
                                     is_low_precision, weight_init)


def ConvT(features, kernel_size, strides, pad, use_bias=False, name=None, dtype=None):
    """PyTorch ConvTranspose2d(k, stride, padding=pad): the gradient of a convolution, i.e.
    lax.conv_transpose with a flipped kernel and padding k - 1 - pad on each side.
    Kernel shape (k, k, out, in); parameter count equals PyTorch's."""
    p = kernel_size - 1 - pad
    return nn.ConvTranspose(
        features, (kernel_size, kernel_size), strides=(strides, strides),
        padding=((p, p), (p, p)), use_bias=use_bias, transpose_kernel=True,
        kernel_init=weight_init, bias_init=bias_init, dtype=dtype, param_dtype=jnp.float32,
        preferred_element_type=jnp.float32 if is_low_precision(dtype) else None,
        name=name,
    )


def _check_size(size):
    if size < 16 or size & (size - 1):
        raise ValueError(f"image size {size} must be a power of two >= 16 for the DCGAN nets")


class DCGANEncoder(nn.Module):
    """Returns (code, features): code (B, 1, 1, nz), features (B, 4, 4, C)."""

    nz: int = 100
    width: int = 64
    axis_name: Optional[str] = None
    with_final: bool = True  # False: no last conv (code is None), only the features
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = True, update_stats: bool = True):
        size = x.shape[1]
        _check_size(size)
        pad = ((1, 1), (1, 1))
        dt = self.dtype
        x = cast(x, dt)
        h = nn.leaky_relu(
            Conv(self.width, 4, 2, pad, use_bias=False, name="initial_conv", dtype=dt)(x), 0.2)
        size, c, i = size // 2, self.width, 0
        while size > 4:
            h = Conv(2 * c, 4, 2, pad, use_bias=False, name=f"pyramid_conv{i}", dtype=dt)(h)
            h = BatchNorm(axis_name=self.axis_name, dtype=dt, name=f"pyramid_bn{i}")(
                h, train, update_stats)
            h = nn.leaky_relu(h, 0.2)
            size, c, i = size // 2, 2 * c, i + 1
        if not self.with_final:
            return None, h
        code = Conv(self.nz, 4, 1, "VALID", use_bias=False, name="final_conv", dtype=dt)(h)
        return code, h


class DCGANDecoder(nn.Module):
    """z (B, 1, 1, nz) -> image (B, isize, isize, out_channels) in [-1, 1]."""

    isize: int = 32
    width: int = 64
    out_channels: int = 3
    axis_name: Optional[str] = None
    dtype: Any = None

    @nn.compact
    def __call__(self, z, train: bool = True, update_stats: bool = True):
        _check_size(self.isize)
        dt = self.dtype
        c = self.width * self.isize // 8
        h = ConvT(c, 4, 1, 0, name="initial_convt", dtype=dt)(cast(z, dt))
        h = nn.relu(BatchNorm(axis_name=self.axis_name, dtype=dt, name="initial_bn")(
            h, train, update_stats))
        size, i = 4, 0
        while size < self.isize // 2:
            h = ConvT(c // 2, 4, 2, 1, name=f"pyramid_convt{i}", dtype=dt)(h)
            h = BatchNorm(axis_name=self.axis_name, dtype=dt, name=f"pyramid_bn{i}")(
                h, train, update_stats)
            h = nn.relu(h)
            size, c, i = size * 2, c // 2, i + 1
        return jnp.tanh(ConvT(self.out_channels, 4, 2, 1, name="final_convt", dtype=dt)(h))


class GANomalyGenerator(nn.Module):
    """x -> (G(x), z = E1(x), z' = E2(G(x))); codes flattened to (B, nz)."""

    ngf: int = 64
    nz: int = 100
    axis_name: Optional[str] = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = True, update_stats: bool = True):
        kw = dict(nz=self.nz, width=self.ngf, axis_name=self.axis_name, dtype=self.dtype)
        latent_i, _ = DCGANEncoder(**kw, name="encoder1")(x, train, update_stats)
        fake = DCGANDecoder(x.shape[1], self.ngf, x.shape[-1], self.axis_name, self.dtype,
                            name="decoder")(latent_i, train, update_stats)
        latent_o, _ = DCGANEncoder(**kw, name="encoder2")(fake, train, update_stats)
        b = x.shape[0]
        return (at_least_f32(fake), at_least_f32(latent_i.reshape(b, -1)),
                at_least_f32(latent_o.reshape(b, -1)))


class GANomalyDiscriminator(nn.Module):
    """DCGAN encoder with a 1-channel output. Returns (logit (B,), features (B, 4, 4, C)),
    the features being the map before the last convolution (GANomaly's ``features``)."""

    ndf: int = 64
    axis_name: Optional[str] = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = True, update_stats: bool = True):
        logit, features = DCGANEncoder(1, self.ndf, self.axis_name, dtype=self.dtype,
                                       name="encoder")(x, train, update_stats)
        return at_least_f32(logit.reshape(x.shape[0])), at_least_f32(features)
