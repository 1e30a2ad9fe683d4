"""The model registry: one line per ``--model``, naming the module that holds its ModelSpec.

Config validation, the CLI help, the training loop, scoring, BatchNorm recalibration and the
summary all read a model's facts from its spec (sagan_jax.methods.spec.ModelSpec). Adding a
model is one module with a ``SPEC`` plus one line here (docs/extending.md).
"""
from __future__ import annotations

import importlib

from sagan_jax.config import flags_not_read, use_model_registry
from sagan_jax.methods.spec import ModelSpec

REGISTRY = {
    "sagan": "sagan_jax.methods.sagan",
    "skip_ganomaly": "sagan_jax.methods.skip_ganomaly",
    "ganomaly": "sagan_jax.methods.ganomaly",
    "egbad": "sagan_jax.methods.egbad",
    "pca": "sagan_jax.methods.pca",
    "knn": "sagan_jax.methods.knn",
}


def names() -> tuple:
    return tuple(REGISTRY)


def get(name: str) -> ModelSpec:
    """The ModelSpec of ``--model=name`` (its module is imported on first use)."""
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; allowed: {', '.join(REGISTRY)}")
    spec = importlib.import_module(REGISTRY[name]).SPEC
    assert spec.name == name, (spec.name, name)
    return spec


def is_fitted(name: str) -> bool:
    """Whether ``--model=name`` is fitted in one call (no training loop, BatchNorm or epochs):
    its spec has a ``fit`` (PCA and kNN among the built-in models). A name no spec registers,
    e.g. read from an old record, is not."""
    return name in REGISTRY and get(name).fit is not None


def build_models(cfg, axis_name=None):
    """(generator, discriminator) of ``cfg.model``. ``axis_name`` syncs BatchNorm statistics
    over a mapped axis (data parallelism); the parameters do not depend on it."""
    return get(cfg.model).build(cfg, axis_name)


def register(spec: ModelSpec, module: str) -> None:
    """Register a model defined outside this package (``module`` holds ``SPEC``)."""
    if spec.name in REGISTRY and REGISTRY[spec.name] != module:
        raise ValueError(f"--model={spec.name} is registered already ({REGISTRY[spec.name]})")
    REGISTRY[spec.name] = module


def validate(cfg) -> None:
    """The chosen model's own flag checks (its spec's ``validate``)."""
    get(cfg.model).validate(cfg)


def unused_flags(cfg) -> dict:
    """{flag: why} of the flags ``cfg.model`` does not read: other models' options and the
    shared flags its spec ignores."""
    spec = get(cfg.model)
    return flags_not_read("model", cfg.model, spec.options,
                          (get(m).options for m in REGISTRY if m != cfg.model), spec.ignores)


use_model_registry(names, validate, unused_flags)
