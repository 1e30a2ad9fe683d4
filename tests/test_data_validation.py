"""--val_fraction and --max_train_images act on normal training images only, for digits and
cifar10 too (the folder datasets are covered in their own test files)."""
import numpy as np
import pytest

from sagan_jax.config import Config
from sagan_jax.data import load_data
from sagan_jax.data import cifar10 as cifar10_module


def fake_cifar(data_dir=None, download=True, progress=True):
    out = {}
    for split, n in (("train", 20), ("test", 4)):
        labels = np.tile(np.arange(10, dtype=np.int32), n)
        images = np.random.default_rng(n).integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
        out[split] = (images, labels)
    return out


@pytest.mark.parametrize("dataset,abnormal", [("digits", "3"), ("cifar10", "cat")])
def test_validation_and_subset_leave_the_test_set_alone(monkeypatch, dataset, abnormal):
    monkeypatch.setattr(cifar10_module, "read_cifar10", fake_cifar)
    base = Config(dataset=dataset, abnormal_class=abnormal, isize=16 if dataset == "digits" else 32)
    plain = load_data(base)
    held = load_data(base.replace(val_fraction=0.25, max_train_images=100))
    assert np.array_equal(held.test.images, plain.test.images)
    assert np.array_equal(held.test.labels, plain.test.labels)
    assert len(held.train) + len(held.val) == 100
    assert len(held.val) == 25 and held.counts()["val"] == {"normal": 25, "abnormal": 0}
    plain_train = {im.tobytes() for im in plain.train.images}
    assert all(im.tobytes() in plain_train for im in np.concatenate([held.train.images, held.val.images]))
    assert held.counts()["test"] == plain.counts()["test"]
