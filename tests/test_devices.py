"""Host devices: XLA must wait for a starved device at a cross-device sum, not kill the run."""
import os
import subprocess
import sys

from sagan_jax import devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TERMINATE = "xla_cpu_collective_call_terminate_timeout_seconds"
WARN = "xla_cpu_collective_call_warn_stuck_timeout_seconds"  # XLA counts TERMINATE after it


def test_patient_collectives_add_xla_flags_and_keep_the_users(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2")
    devices.patient_collectives()
    flags = os.environ["XLA_FLAGS"].split()
    assert flags[0] == "--xla_cpu_max_isa=AVX2"
    assert f"--{TERMINATE}=86400" in flags
    monkeypatch.setenv("XLA_FLAGS", f"--{TERMINATE}=5")
    devices.patient_collectives()
    assert f"--{TERMINATE}=5" in os.environ["XLA_FLAGS"].split()
    assert f"--{TERMINATE}=86400" not in os.environ["XLA_FLAGS"]


def test_configure_adds_the_lean_schedule_and_keeps_the_users(monkeypatch):
    flag = "xla_cpu_enable_concurrency_optimized_scheduler"
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2")
    devices.configure("1")
    assert os.environ["XLA_FLAGS"].split() == ["--xla_cpu_max_isa=AVX2", f"--{flag}=false"]
    monkeypatch.setenv("XLA_FLAGS", f"--{flag}=true")
    devices.configure("1")
    assert os.environ["XLA_FLAGS"].split() == [f"--{flag}=true"]
    monkeypatch.setenv("XLA_FLAGS", f"--{flag} --xla_cpu_max_isa=AVX2")  # bare: XLA reads true
    devices.configure("1")
    assert os.environ["XLA_FLAGS"].split() == [f"--{flag}", "--xla_cpu_max_isa=AVX2"]
    monkeypatch.setenv("XLA_FLAGS", f"--{flag}_not_this_one=1")  # another flag's prefix
    devices.configure("1")
    assert f"--{flag}=false" in os.environ["XLA_FLAGS"].split()


def _starved(delay, xla_flags):
    env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
    env.pop("JAX_NUM_CPU_DEVICES", None)
    return subprocess.run([sys.executable, os.path.join(ROOT, "tests", "_starved_device.py"),
                           str(delay)], capture_output=True, text=True, env=env, timeout=300)


def test_a_device_starved_past_the_limit_is_waited_for_not_killed():
    # XLA honours the flags: held 4 s against 1 s + 1 s, the process is killed ...
    out = _starved(4, f"--{WARN}=1 --{TERMINATE}=1")
    assert out.returncode != 0 and "Termination timeout" in out.stderr, out.stderr[-2000:]
    # ... and with the limit configure() sets, the same program finishes with the right sum
    out = _starved(4, "")
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split()[-1]) == 2.0
