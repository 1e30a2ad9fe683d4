"""Model shapes and parameter counts (docs/design.md, sections 3-4)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sagan_jax.config import Config
from sagan_jax.methods import build_models
from sagan_jax.methods.summary import param_counts, summary_text


@pytest.mark.parametrize(
    "kw,expected_g",
    [({}, 4_032_335), ({"kernels_per_layer": 1}, 2_062_065), ({"use_dsc": False}, 17_345_875)],
)
def test_parameter_counts_equal_pytorch(kw, expected_g):
    counts = param_counts(Config(isize=32, **kw))
    assert counts["G"] == expected_g
    assert counts["D"] == 1_069_700


def test_counts_without_cbam_drop_exactly_the_cbam_parameters():
    # CBAM(C): MLP C*(C//16)+C//16 + (C//16)*C+C, 7x7x2 conv (98), BN(1) (2).
    cbam = sum(2 * c * (c // 16) + c // 16 + c + 98 + 2 for c in (64, 128, 256, 512, 512))
    assert param_counts(Config()).get("G") - param_counts(Config(use_cbam=False))["G"] == cbam


def test_full_size_forward_at_32():
    """The one full-size test: default G and D, eval and train mode, batch 2."""
    cfg = Config()
    g, d = build_models(cfg)
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
    gv = g.init(jax.random.key(1), x, train=False)
    dv = d.init(jax.random.key(2), x, train=False)
    y = g.apply(gv, x, train=False)
    y_train, upd = g.apply(gv, x, train=True, mutable=["batch_stats"])
    logit, feat = d.apply(dv, y, train=False)
    assert y.shape == y_train.shape == (2, 32, 32, 3)
    assert logit.shape == (2,) and feat.shape == (2, 1, 1, 100)
    assert np.all(np.isfinite(np.asarray(y)))
    # Training mode changed the running statistics; evaluation mode did not need to.
    assert not np.allclose(np.asarray(upd["batch_stats"]["inc"]["bn1"]["mean"]), 0)


@pytest.mark.parametrize("isize", [32, 64])
@pytest.mark.parametrize("use_dsc,use_cbam,pool_after_cbam", [(True, True, False), (False, True, True), (True, False, False)])
def test_forward_shapes_small_width(isize, use_dsc, use_cbam, pool_after_cbam):
    cfg = Config(isize=isize, ngf=16, ndf=8, nz=10, use_dsc=use_dsc, use_cbam=use_cbam,
                 pool_after_cbam=pool_after_cbam)
    g, d = build_models(cfg)
    x = jnp.zeros((2, isize, isize, 3))
    gv = g.init(jax.random.key(0), x, train=False)
    dv = d.init(jax.random.key(0), x, train=False)
    y = g.apply(gv, x, train=False)
    logit, feat = d.apply(dv, x, train=False)
    assert y.shape == (2, isize, isize, 3)
    assert logit.shape == (2,) and feat.shape == (2, 1, 1, 10)
    # The discriminator pyramid halves down to 4x4: log2(isize) - 3 strided BN blocks.
    n_bn = len([k for k in dv["params"] if k.startswith("pyramid_bn")])
    assert n_bn == int(np.log2(isize)) - 3


def test_pool_after_cbam_changes_the_function_not_the_parameters():
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    a, _ = build_models(Config(ngf=16))
    b, _ = build_models(Config(ngf=16, pool_after_cbam=True))
    v = a.init(jax.random.key(1), x, train=False)
    assert not np.allclose(np.asarray(a.apply(v, x, train=True, mutable=["batch_stats"])[0]),
                           np.asarray(b.apply(v, x, train=True, mutable=["batch_stats"])[0]))


def test_summary_states_true_counts_and_table1_origin():
    text = summary_text(Config())
    assert "4,032,335" in text and "1,069,700" in text and "5,102,035" in text
    assert "5,181,089" in text and "18,498,481" in text
    assert "4,033,537 + 77,852 (MLP again) + 1,069,700 (D) = 5,181,089" in text


def _rel_rms(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(a ** 2)))


@pytest.mark.parametrize("model", ["sagan", "skip_ganomaly", "ganomaly", "egbad"])
def test_bfloat16_forward_is_close_to_float32(model):
    """--compute_dtype=bfloat16: same parameters (float32), outputs float32, and close to the
    float32 network. Measured at this size (seeds fixed): relative RMS error 0.3-1.0% in eval
    mode for every model; in training mode (batch statistics) up to 8% for SAGAN, which is the
    network's own sensitivity at initialisation (rounding only its parameters to bf16 moves its
    output by 5.7%), 0.9-2% for the others."""
    kw = dict(model=model, ngf=16, ndf=8, nz=10, isize=32)
    g32, d32 = build_models(Config(**kw))
    g16, d16 = build_models(Config(**kw, compute_dtype="bfloat16"))
    assert g16.dtype == jnp.bfloat16 and d16.dtype == jnp.bfloat16
    x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3), minval=-1, maxval=1)
    gv = g32.init(jax.random.key(1), x, train=False)
    gv16 = g16.init(jax.random.key(1), x, train=False)
    assert {a.dtype for a in jax.tree.leaves(gv16)} == {jnp.dtype(jnp.float32)}
    for train, tol in ((False, 0.02), (True, 0.15 if model == "sagan" else 0.04)):
        out32 = jax.tree.leaves(g32.apply(gv, x, train=train, update_stats=False))
        out16 = jax.tree.leaves(g16.apply(gv, x, train=train, update_stats=False))
        for a, b in zip(out32, out16):
            assert b.dtype == jnp.float32
            assert _rel_rms(a, b) < tol, (model, train, _rel_rms(a, b))


def test_bfloat16_training_step_keeps_float32_state():
    """One SAGAN step in bf16: parameters, optimiser state and BatchNorm statistics stay
    float32; the losses are finite and near the float32 step's."""
    from sagan_jax.training.state import init_state, make_optimizers
    from sagan_jax.training.step import make_train_step

    base = dict(ngf=16, ndf=8, nz=10, isize=16, batch_size=4)
    x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3), minval=-1, maxval=1)
    results = {}
    for dtype in ("float32", "bfloat16"):
        cfg = Config(**base, compute_dtype=dtype)
        g_tx, d_tx = make_optimizers(cfg, 10)
        state = init_state(cfg, jax.random.key(1), g_tx, d_tx)
        new, metrics = make_train_step(cfg, g_tx, d_tx, donate=False)(state, x, jax.random.key(2))
        for name in ("g_params", "g_stats", "d_params", "d_stats", "g_opt_state", "d_opt_state"):
            dtypes = {a.dtype for a in jax.tree.leaves(getattr(new, name))
                      if jnp.issubdtype(a.dtype, jnp.floating)}
            assert dtypes == {jnp.dtype(jnp.float32)}, (dtype, name, dtypes)
        assert all(np.isfinite(float(v)) for v in jax.tree.leaves(metrics))
        results[dtype] = (metrics, new)
    (m32, s32), (m16, s16) = results["float32"], results["bfloat16"]
    for k in ("l_con", "l_adv", "l_d"):
        assert abs(float(m16[k]) - float(m32[k])) <= 0.05 * abs(float(m32[k])) + 1e-3, k
    # The parameter update (Adam, lr 2e-3) has the same size.
    g0 = init_state(Config(**base), jax.random.key(1), *make_optimizers(Config(**base), 10)).g_params

    def update_norm(state):
        diff = jax.tree.map(lambda a, b: a - b, state.g_params, g0)
        return float(np.sqrt(sum(float(jnp.sum(jnp.square(a))) for a in jax.tree.leaves(diff))))

    assert abs(update_norm(s16) - update_norm(s32)) < 0.1 * update_norm(s32)


def test_per_layer_dsc_impls_override_the_default():
    cfg = Config(ngf=16, isize=16)
    from sagan_jax.methods import sagan

    mapping = (("inc.conv1", "xla"), ("up4.conv2", "shift_vjp"))
    g, _ = sagan.build(cfg.replace(dsc_impl="dense"), dsc_impls=mapping)
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    v = g.init(jax.random.key(1), x, train=False)
    seen = {}

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and hasattr(context.module, "impl"):
            seen[".".join(context.module.path)] = context.module.impl
        return next_fun(*args, **kwargs)

    import flax.linen as nn

    with nn.intercept_methods(record):
        y = g.apply(v, x, train=False)
    assert seen["inc.conv1"] == "xla" and seen["up4.conv2"] == "shift_vjp"
    assert seen["inc.conv2"] == "dense" and len(seen) == 18
    ref, _ = sagan.build(cfg.replace(dsc_impl="dense"), dsc_impls=())
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref.apply(v, x, train=False)), atol=2e-5)


def test_default_dtype_keeps_float64_inputs_in_float64():
    """dtype None (--compute_dtype=float32) computes in the inputs' dtype: the float64 parity
    tests stay float64 end to end."""
    cfg = Config(ngf=16, ndf=8, nz=10, isize=16)
    g, d = build_models(cfg)
    assert g.dtype is None and d.dtype is None
    x = jnp.zeros((2, 16, 16, 3))
    gv, dv = g.init(jax.random.key(0), x, train=False), d.init(jax.random.key(1), x, train=False)
    with jax.enable_x64(True):
        f64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)
        x64 = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), jnp.float64)
        y, _ = g.apply(f64(gv), x64, train=True, mutable=["batch_stats"])
        logit, feat = d.apply(f64(dv), y, train=True, update_stats=False)
        assert y.dtype == logit.dtype == feat.dtype == jnp.float64
