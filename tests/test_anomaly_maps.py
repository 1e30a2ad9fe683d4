"""--anomaly_map=grad: |d score / d x| of the model's own score, per image (jax.grad under
jax.vmap, jitted); --anomaly_map=residual unchanged; both in evaluation's pixel AUROC."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sagan_jax import anomaly_maps, scoring
from sagan_jax.config import Config
from sagan_jax.data.base import Split
from sagan_jax.data.pipeline import to_float_np
from sagan_jax.methods.spec import variables_of
from sagan_jax.training.evaluate import evaluate, metrics_from_scores, score_images
from sagan_jax.training.state import init_state, make_optimizers


@pytest.fixture(scope="module")
def tiny():
    cfg = Config(ngf=16, ndf=16, nz=8, isize=16, eval_batch_size=4, dsc_autotune=False)
    g_tx, d_tx = make_optimizers(cfg, 1)
    state = init_state(cfg, jax.random.key(0), g_tx, d_tx)
    # non-trivial running statistics, so evaluation mode is really exercised
    state = state.replace(g_stats=jax.tree.map(lambda a: a + 0.3, state.g_stats))
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    return cfg, state, images


def test_grad_map_equals_finite_differences_of_the_score(tiny):
    cfg, state, images = tiny
    variables = variables_of(state)
    x = to_float_np(images[:1])
    got = anomaly_maps.maps(cfg, variables, x, "grad")[0]
    score = jax.jit(functools.partial(anomaly_maps._score_one, cfg, variables))
    # the score itself is the model's final score (same as evaluation's)
    r, lat = score_images(cfg, state, images[:1])
    from sagan_jax.training.evaluate import final_score

    assert float(score(jnp.asarray(x[0]))) == pytest.approx(float(final_score(cfg, r, lat)[0]),
                                                            rel=1e-5)
    x64 = x[0].astype(np.float64)
    eps = 1e-2
    flat = np.argsort(got.ravel())
    pixels = [np.unravel_index(i, got.shape) for i in (flat[-1], flat[-7], flat[len(flat) // 2])]
    for (i, j) in pixels:
        fd = []
        for c in range(3):
            plus, minus = x64.copy(), x64.copy()
            plus[i, j, c] += eps
            minus[i, j, c] -= eps
            fd.append((float(score(jnp.asarray(plus, jnp.float32)))
                       - float(score(jnp.asarray(minus, jnp.float32)))) / (2 * eps))
        expected = np.mean(np.abs(fd))
        assert got[i, j] == pytest.approx(expected, rel=0.05, abs=1e-7), (i, j, fd)
    assert got.shape == (16, 16) and np.all(got >= 0) and got.max() > 0


@pytest.mark.float_sensitive
def test_grad_maps_are_per_image(tiny):
    cfg, state, images = tiny
    variables = variables_of(state)
    x = to_float_np(images)
    batched = anomaly_maps.maps(cfg, variables, x, "grad")  # batches of 4, last one padded
    one_by_one = np.concatenate([anomaly_maps.maps(cfg, variables, x[i:i + 1], "grad",
                                                   batch_size=1) for i in range(len(x))])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-9)
    # other companions in the same batch do not change an image's map
    shuffled = anomaly_maps.maps(cfg, variables, x[::-1], "grad")[::-1]
    np.testing.assert_allclose(shuffled, batched, rtol=1e-5, atol=1e-9)


@pytest.mark.float_sensitive
def test_residual_map_unchanged(tiny):
    cfg, state, images = tiny
    variables = variables_of(state)
    x = to_float_np(images)
    r, lat, recon = score_images(cfg, state, images, keep_recon=True)
    given = anomaly_maps.maps(cfg, variables, x, "residual", recon=recon)
    np.testing.assert_array_equal(given, scoring.anomaly_maps(x, recon))
    computed = anomaly_maps.maps(cfg, variables, x, "residual")
    np.testing.assert_allclose(computed, scoring.anomaly_maps(x, recon), rtol=1e-5, atol=1e-6)


def test_pixel_auroc_honours_anomaly_map(tiny):
    cfg, state, images = tiny
    masks = np.zeros((6, 16, 16), np.uint8)
    masks[:, 4:8, 4:8] = 255
    split = Split(images, np.array([0, 0, 0, 1, 1, 1]), masks=masks)
    x = to_float_np(images)
    r, lat, recon = score_images(cfg, state, images, keep_recon=True)
    res = metrics_from_scores(cfg, split, r, lat, recon)
    assert res["pixel_auc"] == scoring.pixel_auroc(masks, scoring.anomaly_maps(x, recon))
    grad_cfg = cfg.replace(anomaly_map="grad")
    variables = variables_of(state)
    want = scoring.pixel_auroc(masks, anomaly_maps.maps(cfg, variables, x, "grad"))
    got = metrics_from_scores(grad_cfg, split, r, lat, recon, variables=variables)
    assert got["pixel_auc"] == want != res["pixel_auc"]
    assert evaluate(grad_cfg, state, split)["pixel_auc"] == want
    with pytest.raises(ValueError, match="need the model's variables"):
        metrics_from_scores(grad_cfg, split, r, lat, recon)


def test_map_scales_are_quantiles_of_normal_maps(tiny):
    cfg, state, images = tiny
    variables = variables_of(state)
    scales = anomaly_maps.map_scales(cfg, variables, images, anomaly_maps.KINDS, n_max=5)
    assert scales["n_images"] == 5 and scales["quantile"] == anomaly_maps.SCALE_QUANTILE
    for kind in anomaly_maps.KINDS:
        m = anomaly_maps.maps(cfg, variables, to_float_np(images[:5]), kind)
        assert scales[kind] == pytest.approx(float(np.quantile(m, anomaly_maps.SCALE_QUANTILE)))


def test_training_loop_uses_grad_maps_and_stores_their_scale(tmp_path):
    """--anomaly_map=grad through the training loop: pixel AUROC of the grad maps on a test
    split with masks, and the grad maps' colour scale stored with the calibration."""
    import dataclasses

    from sagan_jax.training.checkpoints import saved_meta
    from sagan_jax.data import load_data
    from sagan_jax.training.loop import train_and_evaluate

    cfg = Config(isize=16, ngf=16, ndf=16, nz=8, max_train_images=32, batch_size=16, epochs=1,
                 eval_batch_size=32, anomaly_map="grad", workdir=str(tmp_path / "w"),
                 plots=False, tensorboard=False, progress=False, dsc_autotune=False,
                 bn_recalibration_batches=1)
    data = load_data(cfg)
    labels = data.test.labels
    idx = np.concatenate([np.flatnonzero(labels == 0)[:16], np.flatnonzero(labels == 1)[:16]])
    test = data.test.take(idx)
    masks = np.zeros(test.images.shape[:3], np.uint8)
    masks[test.labels == 1, 4:10, 4:10] = 255
    data = dataclasses.replace(data, test=dataclasses.replace(test, masks=masks))
    result = train_and_evaluate(cfg, data)
    assert 0.0 <= result["pixel_auc"] <= 1.0
    # the run names the form each of the generator's 18 DSC layers computed in (the fixed
    # rule here: --dsc_autotune=false)
    from sagan_jax.methods import dsc_autotune

    assert result["dsc_impls"] == dict(dsc_autotune.rule_mapping(dsc_autotune.dsc_layers(cfg),
                                                                 "cpu"))
    assert len(result["dsc_impls"]) == 18 and "up4.conv2" in result["dsc_impls"]
    scale = saved_meta(cfg.workdir)["calibration"]["map_scale"]
    assert scale["grad"] > 0 and scale["residual"] > 0
