"""The training step: losses fall, the re-initialisation rule, data-parallel equivalence."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sagan_jax.config import Config
from sagan_jax.data.digits import load_digits_anomaly
from sagan_jax.data.pipeline import to_float_np
from sagan_jax.training.state import init_state, lambda_decay, make_optimizers
from sagan_jax.training.step import make_train_step

TINY = dict(ngf=16, ndf=16, nz=8, isize=16, batch_size=8)


def _batch(seed=0, n=8, size=16):
    return jax.random.uniform(jax.random.key(seed), (n, size, size, 3), minval=-1, maxval=1)


def test_l_con_falls_over_20_steps_on_a_fixed_batch():
    cfg = Config(**TINY)
    g_tx, d_tx = make_optimizers(cfg, steps_per_epoch=20)
    step = make_train_step(cfg, g_tx, d_tx)
    state = init_state(cfg, jax.random.key(0), g_tx, d_tx)
    data = load_digits_anomaly("0", 16, 0.2, seed=0)
    x = jnp.asarray(to_float_np(data.train.images[:8]))
    l_con = []
    for i in range(20):
        state, m = step(state, x, jax.random.key(i))
        l_con.append(float(m["l_con"]))
    assert int(state.step) == 20
    assert l_con[-1] < 0.8 * l_con[0], l_con
    assert np.mean(l_con[-5:]) < np.mean(l_con[:5]), l_con


def test_discriminator_reinitialised_when_l_d_below_threshold():
    x, rng = _batch(), jax.random.key(7)
    # Threshold above any L_D: the rule fires and D's weights are a fresh draw from rng.
    cfg = Config(**TINY, reinit_d_threshold=1e9)
    g_tx, d_tx = make_optimizers(cfg, 1)
    state = init_state(cfg, jax.random.key(0), g_tx, d_tx)
    new, m = make_train_step(cfg, g_tx, d_tx, donate=False)(state, x, rng)
    assert int(m["d_reinit"]) == 1
    from sagan_jax.methods import build_models
    from sagan_jax.training.state import init_discriminator
    fresh = init_discriminator(build_models(cfg)[1], rng, 16)["params"]
    for a, b in zip(jax.tree.leaves(new.d_params), jax.tree.leaves(fresh)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    # The paper's threshold 1e-5 does not fire on a normal step; D is then the Adam update.
    cfg = Config(**TINY)
    new2, m2 = make_train_step(cfg, g_tx, d_tx, donate=False)(state, x, rng)
    assert int(m2["d_reinit"]) == 0
    assert not np.allclose(np.asarray(new2.d_params["final_conv"]["kernel"]),
                           np.asarray(fresh["final_conv"]["kernel"]))
    assert not np.allclose(np.asarray(new2.d_params["final_conv"]["kernel"]),
                           np.asarray(state.d_params["final_conv"]["kernel"]))


def test_lambda_decay_rule():
    lr = lambda e: float(lambda_decay(e, 2e-3, niter=15, niter_decay=100))
    assert lr(0) == lr(14) == pytest.approx(2e-3)
    assert lr(15) == pytest.approx(2e-3 * (1 - 1 / 101))
    assert lr(114) == pytest.approx(2e-3 * (1 - 100 / 101))


def test_schedule_applies_per_epoch():
    cfg = Config(**TINY, niter=1, niter_decay=1, lr=1.0)
    g_tx, _ = make_optimizers(cfg, steps_per_epoch=3)
    # Adam's first update is -lr * sign(g): its size shows the learning rate in force.
    import optax
    params = {"w": jnp.ones(())}
    state = g_tx.init(params)
    sizes = []
    for _ in range(6):
        upd, state = g_tx.update({"w": jnp.ones(())}, state, params)
        sizes.append(float(jnp.abs(upd["w"])))
    assert sizes[:3] == pytest.approx([1.0] * 3, rel=1e-3)  # epoch 0: full rate
    assert sizes[3:] == pytest.approx([0.5] * 3, rel=1e-3)  # epoch 1: 1 - 1/2


def test_two_device_step_equals_single_device_step():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "_two_devices.py")],
                         capture_output=True, text=True, env=env, timeout=1500)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["sgd"]["sharded"] == 2
    # Full state after one step, to 1e-4 (SGD: parameters move by lr * gradient).
    assert res["sgd"]["params"] < 1e-4 and res["sgd"]["stats"] < 1e-4
    assert res["sgd"]["metrics"] < 1e-4
    # The run axis composed with the data axis: two runs together on 2 devices equal each
    # run alone on one device (SGD; tests/test_runs.py covers one device). After one step to
    # this test's 1e-4, the whole state; after two steps to 1e-3: seed 1's first DSC kernel
    # gradient differs ~1e-5 relative between the two compiled programs (float summation
    # order) and the difference grows about tenfold per step (see _two_devices.run_axis).
    assert max(res["run_axis"]["runs_step1"]) < 1e-4, res["run_axis"]
    assert max(res["run_axis"]["runs"]) < 1e-3, res["run_axis"]
    assert res["run_axis"]["runs_differ"] > 1e-4
