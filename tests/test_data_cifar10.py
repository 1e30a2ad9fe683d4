"""CIFAR-10 through tfds, without downloading: the offline error, the example order and the
protocols on synthetic arrays shaped like tfds' output."""
import importlib.util

import numpy as np
import pytest

from sagan_jax.config import CIFAR10_CLASSES
from sagan_jax.data.base import DataError
from sagan_jax.data.cifar10 import OFFLINE_HINT, _order, load_cifar10

N_TRAIN, N_TEST = 10, 2  # per class
HAS_TFDS = all(importlib.util.find_spec(m) is not None
               for m in ("tensorflow", "tensorflow_datasets"))
needs_tfds = pytest.mark.skipif(not HAS_TFDS, reason="tensorflow-datasets is not installed")


def fake_arrays(size=32):
    """{split: (images, labels)}: N per class, labels interleaved as in the binary release."""
    out = {}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        labels = np.tile(np.arange(10, dtype=np.int32), n)
        images = np.zeros((len(labels), size, size, 3), np.uint8)
        images[:, 0, 0, 0] = labels
        images[:, 0, 0, 1] = np.arange(len(labels)) + (0 if split == "train" else 200)
        out[split] = (images, labels)
    return out


@needs_tfds
def test_not_prepared_and_no_download(tmp_path):
    with pytest.raises(DataError) as e:
        load_cifar10("bird", "ganomaly", 32, data_dir=str(tmp_path), download=False)
    assert str(e.value) == (f"{tmp_path}: tfds cifar10 is not prepared there and --nodownload is "
                            f"set; {OFFLINE_HINT}")
    assert "--dataset=image_folder" in OFFLINE_HINT and "cifar10_jpg.tar.gz" in OFFLINE_HINT


def test_examples_are_put_back_in_release_order():
    ids = np.array([b"train_00002", b"train_00000", b"train_00010", b"train_00001"])
    assert list(_order(ids)) == [1, 3, 0, 2]
    assert list(_order(np.array([b"x", b"y"]))) == [0, 1]


@pytest.mark.parametrize("protocol,n_abnormal", [("ganomaly", N_TRAIN + N_TEST), ("clean", N_TEST)])
def test_protocol_counts(protocol, n_abnormal):
    data = load_cifar10("cat", protocol, 32, arrays=fake_arrays())
    assert data.counts() == {"train": {"normal": 9 * N_TRAIN, "abnormal": 0},
                             "test": {"normal": 9 * N_TEST, "abnormal": n_abnormal},
                             "skipped_bad_images": 0}
    cat = CIFAR10_CLASSES.index("cat")
    test = data.test
    assert list(test.labels) == [0] * 9 * N_TEST + [1] * n_abnormal
    assert set(test.classes[test.labels == 1]) == {cat}
    # ganomaly: abnormal training images (ids < 200) come before abnormal test images.
    ids = list(test.images[test.labels == 1, 0, 0, 1])
    assert ids == sorted(ids)
    assert (min(ids) < 200) == (protocol == "ganomaly")


def test_full_size_formula():
    """The GANomaly formula at CIFAR-10's real size (45,000; 9,000 + 6,000), on labels only."""
    arrays = {s: (np.zeros((n, 16, 16, 3), np.uint8), np.tile(np.arange(10, dtype=np.int32), n // 10))
              for s, n in (("train", 50_000), ("test", 10_000))}
    for protocol, abn in (("ganomaly", 6000), ("clean", 1000)):
        data = load_cifar10("bird", protocol, 16, arrays=arrays)
        assert data.counts()["train"]["normal"] == 45_000
        assert data.counts()["test"] == {"normal": 9_000, "abnormal": abn}


def test_larger_isize_needs_upsample_flag():
    with pytest.raises(DataError) as e:
        load_cifar10("cat", "ganomaly", 64, arrays=fake_arrays())
    assert str(e.value) == ("tfds cifar10: images are 32x32, smaller than --isize=64; expected at "
                            "least 64x64 (lower --isize or pass --on_small_image=upsample)")
    data = load_cifar10("cat", "ganomaly", 64, on_small_image="upsample", arrays=fake_arrays())
    assert data.train.images.shape == (90, 64, 64, 3)
