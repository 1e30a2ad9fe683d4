"""The SAGAN generator: an attention U-Net (docs/design.md, section 3)."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from sagan_jax.models.layers import (
    CBAM,
    Conv,
    DoubleConv,
    at_least_f32,
    cast,
    max_pool_2x2,
    pad_to,
    upsample_bilinear_align_corners,
)


class SAGANGenerator(nn.Module):
    """U-Net with CBAM on every skip and (optionally) depthwise-separable convolutions.

        x1 = DoubleConv(3, w)(x);    a1 = CBAM(x1)
        x2 = Down(w, 2w)(x1);        a2 = CBAM(x2)
        x3 = Down(2w, 4w)(x2);       a3 = CBAM(x3)
        x4 = Down(4w, 8w)(x3);       a4 = CBAM(x4)
        x5 = Down(8w, 8w)(x4);       a5 = CBAM(x5)
        y = Up(a5, a4) -> 4w; Up(., a3) -> 2w; Up(., a2) -> w; Up(., a1) -> w; 1x1 conv -> 3

    ``pool_after_cbam=True`` is the paper's prose variant (Down pools CBAM(x) instead of x).
    ``use_cbam=False`` passes the maps straight to the skips. No output activation (authors'
    code). ``dsc_impl`` only chooses how DSCs are computed, never their math or parameters;
    ``dsc_impls`` overrides it per layer: ((layer, impl), ...) with layer names such as
    'inc.conv1' or 'up4.conv2' (what sagan_jax.methods.dsc_autotune.resolve_dsc_impls returns;
    a static tuple, so the module stays hashable). Layers it does not name use ``dsc_impl``.

    Mixed precision: activations and convolutions in ``dtype`` (None: the input's dtype;
    parameters and BatchNorm statistics float32); the output is at least float32, so losses and
    scores are computed in float32.
    """

    ngf: int = 64
    out_channels: int = 3
    use_dsc: bool = True
    use_cbam: bool = True
    kernels_per_layer: int = 2
    dsc_impl: str = "dense"
    pool_after_cbam: bool = False
    axis_name: Optional[str] = None
    dsc_impls: Tuple[Tuple[str, str], ...] = ()
    dtype: Any = None

    def _double(self, features, mid=None, name=None):
        per_layer = dict(self.dsc_impls)
        impl = tuple(per_layer.get(f"{name}.conv{i}", self.dsc_impl) for i in (1, 2))
        return DoubleConv(
            features,
            mid,
            use_dsc=self.use_dsc,
            kernels_per_layer=self.kernels_per_layer,
            dsc_impl=impl if impl[0] != impl[1] else impl[0],
            axis_name=self.axis_name,
            dtype=self.dtype,
            name=name,
        )

    @nn.compact
    def __call__(self, x, train: bool = True, update_stats: bool = True):
        w = self.ngf
        widths = (w, 2 * w, 4 * w, 8 * w, 8 * w)  # factor 2 in the bottleneck (bilinear)
        if x.shape[1] % 16 or x.shape[2] % 16:
            raise ValueError(f"image size {x.shape[1:3]} must be a multiple of 16 (4 poolings)")

        def attend(h, i):
            if not self.use_cbam:
                return h
            return CBAM(axis_name=self.axis_name, dtype=self.dtype, name=f"cbam{i + 1}")(
                h, train, update_stats)

        x = cast(x, self.dtype)
        feats, atts = [], []
        h = self._double(widths[0], name="inc")(x, train, update_stats)
        for i in range(5):
            if i > 0:
                src = atts[-1] if self.pool_after_cbam else feats[-1]
                h = self._double(widths[i], name=f"down{i}")(max_pool_2x2(src), train, update_stats)
            feats.append(h)
            atts.append(attend(h, i))

        y = atts[4]
        up_widths = (4 * w, 2 * w, w, w)
        for i, (skip, out_w) in enumerate(zip(reversed(atts[:4]), up_widths)):
            u = pad_to(upsample_bilinear_align_corners(y), skip)
            h = jnp.concatenate([skip, u], axis=-1)
            y = self._double(out_w, h.shape[-1] // 2, name=f"up{i + 1}")(h, train, update_stats)
        # The 1x1 output convolution (64 -> 3 channels) runs in float32 whatever the dtype.
        return Conv(self.out_channels, 1, name="outc")(at_least_f32(y))
