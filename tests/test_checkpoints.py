"""Checkpoints, resume after SIGKILL, determinism, failures, logs and --mode=score."""
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--isize=16", "--ngf=16", "--ndf=16", "--nz=8", "--max_train_images=96",
        "--batch_size=16", "--eval_batch_size=64", "--epochs=3", "--noprogress", "--seed=3"]
STEPS_PER_EPOCH = 96 // 16


def run(args, script=None, env_extra=None):
    env = dict(os.environ, PYTHONPATH=ROOT, **(env_extra or {}))
    cmd = [sys.executable, script] if script else [sys.executable, "-m", "sagan_jax.main"]
    return subprocess.run(cmd + args, cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=600)


def final_arrays(workdir):
    """Every array of the newest checkpoint, as NumPy, keyed by path."""
    mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    step = mngr.latest_step()
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    flat, _ = jax.tree_util.tree_flatten_with_path(state)
    return step, {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}


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


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    ref = str(tmp_path / "ref")
    assert run(TINY + [f"--workdir={ref}"]).returncode == 0
    work = str(tmp_path / "killed")
    kill_at = STEPS_PER_EPOCH + 2  # two steps into the second epoch
    out = run(TINY + [f"--workdir={work}"], script=os.path.join(ROOT, "tests", "_killed_run.py"),
              env_extra={"KILL_AT_STEP": str(kill_at)})
    assert out.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(work, "metrics.json"))
    step, _ = final_arrays(work)
    assert step == STEPS_PER_EPOCH  # the first epoch's checkpoint survived the kill
    out = run(TINY + [f"--workdir={work}"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stderr
    step_ref, a = final_arrays(ref)
    step_res, b = final_arrays(work)
    assert step_ref == step_res == 3 * STEPS_PER_EPOCH
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
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("train_s", "train_img_per_s")}
                        for r in rs]
    assert strip(rec(trained)) == strip(rec(work))


def test_incompatible_workdir_is_refused(trained):
    out = run(TINY + [f"--workdir={trained}", "--ngf=32"])
    assert out.returncode == 2
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(f"sagan_jax: error: workdir {os.path.join(trained, 'checkpoints')} "
                           "holds a model trained with other flags: ngf=16 (now 32)")


def test_non_finite_loss_stops_and_keeps_last_checkpoint(trained, tmp_path):
    work = str(tmp_path / "nan")
    shutil.copytree(trained, work)
    before, arrays = final_arrays(work)
    out = run(TINY + [f"--workdir={work}", "--val_fraction=0.25", "--epochs=4", "--lr=1e38"])
    assert out.returncode == 2
    line = out.stderr.strip().splitlines()[-1]
    assert "sagan_jax: error: training stopped at step" in line
    assert "= nan" in line or "= inf" in line
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
    rows = [l.split(",") for l in open(csv_all).read().strip().splitlines()]
    assert rows[0] == ["path", "raw_score", "normalised_score", "decision", "r", "lat", "map"]
    assert len(rows) == 5 and {r[3] for r in rows[1:]} <= {"normal", "abnormal"}
    assert all(os.path.exists(r[6]) for r in rows[1:])
    csv_one = str(tmp_path / "one.csv")
    out = run(base + [f"--input={folder / 'im1.png'}", f"--output={csv_one}"])
    assert out.returncode == 0, out.stderr[-2000:]
    one = open(csv_one).read().strip().splitlines()[1].split(",")
    same = [r for r in rows[1:] if r[0].endswith("im1.png")][0]
    assert one[1:4] == same[1:4]  # raw score, normalised score, decision
