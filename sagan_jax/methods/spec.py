"""What the project needs to know about a model: one frozen record per ``--model``."""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional
from sagan_jax.config import ConfigError


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model, its training rule and its anomaly score (docs/design.md, section 9).

    build(cfg, axis_name) -> (generator, discriminator): the Flax networks; ``axis_name``
        averages BatchNorm statistics over a mapped axis (data parallelism).
    step(state, batch, rng, *, cfg, g_tx, d_tx, axis_name=None) -> (state, metrics): one
        pure training step; metrics hold at least l_g, l_adv, l_con, l_lat, l_d.
    components(cfg, variables, x, train) -> (R, L, reconstruction): the two per-image score
        terms (higher = more anomalous) of one batch; traceable under jit, grad and vmap.
        ``variables`` = {g_params, g_stats, d_params, d_stats}.
    final_score(cfg, r, lat) -> the raw per-image anomaly score from the two terms; written
        with arithmetic only, so it serves NumPy (evaluation) and JAX (gradient maps).
    score_formula: the final score written out (summary, docs).
    flagfile: the original settings of the model, experiments/model_<name>.cfg.
    validate(cfg): model-specific flag checks; raise sagan_jax.config.ConfigError.
    recalibrate_d: precise BN recomputes D's statistics from its real and G(x) passes (False:
        D keeps its training averages, e.g. EGBAD's joint D(x, z)).
    describe(cfg, counts) -> extra lines for ``--mode=summary``.
    variant(cfg) -> a few words on the options that shape this model's networks (the summary's
        title). title: the model's name in that title (default: its --model name).
    fit(cfg, train_images_u8) -> params: models without a training loop (PCA, kNN) are
        fitted in one call on the uint8 normal training images and return a flat dict of
        arrays; ``components`` then reads them as ``variables["g_params"]`` (the other three
        collections are empty; see ``fitted_state``). None for the GANs. Such models have
        no ``build``/``step``; --mode=train sends them to sagan_jax.training.fit.
    checkpoint_flags: the flags whose values must match to reuse a saved checkpoint (None =
        sagan_jax.training.checkpoints.MODEL_FLAGS, the GANs' network flags).
    options: the flags this model owns: any other model ignores them (SAGAN's DSC and CBAM).
    ignores: {flag: why} of shared flags this model does not read (a passed one is named
        as changing nothing, with the reason).
    """
    name: str
    description: str
    build: Callable
    step: Callable
    components: Callable
    final_score: Callable
    score_formula: str
    flagfile: str
    validate: Callable = lambda cfg: None
    recalibrate_d: bool = True
    describe: Optional[Callable] = None
    variant: Optional[Callable] = None
    title: str = ""
    fit: Optional[Callable] = None
    checkpoint_flags: Optional[tuple] = None
    options: tuple = ()
    ignores: dict = dataclasses.field(default_factory=dict)


def weighted_score(cfg, r, lat):
    """A(x) = lambda R(x) + (1 - lambda) L(x) (Eq. 5), lambda = --score_lambda."""
    return cfg.score_lambda * r + (1.0 - cfg.score_lambda) * lat


def power_of_two_isize(cfg):
    if cfg.isize & (cfg.isize - 1):
        raise ConfigError(
            f"--isize={cfg.isize} must be a power of two (16, 32, 64, ...) for --model={cfg.model}"
        )


def variables_of(state) -> dict:
    """The four variable collections of a TrainState that scoring reads."""
    return {"g_params": state.g_params, "g_stats": state.g_stats,
            "d_params": state.d_params, "d_stats": state.d_stats}


def split_variables(variables: dict):
    """({params, batch_stats} of G, {params, batch_stats} of D)."""
    return ({"params": variables["g_params"], "batch_stats": variables["g_stats"]},
            {"params": variables["d_params"], "batch_stats": variables["d_stats"]})
