"""experiments/device_check.sh --smoke: the GPU machine's prepared check, end to end on this CPU at
tiny sizes (tests subset, JAX vs PyTorch step, run-axis benchmark at K = 1, 2, one
paper-protocol class on a tiny CIFAR-10-like JPEG archive), so the script is known to work
before a GPU sees it. PyTorch parts are skipped by the script when torch is not installed."""
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "device_check.sh")
CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()


def tiny_archive(path, per_class=4):
    """The shared archive's layout (split/class/NNNN.jpg), 32x32 noise JPEGs."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for c in CLASSES:
                for i in range(per_class):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                        buf, "JPEG")
                    info = tarfile.TarInfo(f"{split}/{c}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)


def test_help_and_bad_argument():
    p = subprocess.run(["bash", SCRIPT, "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "--smoke" in p.stdout
    p = subprocess.run(["bash", SCRIPT, "--bogus"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "unknown argument --bogus" in p.stderr


def test_smoke_runs_every_stage(tmp_path):
    archive = tmp_path / "cifar10_jpg.tar.gz"
    tiny_archive(archive)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu",
               DEVICE_CHECK_WORK=str(tmp_path / "work"))
    env.pop("OUT", None)
    p = subprocess.run(["bash", SCRIPT, "--smoke", "--archive", str(archive), "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800)
    log = (out / "device_check.log").read_text()
    assert p.returncode == 0, log[-6000:]
    rep = json.loads((out / "device_check.json").read_text())
    status = {s["stage"]: s["status"] for s in rep["stages"]}
    assert status == {"info": "ok", "tests": "ok", "frameworks": "ok", "run_axis": "ok",
                      "control_flow": "ok", "paper": "ok"}, status
    assert rep["tests"]["tests"] >= 1 and not rep["tests"]["failed"]
    fws = {r["fw"] for r in rep["frameworks"] if "error" not in r}
    have_torch = importlib.util.find_spec("torch") is not None
    assert fws == ({"jax", "torch"} if have_torch else {"jax"})
    assert all(r["train_img_per_s"] > 0 for r in rep["frameworks"])
    runs = rep["run_axis"]["results"]
    assert {"together_k1", "separate_k1", "together_k2"} <= set(runs)
    assert all("error" not in r for r in runs.values()), runs
    assert runs["together_k2"]["runs_in_program"] == 2
    assert runs["together_k2"]["train_img_per_s_all_runs"] > 0
    assert 0.0 <= rep["paper"]["auc"] <= 1.0 and rep["paper"]["last_epoch"] == 1
    md = (out / "device_check.md").read_text()
    assert "run_axis" in md
    assert "| step alone (jit) |" in md  # smoke: the step alone (one compilation)
    # a small set of result files, all in $OUT (easy to bring back from the GPU machine)
    assert len(list(out.iterdir())) <= 8
