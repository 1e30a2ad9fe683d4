"""The core path needs no TensorFlow: with ``tensorflow`` and ``tensorflow_datasets`` made
unimportable (an import hook that refuses them and records every attempt), the package
imports, an anomaly folder (MVTec AD layout, with masks) is decoded with Pillow into the same
arrays as the tfds cache, and ``python -m sagan_jax.main`` trains on the embedded digits (with
pictures) and scores new images."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs the rest of the command line (a module and its arguments, or -c CODE) as on a machine
# without TensorFlow: None in sys.modules makes importing them fail and makes
# importlib.util.find_spec report them absent (etils, under orbax, probes that way). Every
# import statement that asks for them is appended to $NO_TF_LOG with its caller.
BLOCK = r"""
import builtins, importlib, os, runpy, sys, traceback

BLOCKED = ("tensorflow", "tensorflow_datasets")
for name in BLOCKED:
    sys.modules[name] = None

def record(name):
    if name and name.split(".")[0] in BLOCKED:
        stack = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()[:-2]
                 if "importlib" not in f.filename][-4:]
        with open(os.environ["NO_TF_LOG"], "a") as f:
            f.write(f"{name} from {' <- '.join(reversed(stack))}\n")

real_import, real_import_module = builtins.__import__, importlib.import_module

def watched_import(name, *args, **kwargs):
    record(name)
    return real_import(name, *args, **kwargs)

def watched_import_module(name, *args, **kwargs):
    record(name)
    return real_import_module(name, *args, **kwargs)

builtins.__import__, importlib.import_module = watched_import, watched_import_module
if sys.argv[1] == "-c":
    code = sys.argv[2]
    sys.argv = ["-c"] + sys.argv[3:]
    exec(compile(code, "<test>", "exec"), {"__name__": "__main__"})
else:
    module = sys.argv[1]
    sys.argv = [module] + sys.argv[2:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
assert all(sys.modules.get(name) is None for name in BLOCKED)
"""


def run_without_tf(tmp_path, *args, timeout=300):
    log = tmp_path / "tf_imports.log"
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", NO_TF_LOG=str(log))
    proc = subprocess.run([sys.executable, "-c", BLOCK, *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=timeout)
    attempts = log.read_text() if log.exists() else ""
    return proc, attempts


def test_blocker_blocks(tmp_path):
    proc, attempts = run_without_tf(tmp_path, "-c", "import tensorflow")
    assert proc.returncode == 1 and "import of tensorflow halted" in proc.stderr
    assert attempts.startswith("tensorflow from <test>:1")


IMPORTS_AND_FOLDER = r"""
import importlib, logging, os, sys
import numpy as np
import sagan_jax
logging.basicConfig(level=logging.INFO)
skip = ("sagan_jax.torch_ref", "sagan_jax.data.anomaly_folder_tfds")
base = os.path.dirname(os.path.dirname(sagan_jax.__file__))
for folder, dirs, files in os.walk(os.path.dirname(sagan_jax.__file__)):
    dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
    for f in sorted(files):
        if f.endswith(".py"):
            name = os.path.relpath(os.path.join(folder, f[:-3]), base).replace(os.sep, ".")
            name = name[: -len(".__init__")] if name.endswith(".__init__") else name
            if not name.startswith(skip):
                importlib.import_module(name)
from sagan_jax.config import Config
from sagan_jax.data import load_data
from sagan_jax.data.cifar10 import load_cifar10
from sagan_jax.data.base import DataError
root, out = sys.argv[1], sys.argv[2]
data = load_data(Config(dataset="anomaly_folder", data_root=root, isize=32))
np.savez(out, train=data.train.images, test=data.test.images, masks=data.test.masks,
         classes=data.test.classes, labels=data.test.labels)
try:
    load_cifar10("cat", "ganomaly", 32)
except DataError as e:
    print("CIFAR:", e)
"""


def test_package_and_anomaly_folder_without_tensorflow(tmp_path):
    """Every module but the tfds cache (and the optional torch reference) imports; the
    anomaly folder falls back to Pillow with the cache's arrays; cifar10 says what it needs."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_data_mvtec import make

    from sagan_jax.data.anomaly_folder import load_anomaly_folder

    root = make(tmp_path / "bottle")
    proc, attempts = run_without_tf(tmp_path, "-c", IMPORTS_AND_FOLDER, str(root),
                                    str(tmp_path / "out.npz"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # only the lazy tfds import asked for tensorflow: once to see whether the anomaly-folder
    # cache is available, once for cifar10 (which then said what it needs in one line)
    lines = attempts.splitlines()
    assert len(lines) == 2, attempts
    lazy = "tensorflow from " + os.path.join(ROOT, "sagan_jax/data/tfds_import.py")
    assert all(a.startswith(lazy) for a in lines), attempts
    assert "anomaly_folder.py" in lines[0] and "cifar10.py" in lines[1], attempts
    assert "CIFAR: --dataset=cifar10 reads tensorflow-datasets, which does not import here" \
        in proc.stdout
    assert "decoding " + str(root) + " with Pillow (no cache)" in proc.stderr
    got = np.load(tmp_path / "out.npz")
    has_tfds = all(importlib.util.find_spec(m) is not None
                   for m in ("tensorflow", "tensorflow_datasets"))
    cached = load_anomaly_folder(root, 32, cache=has_tfds, data_dir=str(tmp_path / "tfds"))
    assert np.array_equal(got["train"], cached.train.images)
    assert np.array_equal(got["test"], cached.test.images)
    assert np.array_equal(got["masks"], cached.test.masks)
    assert np.array_equal(got["classes"], cached.test.classes)
    assert np.array_equal(got["labels"], cached.test.labels)


def test_train_and_score_without_tensorflow(tmp_path):
    work = tmp_path / "work"
    model = ["--ngf=16", "--ndf=16", "--nz=16", "--isize=16", "--nodsc_autotune"]
    proc, attempts = run_without_tf(
        tmp_path, "sagan_jax.main", *model, "--epochs=1", "--max_train_images=64",
        "--batch_size=32", "--bn_recalibration_batches=1", "--plots=true",
        "--tensorboard=false", "--noprogress", f"--workdir={work}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert attempts == ""
    metrics = json.loads((work / "metrics.json").read_text())
    assert 0.0 <= metrics["auc"] <= 1.0
    assert any(f.endswith(".png") for f in os.listdir(work / "plots"))

    images = tmp_path / "new"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), np.uint8)).save(images / f"{i}.png")
    proc, attempts = run_without_tf(
        tmp_path, "sagan_jax.main", *model, "--mode=score", f"--input={images}",
        f"--workdir={work}", "--noprogress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert attempts == ""
    assert "scored 2 images" in proc.stdout
    assert (work / "scores.csv").read_text().count("\n") == 3
