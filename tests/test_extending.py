"""docs/extending.md's worked examples register a model, a dataset and a metric; these tests
run those very code blocks and check that config validation, the CLI's model list, the data
path, scoring, evaluation and the summary read them. Each registration is undone after its
test, so no test sees another's."""
import json
import os
import re
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from sagan_jax import data, methods
from sagan_jax.config import Config, ConfigError, unused_flags
from sagan_jax.data import load_data, registry as datasets
from sagan_jax.methods.summary import summary_text
from sagan_jax.training import metrics
from sagan_jax.training.evaluate import final_score, metrics_from_scores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(title: str) -> types.ModuleType:
    """Execute the code block of docs/extending.md that starts with ``# example: <title>`` as
    a module of its own (importable as ``extending_example``, as a registered model's module
    must be)."""
    text = open(os.path.join(ROOT, "docs", "extending.md")).read()
    block = re.search(rf"```python\n(# example: {title}\n.*?)```", text, re.S).group(1)
    module = types.ModuleType("extending_example")
    sys.modules["extending_example"] = module
    exec(compile(block, "docs/extending.md", "exec"), module.__dict__)
    return module


def _registered(title: str, registry: dict):
    """Run an example that registers into ``registry``; afterwards restore it as it was."""
    before = dict(registry)
    yield run_example(title)
    registry.clear()
    registry.update(before)
    sys.modules.pop("extending_example", None)


@pytest.fixture
def example():
    yield from _registered("register a model", methods.REGISTRY)


@pytest.fixture
def dataset_example():
    yield from _registered("register a dataset", datasets.REGISTRY)


@pytest.fixture
def metric_example():
    yield from _registered("register a metric", metrics.REGISTRY)


def test_unknown_model_is_refused_before_registration():
    with pytest.raises(ConfigError, match="--model='sagan_residual' is not allowed"):
        Config(model="sagan_residual")


def test_registered_model_is_one_entry_everywhere(example):
    assert "sagan_residual" in methods.names()
    cfg = Config(model="sagan_residual", isize=16, ngf=16)
    assert methods.get("sagan_residual") is example.SPEC
    r, lat = np.array([1.0, 2.0]), np.array([10.0, 30.0])
    np.testing.assert_allclose(final_score(cfg, r, lat), r)  # the model's own score
    np.testing.assert_allclose(final_score(cfg.replace(model="sagan"), r, lat),
                               0.2 * r + 0.8 * lat)
    text = summary_text(cfg)
    assert "Anomaly score: mean (x - G(x))^2" in text
    with pytest.raises(ConfigError, match="multiple of 16 with CBAM"):
        Config(model="sagan_residual", ngf=24)  # SAGAN's own flag checks come along
    with pytest.raises(ValueError, match="registered already"):
        methods.register(example.SPEC, "somewhere_else")


def test_unknown_dataset_is_refused():
    assert "noise" not in datasets.names()
    with pytest.raises(ConfigError) as e:
        Config(dataset="noise")
    assert str(e.value) == ("--dataset='noise' is not allowed; choose one of: digits, cifar10, "
                            "image_folder, anomaly_folder")


def test_registered_dataset_validates_and_loads(dataset_example):
    assert datasets.get("noise").load is dataset_example.load_noise
    cfg = Config(dataset="noise", abnormal_class="bright", isize=32, val_fraction=0.25,
                 max_train_images=40)
    with pytest.raises(ConfigError, match="'red' is not a class of noise; choose one of: "
                                          "dark, bright"):
        Config(dataset="noise", abnormal_class="red")
    # the flags of other datasets are named as changing nothing for this one
    assert unused_flags(cfg, {"download", "digits_test_fraction", "seed"}) == [
        ("digits_test_fraction", "by --dataset=noise"), ("download", "by --dataset=noise")]
    d = load_data(cfg)  # the normal data path: training subset, then validation split
    assert d.name == "noise(abnormal=bright)"
    assert (len(d.train), len(d.val), len(d.test)) == (30, 10, 32)
    assert d.train.images.shape == (30, 32, 32, 3) and d.train.images.dtype == np.uint8
    assert d.train.images.max() < 128 and np.all(d.train.labels == 0)  # dark: normal
    assert d.test.counts() == {"normal": 16, "abnormal": 16}
    assert d.test.images[d.test.labels == 1].min() >= 128  # bright: abnormal
    with pytest.raises(ValueError, match="registered already"):
        data.register(data.DatasetSpec("noise", lambda c: None))


def test_registered_metric_is_recorded(metric_example):
    assert metrics.names()[-1] == "tpr_at_threshold"
    cfg = Config(model="pca")  # final score = R
    split = SimpleNamespace(labels=np.array([0, 0, 0, 0, 1, 1]), classes=None, masks=None)
    r = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.9])
    test = metrics_from_scores(cfg, split, r, np.zeros_like(r), threshold=0.55)
    record = metrics.test_record(test)
    # > 0.55 flags 0.6 (normal) and 0.9 (abnormal): 1 of the 2 abnormal images
    assert record["test_tpr_at_threshold"] == 0.5 and record["test_f1"] == pytest.approx(0.5)
    assert list(record)[-1] == "test_tpr_at_threshold"
    # no threshold: the metric does not apply, and no key is written
    assert "tpr_at_threshold" not in metrics_from_scores(cfg, split, r, np.zeros_like(r))
    with pytest.raises(ValueError, match="registered already"):
        metrics.register("tpr_at_threshold", lambda labels, scores, ctx: 0.0)
    # a name the results use for something else is refused, not overwritten
    with pytest.raises(ValueError) as e:
        metrics.register("scores", lambda labels, scores, ctx: 0.0)
    assert str(e.value) == ("metric 'scores' would overwrite the result's own 'scores'; choose "
                            "another name")
    assert "scores" not in metrics.names()


def test_registered_dataset_and_metric_in_a_run(dataset_example, metric_example, tmp_path):
    """Both examples through --mode=train: a fitted model on the registered dataset records
    the registered metric in metrics.json's history, at the run's own threshold."""
    from sagan_jax.training.loop import train

    cfg = Config(dataset="noise", abnormal_class="bright", model="pca", pca_components=4,
                 isize=16, workdir=str(tmp_path), plots=False, tensorboard=False,
                 progress=False)
    result = train(cfg)
    with open(tmp_path / "metrics.json") as f:
        saved = json.load(f)
    record = saved["history"][-1]
    assert record == result["history"][-1]
    assert saved["tpr_at_threshold"] == record["test_tpr_at_threshold"]  # the result too
    abnormal = [row for row in _csv(tmp_path / "test_scores.csv") if row["label"] == "1"]
    want = np.mean([float(row["raw_score"]) > record["test_threshold"] for row in abnormal])
    assert len(abnormal) == 16 and record["test_tpr_at_threshold"] == want


def _csv(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))
