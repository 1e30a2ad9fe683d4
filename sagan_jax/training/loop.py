"""The training loop: epochs of jitted data-parallel steps, evaluation after every epoch,
checkpoints (last N and best on validation), logs, pictures and metrics.json."""
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

from sagan_jax import checkpoints, plots, scoring
from sagan_jax.config import ConfigError
from sagan_jax.data.pipeline import prefetch_to_devices, to_float_np, train_dataset
from sagan_jax.training.bn_recalibration import recalibrate_batchnorm
from sagan_jax.training.errors import NonFiniteLossError
from sagan_jax.training.evaluate import evaluate, final_score, score_images
from sagan_jax.training.metric_writer import MetricWriter, read_jsonl
from sagan_jax.training.state import init_state, make_optimizers
from sagan_jax.training.step import DATA_AXIS, make_mesh, make_train_step

log = logging.getLogger("sagan_jax")
LOG_EVERY = 10           # steps between host syncs (losses, progress bar, finiteness check)
CALIBRATION_IMAGES = 1000  # training normals used for the threshold when there is no val split


def _progress(total, disable):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=disable, unit="step", dynamic_ncols=True, leave=False)


def _check_finite(metrics: dict, step: int):
    for name in ("l_g", "l_d"):
        if not math.isfinite(metrics[name]):
            raise NonFiniteLossError(
                f"training stopped at step {step}: loss {name} = {metrics[name]}; "
                "the last good checkpoint is kept in the workdir (try a lower --lr)"
            )


def calibrate(cfg, state, data) -> dict:
    """Decision threshold and normalisation range from NORMAL images only: the validation
    split when there is one, else a fixed subset of the training normals (labelled as such).
    threshold = the (1 - fpr) quantile of their raw scores, so about ``fpr`` of normal images
    are flagged. Saved with each checkpoint; scoring new images uses it unchanged."""
    if data.val is not None:
        images, source = data.val.images, "validation normals"
    else:
        images, source = data.train.images[:CALIBRATION_IMAGES], "training normals (no val split)"
    r, lat = score_images(cfg, state, images)
    raw = final_score(cfg, r, lat)
    return {
        "source": source, "n": int(len(raw)), "fpr": cfg.threshold_fpr,
        "threshold": float(np.quantile(raw, 1.0 - cfg.threshold_fpr)),
        "min": float(raw.min()), "max": float(raw.max()),
        "mean": float(raw.mean()),
    }


def train_and_evaluate(cfg, data) -> dict:
    """Train on ``data.train``; after each epoch score ``data.test`` (and ``data.val``).

    The reported result is the LAST epoch's test metrics; the best epoch on the test set is
    also recorded, labelled as test-set selected (the paper's protocol). Restarting with the
    same workdir resumes from the newest checkpoint."""
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
    last_mngr = checkpoints.manager(cfg.workdir, cfg.keep_checkpoints)
    best_mngr = checkpoints.manager(cfg.workdir, 1, name="best") if data.val is not None else None
    start_epoch, history, best_val = 0, [], float("inf")
    restored, meta = checkpoints.restore_latest(last_mngr, state, cfg)
    if restored is not None:
        state, start_epoch = restored, meta["epoch"] + 1
        history = meta.get("history", [])
        best_val = float("inf") if meta.get("best_val") is None else meta["best_val"]
        log.info("resumed from %s after epoch %d (step %d)", last_mngr.directory, start_epoch,
                 int(state.step))
        metrics_path = os.path.join(cfg.workdir, "metrics.json")
        if start_epoch >= cfg.epochs and os.path.exists(metrics_path):
            log.info("the workdir's run already finished its %d epochs: %s", cfg.epochs,
                     metrics_path)
            with open(metrics_path) as f:
                return json.load(f)

    replicated = NamedSharding(mesh, P())
    state = jax.device_put(state, replicated)  # as the step returns it: no recompilation
    step_fn = make_train_step(cfg, g_tx, d_tx, mesh if n_dev > 1 else None)
    batch_sharding = NamedSharding(mesh, P(DATA_AXIS))
    step_rng = jax.random.fold_in(root, 1)
    writer = MetricWriter(cfg.workdir, tensorboard=cfg.tensorboard)
    t0 = time.time()
    first_step_s = None
    step = int(jax.device_get(state.step))
    try:
        for epoch in range(start_epoch, cfg.epochs):
            bar = _progress(steps_per_epoch, not cfg.progress)
            bar.set_description(f"epoch {epoch + 1}/{cfg.epochs}")
            batches = train_dataset(data.train.images, cfg.batch_size, cfg.seed, epoch)
            pending = []
            t_epoch = time.time()
            for batch in prefetch_to_devices(batches.as_numpy_iterator(), batch_sharding):
                state, metrics = step_fn(state, batch, jax.random.fold_in(step_rng, step))
                pending.append((step, metrics))
                step += 1
                if first_step_s is None:
                    jax.block_until_ready(metrics)
                    first_step_s = time.time() - t0
                if len(pending) >= LOG_EVERY:
                    _flush(pending, writer, bar)
            _flush(pending, writer, bar)
            bar.close()
            train_s = time.time() - t_epoch
            # Running BN statistics for the current weights (unused by training steps, which
            # normalise with batch statistics); kept in the state, so checkpoints carry them.
            state = jax.device_put(
                recalibrate_batchnorm(cfg, state, data.train.images, cfg.seed * 1000 + epoch),
                replicated)
            record = {"epoch": epoch, "step": step, "train_s": round(train_s, 2),
                      "train_img_per_s": round(steps_per_epoch * cfg.batch_size / train_s, 2)}
            if cfg.evaluates_after(epoch):
                keep_recon = cfg.plots and epoch == cfg.epochs - 1  # the pictures reuse it
                test = evaluate(cfg, state, data.test, keep_recon=keep_recon)
                record.update({f"test_{k}": test[k]
                               for k in ("auc", "ap", "f1", "auc_r", "auc_lat")})
                if "pixel_auc" in test:
                    record["test_pixel_auc"] = test["pixel_auc"]
                log.info("epoch %d/%d: test AUC %.4f AP %.4f F1 %.4f (AUC of R alone %.4f, of "
                         "L alone %.4f; %.1f img/s)", epoch + 1, cfg.epochs, record["test_auc"],
                         record["test_ap"], record["test_f1"], record["test_auc_r"],
                         record["test_auc_lat"], record["train_img_per_s"])
            else:
                log.info("epoch %d/%d: trained (%.1f img/s); test set not scored "
                         "(--eval_every=%d)", epoch + 1, cfg.epochs, record["train_img_per_s"],
                         cfg.eval_every)
            calib = calibrate(cfg, state, data)
            if data.val is not None:
                record["val_score_mean"] = calib["mean"]
            history.append(record)
            writer.write("epoch", step, record)
            writer.flush()
            is_best = data.val is not None and calib["mean"] < best_val
            best_val = min(best_val, calib["mean"]) if data.val is not None else best_val
            extra = {"history": history, "calibration": calib,
                     "best_val": best_val if math.isfinite(best_val) else None}
            checkpoints.save(last_mngr, state, epoch, cfg, extra)
            if is_best:
                checkpoints.save(best_mngr, state, epoch, cfg, extra)
    finally:
        writer.close()

    if not history:
        raise ConfigError(f"--epochs={cfg.epochs} trains nothing: no epochs were run")
    wall = time.time() - t0
    scored = [r for r in history if "test_auc" in r]  # the last epoch always is
    final, best = scored[-1], max(scored, key=lambda r: r["test_auc"])
    result = {
        "auc": final["test_auc"], "ap": final["test_ap"], "f1": final["test_f1"],
        "auc_r_alone": final["test_auc_r"], "auc_lat_alone": final["test_auc_lat"],
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
    if cfg.plots:
        if start_epoch >= cfg.epochs:  # a finished run reopened: nothing scored in this process
            test = evaluate(cfg, state, data.test, keep_recon=True)
        x = to_float_np(data.test.images)
        result["plots"] = plots.write_all(
            cfg.workdir, data.test.labels, scoring.minmax(test["scores"]), test["auc"], x,
            test["recon"], read_jsonl(writer.path, "step"))
    with open(os.path.join(cfg.workdir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def _flush(pending, writer, bar):
    if not pending:
        return
    host = jax.device_get([m for _, m in pending])
    for (step, _), m in zip(pending, host):
        m = {k: float(v) for k, v in m.items()}
        _check_finite(m, step)
        writer.write("step", step, m)
    bar.update(len(pending))
    bar.set_postfix(l_g=f"{m['l_g']:.3f}", l_d=f"{m['l_d']:.3f}", l_con=f"{m['l_con']:.4f}")
    pending.clear()


def restore_for_inference(cfg):
    """(state, meta) of the newest checkpoint in ``cfg.workdir`` (model flags checked)."""
    g_tx, d_tx = make_optimizers(cfg, 1)
    abstract = jax.eval_shape(lambda: init_state(cfg, jax.random.key(0), g_tx, d_tx))
    state, meta = checkpoints.restore_latest(checkpoints.manager(cfg.workdir), abstract, cfg)
    if state is None:
        raise checkpoints.CheckpointError(
            f"no checkpoint in {os.path.join(cfg.workdir, 'checkpoints')}; train first with "
            "--mode=train and the same --workdir"
        )
    return state, meta


def evaluate_checkpoint(cfg, data) -> dict:
    """Score the test set with the newest checkpoint in ``cfg.workdir``; writes eval.json."""
    state, meta = restore_for_inference(cfg)
    test = evaluate(cfg, state, data.test)
    result = {k: test[k] for k in ("auc", "ap", "f1", "auc_r", "auc_lat")}
    result.update(step=int(state.step), epoch=meta["epoch"] + 1,
                  eval_batch_stats=cfg.eval_batch_stats, data=data.counts())
    with open(os.path.join(cfg.workdir, "eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result
