"""Building blocks of the SAGAN generator (SPEC sections 2 and 4), in Flax Linen, NHWC.

Every module here computes exactly the PyTorch layer it stands for (same parameter count, same
output-channel order, same BatchNorm statistics), so that weights transfer one to one.
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sagan_jax.config import DSC_IMPLS

# --- Initialisation (SPEC section 4) -------------------------------------------------------
weight_init = nn.initializers.normal(stddev=0.02)
bias_init = nn.initializers.zeros


def bn_scale_init(key, shape, dtype=jnp.float32):
    """BatchNorm scale ~ N(1, 0.02)."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)



class BatchNorm(nn.Module):
    """BatchNorm with PyTorch's semantics.

    Training mode normalises with the biased batch variance and updates the running variance
    with the *unbiased* one (n / (n - 1)), as torch.nn.BatchNorm2d does; momentum 0.1 in
    PyTorch terms. With ``axis_name`` the statistics are averaged over that mapped axis, so a
    data-parallel step normalises with the statistics of the global batch.
    ``update_stats=False`` uses batch statistics without touching the running averages.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    axis_name: Optional[str] = None

    @nn.compact
    def __call__(self, x, train: bool, update_stats: bool = True):
        c = x.shape[-1]
        scale = self.param("scale", bn_scale_init, (c,))
        bias = self.param("bias", bias_init, (c,))
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axes)
            mean_sq = jnp.mean(jnp.square(x), axes)
            n = int(np.prod([x.shape[a] for a in axes]))
            if self.axis_name is not None:
                mean, mean_sq = jax.lax.pmean((mean, mean_sq), self.axis_name)
                n *= jax.lax.psum(1, self.axis_name)
            var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
            if update_stats and not self.is_initializing():
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                ra_mean.value = (1 - m) * ra_mean.value + m * mean
                ra_var.value = (1 - m) * ra_var.value + m * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        return y * scale + bias


def Conv(features, kernel_size=3, strides=1, padding="SAME", use_bias=True, name=None):
    """nn.Conv with the SPEC initialisation (weights N(0, 0.02), biases 0)."""
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(strides, strides),
        padding=padding,
        use_bias=use_bias,
        kernel_init=weight_init,
        bias_init=bias_init,
        name=name,
    )


def _depthwise_shift(x, kernel, bias):
    """3x3 ('same') depthwise convolution as k*k shifted multiply-adds (K = 1, NHWC).

    kernel: (k, k, 1, C). Much faster than XLA:CPU's grouped convolution (SPEC section 10).
    """
    k = kernel.shape[0]
    p = k // 2
    h, w = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (p, k - 1 - p), (p, k - 1 - p), (0, 0)))
    out = None
    for i in range(k):
        for j in range(k):
            term = xp[:, i : i + h, j : j + w, :] * kernel[i, j, 0]
            out = term if out is None else out + term
    return out + bias


def auto_dsc_impl(cin: int, m: int, cout: int, h: int, w: int) -> str:
    """The impl 'auto' picks for one DSC layer, from its static shape (SPEC section 10).

    Measured with experiments/bench_dsc.py (XLA:CPU, batch 64, m = 2, forward + backward):
    the composed dense kernel wins where the map is large and the channels moderate (64->64
    at 32x32: 206 ms vs 469 ms shifted; 128->64 at 16x16: 83 vs 314), since XLA's dense
    convolution runs near peak while the shifted multiply-adds are memory-bound; at 4x4 and
    below, and for 512+ input channels, 'dense' is 2-100x slower (2x2, 512->512: 1.8 s vs
    14 ms) and the shifted form wins. 'repeat' and 'xla' never win on CPU. On other
    backends the same rule applies (re-measure there with bench_dsc.py)."""
    if cin < 16:
        return "dense"
    if h * w >= 64 and cin <= 256:
        return "dense"
    return "shift"


class DepthwiseSeparableConv(nn.Module):
    """DSC(in, out, k, kernels_per_layer=m): depthwise k x k (groups=in, in*m outputs, bias),
    then pointwise 1x1 (in*m -> out, bias). Output channel c*m + j of the depthwise stage reads
    input channel c, as in PyTorch.

    ``impl`` picks an exact way to compute it (SPEC section 10):
      - 'dense': compose both kernels into one dense k x k kernel,
        W[i,j,c,o] = sum_m dw[i,j,c*m+m'] pw[c*m+m',o], bias pw^T b_dw + b_pw.
      - 'shift': repeat channels m times, then k*k shifted multiply-adds, then the 1x1.
      - 'repeat': repeat channels m times, then a K = 1 grouped XLA convolution.
      - 'xla': XLA's grouped convolution with a channel multiplier (very slow on CPU).
      - 'auto': per layer, whichever of the above :func:`auto_dsc_impl` picks for its shape.
    The parameters are the same for every impl, so checkpoints do not depend on it.
    """

    features: int
    kernel_size: int = 3
    kernels_per_layer: int = 2
    impl: str = "dense"

    @nn.compact
    def __call__(self, x):
        cin, m, k = x.shape[-1], self.kernels_per_layer, self.kernel_size
        dw = self.param("depthwise_kernel", weight_init, (k, k, 1, cin * m))
        dw_b = self.param("depthwise_bias", bias_init, (cin * m,))
        pw = self.param("pointwise_kernel", weight_init, (1, 1, cin * m, self.features))
        pw_b = self.param("pointwise_bias", bias_init, (self.features,))
        dn = ("NHWC", "HWIO", "NHWC")
        impl = self.impl
        if impl == "auto":
            impl = auto_dsc_impl(cin, m, self.features, x.shape[1], x.shape[2])
        if impl == "dense":
            w = jnp.einsum("ijcm,cmo->ijco", dw.reshape(k, k, cin, m), pw[0, 0].reshape(cin, m, -1))
            b = dw_b @ pw[0, 0] + pw_b
            y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
            return y + b
        if impl == "shift":
            xr = jnp.repeat(x, m, axis=-1) if m > 1 else x
            y = _depthwise_shift(xr, dw, dw_b)
        elif impl == "repeat":
            xr = jnp.repeat(x, m, axis=-1) if m > 1 else x
            y = jax.lax.conv_general_dilated(
                xr, dw, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=cin * m
            ) + dw_b
        elif impl == "xla":
            y = jax.lax.conv_general_dilated(
                x, dw, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=cin
            ) + dw_b
        else:
            raise ValueError(f"unknown DSC impl {self.impl!r}; allowed: {', '.join(DSC_IMPLS)}")
        return jnp.einsum("bhwc,co->bhwo", y, pw[0, 0]) + pw_b


class ChannelAttention(nn.Module):
    """CBAM channel attention: x * sigmoid(mlp(avgpool x) + mlp(maxpool x)), shared MLP."""

    reduction: int = 16

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        hidden = max(c // self.reduction, 1)
        fc1 = nn.Dense(hidden, kernel_init=weight_init, bias_init=bias_init, name="fc1")
        fc2 = nn.Dense(c, kernel_init=weight_init, bias_init=bias_init, name="fc2")
        mlp = lambda v: fc2(nn.relu(fc1(v)))
        att = jax.nn.sigmoid(mlp(jnp.mean(x, axis=(1, 2))) + mlp(jnp.max(x, axis=(1, 2))))
        return x * att[:, None, None, :]


class SpatialAttention(nn.Module):
    """CBAM spatial attention: [channel mean, channel max] -> 7x7 conv (no bias) -> BN ->
    sigmoid; multiply the input by that map."""

    kernel_size: int = 7
    axis_name: Optional[str] = None

    @nn.compact
    def __call__(self, x, train: bool, update_stats: bool = True):
        s = jnp.stack([jnp.mean(x, axis=-1), jnp.max(x, axis=-1)], axis=-1)
        s = Conv(1, self.kernel_size, use_bias=False, name="conv")(s)
        s = BatchNorm(axis_name=self.axis_name, name="bn")(s, train, update_stats)
        return x * jax.nn.sigmoid(s)


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention."""

    reduction: int = 16
    kernel_size: int = 7
    axis_name: Optional[str] = None

    @nn.compact
    def __call__(self, x, train: bool, update_stats: bool = True):
        x = ChannelAttention(self.reduction, name="channel")(x)
        return SpatialAttention(self.kernel_size, self.axis_name, name="spatial")(
            x, train, update_stats
        )


def align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix with align_corners=True semantics:
    output i samples input position i * (n_in - 1) / (n_out - 1)."""
    a = np.zeros((n_out, n_in), np.float32)
    if n_in == 1 or n_out == 1:
        a[:, 0] = 1.0
        return a
    pos = np.arange(n_out, dtype=np.float64) * (n_in - 1) / (n_out - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    a[np.arange(n_out), lo] += (1 - frac).astype(np.float32)
    a[np.arange(n_out), hi] += frac.astype(np.float32)
    return a


def upsample_bilinear_align_corners(x, scale: int = 2):
    """PyTorch ``nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)`` on NHWC.

    (``jax.image.resize`` uses half-pixel centres, i.e. align_corners=False: not this.)"""
    _, h, w, _ = x.shape
    ah = jnp.asarray(align_corners_matrix(h, h * scale))
    aw = jnp.asarray(align_corners_matrix(w, w * scale))
    x = jnp.einsum("oh,bhwc->bowc", ah, x)
    return jnp.einsum("pw,bowc->bopc", aw, x)


class DoubleConv(nn.Module):
    """conv(in->mid) -> BN -> ReLU -> conv(mid->out) -> BN -> ReLU; conv is a DSC or a plain
    3x3 convolution with bias."""

    features: int
    mid_features: Optional[int] = None
    use_dsc: bool = True
    kernels_per_layer: int = 2
    dsc_impl: Sequence[str] | str = "dense"
    axis_name: Optional[str] = None

    def _conv(self, features, i, name):
        impl = self.dsc_impl if isinstance(self.dsc_impl, str) else self.dsc_impl[i]
        if self.use_dsc:
            return DepthwiseSeparableConv(features, 3, self.kernels_per_layer, impl, name=name)
        return Conv(features, 3, name=name)

    @nn.compact
    def __call__(self, x, train: bool, update_stats: bool = True):
        mid = self.mid_features or self.features
        x = self._conv(mid, 0, "conv1")(x)
        x = nn.relu(BatchNorm(axis_name=self.axis_name, name="bn1")(x, train, update_stats))
        x = self._conv(self.features, 1, "conv2")(x)
        return nn.relu(BatchNorm(axis_name=self.axis_name, name="bn2")(x, train, update_stats))


def max_pool_2x2(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2))


def pad_to(x, ref):
    """Pad x (NHWC) at the bottom/right like the U-Net's F.pad(diff//2, diff - diff//2)."""
    dy, dx = ref.shape[1] - x.shape[1], ref.shape[2] - x.shape[2]
    if dy == 0 and dx == 0:
        return x
    return jnp.pad(x, ((0, 0), (dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2), (0, 0)))

