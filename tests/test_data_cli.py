"""Bad input through the command line: exit status 2 and one line naming the path."""
import os
import subprocess
import sys


def test_missing_data_root_exits_2_with_one_line(tmp_path):
    root = tmp_path / "no_such_folder"
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "sagan_jax.main", "--dataset=image_folder", f"--data_root={root}",
         "--abnormal_class=bird", f"--workdir={tmp_path / 'work'}", "--noprogress"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"sagan_jax: error: {root}: data root does not exist or is not a folder; "
        "expected a folder holding the dataset"
    )
