"""Losses, one SAGAN training step and scoring in PyTorch, with the same order and BatchNorm
statistics rules as sagan_jax/methods/sagan.py (docs/design.md, sections 5-6):

  1. fake = G(x) in training mode; this one call updates G's running statistics.
  2. L_G = w_adv BCE(D(fake), 1) + w_con |x - fake| + w_lat (f(x) - f(fake))^2, with D in
     training mode (batch statistics) but D's running statistics left untouched
     (:func:`frozen_bn_stats`); G is updated.
  3. D's step on the fake computed in 1 (before G's update): D(x), then D(fake), each in
     training mode and each updating D's running statistics, in that order;
     L_D = BCE(D(x), 1) + BCE(D(fake), 0) (+ w_lat L_lat with ``cfg.d_lat_loss``); D is updated.
  4. If L_D < cfg.reinit_d_threshold, D's weights are redrawn (docs/design.md, section 4); its
  running
     statistics and optimiser state are kept, as in the JAX step.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from sagan_jax.torch_ref.models import build_models, init_weights


def bce(logit, target: float):
    """torch.nn.BCELoss on D(x) = sigmoid(logit) against a constant target, as the originals."""
    p = torch.sigmoid(logit)
    return F.binary_cross_entropy(p, torch.full_like(p, float(target)))


def l1(x, y):
    return (x - y).abs().mean()


def l2(x, y):
    return (x - y).pow(2).mean()


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module):
    """Training-mode BatchNorm (batch statistics) that does not update running statistics.

    With ``track_running_stats=False`` in training mode, nn.BatchNorm2d passes no running
    buffers to F.batch_norm, so it normalises with batch statistics and updates nothing."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    old = [m.track_running_stats for m in bns]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, t in zip(bns, old):
            m.track_running_stats = t


def lambda_decay(epoch: int, lr: float, niter: int, niter_decay: int, start_epoch: int = 0):
    return lr * (1.0 - max(0, epoch + 1 + start_epoch - niter) / (niter_decay + 1.0))


class TorchTrainer:
    """G, D and their optimisers; ``step(x)`` runs one SAGAN update on an NCHW batch."""

    def __init__(self, cfg, g=None, d=None, g_opt=None, d_opt=None):
        self.cfg = cfg
        if g is None or d is None:
            g0, d0 = build_models(cfg)
            g, d = g if g is not None else g0, d if d is not None else d0
        self.g, self.d = g, d
        adam = lambda p: torch.optim.Adam(p, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.g_opt = g_opt or adam(self.g.parameters())
        self.d_opt = d_opt or adam(self.d.parameters())

    def set_epoch(self, epoch: int) -> None:
        """Lambda decay (docs/design.md, section 5), applied per epoch to both optimisers."""
        lr = lambda_decay(epoch, self.cfg.lr, self.cfg.niter, self.cfg.niter_decay)
        for opt in (self.g_opt, self.d_opt):
            for group in opt.param_groups:
                group["lr"] = lr

    def generator_loss(self, x):
        """(L_G, fake, parts); runs G (updating its statistics) and D with frozen statistics."""
        cfg = self.cfg
        fake = self.g(x)
        with frozen_bn_stats(self.d):
            logit_fake, feat_fake = self.d(fake)
            _, feat_real = self.d(x)
        l_adv, l_con, l_lat = bce(logit_fake, 1.0), l1(x, fake), l2(feat_real, feat_fake)
        l_g = cfg.w_adv * l_adv + cfg.w_con * l_con + cfg.w_lat * l_lat
        return l_g, fake, {"l_adv": l_adv, "l_con": l_con, "l_lat": l_lat}

    def discriminator_loss(self, x, fake):
        logit_real, feat_real = self.d(x)
        logit_fake, feat_fake = self.d(fake.detach())
        l_d = bce(logit_real, 1.0) + bce(logit_fake, 0.0)
        if self.cfg.d_lat_loss:
            l_d = l_d + self.cfg.w_lat * l2(feat_real, feat_fake)
        return l_d

    def step(self, x) -> dict:
        self.g.train()
        self.d.train()
        self.g_opt.zero_grad(set_to_none=True)
        l_g, fake, parts = self.generator_loss(x)
        l_g.backward()
        self.g_opt.step()

        self.d_opt.zero_grad(set_to_none=True)  # drops the grads L_G left on D's weights
        l_d = self.discriminator_loss(x, fake)
        l_d.backward()
        self.d_opt.step()

        reinit = bool(l_d.item() < self.cfg.reinit_d_threshold)
        if reinit:
            init_weights(self.d)
        out = {k: float(v.detach()) for k, v in parts.items()}
        out.update(l_g=float(l_g.detach()), l_d=float(l_d.detach()), d_reinit=int(reinit))
        return out

    @torch.no_grad()
    def score(self, x, batch_stats: bool = False):
        """Per-image (R, L, reconstruction) of an NCHW batch (docs/design.md, section 7). Running
        averages by default; ``batch_stats=True`` scores in training mode without updating
        statistics, as the originals (``--eval_batch_stats``)."""
        self.g.train(batch_stats)
        self.d.train(batch_stats)
        with frozen_bn_stats(self.g), frozen_bn_stats(self.d):
            recon = self.g(x)
            _, feat_real = self.d(x)
            _, feat_fake = self.d(recon)
        b = x.shape[0]
        r = (x - recon).pow(2).reshape(b, -1).mean(1)
        lat = (feat_real - feat_fake).pow(2).reshape(b, -1).mean(1)
        return r, lat, recon
