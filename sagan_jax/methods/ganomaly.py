"""GANomaly (Akcay et al. 2018), docs/design.md, section 9: encoder -> decoder -> encoder
generator, DCGAN discriminator with a 1-channel output.

Step: L_G = w_adv * mean (f(x) - f(G(x)))^2 [f: D features] + w_con * mean |x - G(x)|
      + w_lat * mean (E1(x) - E2(G(x)))^2;  L_D = (BCE(D(x), 1) + BCE(D(G(x)), 0)) / 2,
in the SAGAN step's order and BatchNorm rules (sagan_jax.methods.sagan). Score: the latent
MSE alone (--score_lambda unused); R is logged beside it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sagan_jax import losses
from sagan_jax.methods import build_models
from sagan_jax.methods.gan_step import d_apply, finish_step, grad_update, pmean
from sagan_jax.methods.spec import ModelSpec, power_of_two_isize, split_variables
from sagan_jax.methods.state import TrainState
from sagan_jax.models.ganomaly import GANomalyDiscriminator, GANomalyGenerator


def build(cfg, axis_name=None):
    dtype = None if cfg.compute_dtype == "float32" else jnp.dtype(cfg.compute_dtype)
    return (GANomalyGenerator(ngf=cfg.ngf, nz=cfg.nz, axis_name=axis_name, dtype=dtype),
            GANomalyDiscriminator(ndf=cfg.ndf, axis_name=axis_name, dtype=dtype))


def ganomaly_step(state: TrainState, batch, rng, *, cfg, g_tx, d_tx, axis_name=None):
    g, d = build_models(cfg, axis_name)
    x = batch

    def g_loss_fn(g_params):
        (fake, latent_i, latent_o), g_new = g.apply(
            {"params": g_params, "batch_stats": state.g_stats}, x, train=True,
            mutable=["batch_stats"])
        _, feat_fake, _ = d_apply(d, state.d_params, state.d_stats, fake, update=False)
        _, feat_real, _ = d_apply(d, state.d_params, state.d_stats, x, update=False)
        l_adv = losses.l2(feat_real, feat_fake)
        l_con = losses.l1(x, fake)
        l_lat = losses.l2(latent_i, latent_o)
        l_g = cfg.w_adv * l_adv + cfg.w_con * l_con + cfg.w_lat * l_lat
        return l_g, (fake, g_new["batch_stats"], l_adv, l_con, l_lat)

    l_g, (fake, g_stats, l_adv, l_con, l_lat), g_grads, g_params, g_opt_state = grad_update(
        g_loss_fn, state.g_params, state.g_opt_state, g_tx, axis_name)

    fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(d_params):
        logit_real, _, stats = d_apply(d, d_params, state.d_stats, x, update=True)
        logit_fake, _, stats = d_apply(d, d_params, stats, fake, update=True)
        l_d = 0.5 * (losses.bce_with_logits(logit_real, 1.0)
                     + losses.bce_with_logits(logit_fake, 0.0))
        return l_d, stats

    l_d, d_stats, d_grads, d_params, d_opt_state = grad_update(
        d_loss_fn, state.d_params, state.d_opt_state, d_tx, axis_name)

    l_g, l_adv, l_con, l_lat, l_d = pmean((l_g, l_adv, l_con, l_lat, l_d), axis_name)
    scalars = {"l_g": l_g, "l_adv": l_adv, "l_con": l_con, "l_lat": l_lat, "l_d": l_d}
    return finish_step(state, cfg, rng, x, g_params, g_stats, g_opt_state, d_params, d_stats,
                   d_opt_state, g_grads, d_grads, scalars)


def components(cfg, variables, x, train):
    """R = mean (x - G(x))^2, L = mean (E1(x) - E2(G(x)))^2."""
    g, _ = build(cfg)
    g_vars, _ = split_variables(variables)
    recon, latent_i, latent_o = g.apply(g_vars, x, train=train, update_stats=False)
    b = x.shape[0]
    r = jnp.mean(jnp.square(x - recon).reshape(b, -1), axis=1)
    lat = jnp.mean(jnp.square(latent_i - latent_o), axis=1)
    return r, lat, recon


def final_score(cfg, r, lat):
    return lat


SPEC = ModelSpec(
    name="ganomaly",
    description="GANomaly: encoder-decoder-encoder generator, latent-distance score",
    build=build, step=ganomaly_step, components=components, final_score=final_score,
    score_formula="mean (E1(x) - E2(G(x)))^2", flagfile="experiments/model_ganomaly.cfg",
    validate=power_of_two_isize,
    ignores={"score_lambda": "its score is the latent distance"},
)
