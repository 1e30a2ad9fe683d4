"""EGBAD (Zenati et al. 2018), docs/design.md, section 9: a BiGAN with encoder E, generator G and a
joint discriminator D(x, z).

Step: z ~ N(0, I);  L_D = BCE(D(x, E(x)), 1) + BCE(D(G(z), z), 0); E and G minimise
BCE(D(G(z), z), 1) + BCE(D(x, E(x)), 0) (labels swapped), jointly. l_con = mean |x - G(E(x))|
and l_lat = mean |f(x, E(x)) - f(G(E(x)), E(x))| are logged (not trained on: BiGAN has no such
terms); l_adv is G's term, l_enc E's. Score: lam * R + (1 - lam) * L with Zenati et al.'s L1
residual and feature-matching terms (lam 0.9 in experiments/model_egbad.cfg). Precise BN leaves
the joint D's statistics at their training averages.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sagan_jax import losses
from sagan_jax.methods import build_models
from sagan_jax.methods.gan_step import d_apply, finish_step, grad_update, pmean
from sagan_jax.methods.spec import ModelSpec, power_of_two_isize, split_variables, weighted_score
from sagan_jax.methods.state import TrainState
from sagan_jax.models.egbad import EGBADDiscriminator, EGBADGenerator


def build(cfg, axis_name=None):
    dtype = None if cfg.compute_dtype == "float32" else jnp.dtype(cfg.compute_dtype)
    return (EGBADGenerator(ngf=cfg.ngf, nz=cfg.nz, isize=cfg.isize, axis_name=axis_name,
                           dtype=dtype),
            EGBADDiscriminator(ndf=cfg.ndf, nz=cfg.nz, axis_name=axis_name, dtype=dtype))


def egbad_step(state: TrainState, batch, rng, *, cfg, g_tx, d_tx, axis_name=None):
    g, d = build_models(cfg, axis_name)
    x = batch
    b = x.shape[0]
    z_rng = rng if axis_name is None else jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    z = jax.random.normal(jax.random.fold_in(z_rng, 1), (b, cfg.nz), x.dtype)

    def ge_loss_fn(g_params):
        stats = state.g_stats
        z_x, new = g.apply({"params": g_params, "batch_stats": stats}, x, train=True,
                           method="encode", mutable=["batch_stats"])
        stats = {**stats, **new["batch_stats"]}
        x_z, new = g.apply({"params": g_params, "batch_stats": stats}, z, train=True,
                           method="decode", mutable=["batch_stats"])
        stats = {**stats, **new["batch_stats"]}
        logit_enc, _, _ = d_apply(d, state.d_params, state.d_stats, x, z_x, update=False)
        logit_gen, _, _ = d_apply(d, state.d_params, state.d_stats, x_z, z, update=False)
        l_gen = losses.bce_with_logits(logit_gen, 1.0)
        l_enc = losses.bce_with_logits(logit_enc, 0.0)
        return l_gen + l_enc, (z_x, x_z, stats, l_gen, l_enc)

    l_g, (z_x, x_z, g_stats, l_gen, l_enc), g_grads, g_params, g_opt_state = grad_update(
        ge_loss_fn, state.g_params, state.g_opt_state, g_tx, axis_name)

    z_x, x_z = jax.lax.stop_gradient(z_x), jax.lax.stop_gradient(x_z)

    def d_loss_fn(d_params):
        logit_real, _, stats = d_apply(d, d_params, state.d_stats, x, z_x, update=True)
        logit_fake, _, stats = d_apply(d, d_params, stats, x_z, z, update=True)
        l_d = losses.bce_with_logits(logit_real, 1.0) + losses.bce_with_logits(logit_fake, 0.0)
        return l_d, stats

    l_d, d_stats, d_grads, d_params, d_opt_state = grad_update(
        d_loss_fn, state.d_params, state.d_opt_state, d_tx, axis_name)

    # Monitoring only (not trained on), with the pre-update networks, batch statistics and no
    # running-statistics update: the two terms of EGBAD's score, l_con = mean |x - G(E(x))|
    # and l_lat = mean |f(x, E(x)) - f(G(E(x)), E(x))|.
    recon = jax.lax.stop_gradient(g.apply(
        {"params": state.g_params, "batch_stats": state.g_stats}, z_x, train=True,
        update_stats=False, method="decode"))
    l_con = losses.l1(x, recon)
    _, f_real, _ = d_apply(d, state.d_params, state.d_stats, x, z_x, update=False)
    _, f_fake, _ = d_apply(d, state.d_params, state.d_stats, recon, z_x, update=False)
    l_lat = losses.l1(f_real, f_fake)

    l_g, l_gen, l_enc, l_con, l_lat, l_d = pmean((l_g, l_gen, l_enc, l_con, l_lat, l_d),
                                                  axis_name)
    scalars = {"l_g": l_g, "l_adv": l_gen, "l_enc": l_enc, "l_con": l_con, "l_lat": l_lat,
               "l_d": l_d}
    return finish_step(state, cfg, rng, x, g_params, g_stats, g_opt_state, d_params, d_stats,
                   d_opt_state, g_grads, d_grads, scalars)


def components(cfg, variables, x, train):
    """R = mean |x - G(E(x))|, L = mean |f(x, E(x)) - f(G(E(x)), E(x))|."""
    g, d = build(cfg)
    g_vars, d_vars = split_variables(variables)
    kw = dict(train=train, update_stats=False)
    recon, z = g.apply(g_vars, x, **kw)
    _, feat_real = d.apply(d_vars, x, z, **kw)
    _, feat_fake = d.apply(d_vars, recon, z, **kw)
    b = x.shape[0]
    r = jnp.mean(jnp.abs(x - recon).reshape(b, -1), axis=1)
    lat = jnp.mean(jnp.abs(feat_real - feat_fake).reshape(b, -1), axis=1)
    return r, lat, recon


SPEC = ModelSpec(
    name="egbad",
    description="EGBAD: BiGAN (encoder, generator, joint discriminator), L1 residual + features",
    build=build, step=egbad_step, components=components, final_score=weighted_score,
    score_formula="lam * mean |x - G(E(x))| + (1 - lam) * mean |f(x, E(x)) - f(G(E(x)), E(x))|",
    flagfile="experiments/model_egbad.cfg", validate=power_of_two_isize, recalibrate_d=False,
    ignores={name: "BiGAN losses have no weights" for name in ("w_adv", "w_con", "w_lat",
                                                                "d_lat_loss")},
)
