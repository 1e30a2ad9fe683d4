"""The PyTorch reference's training loop (sagan_jax.torch_ref.train) against the JAX loop:
started from the same weights, both train on the same batches with the same learning-rate rule,
recompute BatchNorm statistics the same way and score the test set alike. Plus --eval_every."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed: pip install 'sagan_jax[torch]' to run parity tests"
)

import jax  # noqa: E402

from sagan_jax.config import Config, ConfigError  # noqa: E402
from sagan_jax.data import load_data  # noqa: E402
from sagan_jax.torch_ref import TorchTrainer  # noqa: E402
from sagan_jax.torch_ref import train as torch_train  # noqa: E402
from sagan_jax.torch_ref.convert import load_flax_into_torch  # noqa: E402
from sagan_jax.training.evaluate import score_images  # noqa: E402
from sagan_jax.training.checkpoints import restore_for_inference  # noqa: E402
from sagan_jax.training.loop import train_and_evaluate  # noqa: E402
from sagan_jax.training.state import init_state, make_optimizers  # noqa: E402


def tiny_cfg(workdir, **kw) -> Config:
    base = dict(dataset="digits", abnormal_class="3", isize=16, ngf=16, ndf=16, batch_size=32,
                eval_batch_size=64, max_train_images=96, epochs=2, eval_every=0,
                bn_recalibration_batches=3, workdir=str(workdir), progress=False, plots=False,
                tensorboard=False)
    base.update(kw)
    return Config(**base)


def median_rel(a, b) -> float:
    return float(np.median(np.abs(a - b) / np.abs(b)))


def test_torch_loop_matches_jax_loop_from_the_same_weights(tmp_path):
    cfg = tiny_cfg(tmp_path / "jax")
    data = load_data(cfg)
    # The JAX loop's initial weights (init_state(fold_in(key(seed), 0))), copied into torch.
    g_tx, d_tx = make_optimizers(cfg, len(data.train) // cfg.batch_size)
    state0 = init_state(cfg, jax.random.fold_in(jax.random.key(cfg.seed), 0), g_tx, d_tx)

    def torch_run(c):
        trainer = TorchTrainer(c)
        load_flax_into_torch(trainer.g, state0.g_params, state0.g_stats)
        load_flax_into_torch(trainer.d, state0.d_params, state0.d_stats)
        metrics = torch_train.train_and_evaluate(c, data, trainer=trainer)
        return metrics, torch_train.score_images(trainer, data.test.images, c.eval_batch_size)

    jm = train_and_evaluate(cfg, data)
    state, _ = restore_for_inference(cfg)
    r_j, l_j = score_images(cfg, state, data.test.images)
    tm, (r_t, l_t) = torch_run(cfg)

    # 6 Adam steps at lr 2e-3 (2 epochs of 3 batches), precise BN, the test set scored once.
    assert [r["step"] for r in tm["history"]] == [r["step"] for r in jm["history"]] == [3, 6]
    for hist in (jm["history"], tm["history"]):
        assert "test_auc" not in hist[0] and "test_auc" in hist[1]  # --eval_every=0
    # Adam turns float32 rounding differences of near-zero gradients into +-lr steps, so
    # per-image scores agree only to a few percent (measured: median 1.3% for R, 8% for L) ...
    assert median_rel(r_t, r_j) < 0.05 and median_rel(l_t, l_j) < 0.3
    # ... while a different batch order (measured: L 117% off) or skipping the BatchNorm
    # recalibration (R 35%, L 100% off) moves them far more: both controls must fail.
    _, (r_o, l_o) = torch_run(cfg.replace(seed=1))  # same weights, another epoch order
    assert median_rel(l_o, l_j) > 0.6
    _, (r_n, l_n) = torch_run(cfg.replace(bn_recalibration_batches=0))
    assert median_rel(r_n, r_j) > 0.15 and median_rel(l_n, l_j) > 0.6


def test_torch_loop_trains_only_sagan(tmp_path):
    cfg = tiny_cfg(tmp_path, model="ganomaly")
    with pytest.raises(ConfigError, match="trains --model=sagan only"):
        torch_train.train_and_evaluate(cfg, None)


def test_eval_every_schedule():
    every2 = Config(epochs=5, eval_every=2)
    assert [every2.evaluates_after(e) for e in range(5)] == [False, True, False, True, True]
    last = Config(epochs=3, eval_every=0)
    assert [last.evaluates_after(e) for e in range(3)] == [False, False, True]
    assert all(Config(epochs=3).evaluates_after(e) for e in range(3))
    with pytest.raises(ConfigError, match=r"--eval_every=-1 must be >= 0"):
        Config(eval_every=-1)


def _init_leaves():
    """{path: (jax leaf, torch leaf)} of G's and D's initial parameters, each framework
    drawing from its own initialiser (the parity runs' setting)."""
    from test_torch_parity import flat, torch_tree

    cfg = Config(ngf=16, ndf=16, isize=32)
    g_tx, d_tx = make_optimizers(cfg, 1)
    st = init_state(cfg, jax.random.key(0), g_tx, d_tx)
    torch.manual_seed(0)
    tr = TorchTrainer(cfg)
    out = {}
    for net, jp, mod in (("G", st.g_params, tr.g), ("D", st.d_params, tr.d)):
        tp, _ = torch_tree(mod)
        for (p, a), (q, b) in zip(flat(jp), flat(tp)):
            assert p == q
            out[(net,) + p] = (np.asarray(a), np.asarray(b))
    return out


def test_both_frameworks_initialise_as_spec():
    """docs/design.md, section 4 in both frameworks: conv / dense weights ~ N(0, 0.02), BatchNorm
    scales ~ N(1, 0.02), biases and BatchNorm offsets 0. Training parity draws each framework's own
    initial weights, so a different initialiser would bias the comparison of AUCs."""
    leaves = _init_leaves()
    assert len(leaves) > 100
    for path, arrays in leaves.items():
        for fw, a in zip(("jax", "torch"), arrays):
            name = path[-1]
            if name in ("bias",) or name.endswith("_bias"):
                assert np.all(a == 0), (fw, path)
                continue
            centre = 1.0 if name == "scale" else 0.0
            if a.size < 500:  # too few draws for a tight check; still the right centre
                assert abs(a.mean() - centre) < 4 * 0.02, (fw, path)
                continue
            assert abs(a.mean() - centre) < 0.002, (fw, path, a.mean())
            assert abs(a.std() - 0.02) < 0.002, (fw, path, a.std())
