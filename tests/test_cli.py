"""The command line: summary mode and one line per invalid input, exit status 2."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "sagan_jax.main", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=300)


def test_summary_prints_parameter_counts():
    out = cli("--mode=summary")
    assert out.returncode == 0, out.stderr
    assert "4,032,335" in out.stdout and "1,069,700" in out.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--abnormal_class=cat"],
         "--abnormal_class='cat' is not a class of digits; choose one of: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"),
        (["--dataset=cifar10", "--abnormal_class=unicorn"],
         "--abnormal_class='unicorn' is not a class of cifar10; choose one of: airplane,"),
        (["--isize=40"], "--isize=40 must be a multiple of 16 (16, 32, 64, 128, ...)"),
        (["--epochs=0"], "--epochs=0 must be a positive number"),
        (["--batch_size=-4"], "--batch_size=-4 must be a positive number"),
        (["--mode=fit"], "--mode='fit' is not allowed; choose one of: train, eval, summary"),
        (["--flagfile=no/such.cfg"], "flagfile 'no/such.cfg' does not exist"),
        (["--epochs=three"], "flag --epochs=three: invalid literal"),
        (["--score_lambda=1.5"], "--score_lambda=1.5 must lie in [0, 1]"),
    ],
)
def test_invalid_input_exits_2_with_one_line(args, message):
    out = cli("--mode=train", *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("sagan_jax: error: ")
    assert message in lines[0]


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = cli("--mode=train", f"--workdir={blocker}/run")
    assert out.returncode == 2
    assert out.stderr.strip() .startswith(f"sagan_jax: error: --workdir='{blocker}/run' is not writable")
    assert len(out.stderr.strip().splitlines()) == 1


def test_eval_without_checkpoint(tmp_path):
    out = cli("--mode=eval", f"--workdir={tmp_path}")
    assert out.returncode == 2
    assert "no checkpoint in" in out.stderr and "train first" in out.stderr


def test_unused_flag_is_named_in_a_warning(tmp_path):
    out = cli("--mode=summary", "--data_root=/nowhere", "--model=ganomaly", "--score_lambda=0.5")
    assert out.returncode == 0, out.stderr
    assert "--data_root is not used by --dataset=digits; it changes nothing" in out.stderr
    assert "--score_lambda is not used by --model=ganomaly" in out.stderr


def test_more_devices_than_exist(tmp_path):
    out = cli("--mode=train", "--num_devices=3", f"--workdir={tmp_path}", "--isize=16",
              "--ngf=16", "--ndf=16", "--nz=8", "--max_train_images=32", "--batch_size=16",
              "--epochs=1", "--noprogress")
    assert out.returncode == 2
    from sagan_jax.devices import host_device_count

    # --host_devices=auto: one XLA device per core, or $SAGAN_JAX_HOST_DEVICES (tests: 1)
    n = host_device_count(os.environ.get("SAGAN_JAX_HOST_DEVICES", "auto"), 16, 64)
    if n >= 3:
        pytest.skip(f"{n} host devices: --num_devices=3 exists here")
    lines = out.stderr.strip().splitlines()
    assert lines[-1] == (f"sagan_jax: error: --num_devices=3 but only {n} local devices exist; "
                         f"use --num_devices between 1 and {n} (0 = all)"), out.stderr[-2000:]


def test_more_host_devices_than_cores_is_warned(monkeypatch, caplog):
    from sagan_jax import main
    from sagan_jax.config import Config
    from sagan_jax.devices import usable_cores

    monkeypatch.setenv("XLA_FLAGS", "")  # configure() adds its flags; JAX's client exists already
    cores = usable_cores()
    with caplog.at_level("WARNING", logger="sagan_jax"):
        main.configure_host_devices(Config(host_devices=str(cores), batch_size=64 * cores))
        assert not caplog.records
        main.configure_host_devices(Config(host_devices=str(2 * cores), batch_size=64 * cores))
    assert [r.getMessage() for r in caplog.records] == [
        f"--host_devices={2 * cores} asks for {2 * cores} host devices but this process may use "
        f"{cores} cores: the devices share cores, which is slower than one per core "
        "(--host_devices=auto)"]
    caplog.clear()
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")  # host devices do nothing on an accelerator
    with caplog.at_level("WARNING", logger="sagan_jax"):
        main.configure_host_devices(Config(host_devices=str(2 * cores), batch_size=64 * cores))
    assert not caplog.records


def test_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    """A write that fails with ENOSPC (simulated in-process) ends with one line, exit 2."""
    import errno

    from absl import flags as absl_flags

    from sagan_jax import main

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.json"))

    monkeypatch.setattr(main, "run", full)
    absl_flags.FLAGS.unparse_flags()
    absl_flags.FLAGS(["sagan_jax.main", f"--workdir={tmp_path}"])
    with pytest.raises(SystemExit) as e:
        main.main(["sagan_jax.main"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sagan_jax: error: No space left on device ({tmp_path / 'metrics.json'}); "
                   "free some space or choose another --workdir"]
