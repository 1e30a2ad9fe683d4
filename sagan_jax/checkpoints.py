"""orbax checkpoints of the whole training state, written atomically every epoch.

A checkpoint holds G and D parameters, both BatchNorm statistics, both optimiser states and the
step; its metadata holds the epoch, the flags and the model signature. The training RNG is a
pure function of (seed, step), and the data order of (seed, epoch), so nothing else is needed
to resume exactly. A workdir written with other model flags is refused, never half-loaded.
"""
from __future__ import annotations

import os
from typing import Optional

import jax
import orbax.checkpoint as ocp

# Flags that change the shapes or meaning of the saved arrays; all must match to resume.
MODEL_FLAGS = ("model", "isize", "ngf", "ndf", "nz", "use_dsc", "use_cbam", "kernels_per_layer")


class CheckpointError(RuntimeError):
    pass


def manager(workdir: str, max_to_keep: int = 3, name: str = "checkpoints") -> ocp.CheckpointManager:
    """Checkpoints under WORKDIR/NAME ('checkpoints': the last N; 'best': best on validation).
    orbax writes each to a temporary folder and renames it when complete, so a crash never
    leaves a half-written checkpoint as the newest one."""
    path = os.path.abspath(os.path.join(workdir, name))
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(path, options=options)


def save(mngr: ocp.CheckpointManager, state, epoch: int, cfg, extra: Optional[dict] = None):
    meta = {"epoch": epoch, "config": cfg.to_dict(), **(extra or {})}
    mngr.save(
        int(jax.device_get(state.step)),
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
    )
    mngr.wait_until_finished()


def check_compatible(saved_cfg: dict, cfg, where: str) -> None:
    diff = [
        f"{k}={saved_cfg.get(k)!r} (now {getattr(cfg, k)!r})"
        for k in MODEL_FLAGS
        if saved_cfg.get(k) != getattr(cfg, k)
    ]
    if diff:
        raise CheckpointError(
            f"workdir {where} holds a model trained with other flags: {', '.join(diff)}; "
            "use a new --workdir or the same model flags"
        )


def restore_latest(mngr: ocp.CheckpointManager, abstract_state, cfg):
    """(state, meta) of the newest checkpoint, or (None, None) when there is none."""
    step = mngr.latest_step()
    if step is None:
        return None, None
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    check_compatible(meta["config"], cfg, str(mngr.directory))
    restored = mngr.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
        ),
    )
    return restored["state"], restored["meta"]
