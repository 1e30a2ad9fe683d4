"""Checkpoints, resume after SIGKILL, determinism, failures, logs and --mode=score."""
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from _checkpoint_arrays import final_arrays
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--isize=16", "--ngf=16", "--ndf=16", "--nz=8", "--max_train_images=96",
        "--batch_size=16", "--eval_batch_size=64", "--epochs=3", "--noprogress", "--seed=3"]


def run(args, script=None, env_extra=None):
    env = dict(os.environ, PYTHONPATH=ROOT, **(env_extra or {}))
    cmd = [sys.executable, script] if script else [sys.executable, "-m", "sagan_jax.main"]
    return subprocess.run(cmd + args, cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One uninterrupted tiny run, shared by the tests below."""
    work = str(tmp_path_factory.mktemp("run_a"))
    out = run(TINY + [f"--workdir={work}", "--val_fraction=0.25"])
    assert out.returncode == 0, out.stderr[-3000:]
    return work


def test_run_writes_metrics_logs_plots_and_checkpoints(trained):
    m = json.load(open(os.path.join(trained, "metrics.json")))
    assert m["last_epoch"] == 3 and len(m["history"]) == 3
    assert 0.0 <= m["auc"] <= 1.0 and m["auc"] == m["history"][-1]["test_auc"]
    assert m["best_epoch_on_test_set"]["note"].startswith("selected on the test set")
    steps = [json.loads(l) for l in open(os.path.join(trained, "metrics.jsonl"))]
    step_recs = [r for r in steps if r["kind"] == "step"]
    assert [r["step"] for r in step_recs] == list(range(3 * (72 // 16)))
    for key in ("l_g", "l_d", "l_con", "g_grad_norm", "d_param_norm"):
        assert all(np.isfinite(r[key]) for r in step_recs)
    assert os.listdir(os.path.join(trained, "tensorboard"))
    for name in ("score_histogram", "roc", "reconstructions", "loss_curves"):
        assert os.path.getsize(os.path.join(trained, "plots", f"{name}.png")) > 1000
    assert os.listdir(os.path.join(trained, "best"))


def test_sigkill_then_resume_equals_uninterrupted_run(trained, tmp_path):
    """The module's uninterrupted run is the reference: the same flags, killed in epoch 2 (one
    step per chunk, the CPU default), then the same command resumes it to bit-equal weights."""
    flags = TINY + ["--val_fraction=0.25"]  # the fixture's flags: 72 training images
    steps_per_epoch = 72 // 16
    ref = trained
    work = str(tmp_path / "killed")
    kill_at = steps_per_epoch + 2  # two steps into the second epoch
    out = run(flags + [f"--workdir={work}"],
              script=os.path.join(ROOT, "tests", "_killed_run.py"),
              env_extra={"KILL_AT_STEP": str(kill_at)})
    assert out.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(work, "metrics.json"))
    logged = [json.loads(l)["step"] for l in open(os.path.join(work, "metrics.jsonl"))
              if '"kind": "step"' in l]
    assert max(logged) >= steps_per_epoch  # steps after the checkpoint were logged, then lost
    step, _ = final_arrays(work)
    assert step == steps_per_epoch  # the first epoch's checkpoint survived the kill
    out = run(flags + [f"--workdir={work}"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stderr
    # the log has every step once (the killed process's extra rows were dropped)
    steps = [json.loads(l)["step"] for l in open(os.path.join(work, "metrics.jsonl"))
             if '"kind": "step"' in l]
    assert steps == list(range(3 * steps_per_epoch))
    wall = json.load(open(os.path.join(work, "metrics.json")))["wall_time_s"]
    first = json.load(open(os.path.join(work, "metrics.json")))["history"][0]
    assert wall > first["train_s"]  # the killed process's epoch counts in the wall time
    step_ref, a = final_arrays(ref)
    step_res, b = final_arrays(work)
    assert step_ref == step_res == 3 * steps_per_epoch
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # Determinism: same seed and flags give identical metrics.
    ma = json.load(open(os.path.join(ref, "metrics.json")))["history"]
    mb = json.load(open(os.path.join(work, "metrics.json")))["history"]
    for ra, rb in zip(ma, mb):
        assert ra["test_auc"] == rb["test_auc"] and ra["test_ap"] == rb["test_ap"]


def test_same_seed_same_metrics_twice(trained, tmp_path):
    work = str(tmp_path / "again")
    assert run(TINY + [f"--workdir={work}", "--val_fraction=0.25"]).returncode == 0
    rec = lambda w: [json.loads(l) for l in open(os.path.join(w, "metrics.jsonl"))]
    timing = ("train_s", "train_img_per_s", "eval_s")
    strip = lambda rs: [{k: v for k, v in r.items() if k not in timing} for r in rs]  # noqa: E731
    assert strip(rec(trained)) == strip(rec(work))
    # default flags (the suite's host devices: $SAGAN_JAX_HOST_DEVICES, see conftest), the DSC
    # forms from the fixed table: the same command gives bit-identical AUCs and checkpoints
    from sagan_jax.devices import host_device_count

    m1, m2 = (json.load(open(os.path.join(w, "metrics.json"))) for w in (trained, work))
    assert len(m1["devices"]) == host_device_count(
        os.environ.get("SAGAN_JAX_HOST_DEVICES", "auto"), 16, 64)
    assert m1["auc"] == m2["auc"] and m1["dsc_impls"] == m2["dsc_impls"]
    (s1, a), (s2, b) = final_arrays(trained), final_arrays(work)
    assert s1 == s2 and a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_incompatible_workdir_is_refused(trained):
    out = run(TINY + [f"--workdir={trained}", "--ngf=32"])
    assert out.returncode == 2
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(f"sagan_jax: error: workdir {os.path.join(trained, 'checkpoints')} "
                           "holds a model trained with other flags: ngf=16 (now 32)")


@pytest.mark.parametrize("flag,shown", [
    ("--abnormal_class=3", "--abnormal_class='0' (now '3')"),
    ("--seed=4", "--seed=3 (now 4)"),
    ("--lr=0.001", "--lr=0.002 (now 0.001)"),
    ("--protocol=clean", "--protocol='ganomaly' (now 'clean')"),
    ("--epochs=2", "already trained 3 epochs but --epochs=2"),
])
def test_resume_refuses_another_experiment(trained, flag, shown):
    out = run(TINY + [f"--workdir={trained}", "--val_fraction=0.25", flag])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("sagan_jax: error: workdir ") and shown in lines[-1], lines[-1]


def test_reopening_with_harmless_flags_returns_the_result(trained):
    before = json.load(open(os.path.join(trained, "metrics.json")))
    out = run(TINY + [f"--workdir={trained}", "--val_fraction=0.25", "--eval_every=0",
                      "--noplots", "--steps_per_chunk=3"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"AUC {before['auc']:.4f}" in out.stdout


def test_second_training_process_is_refused(trained):
    from sagan_jax.training.checkpoints import WorkdirLock

    with WorkdirLock(trained):
        out = run(TINY + [f"--workdir={trained}", "--val_fraction=0.25"])
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(
        f"sagan_jax: error: --workdir={trained!r} is in use by another training process")


def test_non_finite_loss_stops_without_checkpoint(tmp_path):
    work = str(tmp_path / "nan")
    out = run(TINY + [f"--workdir={work}", "--lr=1e38"])
    assert out.returncode == 2
    line = out.stderr.strip().splitlines()[-1]
    assert "sagan_jax: error: training stopped at step" in line
    assert ("= nan" in line or "= inf" in line or "not finite" in line) and \
        "no checkpoint was saved" in line
    assert not os.path.exists(os.path.join(work, "checkpoints")) or \
        not os.listdir(os.path.join(work, "checkpoints"))


@pytest.mark.parametrize("eval_every", ["1", "0"])
def test_non_finite_weights_are_never_saved_or_scored(trained, tmp_path, eval_every):
    """Weights that go NaN on the last step of an epoch (losses of that step still finite):
    the run stops naming the step and the last good checkpoint; nothing NaN is saved."""
    work = str(tmp_path / "nanw")
    shutil.copytree(trained, work)
    before, arrays = final_arrays(work)
    # epoch 4 is steps 12-15 of this process's 4 calls: NaN once its fourth step has run
    out = run(TINY + [f"--workdir={work}", "--val_fraction=0.25", "--epochs=4",
                      f"--eval_every={eval_every}"],
              script=os.path.join(ROOT, "tests", "_killed_run.py"),
              env_extra={"NAN_AT_STEP": "3"})
    assert out.returncode == 2, out.stderr[-2000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("sagan_jax: error: training stopped at step 16: parameters or "
                           "BatchNorm statistics are not finite; last good checkpoint: epoch 3")
    after, arrays2 = final_arrays(work)
    assert after == before
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], arrays2[k])


def test_score_mode_csv_maps_and_per_image_independence(trained, tmp_path):
    folder = tmp_path / "new"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(folder / "gray.bmp")
    (folder / "notes.txt").write_text("not an image")
    base = TINY + [f"--workdir={trained}", "--mode=score"]
    out = run(base + [f"--input={folder}"])
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(
        f"sagan_jax: error: {folder / 'notes.txt'}: not an image file")
    csv_all = str(tmp_path / "all.csv")
    out = run(base + [f"--input={folder}", "--on_bad_image=skip", f"--output={csv_all}"])
    assert out.returncode == 0, out.stderr[-2000:]
    import csv

    rows = list(csv.reader(open(csv_all, newline="")))
    assert rows[0] == ["path", "raw_score", "normalised_score", "decision", "r", "lat", "map",
                       "reason"]
    scored = [r for r in rows[1:] if r[3] != "skipped"]  # notes.txt: a "skipped" row
    assert len(rows) == 6 and len(scored) == 4
    assert {r[3] for r in scored} <= {"normal", "abnormal"}
    assert all(os.path.exists(r[6]) for r in scored)
    csv_one = str(tmp_path / "one.csv")
    out = run(base + [f"--input={folder / 'im1.png'}", f"--output={csv_one}"])
    assert out.returncode == 0, out.stderr[-2000:]
    one = list(csv.reader(open(csv_one, newline="")))[1]
    same = [r for r in rows[1:] if r[0].endswith("im1.png")][0]
    # raw score, normalised score (float32 rounding: a batch of 1 against one of 4), decision
    np.testing.assert_allclose([float(x) for x in one[1:3]], [float(x) for x in same[1:3]],
                               rtol=1e-6)
    assert one[3] == same[3]
