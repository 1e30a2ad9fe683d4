"""Precise BatchNorm: running statistics recomputed for the current weights."""
import jax
import numpy as np

from sagan_jax.config import Config
from sagan_jax.methods import build_models
from sagan_jax.training.bn_recalibration import recalibrate_batchnorm
from sagan_jax.training.state import init_state, make_optimizers


def test_recalibrated_eval_mode_matches_training_mode_on_that_batch():
    # isize 32, batch 16: >= 64 values per channel even at the 2x2 bottleneck, so the unbiased
    # running variance (n / (n - 1)) is within 2% of the biased one training mode uses.
    cfg = Config(ngf=16, ndf=16, nz=8, isize=32, batch_size=16, bn_recalibration_batches=1)
    g_tx, d_tx = make_optimizers(cfg, 1)
    state = init_state(cfg, jax.random.key(0), g_tx, d_tx)
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    x = (images / 255.0 - 0.5) / 0.5
    g, _ = build_models(cfg)
    train_out, _ = g.apply({"params": state.g_params, "batch_stats": state.g_stats}, x,
                           train=True, mutable=["batch_stats"])
    stale = g.apply({"params": state.g_params, "batch_stats": state.g_stats}, x, train=False)
    new = recalibrate_batchnorm(cfg, state, images, seed=0)
    fresh = g.apply({"params": new.g_params, "batch_stats": new.g_stats}, x, train=False)
    err_fresh = float(np.abs(np.asarray(fresh) - np.asarray(train_out)).max())
    err_stale = float(np.abs(np.asarray(stale) - np.asarray(train_out)).max())
    assert err_fresh < 0.1 * err_stale, (err_fresh, err_stale)
    # The generator's first BN layer holds exactly that batch's mean.
    h = new.g_stats["inc"]["bn1"]["mean"]
    assert h.shape == (16,) and not np.allclose(np.asarray(h), 0)
    # D's statistics changed too; parameters did not.
    assert not np.allclose(np.asarray(new.d_stats["pyramid_bn0"]["var"]), 1.0)
    for a, b in zip(jax.tree.leaves(new.g_params), jax.tree.leaves(state.g_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_zero_batches_keeps_the_state():
    cfg = Config(ngf=16, ndf=16, nz=8, isize=16, bn_recalibration_batches=0)
    g_tx, d_tx = make_optimizers(cfg, 1)
    state = init_state(cfg, jax.random.key(0), g_tx, d_tx)
    assert recalibrate_batchnorm(cfg, state, np.zeros((4, 16, 16, 3), np.uint8), 0) is state
