"""The MVTec AD layout through --dataset=anomaly_folder: detection, defect types, masks (own
folder or --mask_root), --resize, warnings, sizes 64 / 128 / 256, and one training step."""
import importlib.util
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sagan_jax.config import Config, ConfigError
from sagan_jax.data import load_data
from sagan_jax.data.anomaly_folder import load_anomaly_folder
from sagan_jax.data.base import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.default_rng(7)
H, W = 200, 300
DEFECTS = {"crack": 2, "scratch": 2}
HAS_TFDS = all(importlib.util.find_spec(m) is not None
               for m in ("tensorflow", "tensorflow_datasets"))
needs_tfds = pytest.mark.skipif(not HAS_TFDS, reason="tensorflow-datasets is not installed")


def save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def defect_mask(i, where="centre"):
    m = np.zeros((H, W), np.uint8)
    if where == "centre":
        m[80 + 10 * i:120, 130:170] = 255
    else:  # the leftmost 25 columns: outside the centre crop
        m[50:150, :25] = 255
    return m


def make(root, masks="ground_truth", edge_defect=False):
    """train/good 4, test/good 2, test/crack 2, test/scratch 2 (300x200 PNGs); masks in
    ground_truth/<defect>/<stem>_mask.png, or masks/<defect>/<stem>.png, or none."""
    for i in range(4):
        save(root / "train/good" / f"{i:03d}.png", RNG.integers(0, 256, (H, W, 3), np.uint8))
    for i in range(2):
        save(root / "test/good" / f"{i:03d}.png", RNG.integers(0, 256, (H, W, 3), np.uint8))
    for d, n in DEFECTS.items():
        for i in range(n):
            edge = edge_defect and d == "scratch" and i == 0
            m = defect_mask(i, "edge" if edge else "centre")
            img = RNG.integers(0, 120, (H, W, 3), np.uint8)
            img[m > 0] = 255
            save(root / "test" / d / f"{i:03d}.png", img)
            if masks == "ground_truth":
                save(root / "ground_truth" / d / f"{i:03d}_mask.png", m)
            elif masks == "mirror":
                save(root.parent / "masks" / d / f"{i:03d}.png", m)
    return root


def test_layout_defect_types_and_masks(tmp_path):
    root = make(tmp_path / "bottle")
    data = load_anomaly_folder(root, 64, cache=False)
    assert data.class_names == ("good", "crack", "scratch")
    assert data.counts() == {"train": {"normal": 4, "abnormal": 0},
                             "test": {"normal": 2, "abnormal": 4}, "skipped_bad_images": 0}
    assert list(data.test.labels) == [0, 0, 1, 1, 1, 1]
    assert list(data.test.classes) == [0, 0, 1, 1, 2, 2]
    assert data.test.paths[2] == str(root / "test/crack/000.png")
    assert data.train.images.shape == (4, 64, 64, 3) and data.test.masks.shape == (6, 64, 64)
    m = data.test.masks
    assert m[:2].sum() == 0 and (m[2:].sum(axis=(1, 2)) > 0).all()
    assert set(np.unique(m)) == {0, 1}
    # the masks line up with the bright defect pixels of their images
    assert (data.test.images[2:, ..., 0][m[2:] == 1] > 200).mean() > 0.95


@pytest.mark.parametrize("isize", [128, 256])
def test_loads_at_128_and_256(tmp_path, isize):
    root = make(tmp_path / "bottle")
    # 300x200 files: at 256 the shorter side needs upsampling with crop (an error by default);
    # pad brings the longer side to 256 without upsampling
    opts = [("pad", "error"), ("squash", "upsample")] if isize == 256 else [("crop", "error")]
    for resize, small in opts:
        data = load_anomaly_folder(root, isize, on_small_image=small, resize=resize, cache=False)
        assert data.train.images.shape == (4, isize, isize, 3)
        assert data.test.images.shape == (6, isize, isize, 3)
        assert data.test.masks.shape == (6, isize, isize) and data.test.masks[2:].any()
    if isize == 256:
        with pytest.raises(DataError, match="image is 300x200, smaller than --isize=256"):
            load_anomaly_folder(root, 256, cache=False)


@needs_tfds
def test_cache_gives_the_same_arrays(tmp_path):
    root = make(tmp_path / "bottle")
    direct = load_anomaly_folder(root, 64, cache=False)
    cached = load_anomaly_folder(root, 64, cache=True, data_dir=str(tmp_path / "tfds"))
    for split in ("train", "test"):
        a, b = getattr(direct, split), getattr(cached, split)
        assert np.array_equal(a.images, b.images) and a.paths == b.paths
        assert np.array_equal(a.classes, b.classes) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(direct.test.masks, cached.test.masks)
    assert cached.class_names == direct.class_names


@needs_tfds
def test_noprogress_silences_tfds_bars_while_preparing(tmp_path, capfd):
    root = make(tmp_path / "bottle")
    load_anomaly_folder(root, 64, cache=True, data_dir=str(tmp_path / "quiet"), progress=False)
    assert "%|" not in capfd.readouterr().err
    # the process's switch is put back: the next preparation shows the bars it silenced
    load_anomaly_folder(root, 64, cache=True, data_dir=str(tmp_path / "shown"))
    assert "%|" in capfd.readouterr().err


def test_masks_from_a_mirroring_mask_root(tmp_path):
    root = make(tmp_path / "bottle", masks="mirror")
    assert load_anomaly_folder(root, 64, cache=False).test.masks is None
    data = load_data(Config(dataset="anomaly_folder", data_root=str(root), isize=64,
                            mask_root=str(tmp_path / "masks"), data_dir=str(tmp_path / "tfds")))
    reference = load_anomaly_folder(make(tmp_path / "again"), 64, cache=False)
    assert data.test.masks.shape == (6, 64, 64)
    assert np.array_equal(data.test.masks, reference.test.masks)


def test_missing_mask_and_missing_mask_root(tmp_path):
    root = make(tmp_path / "bottle")
    os.remove(root / "ground_truth/scratch/001_mask.png")
    with pytest.raises(DataError) as e:
        load_anomaly_folder(root, 64, cache=False)
    assert str(e.value) == (f"{root / 'test/scratch/001.png'}: no defect mask; expected "
                            f"{root / 'ground_truth/scratch/001'}_mask.png "
                            "(or 001.png; .jpg, .bmp)")
    with pytest.raises(DataError, match="--mask_root=.*nope: not a folder"):
        load_anomaly_folder(root, 64, cache=False, mask_root=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="--mask_root is read by --dataset=anomaly_folder only"):
        Config(mask_root=str(tmp_path))


def test_mask_of_another_size(tmp_path):
    root = make(tmp_path / "bottle")
    save(root / "ground_truth/crack/000_mask.png", np.zeros((100, 150), np.uint8))
    with pytest.raises(DataError) as e:
        load_anomaly_folder(root, 64, cache=False)
    assert str(e.value) == (f"{root / 'ground_truth/crack/000_mask.png'}: mask is 150x100 but its "
                            f"image {root / 'test/crack/000.png'} is 300x200; expected a mask of "
                            "its image's size")


def test_unrecognised_mask_folders_are_named_in_a_warning(tmp_path, caplog):
    root = make(tmp_path / "bottle", masks=None)
    save(root / "ground_truth/v2/crack/000_mask.png", defect_mask(0))  # one level too deep
    with caplog.at_level(logging.WARNING, logger="sagan_jax"):
        data = load_anomaly_folder(root, 64, cache=False)
    assert data.test.masks is None
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{root / 'ground_truth/v2'}: mask folder not read" in text
    assert f"{root / 'ground_truth'}: mask folder layout not recognised, no masks read" in text
    # a recognised folder next to an unrecognised one: the masks are read, the other is named
    root = make(tmp_path / "b2")
    save(root / "ground_truth/typo_crack/000_mask.png", defect_mask(0))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sagan_jax"):
        assert load_anomaly_folder(root, 64, cache=False).test.masks is not None
    assert any(f"{root / 'ground_truth/typo_crack'}: mask folder not read" in r.getMessage()
               for r in caplog.records)


def test_crop_losing_defects_is_one_warning(tmp_path, caplog):
    root = make(tmp_path / "bottle", edge_defect=True)
    with caplog.at_level(logging.WARNING, logger="sagan_jax"):
        data = load_anomaly_folder(root, 64, cache=False)
    lost = [r.getMessage() for r in caplog.records
            if "lose all their defect pixels" in r.getMessage()]
    assert lost == [f"1 of 4 defective test images lose all their defect pixels to --resize=crop "
                    f"at --isize=64 (first: {root / 'test/scratch/000.png'}); pixel AUROC counts "
                    "them as defect-free (--resize=pad or squash keeps the whole image)"]
    assert data.test.masks[4].sum() == 0
    for resize in ("pad", "squash"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sagan_jax"):
            data = load_anomaly_folder(root, 64, resize=resize, cache=False)
        assert not any("defect pixels" in r.getMessage() for r in caplog.records)
        assert data.test.masks[4].sum() > 0
    if not HAS_TFDS:
        return
    caplog.clear()  # the cache repeats the warning on every read
    for _ in range(2):
        with caplog.at_level(logging.WARNING, logger="sagan_jax"):
            load_anomaly_folder(root, 64, cache=True, data_dir=str(tmp_path / "tfds"))
    assert sum("lose all their defect pixels" in r.getMessage() for r in caplog.records) == 2


def test_no_defect_folder_is_good_images_only(tmp_path, caplog):
    """No defect-type folder (or an empty one): good images only, said in one warning."""
    root = tmp_path / "bottle"
    save(root / "train/good/0.png", np.zeros((64, 64, 3), np.uint8))
    save(root / "test/good/0.png", np.zeros((64, 64, 3), np.uint8))
    (root / "test/crack").mkdir()
    with caplog.at_level(logging.WARNING, logger="sagan_jax"):
        data = load_anomaly_folder(root, 64, cache=False)
    assert data.class_names == ("good",)
    assert data.test.labels.tolist() == [0]
    assert sum("no abnormal test images (good images only)" in r.getMessage()
               for r in caplog.records) == 1
    # the empty defect folder is named, not silently left out
    assert any(r.getMessage().endswith("1 defect folders hold no images and are left out: "
                                       "crack") for r in caplog.records)


def test_resize_flag_is_validated():
    with pytest.raises(ConfigError, match="--resize='fit' is not allowed; choose one of: crop, "
                                          "squash, pad"):
        Config(resize="fit")


def test_trains_end_to_end_at_64(tmp_path):
    """One tiny epoch (one step) of the real command on the MVTec-style folder, with masks
    (pixel AUROC) and --resize=pad, through the tfds cache."""
    root = make(tmp_path / "bottle")
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "sagan_jax.main", "--dataset=anomaly_folder",
         f"--data_root={root}", f"--data_dir={tmp_path / 'tfds'}", "--isize=64", "--resize=pad",
         "--ngf=16", "--ndf=16", "--nz=16", "--epochs=1", "--batch_size=4", "--eval_batch_size=6",
         "--bn_recalibration_batches=1", "--nodsc_autotune", "--noplots", "--notensorboard",
         "--noprogress", f"--workdir={tmp_path / 'work'}"],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "AUC" in proc.stdout
    assert "test: 2 normal, 4 abnormal (good 2, crack 2, scratch 2)" in proc.stderr
    metrics = json.loads((tmp_path / "work/metrics.json").read_text())
    assert 0.0 <= metrics["pixel_auc"] <= 1.0  # the masks reached the evaluation
    assert 0.0 <= metrics["pixel_aupro"] <= 1.0
    assert set(metrics["auc_per_defect"]) == {"crack", "scratch"}


def test_test_good_missing_or_a_broken_link(tmp_path):
    root = tmp_path / "bottle"
    save(root / "train/good/0.png", np.zeros((64, 64, 3), np.uint8))
    save(root / "test/crack/0.png", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(DataError) as e:
        load_anomaly_folder(root, 64, cache=False)
    assert str(e.value) == (f"{root / 'test/good'}: not a folder; expected train/good/, "
                            "test/good/ and test/<defect_type>/ (MVTec AD layout)")
    (root / "test/good").symlink_to(tmp_path / "deleted")
    with pytest.raises(DataError) as e:
        load_anomaly_folder(root, 64, cache=False)
    assert str(e.value) == (f"{root / 'test/good'}: dangling symbolic link (-> "
                            f"{tmp_path / 'deleted'}, which does not exist); expected a link to "
                            "an existing folder (train/good/, test/good/ and test/<defect_type>/ "
                            "(MVTec AD layout))")
