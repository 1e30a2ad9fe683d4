"""docs/extending.md's worked example registers a model; this test runs that very code block
and checks that config validation, the CLI's model list, scoring and the summary read it."""
import os
import re
import types

import numpy as np
import pytest

from sagan_jax import methods
from sagan_jax.config import Config, ConfigError
from sagan_jax.methods.summary import summary_text
from sagan_jax.training.evaluate import final_score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def example():
    text = open(os.path.join(ROOT, "docs", "extending.md")).read()
    block = re.search(r"```python\n(# example: register a model\n.*?)```", text, re.S).group(1)
    module = types.ModuleType("extending_example")
    exec(compile(block, "docs/extending.md", "exec"), module.__dict__)
    import sys

    sys.modules["extending_example"] = module
    yield module
    methods.REGISTRY.pop("sagan_residual", None)


def test_unknown_model_is_refused_before_registration():
    if "sagan_residual" in methods.REGISTRY:
        pytest.skip("registered by an earlier test in this process")
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
