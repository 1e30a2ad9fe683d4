"""What a user sees and installs: the console (one compile line before the progress bar, no
other library's INFO lines, a run list's runs named in score mode), the honest F1 names of a
trained run, and the packaging (console command, packaged flagfiles, licence)."""
import configparser
import importlib
import json
import logging
import os
import subprocess
import sys

import pytest

from sagan_jax.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def documented_keys() -> set:
    """Every `key` docs/metrics.md names."""
    import re

    with open(os.path.join(ROOT, "docs", "metrics.md")) as f:
        return set(re.findall(r"`([a-z][a-z0-9_]*)`", f.read()))


def cli(*args, cwd=ROOT, **env):
    env = dict(os.environ, PYTHONPATH=ROOT, **env)
    return subprocess.run([sys.executable, "-m", "sagan_jax.main", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=300)


def test_compile_line_before_the_progress_bar_and_f1_at_the_threshold(tmp_path, monkeypatch,
                                                                      caplog):
    """The first training call compiles: one line says so and the progress bar (whose ETA
    would count the compilation) starts only after that call returns. The run's metrics.json
    holds f1 at the calibrated threshold beside threshold and its source, and f1_oracle."""
    from sagan_jax.data import load_data
    from sagan_jax.training import loop

    events = []
    real_program, real_progress = loop.make_chunk_program, loop._progress

    def make_program(*a, **kw):
        program = real_program(*a, **kw)

        def call(*args):
            events.append("call")
            return program(*args)
        return call

    def progress(*a, **kw):
        events.append("bar")
        return real_progress(*a, **kw)

    monkeypatch.setattr(loop, "make_chunk_program", make_program)
    monkeypatch.setattr(loop, "_progress", progress)
    cfg = Config(model="egbad", isize=16, ngf=16, ndf=16, nz=8, max_train_images=32, batch_size=16, epochs=2,
                 workdir=str(tmp_path / "w"), plots=False, tensorboard=False, progress=False,
                 dsc_autotune=False, bn_recalibration_batches=1, val_fraction=0.25)
    with caplog.at_level(logging.INFO, logger="sagan_jax"):
        result = loop.train_and_evaluate(cfg, load_data(cfg))
    compiling = [r for r in caplog.records if r.getMessage() == loop.COMPILING]
    assert len(compiling) == 1  # once per program, not per epoch
    assert loop.COMPILING == "compiling the training step (first call, cached afterwards)"
    # one step per epoch. Epoch 1: the bar starts after the first call; epoch 2 (compiled):
    # before its call
    assert events == ["call", "bar", "bar", "call"]
    m = json.loads((tmp_path / "w" / "metrics.json").read_text())
    assert m["f1"] == result["f1"] and "f1_at_threshold" not in m
    assert m["threshold_source"] == "validation normals"
    assert m["threshold"] == pytest.approx(m["history"][-1]["test_threshold"])
    assert 0.0 <= m["f1"] <= m["f1_oracle"] <= 1.0  # the oracle's threshold is the test's best
    assert "oracle" in m["f1_oracle_note"]
    keys = set(m) | set(m["history"][-1]) | set(m["data"]) | set(m["data"]["counts"])
    assert keys - documented_keys() == set()  # docs/metrics.md explains every key


def test_packaged_flagfile_from_any_folder_and_no_library_info_lines(tmp_path):
    """`--flagfile=quickstart.cfg` names the packaged file from a folder without it; at the
    default verbosity only this package's lines appear (no jax backend probing, e.g. the libtpu
    line, no orbax or matplotlib INFO)."""
    out = cli("--flagfile=quickstart.cfg", "--mode=summary", cwd=tmp_path, JAX_PLATFORMS="")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "at isize 16" in out.stdout or "isize 16" in out.stdout, out.stdout[:500]
    for noise in ("libtpu", "Unable to initialize backend", "fontManager", "orbax"):
        assert noise not in out.stderr, out.stderr[-2000:]


def test_flagfile_names_resolve_to_the_packaged_files():
    from sagan_jax import configs
    from sagan_jax.main import check_flagfiles

    packaged = os.path.join(ROOT, "sagan_jax", "configs")
    assert configs.DIR == packaged and "model_sagan.cfg" in configs.names()
    argv = check_flagfiles(["sagan-jax", "--flagfile=model_sagan.cfg", "--epochs=2"])
    assert argv == ["sagan-jax", f"--flagfile={packaged}/model_sagan.cfg", "--epochs=2"]
    assert configs.resolve("experiments/quickstart.cfg") in (
        "experiments/quickstart.cfg", os.path.join(packaged, "quickstart.cfg"))
    assert configs.resolve("elsewhere/quickstart.cfg") is None  # only bare or experiments/
    # one source of truth: each experiments/NAME.cfg is a link to the packaged file
    exp = os.path.join(ROOT, "experiments")
    cfgs = sorted(n for n in os.listdir(exp) if n.endswith(".cfg"))
    assert cfgs == configs.names()
    for n in cfgs:
        assert os.path.islink(os.path.join(exp, n))
        assert os.path.realpath(os.path.join(exp, n)) == os.path.join(packaged, n)


def test_console_command_license_and_package_data_are_declared():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    scripts = dict(line.split(" = ") for line in
                   cfg["options.entry_points"]["console_scripts"].strip().splitlines())
    module, func = scripts["sagan-jax"].split(":")
    from sagan_jax import main

    assert getattr(importlib.import_module(module), func) is main.console
    assert cfg["options.package_data"]["sagan_jax.configs"].strip() == "*.cfg"
    assert cfg["metadata"]["license"] == "Apache-2.0"
    text = open(os.path.join(ROOT, "LICENSE")).read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    for extra in ("tfds", "torch", "test"):  # ranges, never exact pins
        assert "==" not in cfg["options.extras_require"][extra]


def test_console_command_equals_the_module(tmp_path):
    """What the installed `sagan-jax` script runs (sagan_jax.main:console, argv[0] the script):
    the module's help text and its flags under --helpshort."""
    code = "import sys; sys.argv[0] = 'sagan-jax'; from sagan_jax.main import console; console()"
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code, "--helpshort"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]  # absl's status after help, as the module's
    assert "Command line: sagan-jax (or python -m sagan_jax.main)" in out.stdout
    assert "\nsagan-jax:\n  --abnormal_class:" in out.stdout and "  --epochs:" in out.stdout


def test_score_mode_on_a_run_list_names_its_runs(tmp_path):
    work = tmp_path / "w"
    for run in ("0_seed0", "0_seed1"):
        (work / "runs" / run / "checkpoints").mkdir(parents=True)
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    out = cli("--mode=score", f"--workdir={work}", f"--input={image}", JAX_PLATFORMS="cpu")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"sagan_jax: error: {work} holds 2 runs, each with its own checkpoint; choose one: "
        f"--workdir={work}/runs/0_seed0 or --workdir={work}/runs/0_seed1"]
