"""Layers against NumPy computations of the same formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sagan_jax.models import layers


def _np_align_corners_upsample(x, scale=2):
    """Direct per-pixel formula of bilinear, align_corners=True (PyTorch), NHWC."""
    b, h, w, c = x.shape
    oh, ow = h * scale, w * scale
    out = np.zeros((b, oh, ow, c), np.float64)
    for i in range(oh):
        sy = i * (h - 1) / (oh - 1) if oh > 1 else 0.0
        y0 = int(np.floor(sy)); y1 = min(y0 + 1, h - 1); fy = sy - y0
        for j in range(ow):
            sx = j * (w - 1) / (ow - 1) if ow > 1 else 0.0
            x0 = int(np.floor(sx)); x1 = min(x0 + 1, w - 1); fx = sx - x0
            out[:, i, j] = ((1 - fy) * (1 - fx) * x[:, y0, x0] + (1 - fy) * fx * x[:, y0, x1]
                            + fy * (1 - fx) * x[:, y1, x0] + fy * fx * x[:, y1, x1])
    return out


@pytest.mark.float_sensitive
@pytest.mark.parametrize("h,w", [(4, 4), (3, 5), (1, 1), (2, 2)])
def test_upsample_matches_align_corners_reference(h, w):
    x = np.random.default_rng(0).normal(size=(2, h, w, 3)).astype(np.float32)
    y = np.asarray(layers.upsample_bilinear_align_corners(jnp.asarray(x)))
    assert y.shape == (2, 2 * h, 2 * w, 3)
    np.testing.assert_allclose(y, _np_align_corners_upsample(x), atol=1e-6)
    # align_corners=True keeps the four corner pixels exactly.
    for (i, j), (si, sj) in {(0, 0): (0, 0), (0, -1): (0, -1), (-1, 0): (-1, 0), (-1, -1): (-1, -1)}.items():
        np.testing.assert_array_equal(y[:, i, j], x[:, si, sj])


def test_upsample_differs_from_jax_image_resize():
    """jax.image.resize is align_corners=False: it is not this upsampling."""
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    ours = layers.upsample_bilinear_align_corners(x)
    theirs = jax.image.resize(x, (1, 8, 8, 1), "bilinear")
    assert float(jnp.max(jnp.abs(ours - theirs))) > 0.1


def _np_cbam(x, p, bn):
    """CBAM formula in NumPy (NHWC), spatial BN in training mode (batch statistics)."""
    sig = lambda v: 1 / (1 + np.exp(-v))
    fc1, fc2 = p["channel"]["fc1"], p["channel"]["fc2"]
    mlp = lambda v: np.maximum(v @ fc1["kernel"] + fc1["bias"], 0) @ fc2["kernel"] + fc2["bias"]
    x = x * sig(mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2))))[:, None, None, :]
    s = np.stack([x.mean(-1), x.max(-1)], -1)  # (B, H, W, 2)
    k = p["spatial"]["conv"]["kernel"]          # (7, 7, 2, 1)
    sp = np.pad(s, ((0, 0), (3, 3), (3, 3), (0, 0)))
    b_, h, w, _ = s.shape
    conv = np.zeros((b_, h, w, 1))
    for i in range(7):
        for j in range(7):
            conv += sp[:, i:i + h, j:j + w, :] @ k[i, j]
    if bn is None:
        mean, var = conv.mean(), conv.var()
    else:
        mean, var = bn["mean"], bn["var"]
    sbn = p["spatial"]["bn"]
    conv = (conv - mean) / np.sqrt(var + 1e-5) * sbn["scale"] + sbn["bias"]
    return x * sig(conv)


@pytest.mark.parametrize("train", [True, False])
def test_cbam_matches_numpy(train):
    x = np.random.default_rng(1).normal(size=(3, 6, 6, 32)).astype(np.float32)
    m = layers.CBAM()
    v = m.init(jax.random.key(0), jnp.asarray(x), train=False)
    # Non-trivial running statistics for the evaluation-mode check.
    stats = {"spatial": {"bn": {"mean": jnp.array([0.3]), "var": jnp.array([1.7])}}}
    v = {"params": v["params"], "batch_stats": stats}
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), v["params"])
    y = m.apply(v, jnp.asarray(x), train=train, update_stats=False)
    ref = _np_cbam(x.astype(np.float64), p, None if train else {"mean": 0.3, "var": 1.7})
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-5)
    assert v["params"]["channel"]["fc1"]["kernel"].shape == (32, 2)  # reduction 16


def test_batchnorm_is_pytorch_batchnorm():
    x = np.random.default_rng(2).normal(2.0, 3.0, size=(4, 5, 5, 6)).astype(np.float32)
    bn = layers.BatchNorm()
    v = bn.init(jax.random.key(0), jnp.asarray(x), train=False)
    y, new = bn.apply(v, jnp.asarray(x), train=True, mutable=["batch_stats"])
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    scale, bias = np.asarray(v["params"]["scale"]), np.asarray(v["params"]["bias"])
    np.testing.assert_allclose(np.asarray(y), (x - mean) / np.sqrt(var + 1e-5) * scale + bias,
                               rtol=1e-4, atol=1e-4)
    n = x.size // 6
    np.testing.assert_allclose(np.asarray(new["batch_stats"]["mean"]), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new["batch_stats"]["var"]),
                               0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)
    # Initialisation: scale ~ N(1, 0.02), offset 0.
    assert abs(float(scale.mean()) - 1) < 0.1 and np.all(bias == 0)


@pytest.mark.float_sensitive
@pytest.mark.parametrize("m", [1, 2])
def test_dsc_impls_compute_the_same_function(m):
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 4))
    ref = layers.DepthwiseSeparableConv(5, 3, m, "xla")
    v = ref.init(jax.random.key(4), x)
    v = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(5), a.shape), v)
    y_ref = ref.apply(v, x)
    for impl in ("dense", "shift", "shift_vjp", "repeat"):
        y = layers.DepthwiseSeparableConv(5, 3, m, impl).apply(v, x)
        np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), atol=1e-5, err_msg=impl)
    assert v["params"]["depthwise_kernel"].shape == (3, 3, 1, 4 * m)


@pytest.mark.float_sensitive
def test_dsc_output_channel_order_is_pytorch_order():
    """Depthwise output channel c*m + j reads input channel c (PyTorch groups=in order)."""
    x = jnp.zeros((1, 3, 3, 2)).at[0, 1, 1, 1].set(1.0)  # impulse in input channel 1
    m = layers.DepthwiseSeparableConv(4, 3, 2, "shift")
    v = m.init(jax.random.key(0), x)
    dw = jnp.zeros((3, 3, 1, 4)).at[1, 1, 0, :].set(1.0)
    pw = jnp.eye(4).reshape(1, 1, 4, 4)
    p = dict(v["params"], depthwise_kernel=dw, pointwise_kernel=pw)
    y = m.apply({"params": p}, x)
    np.testing.assert_array_equal(np.asarray(y[0, 1, 1]), [0, 0, 1, 1])


def test_initialisation_follows_spec():
    m = layers.DepthwiseSeparableConv(64, 3, 2, "dense")
    v = m.init(jax.random.key(0), jnp.zeros((1, 4, 4, 64)))["params"]
    assert abs(float(jnp.std(v["pointwise_kernel"])) - 0.02) < 0.002
    assert float(jnp.max(jnp.abs(v["pointwise_bias"]))) == 0.0


@pytest.mark.parametrize("k", [2, 3, 5])
def test_shift_vjp_gradients_equal_autodiff_of_the_shifted_form(k):
    """The hand-written backward of depthwise_shift_vjp (kernel taps from the padded cotangent,
    input gradient as the flipped shifted form) is the gradient JAX derives for the plain
    shifted form, including even kernels (asymmetric 'same' padding)."""
    kx, kk, kb, kg = jax.random.split(jax.random.key(7), 4)
    x = jax.random.normal(kx, (3, 6, 5, 4))
    kernel = jax.random.normal(kk, (k, k, 1, 4))
    bias = jax.random.normal(kb, (4,))
    g = jax.random.normal(kg, (3, 6, 5, 4))
    ref = jax.grad(lambda *a: jnp.sum(layers._depthwise_shift(*a) * g), (0, 1, 2))(x, kernel, bias)
    got = jax.grad(lambda *a: jnp.sum(layers.depthwise_shift_vjp(*a) * g), (0, 1, 2))(x, kernel, bias)
    np.testing.assert_allclose(np.asarray(layers.depthwise_shift_vjp(x, kernel, bias)),
                               np.asarray(layers._depthwise_shift(x, kernel, bias)))
    for a, b, name in zip(got, ref, ("x", "kernel", "bias")):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("m", [1, 2])
def test_dsc_gradients_agree_across_impls(m):
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 4))
    g = jax.random.normal(jax.random.key(6), (2, 8, 8, 5))
    v = layers.DepthwiseSeparableConv(5, 3, m, "xla").init(jax.random.key(4), x)

    def grads(impl):
        mod = layers.DepthwiseSeparableConv(5, 3, m, impl)
        return jax.grad(lambda v, x: jnp.sum(mod.apply(v, x) * g), (0, 1))(v, x)

    ref = jax.tree.leaves(grads("xla"))
    for impl in ("dense", "shift", "shift_vjp", "repeat"):
        for a, b in zip(jax.tree.leaves(grads(impl)), ref):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4,
                                       err_msg=impl)


def test_auto_rule_by_backend_and_multiplier():
    # GPU/TPU: XLA's grouped convolution until measured there.
    for backend in ("gpu", "tpu"):
        assert layers.auto_dsc_impl(64, 2, 64, 32, 32, backend) == "xla"
        assert layers.auto_dsc_impl(512, 1, 512, 2, 2, backend) == "xla"
    # CPU, m = 1: the true depthwise form with the hand-written backward.
    assert layers.auto_dsc_impl(64, 1, 64, 32, 32, "cpu") == "shift_vjp"
    # CPU, m = 2: composed dense kernel on large maps with moderate channels, else shifted.
    assert layers.auto_dsc_impl(64, 2, 64, 32, 32, "cpu") == "dense"
    assert layers.auto_dsc_impl(512, 2, 512, 4, 4, "cpu") == "shift"


def test_batchnorm_in_bfloat16_keeps_float32_statistics_and_parameters():
    x = np.random.default_rng(2).normal(2.0, 3.0, size=(4, 5, 5, 6)).astype(np.float32)
    bn32, bn16 = layers.BatchNorm(), layers.BatchNorm(dtype=jnp.bfloat16)
    v = bn32.init(jax.random.key(0), jnp.asarray(x), train=False)
    y32, new32 = bn32.apply(v, jnp.asarray(x), train=True, mutable=["batch_stats"])
    y16, new16 = bn16.apply(v, jnp.asarray(x, jnp.bfloat16), train=True, mutable=["batch_stats"])
    assert y16.dtype == jnp.bfloat16
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves((new16, bn16.init(
        jax.random.key(0), jnp.asarray(x, jnp.bfloat16), train=False))))
    # Only the bf16 rounding of the input and output differ from float32.
    np.testing.assert_allclose(np.asarray(y16, np.float32), np.asarray(y32), atol=0.03, rtol=0.02)
    np.testing.assert_allclose(np.asarray(new16["batch_stats"]["var"]),
                               np.asarray(new32["batch_stats"]["var"]), rtol=1e-2)


@pytest.mark.parametrize("impl", ["dense", "shift", "shift_vjp", "repeat", "xla"])
def test_dsc_in_bfloat16_is_close_to_float32(impl):
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 16))
    mod32 = layers.DepthwiseSeparableConv(8, 3, 2, impl)
    mod16 = layers.DepthwiseSeparableConv(8, 3, 2, impl, dtype=jnp.bfloat16)
    v = mod32.init(jax.random.key(4), x)
    assert jax.tree.leaves(mod16.init(jax.random.key(4), x))[0].dtype == jnp.float32
    y32, y16 = mod32.apply(v, x), mod16.apply(v, x)
    assert y16.dtype == jnp.bfloat16
    err = float(jnp.max(jnp.abs(y16.astype(jnp.float32) - y32)) / jnp.max(jnp.abs(y32)))
    assert err < 2e-2, err
