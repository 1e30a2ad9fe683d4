"""Two processes on localhost (CPU, one device each, gloo collectives) train as one global mesh:
the result equals one process on the same global batch, process 0 alone writes the logs and
metrics, and after both are killed mid-epoch the restart resumes from their checkpoint."""
import json
import os
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from _checkpoint_arrays import final_arrays

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# lr 1e-5: Adam's +-lr updates of the pre-BN biases (float noise, see test_training) stay far
# below the tolerance, so the whole state can be compared.
TINY = ["--isize=16", "--ngf=16", "--ndf=16", "--nz=8", "--max_train_images=64",
        "--batch_size=16", "--epochs=2", "--noprogress", "--notensorboard", "--noplots",
        "--bn_recalibration_batches=2", "--lr=1e-5", "--dsc_impl=shift",
        "--compilation_cache="]
STEPS_PER_EPOCH = 64 // 16


def noise_folder(root):
    """An image folder of uniform-noise 16x16 images (class b abnormal). Not the digits: their
    flat backgrounds give exact max-pool ties that two compilations break differently, which
    turns float noise into different gradients (see tests/test_runs.noise_data)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n_a, n_b in (("train", 64, 8), ("test", 8, 8)):
        for c, n in (("a", n_a), ("b", n_b)):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                    d / f"{i}.png")
    return ["--dataset=image_folder", f"--data_root={root}", "--abnormal_class=b"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, n_proc, env_extra=None, script=None):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", **(env_extra or {}))
    cmd = [sys.executable, script] if script else [sys.executable, "-m", "sagan_jax.main"]
    if n_proc == 1:
        return [subprocess.Popen(cmd + args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)]
    port = free_port()
    return [subprocess.Popen(cmd + args + [f"--coordinator_address=127.0.0.1:{port}",
                                           f"--num_processes={n_proc}", f"--process_id={i}"],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for i in range(n_proc)]


def wait(procs, timeout=900):
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        outs.append((p.returncode, out, err))
    return outs


def test_two_processes_equal_one_and_resume_after_kill(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    tiny = TINY + noise_folder(tmp_path / "data")
    # the 2-process run is killed two steps into its second epoch (both processes)
    killed = launch(tiny + [f"--workdir={two}"], 2, script=os.path.join(ROOT, "tests", "_killed_run.py"),
                    env_extra={"KILL_AT_STEP": str(STEPS_PER_EPOCH + 2)})
    single = launch(tiny + [f"--workdir={one}"], 1)
    for code, _, err in wait(killed):
        assert code == -signal.SIGKILL, err[-3000:]
    assert final_arrays(two)[0] == STEPS_PER_EPOCH  # epoch 1's checkpoint survived
    resumed = wait(launch(tiny + [f"--workdir={two}"], 2))
    for code, _, err in resumed:
        assert code == 0, err[-3000:]
    assert "resumed from" in resumed[0][2] and "process 0 of 2" in resumed[0][2]
    assert "process 1 of 2" in resumed[1][2]
    # only process 0 printed the result; both computed the same scores
    assert "AUC" in resumed[0][1] and "AUC" not in resumed[1][1]
    code, out, err = wait(single)[0]
    assert code == 0, err[-3000:]

    m1 = json.load(open(os.path.join(one, "metrics.json")))
    m2 = json.load(open(os.path.join(two, "metrics.json")))
    assert m2["processes"] == 2 and len(m2["devices"]) == 2 and m1["processes"] == 1
    assert abs(m1["auc"] - m2["auc"]) < 1e-3
    def step_records(workdir):
        return [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))
                if '"kind": "step"' in l]

    r1, r2 = step_records(one), step_records(two)
    # one writer, no duplicate after resume
    assert [r["step"] for r in r2] == list(range(2 * STEPS_PER_EPOCH))
    # Step by step the same training: every step's losses (on the same global batch), and the
    # first step's losses and gradient norms to 1e-5 (nothing has been updated yet, so only
    # the summation order of the cross-process mean differs). Later steps drift apart by
    # design-free float noise: ReLU zeros tie in CBAM's channel max and max-pools, two
    # compilations route those ties' gradients differently, and Adam turns a near-zero
    # gradient's noise into a full +-lr update of that parameter. After t steps a parameter
    # can thus differ by up to 2 t lr (the bound checked on the final state below), and a
    # loss by what that moves: seen on the losses up to step 7, 3e-4 relative on an AVX-512
    # Xeon and 2.1e-3 (l_lat) on an AVX2 AMD EPYC; the gradient norms drift faster (2e-4 at
    # step 1, 2% at step 7). The bounds sit 5x above the worst seen; a wrong batch split or
    # a resume that repeated or skipped a batch moves the losses by 1e-1 and more.
    for x, y in zip(r1, r2):
        for k in ("l_con", "l_adv", "l_lat", "l_d"):
            assert y[k] == pytest.approx(x[k], rel=1e-2), (x["step"], k, x[k], y[k])
    for x, y in zip(r1[:2], r2[:2]):
        for k in ("g_grad_norm", "d_grad_norm"):
            assert y[k] == pytest.approx(x[k], rel=1e-3), (x["step"], k, x[k], y[k])
    x, y = r1[0], r2[0]
    for k in ("l_con", "l_adv", "l_lat", "l_d", "g_grad_norm", "d_grad_norm"):
        assert y[k] == pytest.approx(x[k], rel=1e-5), (x["step"], k, x[k], y[k])
    s1, a = final_arrays(one)
    s2, b = final_arrays(two)
    assert s1 == s2 == 2 * STEPS_PER_EPOCH
    # parameters and BatchNorm statistics after 8 Adam steps of lr 1e-5: within 2 lr per step
    worst = {k: float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a
             if a[k].dtype.kind == "f" and "opt_state" not in k}
    assert max(worst.values()) < 2e-4, sorted(worst.items(), key=lambda kv: -kv[1])[:5]
