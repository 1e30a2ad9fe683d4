"""orbax checkpoints of the whole training state, written atomically every epoch.

A checkpoint holds G and D parameters, both BatchNorm statistics, both optimiser states and the
step; its metadata holds the epoch, the flags and the model signature. The training RNG is a
pure function of (seed, step), and the data order of (seed, epoch), so nothing else is needed
to resume exactly. A workdir written with other model flags is refused, never half-loaded.
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
from typing import Optional

import jax
import orbax.checkpoint as ocp
from sagan_jax import methods
from sagan_jax.config import flags_where
from sagan_jax.methods import dsc_autotune
from sagan_jax.methods.state import fitted_state
from sagan_jax.training.errors import deferred_interrupt
from sagan_jax.training.state import init_state, make_optimizers


# Flags that change the shapes or meaning of the saved arrays; all must match to resume.
MODEL_FLAGS = flags_where(role="network")
# Flags a resumed or reopened run may change: they do not change what is trained or measured
# (where, how fast, how often the test set is scored, what is drawn, more epochs). Every
# other flag defines the experiment and must match (README: "Reliability").
RESUMABLE_CHANGES = flags_where(resume=True)


class CheckpointError(RuntimeError):
    pass


def manager(workdir: str, max_to_keep: int = 3, name: str = "checkpoints",
            read_only: bool = False) -> ocp.CheckpointManager:
    """Checkpoints under WORKDIR/NAME ('checkpoints': the last N; 'best': best on validation).
    orbax writes each to a temporary folder and renames it when complete, so a crash never
    leaves a half-written checkpoint as the newest one. ``read_only``: open for restoring only
    (creates, cleans and writes nothing: a read-only workdir can be scored)."""
    path = os.path.abspath(os.path.join(workdir, name))
    if read_only:
        import logging

        absl_log = logging.getLogger("absl")
        level = absl_log.level
        absl_log.setLevel(logging.ERROR)  # orbax warns that the directory is read-only
        try:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False,
                                                   max_to_keep=None, save_interval_steps=0)
            return ocp.CheckpointManager(path, options=options)
        finally:
            absl_log.setLevel(level)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(path, options=options)


def _no_checkpoint(workdir: str) -> CheckpointError:
    where = os.path.join(workdir, "checkpoints")
    runs = os.path.join(workdir, "runs")
    names = sorted(n for n in os.listdir(runs)
                   if os.path.isdir(os.path.join(runs, n, "checkpoints"))) \
        if os.path.isdir(runs) else []
    if names:  # a run list (--seeds, --abnormal_classes): each run has its own checkpoints
        return CheckpointError(
            f"{workdir} holds {len(names)} runs, each with its own checkpoint; choose one: "
            + " or ".join(f"--workdir={os.path.join(runs, n)}" for n in names))
    return CheckpointError(f"no checkpoint in {where}; train first with --mode=train and the "
                           "same --workdir")


def saved_meta(workdir: str) -> dict:
    """The metadata (epoch, flags as 'config', calibration, ...) of the newest checkpoint in
    WORKDIR/checkpoints, read without writing anything; CheckpointError when there is none."""
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise _no_checkpoint(workdir)
    mngr = manager(workdir, read_only=True)
    step = mngr.latest_step()
    if step is None:
        raise _no_checkpoint(workdir)
    return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def all_finite(tree) -> bool:
    """Whether every floating-point array of ``tree`` (parameters, BatchNorm statistics,
    optimiser state) is finite."""
    import jax.numpy as jnp

    leaves = [x for x in jax.tree.leaves(tree)
              if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]
    if not leaves:
        return True
    # one flag per array, fetched together: arrays on different devices need no common one
    return all(bool(f) for f in jax.device_get([jnp.all(jnp.isfinite(x)) for x in leaves]))


def save(mngr: ocp.CheckpointManager, state, epoch: int, cfg, extra: Optional[dict] = None):
    """Save ``state`` after ``epoch``; a state with a non-finite array is never saved."""
    if not all_finite(state):
        raise CheckpointError(f"refusing to save a non-finite state after epoch {epoch + 1}")
    meta = {"epoch": epoch, "config": cfg.to_dict(), **(extra or {})}
    with deferred_interrupt(), _quiet_orbax():  # a Ctrl-C waits until the save is complete
        before = set(threading.enumerate())
        try:
            mngr.save(int(jax.device_get(state.step)), args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
            mngr.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - a full disk, a vanished folder, ...
            # orbax's other tasks of this save (threads of its own Thread subclass; its pool
            # workers live on) may still run: let them end quietly before the process does,
            # or each prints a traceback at exit
            deadline = time.time() + 60
            for t in set(threading.enumerate()) - before:
                if type(t) is not threading.Thread:
                    t.join(max(0.0, deadline - time.time()))
            raise _save_failed(mngr, epoch, e) from None


class _quiet_orbax:
    """Silence orbax's own error logs (one traceback per background thread) while saving: a
    failed save is reported once, as a CheckpointError (_save_failed)."""

    def __enter__(self):
        import logging

        self._log = logging.getLogger("absl")
        self._level = self._log.level
        self._log.setLevel(logging.CRITICAL)

    def __exit__(self, *exc):
        self._log.setLevel(self._level)
        return False


def _save_failed(mngr, epoch: int, e: Exception) -> "CheckpointError":
    """One line for a checkpoint that could not be written; orbax writes into a temporary
    folder and renames it only when complete, so the checkpoints before it are intact."""
    import errno

    chain, c = [], e
    while c is not None and len(chain) < 20:
        chain.append(c)
        c = c.__cause__ or c.__context__
    full = any(getattr(c, "errno", None) in (errno.ENOSPC, errno.EDQUOT) for c in chain) or any(
        "No space left" in str(c) or "quota" in str(c).lower() for c in chain)
    why = next((c.strerror for c in chain if isinstance(c, OSError) and c.strerror),
               " ".join(str(e).split())[:200] or type(e).__name__)
    hint = "free some space" if full else "check the folder"
    return CheckpointError(
        f"cannot write the checkpoint of epoch {epoch + 1} to {mngr.directory} ({why}); the "
        f"checkpoints saved before it are intact: {hint}, then rerun the same command to resume")


def check_compatible(saved_cfg: dict, cfg, where: str) -> None:
    """The network flags must match for any use of a checkpoint (shapes, meaning); a fitted
    model (PCA, kNN) names its own (ModelSpec.checkpoint_flags)."""
    diff = [
        f"{k}={saved_cfg.get(k)!r} (now {getattr(cfg, k)!r})"
        for k in (methods.get(cfg.model).checkpoint_flags or MODEL_FLAGS)
        if saved_cfg.get(k) != getattr(cfg, k)
    ]
    if diff:
        raise CheckpointError(
            f"workdir {where} holds a model trained with other flags: {', '.join(diff)}; "
            "use a new --workdir or the same model flags"
        )


def check_same_experiment(saved_cfg: dict, cfg, where: str, trained_epochs: int) -> None:
    """Resuming or reopening a training run: every flag that defines the experiment must be
    what it was (RESUMABLE_CHANGES lists the ones that may change), and --epochs may grow but
    not fall below the epochs already trained."""
    check_compatible(saved_cfg, cfg, where)
    now = cfg.to_dict()
    diff = [f"--{k}={saved_cfg[k]!r} (now {now[k]!r})" for k in now
            if k not in RESUMABLE_CHANGES and k in saved_cfg and saved_cfg[k] != now[k]]
    if diff:
        raise CheckpointError(
            f"workdir {where} holds another experiment: {', '.join(diff)}; rerun with the "
            "saved flags to resume it, or use a new --workdir")
    if cfg.epochs < trained_epochs:
        raise CheckpointError(
            f"workdir {where} already trained {trained_epochs} epochs but --epochs="
            f"{cfg.epochs}; pass --epochs >= {trained_epochs} (more epochs continue the run) "
            "or use a new --workdir")


def check_resumable(cfg) -> None:
    """Refuse, before any computation (data parallel setup, DSC timing, compilation), a
    workdir whose newest checkpoint holds another experiment (check_same_experiment); reads
    only the checkpoint's metadata."""
    path = os.path.join(cfg.workdir, "checkpoints")
    if not os.path.isdir(path):
        return
    mngr = manager(cfg.workdir, read_only=True)
    step = mngr.latest_step()
    if step is None:
        return
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    check_same_experiment(meta["config"], cfg, str(mngr.directory), meta["epoch"] + 1)


class WorkdirLock:
    """An exclusive lock on WORKDIR/.lock for the life of a training process, so that a
    second process training into the same workdir is refused instead of interleaving."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, ".lock")
        self._f = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise CheckpointError(
                f"--workdir={os.path.dirname(self.path)!r} is in use by another training "
                f"process (pid {holder}); wait for it to finish or choose another --workdir")
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._f = f
        return self

    def __exit__(self, *exc):
        if self._f is not None:
            fcntl.flock(self._f, fcntl.LOCK_UN)
            self._f.close()
            self._f = None


def restore_latest(mngr: ocp.CheckpointManager, abstract_state, cfg, resume: bool = False):
    """(state, meta) of the newest checkpoint, or (None, None) when there is none. With
    ``resume`` the whole experiment must match (check_same_experiment), else the network.
    ``abstract_state`` may be a function of the checkpoint's metadata (fitted models, whose
    array shapes depend on the data: see fitted_shapes)."""
    step = mngr.latest_step()
    if step is None:
        return None, None
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if resume:
        check_same_experiment(meta["config"], cfg, str(mngr.directory), meta["epoch"] + 1)
    else:
        check_compatible(meta["config"], cfg, str(mngr.directory))
    if callable(abstract_state):
        abstract_state = abstract_state(meta)
    abstract_state = on_this_topology(abstract_state)
    restored = mngr.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
        ),
    )
    return restored["state"], restored["meta"]


def on_this_topology(abstract_state):
    """The abstract state with every array placed on this process's first device, so a
    checkpoint saved on another device count (one XLA device per core on another machine,
    --host_devices, a GPU) restores here; the caller then places it (replicated over its
    mesh). A multi-process run restores with the saved global sharding, as it was saved."""
    if jax.process_count() > 1:
        return abstract_state
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def place(leaf):
        if isinstance(leaf, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device)
        return leaf
    return jax.tree.map(place, abstract_state)


def restore_for_inference(cfg):
    """(state, meta) of the newest checkpoint in ``cfg.workdir`` (network flags checked),
    opened read-only (nothing in the workdir is created or changed)."""
    if methods.get(cfg.model).fit is not None:  # PCA, kNN: shapes from the metadata
        abstract = abstract_fitted_state
    else:
        g_tx, d_tx = make_optimizers(cfg, 1)
        abstract = jax.eval_shape(lambda: init_state(cfg, jax.random.key(0), g_tx, d_tx))
    if not os.path.isdir(os.path.join(cfg.workdir, "checkpoints")):
        raise _no_checkpoint(cfg.workdir)
    state, meta = restore_latest(manager(cfg.workdir, read_only=True), abstract, cfg)
    if state is None:
        raise _no_checkpoint(cfg.workdir)
    if meta.get("dsc_impls") and cfg.dsc_impl == "auto":
        # score with the DSC forms the run was trained and calibrated with (same rounding)
        dsc_autotune.pin(cfg, tuple(meta["dsc_impls"].items()))
    return state, meta


def fitted_shapes(params: dict) -> dict:
    """{name: [shape, dtype]} of a fitted model's arrays, saved in its checkpoint's metadata
    (their shapes depend on the data, e.g. kNN's N training images)."""
    import numpy as np

    return {k: [list(np.shape(v)), str(np.asarray(v).dtype)] for k, v in params.items()}


def abstract_fitted_state(meta: dict):
    """The abstract TrainState of a fitted model's checkpoint, from its metadata."""
    import jax.numpy as jnp


    if "fitted_shapes" not in meta:
        raise CheckpointError("the checkpoint holds no fitted model (no 'fitted_shapes' in its "
                              "metadata); refit it with --mode=train")
    state = fitted_state({k: jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype))
                          for k, (shape, dtype) in meta["fitted_shapes"].items()})
    return state.replace(step=jax.ShapeDtypeStruct((), jnp.int32))
