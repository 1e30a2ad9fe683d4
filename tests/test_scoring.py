"""Anomaly score, min-max scaling and metrics on known inputs; order invariance of scoring."""
import jax
import numpy as np
import pytest

from sagan_jax import scoring
from sagan_jax.config import Config
from sagan_jax.training.evaluate import score_images
from sagan_jax.training.state import init_state, make_optimizers


def test_score_formula():
    r, lat = np.array([1.0, 2.0]), np.array([10.0, 0.0])
    np.testing.assert_allclose(scoring.anomaly_score(r, lat, 0.2), [0.2 + 8.0, 0.4])
    np.testing.assert_allclose(scoring.anomaly_score(r, lat, 0.9), [0.9 + 1.0, 1.8])


def test_per_image_scores():
    x = np.zeros((2, 2, 2, 3)); recon = x.copy(); recon[1] = 2.0
    f1 = np.zeros((2, 1, 1, 4)); f2 = f1.copy(); f2[0, 0, 0, 0] = 2.0
    r, lat = scoring.per_image_scores(x, recon, f1, f2)
    np.testing.assert_allclose(r, [0.0, 4.0])
    np.testing.assert_allclose(lat, [1.0, 0.0])


def test_minmax():
    np.testing.assert_allclose(scoring.minmax([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(scoring.minmax([5.0, 5.0]), [0.0, 0.0])


def test_metrics_on_hand_made_scores():
    labels = [0, 0, 0, 1, 1]
    perfect = scoring.detection_metrics(labels, [0.1, 0.2, 0.3, 0.8, 0.9])
    assert perfect["auc"] == 1.0 and perfect["ap"] == 1.0 and perfect["f1_oracle"] == 1.0
    assert "f1" not in perfect  # no calibrated threshold here: only the oracle's F1
    # One abnormal (0.25) ranked below two normals: 4 of the 6 pairs ordered right.
    m = scoring.detection_metrics(labels, [0.1, 0.3, 0.4, 0.25, 0.9])
    assert m["auc"] == pytest.approx(4 / 6)
    # AP: ranks 0.9 (abn), 0.4, 0.3, 0.25 (abn) -> precision 1 at recall .5, 2/4 at recall 1.
    assert m["ap"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)
    # Best F1: threshold 0.9 -> P=1, R=.5, F1=2/3; threshold 0.25 -> P=.5, R=1, F1=2/3.
    assert m["f1_oracle"] == pytest.approx(2 / 3)
    inverted = scoring.detection_metrics(labels, [0.9, 0.8, 0.7, 0.2, 0.1])
    assert inverted["auc"] == 0.0


def test_f1_is_at_the_calibrated_threshold_and_the_oracle_is_labelled():
    """metrics_from_scores: ``f1`` is the F1 of the decisions ``raw score > threshold`` with
    the threshold given (calibrated on normal images), written beside it; ``f1_oracle`` is
    the best F1 over thresholds chosen on the test labels."""
    from types import SimpleNamespace

    from sagan_jax.training.evaluate import metrics_from_scores

    cfg = Config(model="pca")  # final score = R
    labels = np.array([0, 0, 0, 0, 1, 1])
    r = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.9])
    split = SimpleNamespace(labels=labels, classes=None, masks=None)
    m = metrics_from_scores(cfg, split, r, np.zeros_like(r), threshold=0.55)
    # > 0.55: 0.6 (normal), 0.9 (abnormal) -> P = 1/2, R = 1/2, F1 = 1/2
    assert m["f1"] == pytest.approx(0.5) and m["threshold"] == 0.55
    # best over thresholds: > 0.4 flags 0.5, 0.6, 0.9 -> P = 2/3, R = 1, F1 = 0.8
    assert m["f1_oracle"] == pytest.approx(0.8)
    assert scoring.f1_at(labels, r, 0.95) == 0.0  # nothing flagged
    without = metrics_from_scores(cfg, split, r, np.zeros_like(r))
    assert "f1" not in without and "threshold" not in without


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="both normal"):
        scoring.detection_metrics([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="differ in shape"):
        scoring.detection_metrics([0, 1], [0.1])


@pytest.mark.float_sensitive
def test_scores_do_not_depend_on_test_order():
    cfg = Config(ngf=16, ndf=16, nz=8, isize=16, eval_batch_size=8)
    g_tx, d_tx = make_optimizers(cfg, 1)
    state = init_state(cfg, jax.random.key(0), g_tx, d_tx)
    # Non-trivial running statistics so that evaluation mode is really exercised.
    state = state.replace(g_stats=jax.tree.map(lambda a: a + 0.3, state.g_stats))
    images = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    perm = np.random.default_rng(1).permutation(20)
    r, lat = score_images(cfg, state, images)
    r_p, lat_p = score_images(cfg, state, images[perm])
    # The same compiled program on the same input: bit for bit.
    r2, lat2 = score_images(cfg, state, images)
    np.testing.assert_array_equal(r2, r)
    np.testing.assert_array_equal(lat2, lat)
    # Another order puts an image at another batch position. Each score reads only its own
    # image (running averages), but a CPU's convolution kernels may block the batch so that
    # a row at another position is summed in another order: 1 float32 ulp (9.4e-8 relative)
    # was seen on an AVX2 AMD EPYC, 0 on AVX-512 Xeons. The bound allows ~40 ulps of such
    # rounding and is far below what a batch-dependent score gives (the batch-statistics
    # case below: 1e-3 relative in the median, 9e-3 at most).
    np.testing.assert_allclose(r_p, r[perm], rtol=5e-6, atol=0)
    np.testing.assert_allclose(lat_p, lat[perm], rtol=5e-6, atol=0)
    # The originals' batch-statistics evaluation does depend on the order (evaluations (a)/(b)/(c),
    # docs/design.md, section 8).
    cfg_bs = cfg.replace(eval_batch_stats=True)
    r_b, _ = score_images(cfg_bs, state, images)
    r_bp, _ = score_images(cfg_bs, state, images[perm])
    assert not np.allclose(r_bp, r_b[perm], rtol=1e-4, atol=0)


def test_anomaly_maps_and_pixel_auroc():
    x = np.zeros((2, 4, 4, 3)); recon = np.zeros_like(x)
    recon[0, 1, 2] = [0.3, 0.6, 0.9]          # one wrong pixel in image 0
    maps = scoring.anomaly_maps(x, recon)
    assert maps.shape == (2, 4, 4) and maps[0, 1, 2] == pytest.approx(0.6)
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, 1, 2] = 1                          # the defect is exactly there
    assert scoring.pixel_auroc(masks, maps) == 1.0
    masks2 = np.zeros_like(masks); masks2[1, 0, 0] = 255  # a defect the map misses
    # The positive pixel scores 0: it ties with 30 of the 31 clean pixels, loses to one.
    assert scoring.pixel_auroc(masks2, maps) == pytest.approx(0.5 * 30 / 31)
    assert np.isnan(scoring.pixel_auroc(np.zeros_like(masks), maps))


def test_runs_differing_only_in_run_fields_share_the_scoring_program(tmp_path):
    """Seed, abnormal class and workdir never reach a compiled program (config.RUN_SPECIFIC):
    scoring with configs that differ only in them compiles once and gives the same scores;
    a config that changes the model compiles again."""
    from sagan_jax.config import RunNeutral
    from sagan_jax.training.evaluate import _score_batch

    cfg = Config(ngf=16, ndf=16, nz=8, isize=16, eval_batch_size=4, batch_size=4)
    g_tx, d_tx = make_optimizers(cfg, 1)
    state = init_state(cfg, jax.random.key(0), g_tx, d_tx)
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    r0, lat0 = score_images(cfg, state, images)
    size = _score_batch._cache_size()
    other = cfg.replace(seed=7, abnormal_class="3", workdir=str(tmp_path), seeds="1,2")
    assert RunNeutral(other) == RunNeutral(cfg) and hash(RunNeutral(other)) == hash(RunNeutral(cfg))
    r1, lat1 = score_images(other, state, images)
    assert _score_batch._cache_size() == size
    np.testing.assert_array_equal(r1, r0)
    np.testing.assert_array_equal(lat1, lat0)
    changed = cfg.replace(eval_batch_stats=True)
    assert RunNeutral(changed) != RunNeutral(cfg)
    score_images(changed, state, images)
    assert _score_batch._cache_size() == size + 1


def test_pixel_aupro_hand_computed():
    """Two defect regions (8-connected): {(0,0), (0,1)} of 2 pixels and {(1,3)} of 1; five
    clean pixels. Going down the map values: 0.9 covers half of region 1 (PRO 0.25, FPR 0),
    0.8 is clean (FPR 0.2), 0.7 covers region 2 (PRO 0.75), 0.3 is clean (FPR 0.4). Area up
    to FPR 0.3: 0.2 * 0.25 + 0.1 * 0.75 = 0.125; divided by 0.3: 5/12."""
    masks = np.array([[1, 1, 0, 0], [0, 0, 0, 1]])
    maps = np.array([[0.9, 0.2, 0.8, 0.1], [0.3, 0.0, 0.05, 0.7]])
    assert scoring.pixel_aupro(masks, maps) == pytest.approx(5 / 12)
    assert scoring.pixel_aupro(masks[None], maps[None]) == pytest.approx(5 / 12)
    # A perfect map: PRO 1 from FPR 0. A constant map: one step from (0, 0) to (1, 1), so
    # PRO = FPR and the area to 0.3 is 0.3 * 0.3 / 2 = 0.045, normalised 0.15.
    assert scoring.pixel_aupro(masks, masks * 1.0) == pytest.approx(1.0)
    assert scoring.pixel_aupro(masks, np.ones((2, 4))) == pytest.approx(0.15)
    assert np.isnan(scoring.pixel_aupro(np.zeros((2, 4)), maps))
    assert np.isnan(scoring.pixel_aupro(np.ones((2, 4)), maps))


def test_pixel_aupro_weighs_regions_not_pixels():
    """A detected small defect counts as much as a missed large one (AUROC would not):
    regions are labelled 8-connected per image; a diagonal pair is one region."""
    masks = np.zeros((2, 6, 6), np.uint8)
    masks[0, :4, :4] = 1            # 16 pixels, missed (map 0)
    masks[1, 0, 0] = masks[1, 1, 1] = 1   # one diagonal region of 2 pixels, found (map 1)
    maps = np.zeros((2, 6, 6))
    maps[1, 0, 0] = maps[1, 1, 1] = 1.0
    labels = scoring._regions(masks > 0)
    assert labels.max() == 2 and len(np.unique(labels[1][masks[1] > 0])) == 1
    # PRO jumps to 0.5 at FPR 0; at FPR 1 (the rest, tied at 0) it reaches 1: to 0.3 the
    # curve is 0.5 + 0.5 * fpr, area 0.15 + 0.0225 = 0.1725, normalised 0.575.
    assert scoring.pixel_aupro(masks, maps) == pytest.approx(0.575)
