"""SAGAN (the paper): attention U-Net generator with CBAM skips and DSCs, DCGAN discriminator,
trained with the SAGAN step; A = lambda R + (1 - lambda) L with L on D's features.

The step is a pure function of (state, batch, rng). Order per batch (docs/design.md, section 5):
forward G, update G, then update D on the G(x) computed before G's update. BatchNorm statistics,
decided explicitly:
  - G's running statistics are updated by its one training-mode forward pass.
  - D inside G's loss runs in training mode (batch statistics) but does NOT update D's
    running statistics.
  - D's own step runs the real batch, then the fake batch, each in training mode, and each
    updates D's running statistics (as two PyTorch forward calls would, in that order).
With ``axis_name`` set, gradients, losses and BatchNorm statistics are averaged over that axis,
so the step on N devices equals the step on the global batch."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sagan_jax import losses, methods, scoring
from sagan_jax.config import ConfigError
from sagan_jax.methods import dsc_autotune
from sagan_jax.methods.gan_step import d_apply, finish_step, grad_update, pmean
from sagan_jax.methods.spec import ModelSpec, split_variables, weighted_score
from sagan_jax.methods.state import TrainState
from sagan_jax.models.discriminator import DCGANDiscriminator
from sagan_jax.models.generator import SAGANGenerator

FEATURE_SCORE = "lam * mean (x - G(x))^2 + (1 - lam) * mean (f(x) - f(G(x)))^2"


def build(cfg, axis_name=None, dsc_impls=None):
    """``dsc_impls``: per-layer DSC impls ((layer, impl), ...); default: the autotuned mapping
    of sagan_jax.methods.dsc_autotune.impls_for (cached choices; never times anything)."""
    if dsc_impls is None:
        dsc_impls = dsc_autotune.impls_for(cfg)
    dtype = None if cfg.compute_dtype == "float32" else jnp.dtype(cfg.compute_dtype)
    g = SAGANGenerator(
        ngf=cfg.ngf, use_dsc=cfg.use_dsc, use_cbam=cfg.use_cbam,
        kernels_per_layer=cfg.kernels_per_layer, dsc_impl=cfg.dsc_impl,
        pool_after_cbam=cfg.pool_after_cbam, axis_name=axis_name,
        dsc_impls=tuple(dsc_impls), dtype=dtype,
    )
    return g, DCGANDiscriminator(ndf=cfg.ndf, nz=cfg.nz, axis_name=axis_name, dtype=dtype)


def train_step(state: TrainState, batch, rng, *, cfg, g_tx, d_tx, axis_name=None):
    """One SAGAN update. ``batch`` is a float32 NHWC array in [-1, 1] (this device's shard).

    Returns (new_state, metrics); metrics are averaged over ``axis_name``."""
    g, d = methods.build_models(cfg, axis_name)
    x = batch

    # ---- generator ---------------------------------------------------------------------
    def g_loss_fn(g_params):
        fake, g_new = g.apply(
            {"params": g_params, "batch_stats": state.g_stats}, x, train=True,
            mutable=["batch_stats"],
        )
        logit_fake, feat_fake, _ = d_apply(d, state.d_params, state.d_stats, fake, update=False)
        _, feat_real, _ = d_apply(d, state.d_params, state.d_stats, x, update=False)
        l_adv = losses.bce_with_logits(logit_fake, 1.0)
        l_con = losses.l1(x, fake)
        l_lat = losses.l2(feat_real, feat_fake)
        l_g = cfg.w_adv * l_adv + cfg.w_con * l_con + cfg.w_lat * l_lat
        return l_g, (fake, g_new["batch_stats"], l_adv, l_con, l_lat)

    l_g, (fake, g_stats, l_adv, l_con, l_lat), g_grads, g_params, g_opt_state = grad_update(
        g_loss_fn, state.g_params, state.g_opt_state, g_tx, axis_name)

    # ---- discriminator (sees the G(x) computed before G's update) -------------------------
    fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(d_params):
        logit_real, feat_real, stats = d_apply(d, d_params, state.d_stats, x, update=True)
        logit_fake, feat_fake, stats = d_apply(d, d_params, stats, fake, update=True)
        l_d = losses.bce_with_logits(logit_real, 1.0) + losses.bce_with_logits(logit_fake, 0.0)
        if cfg.d_lat_loss:  # the authors' code also trains D on L_lat
            l_d = l_d + cfg.w_lat * losses.l2(feat_real, feat_fake)
        return l_d, stats

    l_d, d_stats, d_grads, d_params, d_opt_state = grad_update(
        d_loss_fn, state.d_params, state.d_opt_state, d_tx, axis_name)

    l_g, l_adv, l_con, l_lat, l_d = pmean((l_g, l_adv, l_con, l_lat, l_d), axis_name)

    scalars = {"l_g": l_g, "l_adv": l_adv, "l_con": l_con, "l_lat": l_lat, "l_d": l_d}
    return finish_step(state, cfg, rng, x, g_params, g_stats, g_opt_state, d_params, d_stats,
                       d_opt_state, g_grads, d_grads, scalars)


def feature_components(cfg, variables, x, train):
    """R = mean (x - G(x))^2, L = mean (f(x) - f(G(x)))^2 with f the D features (also
    Skip-GANomaly's)."""
    g, d = methods.get(cfg.model).build(cfg)
    g_vars, d_vars = split_variables(variables)
    kw = dict(train=train, update_stats=False)
    recon = g.apply(g_vars, x, **kw)
    _, feat_real = d.apply(d_vars, x, **kw)
    _, feat_fake = d.apply(d_vars, recon, **kw)
    r, lat = scoring.per_image_scores(x, recon, feat_real, feat_fake)
    return r, lat, recon


def validate(cfg):
    if cfg.ngf % 16 and cfg.use_cbam:
        raise ConfigError(
            f"--ngf={cfg.ngf} must be a multiple of 16 with CBAM (reduction ratio 16)"
        )


def describe(cfg, counts):
    return sagan_table1_lines(cfg)


def variant(cfg) -> str:
    conv = (f"DSC, kernels_per_layer {cfg.kernels_per_layer}" if cfg.use_dsc
            else "plain 3x3 convolutions")
    return f"{conv}, CBAM {'on' if cfg.use_cbam else 'off'}"


# docs/design.md, section 3: the paper's Table 1 counted G + D with SmaAt-UNet's precipitation
# settings (12 input channels, 1 output channel, kernels_per_layer 2) and a per-call hook counter
# that counts the CBAM MLP twice. These are those components, as reproduced from the authors' code.
PAPER_TABLE1 = {
    "with DSCs": {"paper": 5_181_089, "g_12in_1out": 4_033_537, "cbam_mlp_again": 77_852},
    "without DSCs": {"paper": 18_498_481, "g_12in_1out": 17_350_929, "cbam_mlp_again": 77_852},
}
D_PAPER = 1_069_700


def sagan_table1_lines(cfg) -> list:
    """Where the paper's Table 1 parameter counts came from (docs/design.md, section 3)."""
    lines = [
        "The paper's Table 1 (18,498,481 without DSCs, 5,181,089 with) does not count this RGB",
        "model: it counts G + D with the generator built for SmaAt-UNet's precipitation data",
        "(12 input channels, 1 output channel, kernels_per_layer 2) by a per-call hook counter",
        "that counts the CBAM MLP twice (it runs on the average- and the max-pooled features):",
    ]
    for name, t in PAPER_TABLE1.items():
        total = t["g_12in_1out"] + t["cbam_mlp_again"] + D_PAPER
        lines.append(
            f"  {name:<13} {t['g_12in_1out']:,} + {t['cbam_mlp_again']:,} (MLP again) + "
            f"{D_PAPER:,} (D) = {total:,} (paper: {t['paper']:,})"
        )
    lines.append("True counts of the RGB model at isize 32, ngf 64: 18,415,575 without DSCs and "
                 "5,102,035 with (G + D, kernels_per_layer 2).")
    return lines


SPEC = ModelSpec(
    name="sagan",
    description="SAGAN (the paper): CBAM-skip U-Net with DSCs, DCGAN discriminator",
    build=build, step=train_step, components=feature_components, final_score=weighted_score,
    score_formula=FEATURE_SCORE, flagfile="experiments/model_sagan.cfg", validate=validate,
    describe=describe, variant=variant, title="SAGAN",
    options=("use_dsc", "use_cbam", "kernels_per_layer", "dsc_impl", "pool_after_cbam",
             "dsc_autotune"),
)
