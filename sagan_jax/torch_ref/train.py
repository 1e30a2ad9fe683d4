"""The PyTorch reference's training run: the same protocol as sagan_jax.training.loop, in torch.

For training parity (docs/benchmarks.md): the same data, batch order, hyperparameters,
learning-rate rule, BatchNorm recalibration ("precise BN") and score as the JAX loop, so that the
AUC of the two frameworks can be compared seed for seed. What differs is only the framework:
weights are drawn by torch's own initialiser (``torch.manual_seed(cfg.seed)``), and float rounding.

  - batches: ``sagan_jax.data.pipeline.epoch_order(n, batch_size, seed, epoch)``, the JAX
    loop's permutation, converted with the same ``to_float_np``;
  - steps: :class:`sagan_jax.torch_ref.step.TorchTrainer` (parity-tested against the JAX step);
  - learning rate: lambda decay per epoch (``TorchTrainer.set_epoch``);
  - before each evaluation: running statistics recomputed from
    ``cfg.bn_recalibration_batches`` training batches (the JAX loop's batches, from
    ``recalibration_batches``), G on x, D on x and on G(x);
  - score: cfg.score_lambda R + (1 - cfg.score_lambda) L, min-max scaled, AUC / AP / oracle F1 (no calibrated threshold here) by
    ``sagan_jax.scoring.detection_metrics``.

Only the SAGAN step is implemented (``--model=sagan``, with or without DSC / CBAM).
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from torch import nn

from sagan_jax import seeds
from sagan_jax.config import ConfigError
from sagan_jax.data.pipeline import epoch_order, to_float_np
from sagan_jax.training.bn_recalibration import recalibration_batches
from sagan_jax.training.errors import NonFiniteLossError
from sagan_jax.training.evaluate import split_metrics
from sagan_jax.training.results import summarise_history
from sagan_jax.torch_ref.step import TorchTrainer

log = logging.getLogger("sagan_jax.torch_ref")


def nchw(images_u8: np.ndarray) -> torch.Tensor:
    """uint8 NHWC images -> float32 NCHW in [-1, 1] (the JAX pipeline's conversion)."""
    return torch.from_numpy(to_float_np(images_u8)).permute(0, 3, 1, 2).contiguous()


def _bns(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batchnorm(trainer: TorchTrainer, images_u8: np.ndarray, n_batches: int,
                          batch_size: int, seed: int) -> None:
    """Set G's and D's running statistics to the average batch statistics (mean, unbiased
    variance) of ``n_batches`` training batches under the current weights: G on x; D on x and
    on G(x), equally weighted; as sagan_jax.training.bn_recalibration. No-op for 0 batches."""
    if n_batches <= 0:
        return
    bns = _bns(trainer.g) + _bns(trainer.d)
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every forward call
    trainer.g.train()
    trainer.d.train()
    try:
        for idx in recalibration_batches(len(images_u8), batch_size, n_batches, seed):
            x = nchw(images_u8[idx])
            recon = trainer.g(x)
            trainer.d(x)
            trainer.d(recon)
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


def score_images(trainer: TorchTrainer, images_u8: np.ndarray, batch_size: int):
    """(R, L) of uint8 images in their order, with running statistics (evaluation mode)."""
    rs, ls = [], []
    for start in range(0, len(images_u8), batch_size):
        r, lat, _ = trainer.score(nchw(images_u8[start:start + batch_size]))
        rs.append(r.numpy())
        ls.append(lat.numpy())
    return np.concatenate(rs), np.concatenate(ls)


def evaluate(cfg, trainer: TorchTrainer, split) -> dict:
    r, lat = score_images(trainer, split.images, cfg.eval_batch_size)
    return split_metrics(cfg, split.labels, r, lat)


def train_and_evaluate(cfg, data, threads: int | None = None,
                       trainer: TorchTrainer | None = None) -> dict:
    """Train the PyTorch reference on ``data.train`` and score ``data.test`` after the epochs
    the JAX loop scores (``cfg.eval_every``); returns a dict shaped like the JAX loop's
    metrics.json (last-epoch result, best epoch labelled as test-set selected, history).
    ``trainer``: start from these networks (e.g. weights converted from a JAX state) instead
    of torch's initialiser seeded with ``cfg.seed``."""
    if cfg.model != "sagan":
        raise ConfigError(f"the PyTorch reference trains --model=sagan only, not {cfg.model!r}")
    if cfg.eval_batch_stats:
        raise ConfigError("the PyTorch reference loop scores with running statistics only; "
                          "drop --eval_batch_stats")
    if threads:
        torch.set_num_threads(threads)
    if trainer is None:
        torch.manual_seed(cfg.seed)
        trainer = TorchTrainer(cfg)
    images = data.train.images
    steps_per_epoch = len(images) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"{len(images)} training images are fewer than one batch of "
                          f"{cfg.batch_size}; lower --batch_size")
    t0, first_step_s, step, history, reinits = time.time(), None, 0, [], 0
    for epoch in range(cfg.epochs):
        trainer.set_epoch(epoch)
        t_epoch = time.time()
        for idx in epoch_order(len(images), cfg.batch_size, cfg.seed, epoch):
            m = trainer.step(nchw(images[idx]))
            if first_step_s is None:
                first_step_s = time.time() - t0
            for name in ("l_g", "l_d"):
                if not math.isfinite(m[name]):
                    raise NonFiniteLossError(f"PyTorch reference: loss {name} = {m[name]} at "
                                             f"step {step}; try a lower --lr")
            reinits += m["d_reinit"]
            step += 1
        train_s = time.time() - t_epoch
        record = {"epoch": epoch, "step": step, "train_s": round(train_s, 2),
                  "train_img_per_s": round(steps_per_epoch * cfg.batch_size / train_s, 2)}
        if cfg.evaluates_after(epoch):
            recalibrate_batchnorm(trainer, images, cfg.bn_recalibration_batches,
                                  cfg.batch_size, seeds.recalibration_seed(cfg.seed, epoch))
            test = evaluate(cfg, trainer, data.test)
            record.update({f"test_{k}": test[k] for k in ("auc", "ap", "f1_oracle", "auc_r",
                                                            "auc_lat")})
            log.info("torch epoch %d/%d: test AUC %.4f (%.1f img/s)", epoch + 1, cfg.epochs,
                     test["auc"], record["train_img_per_s"])
        history.append(record)
    result = {"framework": f"torch {torch.__version__}", "epochs": cfg.epochs}
    result.update(summarise_history(history))
    result.update({
        "wall_time_s": round(time.time() - t0, 2),
        "time_to_first_step_s": None if first_step_s is None else round(first_step_s, 2),
        "d_reinits": reinits,
        "flags": cfg.to_dict(),
        "history": history,
    })
    return result
