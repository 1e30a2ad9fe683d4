"""The training loop: epochs of jitted data-parallel steps, evaluation after every epoch,
checkpoints, metrics.json."""
from __future__ import annotations

import json
import logging
import math
import os
import time

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sagan_jax import checkpoints, scoring
from sagan_jax.config import ConfigError
from sagan_jax.data.pipeline import prefetch_to_devices, train_dataset
from sagan_jax.training.errors import NonFiniteLossError
from sagan_jax.training.evaluate import evaluate, score_images
from sagan_jax.training.state import init_state, make_optimizers
from sagan_jax.training.step import DATA_AXIS, make_mesh, make_train_step

log = logging.getLogger("sagan_jax")
LOG_EVERY = 10  # steps between host syncs for losses / progress


def _progress(total, disable):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, disable=disable, unit="step", dynamic_ncols=True, leave=False)


def _check_finite(metrics: dict, step: int):
    for name in ("l_g", "l_d"):
        if not math.isfinite(metrics[name]):
            raise NonFiniteLossError(
                f"training stopped at step {step}: loss {name} = {metrics[name]}; "
                "the last good checkpoint is kept in the workdir (try a lower --lr)"
            )


def _append_jsonl(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def train_and_evaluate(cfg, data) -> dict:
    """Train on ``data.train``; after each epoch score ``data.test`` (and ``data.val``).

    The reported result is the LAST epoch's test metrics; the best epoch on the test set is
    also recorded, labelled as test-set selected (the paper's protocol)."""
    os.makedirs(cfg.workdir, exist_ok=True)
    mesh = make_mesh(cfg.num_devices)
    n_dev = mesh.devices.size
    if cfg.batch_size % n_dev:
        raise ConfigError(
            f"--batch_size={cfg.batch_size} is not divisible by the {n_dev} devices; "
            f"use a multiple of {n_dev}"
        )
    steps_per_epoch = len(data.train) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"{len(data.train)} training images are fewer than one batch of {cfg.batch_size}; "
            "lower --batch_size"
        )
    g_tx, d_tx = make_optimizers(cfg, steps_per_epoch)
    root = jax.random.key(cfg.seed)
    state = init_state(cfg, jax.random.fold_in(root, 0), g_tx, d_tx)
    mngr = checkpoints.manager(cfg.workdir)
    start_epoch, history = 0, []
    restored, meta = checkpoints.restore_latest(mngr, state, cfg)
    if restored is not None:
        state, start_epoch, history = restored, meta["epoch"] + 1, meta.get("history", [])
        log.info("resumed from %s at epoch %d (step %d)", mngr.directory, start_epoch, int(state.step))

    state = jax.device_put(state, NamedSharding(mesh, P()))  # replicated, as the step returns it
    step_fn = make_train_step(cfg, g_tx, d_tx, mesh if n_dev > 1 else None)
    batch_sharding = NamedSharding(mesh, P(DATA_AXIS))
    step_rng = jax.random.fold_in(root, 1)
    jsonl = os.path.join(cfg.workdir, "metrics.jsonl")
    t0 = time.time()
    first_step_s = None
    step = int(jax.device_get(state.step))
    for epoch in range(start_epoch, cfg.epochs):
        bar = _progress(steps_per_epoch, not cfg.progress)
        if bar is not None:
            bar.set_description(f"epoch {epoch + 1}/{cfg.epochs}")
        batches = train_dataset(data.train.images, cfg.batch_size, cfg.seed, epoch).as_numpy_iterator()
        pending = []
        t_epoch = time.time()
        for batch in prefetch_to_devices(batches, batch_sharding):
            state, metrics = step_fn(state, batch, jax.random.fold_in(step_rng, step))
            pending.append((step, metrics))
            step += 1
            if first_step_s is None:
                jax.block_until_ready(metrics)
                first_step_s = time.time() - t0
            if len(pending) >= LOG_EVERY:
                _flush(pending, jsonl, bar)
        _flush(pending, jsonl, bar)
        if bar is not None:
            bar.close()
        train_s = time.time() - t_epoch
        record = {"epoch": epoch, "step": step, "train_s": round(train_s, 2),
                  "train_img_per_s": round(steps_per_epoch * cfg.batch_size / train_s, 2)}
        test = evaluate(cfg, state, data.test)
        record.update({f"test_{k}": test[k] for k in ("auc", "ap", "f1")})
        if data.val is not None:
            val = evaluate_normal_only(cfg, state, data.val)
            record.update(val)
        history.append(record)
        _append_jsonl(jsonl, {"kind": "epoch", **record})
        log.info("epoch %d/%d: test AUC %.4f AP %.4f F1 %.4f (%.1f img/s)", epoch + 1, cfg.epochs,
                 record["test_auc"], record["test_ap"], record["test_f1"], record["train_img_per_s"])
        checkpoints.save(mngr, state, epoch, cfg, {"history": history})

    wall = time.time() - t0
    final = history[-1]
    best = max(history, key=lambda r: r["test_auc"])
    result = {
        "auc": final["test_auc"], "ap": final["test_ap"], "f1": final["test_f1"],
        "epochs": cfg.epochs, "last_epoch": final["epoch"] + 1,
        "best_epoch_on_test_set": {"epoch": best["epoch"] + 1, "auc": best["test_auc"],
                                   "note": "selected on the test set (the paper's protocol); "
                                           "not the result"},
        "wall_time_s": round(wall, 2),
        "time_to_first_step_s": None if first_step_s is None else round(first_step_s, 2),
        "devices": [str(d) for d in mesh.devices.flat],
        "data": {"name": data.name, "counts": data.counts()},
        "flags": cfg.to_dict(),
        "history": history,
    }
    with open(os.path.join(cfg.workdir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def evaluate_normal_only(cfg, state, split) -> dict:
    """Mean raw score of held-out normal images (lower is better): a model-selection signal
    that never looks at the test set."""
    r, lat = score_images(cfg, state, split.images)
    raw = scoring.anomaly_score(r, lat, cfg.score_lambda)
    return {"val_score_mean": float(np.mean(raw)), "val_r_mean": float(np.mean(r))}


def _flush(pending, jsonl, bar):
    if not pending:
        return
    host = jax.device_get([m for _, m in pending])
    for (step, _), m in zip(pending, host):
        m = {k: float(v) for k, v in m.items()}
        _check_finite(m, step)
        _append_jsonl(jsonl, {"kind": "step", "step": step, **m})
    if bar is not None:
        bar.update(len(pending))
        bar.set_postfix(l_g=f"{m['l_g']:.3f}", l_d=f"{m['l_d']:.3f}", l_con=f"{m['l_con']:.4f}")
    pending.clear()


def evaluate_checkpoint(cfg, data) -> dict:
    """Score the test set with the newest checkpoint in ``cfg.workdir``; writes eval.json."""
    g_tx, d_tx = make_optimizers(cfg, 1)
    abstract = jax.eval_shape(lambda: init_state(cfg, jax.random.key(0), g_tx, d_tx))
    state, meta = checkpoints.restore_latest(checkpoints.manager(cfg.workdir), abstract, cfg)
    if state is None:
        raise checkpoints.CheckpointError(
            f"no checkpoint in {os.path.join(cfg.workdir, 'checkpoints')}; train first with "
            "--mode=train and the same --workdir"
        )
    test = evaluate(cfg, state, data.test)
    result = {k: test[k] for k in ("auc", "ap", "f1")}
    result.update(step=int(state.step), epoch=meta["epoch"] + 1,
                  eval_batch_stats=cfg.eval_batch_stats, data=data.counts())
    with open(os.path.join(cfg.workdir, "eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result
