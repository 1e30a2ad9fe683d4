"""The LBOT-style anomaly folder: layout, conversion, masks, bad input, and the tfds cache
(same arrays as decoding with Pillow directly). The MVTec AD layout: test_data_mvtec.py."""
import importlib.util

import numpy as np
import pytest
from PIL import Image

from sagan_jax.config import Config
from sagan_jax.data import load_data
from sagan_jax.data.anomaly_folder import load_anomaly_folder
from sagan_jax.data.base import DataError
from sagan_jax.data.images import SKIP_HINT

RNG = np.random.default_rng(1)
HAS_TFDS = all(importlib.util.find_spec(m) is not None
               for m in ("tensorflow", "tensorflow_datasets"))
needs_tfds = pytest.mark.skipif(not HAS_TFDS, reason="tensorflow-datasets is not installed")


def save(path, h=40, w=40, mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8))
    (img.convert(mode) if mode != "RGB" else img).save(path, format=fmt)


def make(root, n_train=4, n_normal=2, n_abnormal=3, masks=False):
    for i in range(n_train):
        save(root / "train/0.normal" / f"n{i}.png", h=40 + i, w=48)
    for i in range(n_normal):
        save(root / "test/0.normal" / f"t{i}.jpg", mode="L")
    for i in range(n_abnormal):
        save(root / "test/1.abnormal" / f"d{i}.bmp", mode="RGB")
    if masks:
        for i in range(n_abnormal):
            m = np.zeros((40, 40), np.uint8)
            m[:20] = 255
            (root / "ground_truth").mkdir(exist_ok=True)
            Image.fromarray(m).save(root / "ground_truth" / f"d{i}.png")
    return root


def test_counts_labels_and_order(tmp_path):
    root = make(tmp_path / "lbot")
    (root / "test/1.abnormal/rgba.png").parent.mkdir(exist_ok=True)
    save(root / "test/1.abnormal/rgba.png", mode="RGBA")
    data = load_anomaly_folder(root, 32, data_dir=str(tmp_path / "tfds"))
    assert data.counts() == {"train": {"normal": 4, "abnormal": 0},
                             "test": {"normal": 2, "abnormal": 4}, "skipped_bad_images": 0}
    assert data.train.images.shape == (4, 32, 32, 3) and data.test.images.dtype == np.uint8
    assert list(data.test.labels) == [0, 0, 1, 1, 1, 1]
    assert data.test.paths[0] == str(root / "test/0.normal/t0.jpg")
    assert data.train.paths == tuple(str(root / f"train/0.normal/n{i}.png") for i in range(4))
    assert data.test.masks is None


def test_masks_follow_the_abnormal_images(tmp_path):
    root = make(tmp_path / "lbot", masks=True)
    data = load_anomaly_folder(root, 32, data_dir=str(tmp_path / "tfds"))
    assert data.test.masks.shape == (5, 32, 32)
    assert list(data.test.masks.sum(axis=(1, 2))) == [0, 0, 512, 512, 512]


def test_missing_mask(tmp_path):
    root = make(tmp_path / "lbot", masks=True)
    (root / "ground_truth/d1.png").unlink()
    with pytest.raises(DataError) as e:
        load_anomaly_folder(root, 32, data_dir=str(tmp_path / "tfds"))
    assert str(e.value) == (f"{root / 'test/1.abnormal/d1.bmp'}: no defect mask; expected "
                            f"{root / 'ground_truth/d1'}.png (or .jpg, .bmp)")


def test_wrong_layout(tmp_path):
    root = tmp_path / "lbot"
    save(root / "train/normal/0.png")
    with pytest.raises(DataError) as e:
        load_anomaly_folder(root, 32, data_dir=str(tmp_path / "tfds"))
    assert str(e.value) == (f"{root}: no train/0.normal/ folder; expected train/0.normal/, "
                            "test/0.normal/ and test/1.abnormal/ (Skip-GANomaly layout) or "
                            "train/good/, test/good/ and test/<defect_type>/ (MVTec AD layout)")


def test_empty_folder(tmp_path):
    root = make(tmp_path / "lbot")
    for f in (root / "test/0.normal").iterdir():
        f.unlink()
    with pytest.raises(DataError) as e:
        load_anomaly_folder(root, 32, data_dir=str(tmp_path / "tfds"))
    assert str(e.value) == (f"{root / 'test/0.normal'}: class folder has no images; "
                            "expected .png, .jpg, .jpeg, .bmp files")


def test_corrupt_image_error_then_skip_is_counted_and_cached(tmp_path):
    root = make(tmp_path / "lbot")
    bad = root / "test/1.abnormal/d1.bmp"
    bad.write_bytes(b"BM not really")
    with pytest.raises(DataError) as e:
        load_anomaly_folder(root, 32, data_dir=str(tmp_path / "tfds"))
    assert str(e.value).startswith(f"{bad}: cannot decode image (")
    assert str(e.value).endswith(SKIP_HINT)
    for _ in range(2):  # prepared once, then read back from the tfds cache with its skip count
        data = load_anomaly_folder(root, 32, on_bad_image="skip", data_dir=str(tmp_path / "tfds"))
        assert data.counts()["test"] == {"normal": 2, "abnormal": 2}
        assert data.counts()["skipped_bad_images"] == 1 and data.skipped[0][0] == str(bad)


def test_changed_folder_is_prepared_again(tmp_path):
    root = make(tmp_path / "lbot")
    tfds_dir = str(tmp_path / "tfds")
    assert len(load_anomaly_folder(root, 32, data_dir=tfds_dir).train) == 4
    save(root / "train/0.normal/extra.png")
    assert len(load_anomaly_folder(root, 32, data_dir=tfds_dir).train) == 5


def test_small_images_error(tmp_path):
    root = make(tmp_path / "lbot")
    save(root / "train/0.normal/tiny.png", h=8, w=8)
    with pytest.raises(DataError) as e:
        load_anomaly_folder(root, 32, data_dir=str(tmp_path / "tfds"))
    assert str(e.value) == (f"{root / 'train/0.normal/tiny.png'}: image is 8x8, smaller than "
                            "--isize=32; expected at least 32x32 (lower --isize or pass "
                            "--on_small_image=upsample)")


def test_validation_split_through_load_data(tmp_path):
    root = make(tmp_path / "lbot", n_train=10)
    cfg = Config(dataset="anomaly_folder", data_root=str(root), data_dir=str(tmp_path / "tfds"),
                 val_fraction=0.3)
    data = load_data(cfg)
    assert data.counts()["train"]["normal"] == 7 and data.counts()["val"]["normal"] == 3
    assert data.counts()["test"] == {"normal": 2, "abnormal": 3}


def same_data(a, b):
    for split in ("train", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert np.array_equal(x.images, y.images) and np.array_equal(x.labels, y.labels)
        assert x.paths == y.paths and np.array_equal(x.classes, y.classes)
        assert (x.masks is None) == (y.masks is None)
        assert x.masks is None or np.array_equal(x.masks, y.masks)
    assert a.skipped == b.skipped and a.class_names == b.class_names and a.name == b.name


@needs_tfds
@pytest.mark.parametrize("masks", [False, True])
def test_pillow_path_equals_the_tfds_cache(tmp_path, masks):
    """Without tensorflow-datasets the folder is decoded with Pillow on every run: the same
    arrays, order, paths, classes, masks and skipped files as the cache's first and later reads."""
    root = make(tmp_path / "lbot", masks=masks)
    (root / "train/0.normal/junk.png").write_bytes(b"junk")
    kw = dict(on_bad_image="skip", data_dir=str(tmp_path / "tfds"))
    direct = load_anomaly_folder(root, 32, cache=False, **kw)
    assert direct.class_names == ("0.normal", "1.abnormal")
    assert list(direct.test.classes) == [0, 0, 1, 1, 1] and len(direct.skipped) == 1
    for _ in range(2):  # prepared, then read back
        same_data(direct, load_anomaly_folder(root, 32, cache=True, **kw))


def test_ground_truth_may_mirror_the_test_folder(tmp_path):
    root = make(tmp_path / "lbot", masks=True)
    (root / "ground_truth/1.abnormal").mkdir()
    for f in sorted((root / "ground_truth").glob("*.png")):
        f.rename(root / "ground_truth/1.abnormal" / (f.stem + "_mask.png"))
    data = load_anomaly_folder(root, 32, cache=False)
    assert list(data.test.masks.sum(axis=(1, 2))) == [0, 0, 512, 512, 512]
