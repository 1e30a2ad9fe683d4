"""init_state runs as one jitted program with the values of the op-by-op initialisation."""
import jax
import numpy as np
import pytest

from sagan_jax.config import Config
from sagan_jax.training.state import init_state, init_state_eager, make_optimizers


@pytest.mark.parametrize("model", ["sagan", "ganomaly", "egbad", "skip_ganomaly"])
def test_jitted_init_is_bit_identical_to_op_by_op(model):
    isize = 32 if model == "skip_ganomaly" else 16  # its U-Net needs 32
    cfg = Config(model=model, ngf=16, ndf=8, nz=10, isize=isize)
    g_tx, d_tx = make_optimizers(cfg, 10)
    rng = jax.random.key(3)
    jitted = init_state(cfg, rng, g_tx, d_tx)
    eager = init_state_eager(cfg, rng, g_tx, d_tx)
    assert jax.tree.structure(jitted) == jax.tree.structure(eager)
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_init_state_is_a_pure_function_of_rng_under_vmap():
    """The lead maps init_state over a run axis: vmapped keys give each run's own state."""
    cfg = Config(ngf=16, ndf=8, nz=10, isize=16)
    g_tx, d_tx = make_optimizers(cfg, 10)
    keys = jax.random.split(jax.random.key(0), 2)
    both = jax.vmap(lambda k: init_state(cfg, k, g_tx, d_tx))(keys)
    one = init_state(cfg, keys[1], g_tx, d_tx)
    for a, b in zip(jax.tree.leaves(both.g_params), jax.tree.leaves(one.g_params)):
        np.testing.assert_allclose(np.asarray(a[1]), np.asarray(b), rtol=1e-6, atol=1e-7)


@pytest.mark.float_sensitive
def test_discriminator_reinit_values_are_unchanged():
    """init_discriminator (D's re-initialisation inside the training step) draws all its
    normals at once; the values equal the per-parameter initialisation."""
    from sagan_jax.methods import build_models
    from sagan_jax.training.state import init_discriminator

    _, d = build_models(Config(ndf=8, nz=10, isize=32))
    key = jax.random.key(5)
    ref = init_discriminator(d, key, 32, batched=False)
    for got in (init_discriminator(d, key, 32),
                jax.jit(lambda k: init_discriminator(d, k, 32))(key)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.float_sensitive
@pytest.mark.parametrize("shapes", [[(3, 3, 1, 8), (1,), (5, 7)], [(64, 4), (4, 64), (2, 2, 2, 2)]])
def test_batched_normals_equal_jax_random_normal(shapes):
    from sagan_jax.models import layers

    keys = list(jax.random.split(jax.random.key(11), len(shapes)))
    got = jax.jit(lambda ks: layers._batched_normal(list(ks), shapes, np.float32))(keys)
    for k, s, g in zip(keys, shapes, got):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(jax.random.normal(k, s)))


def test_batched_normals_are_checked_on_another_jax_version(monkeypatch):
    """On a jax other than 0.10 the copied formula is checked against jax.random.normal once:
    it passes here (same formula), and a formula that drifted turns the batched path off."""
    from sagan_jax.models import layers

    monkeypatch.setattr(jax, "__version_info__", (0, 11, 2))
    layers._formula_matches.cache_clear()
    try:
        assert layers.batched_normals_supported()
        layers._formula_matches.cache_clear()
        real = layers._batched_normal
        monkeypatch.setattr(layers, "_batched_normal",
                            lambda k, s, d: [x * 1.0000001 + 1e-7 for x in real(k, s, d)])
        assert not layers.batched_normals_supported()
    finally:
        layers._formula_matches.cache_clear()
