"""The run axis (training/program.py): runs trained together equal the same runs trained alone,
step by step (unroll and vmap, seeds and abnormal classes, different training-set sizes, a
per-run learning rate); one run in the chunked, device-resident program equals today's
per-step training; the CLI's run list writes per-run results and a summary."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sagan_jax import seeds
from sagan_jax.config import Config
from sagan_jax.data.base import AnomalyData, Split
from sagan_jax.data.pipeline import epoch_order, to_float_np
from sagan_jax.training import program as prog
from sagan_jax.training.runs import parse_classes, plan_runs, program_groups
from sagan_jax.training.state import init_state, make_optimizers
from sagan_jax.training.step import make_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(isize=16, ngf=16, ndf=16, nz=8, batch_size=8, max_train_images=40, dsc_impl="shift",
            compilation_cache="", progress=False)
TOL = 1e-4  # the 2-device test's tolerance


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(jnp.asarray(u, jnp.float32) - jnp.asarray(v, jnp.float32))))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def sgd(cfg):
    """Parameter equality is compared under SGD: with Adam, biases right before a BatchNorm
    have a mathematically zero gradient whose float noise Adam turns into +-lr updates, so
    two equal computations compiled differently disagree there by 2 lr (see
    test_training.test_two_device_step_equals_single_device_step). Losses are compared under
    Adam too."""
    lr = 1e-4 * cfg.lr / 2e-3  # small enough that 5 steps stay well conditioned
    return optax.sgd(lr), optax.sgd(lr)


def train_together(cfgs, datas, impl, n_steps, chunk=1, opt=sgd):
    """``n_steps`` steps of epoch 0 of every run, in one program of ``chunk`` steps per call
    (1, the CPU default: on CPU each step of a chunk is compiled again); returns the final
    states and the last chunk's metrics."""
    txs = [opt(c) for c in cfgs]
    spe = [len(d.train) // c.batch_size for c, d in zip(cfgs, datas)]
    layout = prog.RunLayout(cfgs, txs, spe, impl)
    program = prog.make_chunk_program(layout, None, donate=False)
    states = layout.pack([init_state(c, seeds.init_key(c.seed), *tx) for c, tx in zip(cfgs, txs)])
    images = layout.pack([jnp.asarray(d.train.images) for d in datas], pad=True)
    keys = [np.asarray(jax.random.key_data(seeds.step_base_key(c.seed))) for c in cfgs]
    orders = [epoch_order(len(d.train), c.batch_size, c.seed, 0) for c, d in zip(cfgs, datas)]
    for c0 in range(0, n_steps, chunk):
        idx, act = [], []
        for k, c in enumerate(cfgs):
            ix = np.zeros((c.batch_size, chunk), np.int32)
            ac = np.zeros(chunk, bool)
            m = min(chunk, n_steps - c0)
            ix[:, :m] = orders[k][c0:c0 + m].T
            ac[:m] = True
            idx.append(ix)
            act.append(ac)
        states, metrics = program(states, images, *prog.pack_chunk_inputs(layout, idx, act, keys))
    return layout.unpack(states), prog.unpack_metrics(layout, metrics)


def noise_data(n, seed):
    """Training images of uniform noise. Equality tests avoid the digits: their flat black
    backgrounds give exact ties in max-pooling, and two compilations of the same math break
    those ties differently (a float-noise difference becomes a routing difference)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    split = Split(images, np.zeros(n, np.int32))
    return AnomalyData(name=f"noise{n}", train=split, test=split)


@pytest.fixture(scope="module")
def digits():
    return {"0": noise_data(40, 0), "1": noise_data(48, 1)}


def test_one_run_in_the_program_equals_per_step_training(digits):
    cfg = Config(**TINY)
    data = digits["0"]
    # two chunks of 3: the last two steps of the second chunk are inactive (no-ops). 4 steps:
    # the two programs agree to ~1e-8 for 3 steps; at step 4 a tie (ReLU zeros in CBAM's
    # channel max) breaks differently and the difference then grows ~10x per step (1.2e-5
    # after 4 steps, 1.5e-4 after 5)
    n = 4
    # SGD: the whole state is compared (Adam turns the pre-BN biases' float noise into +-lr
    # updates, see sgd(); Adam inside the program is covered by the CLI tests below, which
    # resume bit-exactly and train the same runs as alone)
    (state,), (metrics,) = train_together([cfg], [data], "unroll", n, chunk=3, opt=sgd)
    g_tx, d_tx = sgd(cfg)
    ref = init_state(cfg, seeds.init_key(cfg.seed), g_tx, d_tx)
    step = make_train_step(cfg, g_tx, d_tx, None, donate=False)
    base = seeds.step_base_key(cfg.seed)
    for i, idx in enumerate(epoch_order(len(data.train), cfg.batch_size, cfg.seed, 0)[:n]):
        ref, m = step(ref, jnp.asarray(to_float_np(data.train.images[idx])),
                      jax.random.fold_in(base, i))
    assert int(state.step) == int(ref.step) == n
    np.testing.assert_allclose(metrics["l_g"][0], m["l_g"], rtol=TOL)
    assert np.isnan(metrics["l_g"][1]) and np.isnan(metrics["l_g"][2])  # inactive padding
    assert _max_diff(state, ref) < TOL


# vmap turns per-run kernels into grouped convolutions whose kernel gradients XLA reduces in
# another order: the first DSC's kernel differs by ~1e-5 after one step and the difference
# grows with each step, so vmap is compared over 2 steps (unroll: 4) at the same tolerance.
# unroll: two seeds of one class; vmap: two seeds of two abnormal classes, with their own
# training sets (of different sizes) and batch orders.
@pytest.mark.parametrize("impl,steps", [("unroll", 4), ("vmap", 2)])
def test_seeds_and_classes_together_equal_alone(digits, impl, steps):
    classes = ("0", "0") if impl == "unroll" else ("0", "1")
    cfgs = [Config(**TINY, seed=s, abnormal_class=c) for s, c in zip((0, 1), classes)]
    datas = [digits[c] for c in classes]
    if impl == "vmap":
        assert len(datas[0].train) != len(datas[1].train)
    together, metrics = train_together(cfgs, datas, impl, steps)
    for k, c in enumerate(cfgs):
        (alone,), m_alone = train_together([c], [datas[k]], "unroll", steps)
        assert _max_diff(together[k], alone) < TOL, (impl, k)
        np.testing.assert_allclose(metrics[k]["l_g"], m_alone[0]["l_g"], rtol=TOL)
    # the runs really differ (a test of equality between identical runs could not fail)
    assert _max_diff(together[0].g_params, together[1].g_params) > 1e-3


def test_per_run_learning_rate(digits):
    """docs/extending.md: a per-run hyperparameter. Runs whose static settings differ (here
    --lr) are unrolled side by side in one program and still equal their lone selves."""
    cfgs = [Config(**TINY, lr=lr) for lr in (2e-3, 5e-4)]
    datas = [digits["0"]] * 2
    layout = prog.RunLayout(cfgs, [make_optimizers(c, 5) for c in cfgs], [5, 5], "vmap")
    assert len(layout.groups) == 2  # different static settings cannot share a vmap group
    together, _ = train_together(cfgs, datas, "vmap", 3)
    for k, c in enumerate(cfgs):
        (alone,), _ = train_together([c], [datas[k]], "unroll", 3)
        assert _max_diff(together[k], alone) < TOL
    assert _max_diff(together[0].g_params, together[1].g_params) > 1e-4


def test_run_planning():
    cfg = Config(seeds="0,1", abnormal_classes="2,3", workdir="w")
    runs = plan_runs(cfg)
    assert [r.name for r in runs] == ["2_seed0", "2_seed1", "3_seed0", "3_seed1"]
    assert runs[1].cfg.seed == 1 and runs[1].cfg.abnormal_class == "2"
    assert runs[3].cfg.workdir == os.path.join("w", "runs", "3_seed1")
    assert [r.name for r in plan_runs(Config())] == [""]
    assert parse_classes(Config(dataset="cifar10", abnormal_class="cat",
                                abnormal_classes="all"))[0] == "airplane"
    assert [len(g) for g in program_groups(runs, 3)] == [3, 1]


@pytest.mark.parametrize("args,message", [
    (["--seeds=0,x"], "--seeds='0,x' must be comma-separated integers"),
    (["--seeds=1,1"], "lists a seed twice"),
    (["--abnormal_classes=0,cat"], "--abnormal_classes='cat' is not a class of digits"),
    (["--run_axis_impl=pmap"], "--run_axis_impl='pmap' is not allowed"),
    (["--lr=nan"], "--lr=nan is not a finite number"),
    (["--max_runs_per_program=-1"], "--max_runs_per_program=-1 must be >= 0"),
])
def test_bad_run_flags_exit_2(args, message):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "sagan_jax.main", *args], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr, out.stderr


RUN_LIST = ["--isize=16", "--ngf=16", "--ndf=16", "--nz=8", "--batch_size=16",
            "--max_train_images=48", "--epochs=2", "--eval_every=2", "--noprogress",
            "--notensorboard", "--noplots", "--bn_recalibration_batches=1",
            "--seeds=0,1", "--abnormal_classes=0,1", "--compilation_cache=", "--eval_originals"]
RUN_NAMES = ["0_seed0", "0_seed1", "1_seed0", "1_seed1"]


def _cli(args, script=None, env_extra=None):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", **(env_extra or {}))
    cmd = [sys.executable, script] if script else [sys.executable, "-m", "sagan_jax.main"]
    return subprocess.run(cmd + args, cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def run_list(tmp_path_factory):
    """Four runs (2 seeds x 2 abnormal classes, 3 steps per epoch, 2 epochs) as one program."""
    work = tmp_path_factory.mktemp("run_list") / "w"
    out = _cli(RUN_LIST + [f"--workdir={work}"])
    assert out.returncode == 0, out.stderr[-3000:]
    return work, out


def test_cli_run_list_writes_per_run_results_and_summary(run_list):
    work, out = run_list
    summary = json.load(open(work / "summary.json"))
    assert summary["runs"] == RUN_NAMES
    assert [r["abnormal_class"] for r in summary["per_class"]] == ["0", "1"]
    for name in summary["runs"]:
        m = json.load(open(work / "runs" / name / "metrics.json"))
        assert m["run"] == name and m["runs_in_program"] == 4 and m["last_epoch"] == 2
        assert [r["epoch"] for r in m["history"]] == [0, 1] and "test_auc" in m["history"][1]
        assert "test_auc" not in m["history"][0]  # --eval_every=2
        # --eval_originals: the scored epoch also under the originals' evaluation, labelled
        orig = m["history"][1]["test_auc_originals"]
        assert 0.0 <= orig <= 1.0 and "test_auc_originals" not in m["history"][0]
        assert m["originals_evaluation"]["auc"] == orig
        assert m["originals_evaluation"]["epoch"] == 2
        assert "not the result" in m["originals_evaluation"]["note"]
        assert "val_selected_epoch" not in m  # no --val_fraction
        assert m["peak_host_memory_mb"] > 0
    row = summary["per_class"][0]
    aucs = [json.load(open(work / "runs" / f"0_seed{s}" / "metrics.json"))["auc"] for s in (0, 1)]
    assert row["auc_mean"] == pytest.approx(np.mean(aucs))
    assert row["auc_std"] == pytest.approx(np.std(aucs, ddof=1))
    assert "| 0 |" in (work / "summary.md").read_text()
    assert "mean over classes" in out.stdout


def test_run_list_killed_mid_epoch_resumes_every_run_exactly(run_list, tmp_path):
    """SIGKILL in epoch 2 (before step 5 of 6; one step per chunk), then the same command: every
    run resumes from its epoch-1 checkpoint and ends bit-equal to the uninterrupted program,
    with each run's metrics.jsonl holding every step once."""
    from _checkpoint_arrays import final_arrays

    ref, _ = run_list
    work = tmp_path / "w"
    killed = _cli(RUN_LIST + [f"--workdir={work}"], os.path.join(ROOT, "tests", "_killed_run.py"),
                  {"KILL_AT_STEP": "4"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    for name in RUN_NAMES:
        assert final_arrays(str(work / "runs" / name))[0] == 3  # epoch 1's checkpoint
    resumed = _cli(RUN_LIST + [f"--workdir={work}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    for name in RUN_NAMES:
        step_a, a = final_arrays(str(ref / "runs" / name))
        step_b, b = final_arrays(str(work / "runs" / name))
        assert step_a == step_b == 6
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name} {k}")
        steps = [json.loads(l)["step"] for l in open(work / "runs" / name / "metrics.jsonl")
                 if '"kind": "step"' in l]
        assert steps == list(range(6)), name
        assert (json.load(open(work / "runs" / name / "metrics.json"))["auc"]
                == json.load(open(ref / "runs" / name / "metrics.json"))["auc"])


def test_a_diverged_run_stops_alone(tmp_path):
    """Run 0_seed1's weights go NaN in epoch 1: it stops (no checkpoint, 'diverged' in its
    metrics.json), 0_seed0 finishes, and the command ends with one line naming the run."""
    work = tmp_path / "w"
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", NAN_AT_STEP="1", NAN_GROUP="1")
    args = ["--isize=16", "--ngf=16", "--ndf=16", "--nz=8", "--batch_size=16",
            "--max_train_images=32", "--epochs=1", "--noprogress", "--notensorboard",
            "--noplots", "--bn_recalibration_batches=1", "--seeds=0,1",
            "--run_axis_impl=unroll", f"--workdir={work}", "--compilation_cache="]
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "_killed_run.py"), *args],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == (
        "sagan_jax: error: 1 of 2 runs diverged and stopped (0_seed1); the others finished "
        "(see summary.json)")
    ok = json.load(open(work / "runs" / "0_seed0" / "metrics.json"))
    bad = json.load(open(work / "runs" / "0_seed1" / "metrics.json"))
    assert "auc" in ok and "diverged" not in ok
    assert bad["diverged"]["what"].startswith("parameters or BatchNorm statistics are not finite")
    assert bad["diverged"]["last_good_checkpoint_epoch"] is None and "auc" not in bad
    assert not os.listdir(work / "runs" / "0_seed1" / "checkpoints")
    summary = json.load(open(work / "summary.json"))
    assert summary["per_class"][0]["diverged"] == ["0_seed1"]
    assert summary["per_class"][0]["seeds"] == [0]
