"""Building blocks of the SAGAN generator (docs/design.md, sections 3 and 4), in Flax Linen, NHWC.

Every module here computes exactly the PyTorch layer it stands for (same parameter count, same
output-channel order, same BatchNorm statistics), so that weights transfer one to one.

Mixed precision: every module takes ``dtype``, the dtype of its activations and convolutions:
None (the default) computes in the inputs' dtype, as before (float32; float64 in the float64
parity tests); bfloat16 with ``--compute_dtype=bfloat16``. Parameters are always created in
float32 (Flax ``param_dtype``) and cast where they are used; BatchNorm, and every sum that
becomes a kernel or bias gradient, run in at least float32 (:func:`acc_dtype`), so parameters,
optimiser state and running statistics stay float32 and gradients are float32 sums. Networks
return at least float32 (:func:`at_least_f32`).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sagan_jax.config import DSC_IMPLS

def cast(x, dtype):
    """x in ``dtype`` (None: unchanged)."""
    return x if dtype is None else x.astype(dtype)


def acc_dtype(dtype):
    """The dtype sums are accumulated in: float32 for bf16/f16, else ``dtype`` itself."""
    return jnp.promote_types(dtype, jnp.float32)


def at_least_f32(x):
    return x.astype(acc_dtype(x.dtype))


def is_low_precision(dtype) -> bool:
    return dtype is not None and jnp.dtype(dtype).itemsize < 4


# --- Initialisation (docs/design.md, section 4) --------------------------------------------------
# The optimisation barrier keeps XLA from folding the scaling into the normal sampler when the
# initialisation runs as one jitted program (training/state.py:init_state), so the values are
# bit-identical to the op-by-op initialisation (Flax's nn.initializers.normal(0.02)).
_barrier = jax.lax.optimization_barrier


def _scale_weight(n):
    return _barrier(n) * jnp.array(0.02, n.dtype)


def _scale_bn(n):
    # 1 + 0.02 n, rounded after the product and after the sum as op by op. The select (an
    # identity, |n| < 1e30) keeps XLA:CPU from contracting the two into one fused
    # multiply-add, which rounds once and moves ~1% of the values by one ulp under jit.
    n = _barrier(n)
    return 1.0 + jnp.where(jnp.abs(n) > 1e30, n, 0.02 * n)


def weight_init(key, shape, dtype=jnp.float32):
    """Weights ~ N(0, 0.02): nn.initializers.normal(stddev=0.02), bit for bit."""
    rec = _DEFERRED.get()
    if rec is not None:
        return rec.request(key, shape, dtype, _scale_weight)
    return _scale_weight(jax.random.normal(key, shape, dtype))


bias_init = nn.initializers.zeros


def bn_scale_init(key, shape, dtype=jnp.float32):
    """BatchNorm scale ~ N(1, 0.02)."""
    rec = _DEFERRED.get()
    if rec is not None:
        return rec.request(key, shape, dtype, _scale_bn)
    return _scale_bn(jax.random.normal(key, shape, dtype))


# --- One random-number call for a whole initialisation -------------------------------------
# XLA:CPU compiles every jax.random.normal call of a distinct shape as its own threefry loop
# and erf_inv chain: the ~80 normal initialisers of SAGAN at ngf 64 cost ~8 s of compilation
# (one normal of all 5M values: 0.2 s). Inside ``deferred_normals()`` the initialisers above
# return placeholders and record (key, shape); ``materialise`` then draws every value with
# one threefry call over all parameters, with jax.random.normal's own formula per element
# (partitionable threefry: value i of a parameter depends only on its key and i), and puts
# them in place of the placeholders. The values are bit-identical to per-parameter
# jax.random.normal (tests/test_init_jit.py).
_DEFERRED: contextvars.ContextVar = contextvars.ContextVar("sagan_jax_deferred_init",
                                                             default=None)


def batched_normals_supported() -> bool:
    """Whether ``_batched_normal`` reproduces jax.random.normal here: partitionable threefry,
    and jax 0.10's uniform -> normal formula (checked once on another jax version; a changed
    formula falls back to per-parameter jax.random.normal: slower to compile, same values)."""
    partitionable = bool(getattr(jax.config, "jax_threefry_partitionable", False))
    impl = str(getattr(jax.config, "jax_default_prng_impl", ""))
    return partitionable and impl in ("threefry2x32", "threefry") and _formula_matches()


@functools.lru_cache(maxsize=None)
def _formula_matches() -> bool:
    if tuple(jax.__version_info__[:2]) == (0, 10):
        return True  # the version the formula was copied from (tests/test_init_jit.py)
    try:
        keys = [jax.random.key(0), jax.random.fold_in(jax.random.key(1), 7)]
        shapes = [(3, 5), (11,)]
        got = _batched_normal(keys, shapes, jnp.float32)
        return all(np.array_equal(np.asarray(g), np.asarray(jax.random.normal(k, s)))
                   for g, k, s in zip(got, keys, shapes))
    except Exception:  # an API the formula uses is gone: fall back
        return False


class DeferredNormals:
    def __init__(self):
        self.requests = []  # (placeholder, key, shape, dtype, finish)

    def request(self, key, shape, dtype, finish):
        placeholder = jnp.zeros(shape, dtype)
        self.requests.append((placeholder, key, tuple(shape), jnp.dtype(dtype), finish))
        return placeholder

    def materialise(self, tree):
        """``tree`` with every placeholder replaced by its value (one RNG call for all).
        Requests whose placeholder is not in ``tree`` are dropped: Flax calls an initialiser
        again under jax.eval_shape to check the shape of a module's variables when the module
        is called twice (the CBAM MLP), and those calls only return shapes."""
        in_tree = {id(leaf) for leaf in jax.tree.leaves(tree)}
        reqs = [r for r in self.requests if id(r[0]) in in_tree]
        values = {}
        for dtype in {r[3] for r in reqs}:
            same = [r for r in reqs if r[3] == dtype]
            normals = _batched_normal([r[1] for r in same], [r[2] for r in same], dtype)
            for r, n in zip(same, normals):
                values[id(r[0])] = r[4](n)
        return jax.tree.map(lambda leaf: values.get(id(leaf), leaf), tree)


@contextlib.contextmanager
def deferred_normals():
    """Initialisers called inside defer their normal draws to ``materialise`` (see above)."""
    rec = DeferredNormals()
    token = _DEFERRED.set(rec)
    try:
        yield rec
    finally:
        _DEFERRED.reset(token)


def _batched_normal(keys, shapes, dtype):
    """[jax.random.normal(k, s, dtype) for k, s in zip(keys, shapes)], bit for bit, from one
    threefry call (jax 0.10.2's partitionable threefry and its uniform -> normal formula)."""
    from jax.extend.random import threefry2x32_p

    sizes = [int(np.prod(s)) for s in shapes]
    total = sum(sizes)
    starts = np.cumsum([0] + sizes[:-1])
    # Per element: its array's key and its flat index in that array (no gathers, no constant
    # arrays: XLA would spend minutes constant-folding a cumsum over 5M elements).
    kd = [jax.random.key_data(k) for k in keys]
    k1 = jnp.concatenate([jnp.broadcast_to(k[0], (n,)) for k, n in zip(kd, sizes)])
    k2 = jnp.concatenate([jnp.broadcast_to(k[1], (n,)) for k, n in zip(kd, sizes)])
    lo = jnp.concatenate([jax.lax.iota(jnp.uint32, n) for n in sizes])
    hi = jnp.zeros((total,), jnp.uint32)                            # sizes < 2**32
    b1, b2 = threefry2x32_p.bind(k1, k2, hi, lo)
    bits = b1 ^ b2
    # jax._src.random.core._uniform(key, lo, 1.0, shape, dtype) and _normal_real:
    finfo = jnp.finfo(dtype)
    nbits, nmant = finfo.bits, finfo.nmant
    uint = {16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}[nbits]
    if nbits != 32:
        raise NotImplementedError(f"batched normals for {dtype}")
    minval = jnp.asarray(np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype))
    maxval = jnp.asarray(np.array(1.0, dtype))
    float_bits = jax.lax.shift_right_logical(bits, jnp.array(nbits - nmant, uint))
    float_bits = jax.lax.bitwise_or(
        float_bits, jnp.asarray(np.array(1.0, dtype).view(np.dtype(uint)), dtype=uint))
    floats = jax.lax.bitcast_convert_type(float_bits, dtype) - jnp.array(1.0, dtype)
    u = jax.lax.max(minval, floats * (maxval - minval) + minval)
    n = jax.lax.mul(np.array(np.sqrt(2), dtype), jax.lax.erf_inv(u))
    return [n[a:a + size].reshape(s) for a, size, s in zip(starts, sizes, shapes)]


class BatchNorm(nn.Module):
    """BatchNorm with PyTorch's semantics.

    Training mode normalises with the biased batch variance and updates the running variance
    with the *unbiased* one (n / (n - 1)), as torch.nn.BatchNorm2d does; momentum 0.1 in
    PyTorch terms. With ``axis_name`` the statistics are averaged over that mapped axis, so a
    data-parallel step normalises with the statistics of the global batch.
    ``update_stats=False`` uses batch statistics without touching the running averages.
    Statistics, running averages and the normalisation are at least float32 whatever the
    input dtype; the output is in ``dtype`` (None: the input's dtype).
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    axis_name: Optional[str] = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool, update_stats: bool = True):
        out_dtype = self.dtype or x.dtype
        x = at_least_f32(x)
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
        return (y * scale + bias).astype(out_dtype)


def Conv(features, kernel_size=3, strides=1, padding="SAME", use_bias=True, name=None,
         dtype=None):
    """nn.Conv with the initialisation of docs/design.md, section 4 (weights N(0, 0.02), biases 0);
    float32 parameters, computed in ``dtype``. Below float32 the convolution sums, and adds the
    bias, in float32 (its output is float32; the next layer casts it back), so kernel and bias
    gradients are float32 sums."""
    kw = {"conv_general_dilated": _conv_f32_sum} if is_low_precision(dtype) else {}
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=(strides, strides),
        padding=padding,
        use_bias=use_bias,
        kernel_init=weight_init,
        bias_init=bias_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
        **kw,
    )


def _conv_f32_sum(*args, **kwargs):
    return jax.lax.conv_general_dilated(*args, preferred_element_type=jnp.float32, **kwargs)


def _shift_sum(x, kernel, pad_lo: int):
    """sum_ij shift_ij(x) * kernel[i, j, 0]: a k x k depthwise correlation (K = 1, NHWC) as
    k*k shifted multiply-adds over x padded by (pad_lo, k - 1 - pad_lo) on each spatial axis.
    XLA fuses it into one elementwise loop (docs/design.md, section 12)."""
    k = kernel.shape[0]
    h, w = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (pad_lo, k - 1 - pad_lo), (pad_lo, k - 1 - pad_lo), (0, 0)))
    out = None
    for i in range(k):
        for j in range(k):
            term = xp[:, i : i + h, j : j + w, :] * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


def _depthwise_shift(x, kernel, bias):
    """'same' depthwise convolution as k*k shifted multiply-adds (K = 1, NHWC), differentiated
    by JAX. kernel: (k, k, 1, C). Much faster than XLA:CPU's grouped convolution (docs/design.md,
    section 11)."""
    return _shift_sum(x, kernel, kernel.shape[0] // 2) + bias


@jax.custom_vjp
def depthwise_shift_vjp(x, kernel, bias):
    """The same function as :func:`_depthwise_shift`, with a hand-written backward pass.

    JAX's own backward of the shifted form computes each kernel tap's gradient as a reduction
    over a *sliced* input, which XLA:CPU runs 5-10x slower than a plain reduction (gradient of
    a 3x3 depthwise layer, batch 64, 32x32x64: 95 ms, of which ~75 ms are the nine kernel-tap
    reductions). Here the slice moves to the cotangent as a pad: tap (i, j)'s gradient is
    sum(x_padded * pad(g, offset (i, j))), and the input gradient is the same shifted form
    applied to g with the flipped kernel. Same math (summation order aside): 36 ms instead of
    95 at 32x32x64, 15 vs 42 at 16x16x128; slower on 4x4 and smaller maps (the padded maps
    are 2-4x larger there), which is why it is a separate impl and not a replacement."""
    return _depthwise_shift(x, kernel, bias)


def _depthwise_shift_vjp_fwd(x, kernel, bias):
    return _depthwise_shift(x, kernel, bias), (x, kernel)


def _depthwise_shift_vjp_bwd(res, g):
    x, kernel = res
    k = kernel.shape[0]
    lo = k // 2
    # out[y] = sum_i x[y + i - lo] k_i, so dx[t] = sum_i g[t - i + lo] k_i: the shifted form
    # of g with the flipped kernel and the mirrored padding.
    dx = _shift_sum(g, kernel[::-1, ::-1], k - 1 - lo).astype(x.dtype)
    f32 = jnp.float32
    xp = jnp.pad(x, ((0, 0), (lo, k - 1 - lo), (lo, k - 1 - lo), (0, 0))).astype(f32)
    g32 = g.astype(f32)
    taps = []
    for i in range(k):
        for j in range(k):
            gp = jnp.pad(g32, ((0, 0), (i, k - 1 - i), (j, k - 1 - j), (0, 0)))
            taps.append(jnp.sum(xp * gp, axis=(0, 1, 2)))
    dk = jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)
    db = jnp.sum(g32, axis=(0, 1, 2)).astype(kernel.dtype)
    return dx, dk, db


depthwise_shift_vjp.defvjp(_depthwise_shift_vjp_fwd, _depthwise_shift_vjp_bwd)


def auto_dsc_impl(cin: int, m: int, cout: int, h: int, w: int,
                  backend: Optional[str] = None) -> str:
    """The fixed rule 'auto' uses for one DSC layer when it is not autotuned
    (``--dsc_autotune=false``, or no tuned choice for this shape; sagan_jax.methods.dsc_autotune
    measures instead), from the layer's static shape and the backend (docs/design.md, section 11).

    CPU (measured with experiments/bench_dsc.py, XLA:CPU, batch 64, forward + backward):
    the composed dense kernel wins where the map is large and the channels moderate (m = 2:
    64->64 at 32x32: 206 ms vs 469 ms shifted; 128->64 at 16x16: 83 vs 314), since XLA's dense
    convolution runs near peak while the shifted multiply-adds are memory-bound; at 4x4 and
    below, and for 512+ input channels, 'dense' is 2-100x slower (2x2, 512->512: 1.8 s vs
    14 ms) and the shifted form wins. 'repeat' and 'xla' never win on CPU. With m = 1 (the
    authors' code) the true depthwise form with the hand-written backward ('shift_vjp') was
    fastest or within noise on all 18 generator layers (ngf 64, loaded machine: 1.55 s in
    total against 3.0 s for 'shift', 11.8 s 'dense', 13.8 s 'xla', 3.8 s for the previous
    dense/shift rule).

    Other backends (GPU, TPU): 'xla', XLA's own grouped convolution, which cuDNN and the TPU
    compiler implement natively; the CPU workarounds are not measured there yet (measure with
    the autotune or bench_dsc.py before changing this)."""
    backend = backend or jax.default_backend()
    if backend != "cpu":
        return "xla"
    if m == 1:
        return "shift_vjp"
    if cin < 16:
        return "dense"
    if h * w >= 64 and cin <= 256:
        return "dense"
    return "shift"


class DepthwiseSeparableConv(nn.Module):
    """DSC(in, out, k, kernels_per_layer=m): depthwise k x k (groups=in, in*m outputs, bias),
    then pointwise 1x1 (in*m -> out, bias). Output channel c*m + j of the depthwise stage reads
    input channel c, as in PyTorch.

    ``impl`` picks an exact way to compute it (docs/design.md, section 11):
      - 'dense': compose both kernels into one dense k x k kernel,
        W[i,j,c,o] = sum_m dw[i,j,c*m+m'] pw[c*m+m',o], bias pw^T b_dw + b_pw.
      - 'shift': repeat channels m times, then k*k shifted multiply-adds, then the 1x1.
      - 'shift_vjp': 'shift' with a hand-written backward pass (:func:`depthwise_shift_vjp`);
        with m = 1 it is the true depthwise form (no composed kernel) followed by the 1x1.
      - 'repeat': repeat channels m times, then a K = 1 grouped XLA convolution.
      - 'xla': XLA's grouped convolution with a channel multiplier (very slow on CPU with
        m > 1; native on GPU). With m = 1 'repeat' and 'xla' are the same computation.
      - 'auto': the fixed per-shape rule :func:`auto_dsc_impl` (CPU: 'dense' or 'shift' with
        m > 1, 'shift_vjp' with m = 1; other backends: 'xla'). The autotuned choice is passed
        in as a concrete impl by the generator (sagan_jax.methods.dsc_autotune).
    The parameters are the same for every impl, so checkpoints do not depend on it. Parameters
    are float32; the layer computes in ``dtype`` (None: the input's dtype).
    """

    features: int
    kernel_size: int = 3
    kernels_per_layer: int = 2
    impl: str = "dense"
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        cin, m, k = x.shape[-1], self.kernels_per_layer, self.kernel_size
        dt = self.dtype or x.dtype
        dw = self.param("depthwise_kernel", weight_init, (k, k, 1, cin * m))
        dw_b = self.param("depthwise_bias", bias_init, (cin * m,))
        pw = self.param("pointwise_kernel", weight_init, (1, 1, cin * m, self.features))
        pw_b = self.param("pointwise_bias", bias_init, (self.features,))
        x = x.astype(dt)
        # Mixed precision: activations in dt, every sum (convolutions, the shifted taps, bias
        # additions, and so the gradients of kernels and biases, which are sums over the batch
        # and the map) in float32, rounded to dt once at the end. (Summed in bf16, the
        # gradient of a bias before BatchNorm, zero in exact arithmetic, came out as large as
        # the kernels' gradients.) In float32 (or float64) this is the plain computation.
        pref = jnp.float32 if is_low_precision(dt) else None
        dn = ("NHWC", "HWIO", "NHWC")
        impl = self.impl
        if impl == "auto":
            impl = auto_dsc_impl(cin, m, self.features, x.shape[1], x.shape[2])
        if impl == "dense":
            w = jnp.einsum("ijcm,cmo->ijco", dw.reshape(k, k, cin, m), pw[0, 0].reshape(cin, m, -1))
            b = dw_b @ pw[0, 0] + pw_b
            y = jax.lax.conv_general_dilated(x, w.astype(dt), (1, 1), "SAME", dimension_numbers=dn,
                                             preferred_element_type=pref)
            return (y + b).astype(dt)
        if impl in ("shift", "shift_vjp"):
            xr = jnp.repeat(x, m, axis=-1) if m > 1 else x
            fn = _depthwise_shift if impl == "shift" else depthwise_shift_vjp
            y = fn(xr, dw, dw_b)  # float32 kernel: the taps are multiplied and summed in f32
        elif impl == "repeat":
            xr = jnp.repeat(x, m, axis=-1) if m > 1 else x
            y = jax.lax.conv_general_dilated(
                xr, dw.astype(dt), (1, 1), "SAME", dimension_numbers=dn,
                feature_group_count=cin * m, preferred_element_type=pref) + dw_b
        elif impl == "xla":
            y = jax.lax.conv_general_dilated(
                x, dw.astype(dt), (1, 1), "SAME", dimension_numbers=dn, feature_group_count=cin,
                preferred_element_type=pref) + dw_b
        else:
            raise ValueError(f"unknown DSC impl {self.impl!r}; allowed: {', '.join(DSC_IMPLS)}")
        y = jnp.einsum("bhwc,co->bhwo", y.astype(dt), pw[0, 0].astype(dt),
                       preferred_element_type=pref) + pw_b
        return y.astype(dt)


def _mul_f32(x, a):
    """x * a, computed in float32 and returned in x's dtype when x is bf16: the gradient of the
    attention map a (a sum of products over the map or the channels) is then summed in
    float32. For float32 (float64) x it is the plain product."""
    if not is_low_precision(x.dtype):
        return x * a
    return (x.astype(jnp.float32) * a.astype(jnp.float32)).astype(x.dtype)


class ChannelAttention(nn.Module):
    """CBAM channel attention: x * sigmoid(mlp(avgpool x) + mlp(maxpool x)), shared MLP."""

    reduction: int = 16
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        hidden = max(c // self.reduction, 1)
        # The MLP acts on (B, C) vectors: float32 whatever ``dtype`` (negligible cost).
        kw = dict(kernel_init=weight_init, bias_init=bias_init, param_dtype=jnp.float32)
        fc1 = nn.Dense(hidden, name="fc1", **kw)
        fc2 = nn.Dense(c, name="fc2", **kw)
        x = cast(x, self.dtype)
        mlp = lambda v: fc2(nn.relu(fc1(v)))
        acc = acc_dtype(x.dtype)
        att = jax.nn.sigmoid(mlp(jnp.mean(x, axis=(1, 2), dtype=acc))
                             + mlp(jnp.max(x, axis=(1, 2)).astype(acc)))
        return _mul_f32(x, att[:, None, None, :])


class SpatialAttention(nn.Module):
    """CBAM spatial attention: [channel mean, channel max] -> 7x7 conv (no bias) -> BN ->
    sigmoid; multiply the input by that map."""

    kernel_size: int = 7
    axis_name: Optional[str] = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool, update_stats: bool = True):
        x = cast(x, self.dtype)
        # The map s has 2 channels, then 1: at least float32 whatever ``dtype`` (cheap).
        acc = acc_dtype(x.dtype)
        s = jnp.stack([jnp.mean(x, axis=-1, dtype=acc), jnp.max(x, axis=-1).astype(acc)], axis=-1)
        s = Conv(1, self.kernel_size, use_bias=False, name="conv")(s)
        s = BatchNorm(axis_name=self.axis_name, name="bn")(s, train, update_stats)
        return _mul_f32(x, jax.nn.sigmoid(s))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention."""

    reduction: int = 16
    kernel_size: int = 7
    axis_name: Optional[str] = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool, update_stats: bool = True):
        x = ChannelAttention(self.reduction, self.dtype, name="channel")(x)
        return SpatialAttention(self.kernel_size, self.axis_name, self.dtype, name="spatial")(
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
    ah = jnp.asarray(align_corners_matrix(h, h * scale), x.dtype)
    aw = jnp.asarray(align_corners_matrix(w, w * scale), x.dtype)
    x = jnp.einsum("oh,bhwc->bowc", ah, x)
    return jnp.einsum("pw,bowc->bopc", aw, x)


class DoubleConv(nn.Module):
    """conv(in->mid) -> BN -> ReLU -> conv(mid->out) -> BN -> ReLU; conv is a DSC or a plain
    3x3 convolution with bias. ``dsc_impl``: one impl for both DSCs, or (conv1's, conv2's)."""

    features: int
    mid_features: Optional[int] = None
    use_dsc: bool = True
    kernels_per_layer: int = 2
    dsc_impl: Sequence[str] | str = "dense"
    axis_name: Optional[str] = None
    dtype: Any = None

    def _conv(self, features, i, name):
        impl = self.dsc_impl if isinstance(self.dsc_impl, str) else self.dsc_impl[i]
        if self.use_dsc:
            return DepthwiseSeparableConv(features, 3, self.kernels_per_layer, impl,
                                          dtype=self.dtype, name=name)
        return Conv(features, 3, name=name, dtype=self.dtype)

    def _bn(self, name):
        return BatchNorm(axis_name=self.axis_name, dtype=self.dtype, name=name)

    @nn.compact
    def __call__(self, x, train: bool, update_stats: bool = True):
        mid = self.mid_features or self.features
        x = self._conv(mid, 0, "conv1")(x)
        x = nn.relu(self._bn("bn1")(x, train, update_stats))
        x = self._conv(self.features, 1, "conv2")(x)
        return nn.relu(self._bn("bn2")(x, train, update_stats))


def max_pool_2x2(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2))


def pad_to(x, ref):
    """Pad x (NHWC) at the bottom/right like the U-Net's F.pad(diff//2, diff - diff//2)."""
    dy, dx = ref.shape[1] - x.shape[1], ref.shape[2] - x.shape[2]
    if dy == 0 and dx == 0:
        return x
    return jnp.pad(x, ((0, 0), (dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2), (0, 0)))

