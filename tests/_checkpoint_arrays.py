"""The newest checkpoint of a workdir as NumPy arrays, for tests that compare trained states.

It restores onto this process's first device with a target built from the checkpoint's own
metadata: a checkpoint saved by 2 processes (a 2-device global mesh) cannot be restored
without a target ("Topology mismatch"), and reading it here must not need the model."""
import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def final_arrays(workdir):
    """(step, {key path: array}) of the newest checkpoint under workdir/checkpoints."""
    mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    step = mngr.latest_step()
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.metadata(path).item_metadata.tree
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
        state = ckptr.restore(path, target)
    flat, _ = jax.tree_util.tree_flatten_with_path(state)
    return step, {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}
