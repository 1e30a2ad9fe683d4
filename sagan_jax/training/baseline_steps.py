"""Training steps of the GANomaly and EGBAD baselines (SPEC section 8), with the signature of
sagan_jax.training.step.train_step: (state, batch, rng, *, cfg, g_tx, d_tx, axis_name=None)
-> (state, metrics). Skip-GANomaly uses the SAGAN step itself.

Both follow the SAGAN step's order and BatchNorm rules: forward the generator once in training
mode (its running statistics are updated by that pass), D inside the generator's loss uses
batch statistics without updating its running ones, update G, then update D on the G outputs
computed before G's update (D's real and fake passes each update D's running statistics).
With ``axis_name`` gradients, losses and BatchNorm statistics are averaged over that axis.
D is re-initialised when L_D < --reinit_d_threshold (GANomaly's rule; applied to EGBAD too).

GANomaly: L_G = w_adv * mean (f(x) - f(G(x)))^2 [f: D features] + w_con * mean |x - G(x)|
          + w_lat * mean (E1(x) - E2(G(x)))^2;  L_D = (BCE(D(x), 1) + BCE(D(G(x)), 0)) / 2.
EGBAD (BiGAN): z ~ N(0, I);  L_D = BCE(D(x, E(x)), 1) + BCE(D(G(z), z), 0);
          E and G minimise BCE(D(G(z), z), 1) + BCE(D(x, E(x)), 0) (labels swapped), jointly.
          l_con = mean |x - G(E(x))| and l_lat = mean |f(x, E(x)) - f(G(E(x)), E(x))| are
          logged (not trained on: BiGAN has no such terms); l_adv is G's term, l_enc E's.
Every step reports l_g, l_adv, l_con, l_lat and l_d (the loop's logs and plots read them).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sagan_jax import losses
from sagan_jax.models import build_models
from sagan_jax.training.state import TrainState, init_discriminator
from sagan_jax.training.updates import grad_update, pmean




def _d_apply(d, params, stats, *inputs, update):
    variables = {"params": params, "batch_stats": stats}
    if update:
        (logit, feat), new = d.apply(variables, *inputs, train=True, mutable=["batch_stats"])
        return logit, feat, new["batch_stats"]
    logit, feat = d.apply(variables, *inputs, train=True, update_stats=False)
    return logit, feat, stats


def _finish(state, cfg, rng, x, g_params, g_stats, g_opt_state, d_params, d_stats, d_opt_state,
            g_grads, d_grads, scalars):
    reinit = scalars["l_d"] < cfg.reinit_d_threshold
    d_params = jax.lax.cond(
        reinit,
        lambda: init_discriminator(build_models(cfg)[1], rng, x.shape[1])["params"],
        lambda: d_params,
    )
    new_state = state.replace(
        step=state.step + 1, g_params=g_params, g_stats=g_stats, d_params=d_params,
        d_stats=d_stats, g_opt_state=g_opt_state, d_opt_state=d_opt_state,
    )
    metrics = dict(scalars)
    metrics.update(
        d_reinit=reinit.astype(jnp.int32),
        g_grad_norm=optax.global_norm(g_grads), d_grad_norm=optax.global_norm(d_grads),
        g_param_norm=optax.global_norm(g_params), d_param_norm=optax.global_norm(d_params),
    )
    return new_state, metrics


def ganomaly_step(state: TrainState, batch, rng, *, cfg, g_tx, d_tx, axis_name=None):
    g, d = build_models(cfg, axis_name)
    x = batch

    def g_loss_fn(g_params):
        (fake, latent_i, latent_o), g_new = g.apply(
            {"params": g_params, "batch_stats": state.g_stats}, x, train=True,
            mutable=["batch_stats"])
        _, feat_fake, _ = _d_apply(d, state.d_params, state.d_stats, fake, update=False)
        _, feat_real, _ = _d_apply(d, state.d_params, state.d_stats, x, update=False)
        l_adv = losses.l2(feat_real, feat_fake)
        l_con = losses.l1(x, fake)
        l_lat = losses.l2(latent_i, latent_o)
        l_g = cfg.w_adv * l_adv + cfg.w_con * l_con + cfg.w_lat * l_lat
        return l_g, (fake, g_new["batch_stats"], l_adv, l_con, l_lat)

    l_g, (fake, g_stats, l_adv, l_con, l_lat), g_grads, g_params, g_opt_state = grad_update(
        g_loss_fn, state.g_params, state.g_opt_state, g_tx, axis_name)

    fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(d_params):
        logit_real, _, stats = _d_apply(d, d_params, state.d_stats, x, update=True)
        logit_fake, _, stats = _d_apply(d, d_params, stats, fake, update=True)
        l_d = 0.5 * (losses.bce_with_logits(logit_real, 1.0)
                     + losses.bce_with_logits(logit_fake, 0.0))
        return l_d, stats

    l_d, d_stats, d_grads, d_params, d_opt_state = grad_update(
        d_loss_fn, state.d_params, state.d_opt_state, d_tx, axis_name)

    l_g, l_adv, l_con, l_lat, l_d = pmean((l_g, l_adv, l_con, l_lat, l_d), axis_name)
    scalars = {"l_g": l_g, "l_adv": l_adv, "l_con": l_con, "l_lat": l_lat, "l_d": l_d}
    return _finish(state, cfg, rng, x, g_params, g_stats, g_opt_state, d_params, d_stats,
                   d_opt_state, g_grads, d_grads, scalars)


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
        logit_enc, _, _ = _d_apply(d, state.d_params, state.d_stats, x, z_x, update=False)
        logit_gen, _, _ = _d_apply(d, state.d_params, state.d_stats, x_z, z, update=False)
        l_gen = losses.bce_with_logits(logit_gen, 1.0)
        l_enc = losses.bce_with_logits(logit_enc, 0.0)
        return l_gen + l_enc, (z_x, x_z, stats, l_gen, l_enc)

    l_g, (z_x, x_z, g_stats, l_gen, l_enc), g_grads, g_params, g_opt_state = grad_update(
        ge_loss_fn, state.g_params, state.g_opt_state, g_tx, axis_name)

    z_x, x_z = jax.lax.stop_gradient(z_x), jax.lax.stop_gradient(x_z)

    def d_loss_fn(d_params):
        logit_real, _, stats = _d_apply(d, d_params, state.d_stats, x, z_x, update=True)
        logit_fake, _, stats = _d_apply(d, d_params, stats, x_z, z, update=True)
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
    _, f_real, _ = _d_apply(d, state.d_params, state.d_stats, x, z_x, update=False)
    _, f_fake, _ = _d_apply(d, state.d_params, state.d_stats, recon, z_x, update=False)
    l_lat = losses.l1(f_real, f_fake)

    l_g, l_gen, l_enc, l_con, l_lat, l_d = pmean((l_g, l_gen, l_enc, l_con, l_lat, l_d),
                                                  axis_name)
    scalars = {"l_g": l_g, "l_adv": l_gen, "l_enc": l_enc, "l_con": l_con, "l_lat": l_lat,
               "l_d": l_d}
    return _finish(state, cfg, rng, x, g_params, g_stats, g_opt_state, d_params, d_stats,
                   d_opt_state, g_grads, d_grads, scalars)


STEPS = {"ganomaly": ganomaly_step, "egbad": egbad_step}
