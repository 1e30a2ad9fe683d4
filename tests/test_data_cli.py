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


def png(path, size=32):
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 99, np.uint8)).save(path)


def image_folder_with_broken_links(root):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            for i in range(2):
                png(root / split / cls / f"{i}.png")
    (root / "train/a/gone.png").symlink_to(root / "train/a/deleted.png")
    (root / "test/b/loop.png").symlink_to(root / "test/b/loop.png")
    return root


def test_broken_symlink_exits_2_with_one_line(tmp_path):
    root = image_folder_with_broken_links(tmp_path / "data")
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "sagan_jax.main", "--dataset=image_folder", f"--data_root={root}",
         "--abnormal_class=b", f"--workdir={tmp_path / 'work'}", "--noprogress"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"sagan_jax: error: {root / 'train/a/gone.png'}: dangling symbolic link (-> "
        f"{root / 'train/a/deleted.png'}, which does not exist); expected a link to an existing "
        "image file (or pass --on_bad_image=skip to skip bad images)"
    )


def test_broken_symlinks_are_skipped_with_skip(tmp_path):
    from sagan_jax.config import Config
    from sagan_jax.data import load_data

    root = image_folder_with_broken_links(tmp_path / "data")
    data = load_data(Config(dataset="image_folder", data_root=str(root), abnormal_class="b",
                            on_bad_image="skip"))
    assert [p for p, _ in data.skipped] == [str(root / "train/a/gone.png"),
                                           str(root / "test/b/loop.png")]
    assert data.counts()["skipped_bad_images"] == 2 and len(data.train) == 2


def test_broken_symlinks_in_an_anomaly_folder(tmp_path):
    """Also through the tfds cache, whose fingerprint stats every file."""
    import pytest

    from sagan_jax.data.anomaly_folder import load_anomaly_folder
    from sagan_jax.data.base import DataError

    root = tmp_path / "data"
    for rel in ("train/good", "test/good", "test/crack"):
        for i in range(2):
            png(root / rel / f"{i}.png")
    (root / "test/crack/loop.png").symlink_to(root / "test/crack/loop.png")
    (root / "train/good/gone.png").symlink_to(root / "nowhere.png")
    import importlib.util

    has_tfds = all(importlib.util.find_spec(m) is not None
                   for m in ("tensorflow", "tensorflow_datasets"))
    for cache in (False, True) if has_tfds else (False,):
        with pytest.raises(DataError, match="dangling symbolic link"):
            load_anomaly_folder(root, 32, cache=cache, data_dir=str(tmp_path / "tfds"))
        data = load_anomaly_folder(root, 32, "skip", cache=cache, data_dir=str(tmp_path / "tfds"))
        assert [p for p, _ in data.skipped] == [str(root / "train/good/gone.png"),
                                               str(root / "test/crack/loop.png")]
        assert len(data.train) == 2 and len(data.test) == 4
