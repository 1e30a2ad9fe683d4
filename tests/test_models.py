"""Model shapes and parameter counts (SPEC sections 2-3)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sagan_jax.config import Config
from sagan_jax.models import build_models
from sagan_jax.models.summary import param_counts, summary_text


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
