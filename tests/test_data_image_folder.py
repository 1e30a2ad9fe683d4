"""Labelled image folders (split/label/image): layout errors, the GANomaly and clean protocols'
counts and order on a synthetic 10-class folder, and the validation split."""
import numpy as np
import pytest
from PIL import Image

from sagan_jax.config import Config
from sagan_jax.data import load_data
from sagan_jax.data.base import DataError
from sagan_jax.data.image_folder import load_image_folder

CLASSES = [f"c{i}" for i in range(10)]
N_TRAIN, N_TEST = 10, 2


def make_folder(root, classes=CLASSES, n_train=N_TRAIN, n_test=N_TEST, size=16):
    """Every image is filled with one value: 10 * class + index (train) or + 100 (test)."""
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 100)):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                value = offset + 10 * c + i if n <= 10 else 0
                Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("ten_classes"))


@pytest.mark.parametrize("abnormal", ["c0", "c7"])
def test_ganomaly_protocol_counts_and_order(folder, abnormal):
    data = load_image_folder(folder, abnormal, "ganomaly", 16)
    k = CLASSES.index(abnormal)
    n_cls = len(CLASSES)
    assert data.counts() == {
        "train": {"normal": (n_cls - 1) * N_TRAIN, "abnormal": 0},
        "test": {"normal": (n_cls - 1) * N_TEST, "abnormal": N_TRAIN + N_TEST},
        "skipped_bad_images": 0,
    }
    assert not np.any(data.train.classes == k)
    n_nrm = (n_cls - 1) * N_TEST
    # Order: normal test images, abnormal training images, abnormal test images.
    assert list(data.test.labels) == [0] * n_nrm + [1] * (N_TRAIN + N_TEST)
    abn_values = list(data.test.images[n_nrm:, 0, 0, 0])
    assert abn_values == [10 * k + i for i in range(N_TRAIN)] + [100 + 10 * k + i for i in range(N_TEST)]
    assert data.test.paths[n_nrm] == str(folder / "train" / abnormal / "0.png")
    assert data.class_names == tuple(CLASSES)


def test_clean_protocol_counts(folder):
    data = load_image_folder(folder, "c3", "clean", 16)
    assert data.counts()["test"] == {"normal": 9 * N_TEST, "abnormal": N_TEST}
    assert data.counts()["train"] == {"normal": 9 * N_TRAIN, "abnormal": 0}
    assert set(data.test.classes[data.test.labels == 1]) == {3}


def test_unknown_abnormal_class_lists_classes(folder):
    with pytest.raises(DataError) as e:
        load_image_folder(folder, "bird", "ganomaly", 16)
    assert str(e.value) == (f"{folder}: --abnormal_class='bird' is not a class folder; "
                            f"classes: {', '.join(CLASSES)}")


def test_missing_root(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        load_image_folder(root, "c0", "ganomaly", 16)
    assert str(e.value) == (f"{root}: data root does not exist or is not a folder; "
                            "expected a folder holding the dataset")


def test_missing_split_folder(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        load_image_folder(tmp_path, "a", "ganomaly", 16)
    assert str(e.value) == (f"{tmp_path}: no test/ folder; expected "
                            "train/<class>/<image> and test/<class>/<image>")


def test_images_without_class_folders(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        Image.new("RGB", (16, 16)).save(tmp_path / split / "0.png")
    with pytest.raises(DataError) as e:
        load_image_folder(tmp_path, "a", "ganomaly", 16)
    assert str(e.value) == f"{tmp_path / 'train'}: no class folders; expected train/<class>/<image>"


def test_empty_class_folder(tmp_path):
    make_folder(tmp_path, classes=["a", "b"], n_train=2, n_test=1)
    for f in (tmp_path / "test" / "b").iterdir():
        f.unlink()
    with pytest.raises(DataError) as e:
        load_image_folder(tmp_path, "a", "ganomaly", 16)
    assert str(e.value) == (f"{tmp_path / 'test' / 'b'}: class folder has no images; "
                            "expected .png, .jpg, .jpeg, .bmp files")


def test_class_folders_differ_between_splits(tmp_path):
    make_folder(tmp_path, classes=["a", "b"], n_train=2, n_test=1)
    (tmp_path / "test" / "b").rename(tmp_path / "test" / "z")
    with pytest.raises(DataError) as e:
        load_image_folder(tmp_path, "a", "ganomaly", 16)
    assert str(e.value) == (f"{tmp_path / 'test'}: class folders differ from train/ (missing: b; "
                            "extra: z); expected the same classes in both splits")


def test_class_whose_images_are_all_skipped(tmp_path):
    make_folder(tmp_path, classes=["a", "b"], n_train=2, n_test=1)
    for f in (tmp_path / "train" / "b").iterdir():
        f.write_bytes(b"")
    with pytest.raises(DataError) as e:
        load_image_folder(tmp_path, "a", "ganomaly", 16, on_bad_image="skip")
    assert str(e.value) == (f"{tmp_path / 'train' / 'b'}: class folder has no readable images; "
                            "expected at least one PNG, JPEG or BMP image")


def test_skip_counts_reach_the_data(tmp_path):
    make_folder(tmp_path, classes=["a", "b"], n_train=3, n_test=1)
    (tmp_path / "train" / "a" / "1.png").write_bytes(b"broken")
    data = load_image_folder(tmp_path, "b", "ganomaly", 16, on_bad_image="skip")
    assert data.counts() == {"train": {"normal": 2, "abnormal": 0},
                             "test": {"normal": 1, "abnormal": 4}, "skipped_bad_images": 1}
    assert data.skipped[0][0] == str(tmp_path / "train" / "a" / "1.png")


def test_validation_split_never_touches_the_test_set(folder):
    base = Config(dataset="image_folder", data_root=str(folder), abnormal_class="c2", isize=16)
    plain = load_data(base)
    held = load_data(base.replace(val_fraction=0.2))
    assert held.counts()["val"] == {"normal": 18, "abnormal": 0}
    assert held.counts()["train"] == {"normal": 72, "abnormal": 0}
    assert held.test.paths == plain.test.paths
    assert np.array_equal(held.test.images, plain.test.images)
    assert sorted(held.train.paths + held.val.paths) == sorted(plain.train.paths)
    assert not set(held.val.paths) & set(plain.test.paths)
