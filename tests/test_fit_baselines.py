"""The non-GAN baselines --model=pca and --model=knn (sagan_jax/methods/pca.py, knn.py;
training/fit.py): their scores against NumPy / scikit-learn on known inputs, and the CLI path
(train writes a GAN run's metrics.json, a checkpoint that --mode=score restores, the run axis,
one-line errors)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sagan_jax.config import Config
from sagan_jax.data.pipeline import to_float_np
from sagan_jax.methods import knn, pca
from sagan_jax.methods.spec import variables_of
from sagan_jax.methods.state import fitted_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--noprogress", "--notensorboard", "--noplots", "--compilation_cache="]


def _images(n, seed, isize=16):
    return np.random.default_rng(seed).integers(0, 256, (n, isize, isize, 3), dtype=np.uint8)


def _components(spec, cfg, params, images_u8):
    import jax.numpy as jnp

    variables = variables_of(fitted_state(params))
    r, lat, recon = spec.components(cfg, variables, jnp.asarray(to_float_np(images_u8)), False)
    return np.asarray(r), np.asarray(lat), np.asarray(recon)


@pytest.mark.float_sensitive
def test_pca_reconstruction_error_equals_sklearn():
    from sklearn.decomposition import PCA

    train, test = _images(40, 0), _images(7, 1)
    cfg = Config(model="pca", isize=16, pca_components=5)
    params = pca.fit(cfg, train)
    x = to_float_np(train).reshape(40, -1).astype(np.float64)
    ref = PCA(n_components=5, svd_solver="full").fit(x)
    # the same subspace as a full SVD (the fit uses ARPACK)
    proj = params["components"].astype(np.float64) @ ref.components_.T
    np.testing.assert_allclose(np.abs(np.linalg.svd(proj)[1]), 1.0, atol=1e-5)
    np.testing.assert_allclose(params["mean"], ref.mean_, atol=1e-6)

    r, lat, recon = _components(pca, cfg, params, test)
    q = to_float_np(test).reshape(7, -1).astype(np.float64)
    want_recon = ref.inverse_transform(ref.transform(q))
    np.testing.assert_allclose(recon.reshape(7, -1), want_recon, atol=1e-4)
    np.testing.assert_allclose(r, np.mean((q - want_recon) ** 2, axis=1), rtol=1e-4)
    assert np.all(lat == 0)
    # a training image lies closer to the subspace than noise from elsewhere, on average
    r_train, _, _ = _components(pca, cfg, params, train[:7])
    assert r_train.mean() < r.mean()


def test_pca_components_spanning_the_data_reconstruct_it():
    train = _images(6, 2)
    cfg = Config(model="pca", isize=16, pca_components=6)  # k = n: the full-SVD branch
    r, _, _ = _components(pca, cfg, pca.fit(cfg, train), train)
    assert np.all(r < 1e-8)


@pytest.mark.float_sensitive
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("chunk", [4, 1024])  # several chunks with padding; one chunk
def test_knn_distance_equals_brute_force(k, chunk):
    train, test = _images(11, 3), _images(5, 4)
    test[2] = train[7]  # an exact match: distance 0, its own neighbour
    cfg = Config(model="knn", isize=16, knn_k=k)
    params = knn.fit(cfg, train, chunk=chunk)
    r, lat, recon = _components(knn, cfg, params, test)
    t = to_float_np(train).reshape(11, -1).astype(np.float64)
    q = to_float_np(test).reshape(5, -1).astype(np.float64)
    d2 = ((q[:, None, :] - t[None]) ** 2).mean(axis=2)  # (5, 11), per-value squared distance
    nearest = np.argsort(d2, axis=1, kind="stable")[:, :k]
    np.testing.assert_allclose(r, np.take_along_axis(d2, nearest, 1).mean(axis=1), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(recon.reshape(5, -1), t[nearest].mean(axis=1), atol=1e-6)
    assert np.all(lat == 0)
    if k == 1:
        assert r[2] == 0.0


def test_knn_k_larger_than_the_training_set_is_refused():
    from sagan_jax.config import ConfigError

    with pytest.raises(ConfigError, match="--knn_k=5 exceeds the 4 training images"):
        knn.fit(Config(model="knn", knn_k=5), _images(4, 0))


def cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "sagan_jax.main", *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)


GAN_KEYS = ("auc", "ap", "f1", "threshold", "threshold_source", "f1_oracle", "f1_oracle_note",
            "auc_r_alone", "auc_lat_alone", "last_epoch",
            "best_epoch_on_test_set", "history", "wall_time_s", "flags", "data")


@pytest.mark.parametrize("model,extra", [("pca", ["--pca_components=8"]), ("knn", ["--knn_k=1"])])
def test_cli_fit_on_digits_writes_gan_metrics(tmp_path, model, extra):
    work = tmp_path / model
    out = cli(f"--model={model}", *extra, "--abnormal_class=4", f"--workdir={work}", *FAST)
    assert out.returncode == 0, out.stderr[-3000:]
    m = json.loads((work / "metrics.json").read_text())
    for key in GAN_KEYS:
        assert key in m, key
    assert m["auc"] > 0.9  # digit 4 abnormal: an easy split for both
    assert m["last_epoch"] == 1 and len(m["history"]) == 1 and m["history"][0]["epoch"] == 0
    assert m["best_epoch_on_test_set"]["note"].startswith("selected on the test set")
    assert m["auc_lat_alone"] == 0.5  # L = 0
    assert f"AUC {m['auc']:.4f}" in out.stdout
    assert "f1_at_threshold" not in m and "f1_at_threshold" not in m["history"][0]
    assert m["threshold_source"] == ("training normals (no val split), each scored by the model "
                                     "refitted without it (5-fold cross-fitting)")
    assert (f"F1 {m['f1']:.4f} at the calibrated threshold {m['threshold']:.4g}, from "
            f"{m['threshold_source']}; oracle F1 {m['f1_oracle']:.4f} (best threshold on the "
            "test set)") in out.stdout
    assert (work / "checkpoints").is_dir()
    # rerun: the finished fit is read back, not refitted
    again = cli(f"--model={model}", *extra, "--abnormal_class=4", f"--workdir={work}", *FAST)
    assert again.returncode == 0 and "already fitted" in again.stderr
    if model == "pca":
        _score_mode(work, tmp_path, m)
        other = cli("--model=pca", "--pca_components=4", "--abnormal_class=4",
                    f"--workdir={work}", *FAST)
        assert other.returncode == 2 and "pca_components=8" in other.stderr


def _score_mode(work, tmp_path, metrics):
    from PIL import Image

    from sagan_jax.data.digits import load_digits_anomaly

    data = load_digits_anomaly("4", 32, 0.2, 0)
    folder = tmp_path / "in"
    folder.mkdir()
    normal = np.flatnonzero(data.test.labels == 0)[:3]
    abnormal = np.flatnonzero(data.test.labels == 1)[:3]
    for i in list(normal) + list(abnormal):
        Image.fromarray(data.test.images[i]).save(folder / f"{i:04d}_{data.test.labels[i]}.png")
    out = cli("--mode=score", "--model=pca", "--pca_components=8", f"--workdir={work}",
              f"--input={folder}", "--noprogress")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = (work / "scores.csv").read_text().strip().splitlines()
    assert len(lines) == 7 and lines[0].startswith("path,raw_score")
    rows = [line.split(",") for line in lines[1:]]
    assert all(float(r[1]) > 0 for r in rows)
    # the same images scored by the training run's model: R of PCA, L = 0
    assert all(float(r[5]) == 0.0 for r in rows)
    # score mode reproduces the test set's scores (one image each way)
    cfg = Config(model="pca", pca_components=8, abnormal_class="4", workdir=str(work))
    from sagan_jax.training.checkpoints import restore_for_inference
    from sagan_jax.training.evaluate import score_images

    state, meta = restore_for_inference(cfg)
    assert meta["calibration"]["threshold"] > 0
    r, _ = score_images(cfg, state, data.test.images[normal[:1]])
    got = {os.path.basename(r_[0]): float(r_[1]) for r_ in rows}
    assert got[f"{normal[0]:04d}_0.png"] == pytest.approx(float(r[0]), rel=1e-5)


def test_cli_fit_run_axis_writes_summary(tmp_path):
    work = tmp_path / "knn"
    out = cli("--model=knn", "--seeds=0,1", "--abnormal_classes=0,1", f"--workdir={work}",
              *FAST)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((work / "summary.json").read_text())
    assert summary["runs"] == ["0_seed0", "0_seed1", "1_seed0", "1_seed1"]
    for name in summary["runs"]:
        m = json.loads((work / "runs" / name / "metrics.json").read_text())
        assert m["run"] == name and m["auc"] > 0.9
    assert summary["per_class"][0]["auc_mean"] > 0.9
    row = summary["per_class"][0]
    f1s = [json.loads((work / "runs" / n / "metrics.json").read_text())["f1"]
           for n in ("0_seed0", "0_seed1")]
    assert row["f1_mean"] == pytest.approx(np.mean(f1s)) and "f1_oracle_mean" in row
    assert "f1_oracle: the best F1 over every threshold" in summary["note"]
    import re

    with open(os.path.join(ROOT, "docs", "metrics.md")) as f:  # explains every key
        documented = set(re.findall(r"`([a-z][a-z0-9_]*)`", f.read()))
    m = json.loads((work / "runs" / "0_seed0" / "metrics.json").read_text())  # fitted: fit_s
    assert (set(summary) | set(row) | set(m) | set(m["history"][0])) - documented == set()
    assert f"| {row['f1_mean']:.4f} ± {row['f1_std']:.4f} |" in out.stdout  # the printed table
    assert "| 0 |" in (work / "summary.md").read_text() and "knn AUC" in out.stdout


def test_summary_mode_of_fitted_models():
    out = cli("--mode=summary", "--model=pca", "--pca_components=8")
    assert out.returncode == 0, out.stderr
    assert "trained parameters          0" in out.stdout and "27,648 numbers" in out.stdout
    out = cli("--mode=summary", "--model=knn", "--knn_k=3")
    assert out.returncode == 0, out.stderr
    assert "k = 3" in out.stdout and "N x 3,072 uint8" in out.stdout


@pytest.mark.parametrize("args,message", [
    (["--model=pca", "--pca_components=0"], "--pca_components=0 must be >= 1"),
    (["--model=knn", "--knn_k=0"], "--knn_k=0 must be >= 1"),
    (["--model=pca", "--pca_components=5000"], "--pca_components=5000 exceeds what"),
])
def test_bad_fit_flags_exit_2(tmp_path, args, message):
    out = cli(*args, f"--workdir={tmp_path}", *FAST)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sagan_jax: error: ") and message in lines[0], \
        out.stderr
