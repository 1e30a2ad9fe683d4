"""Many runs as one jitted program: the run axis, data resident on the devices, and the steps
of an epoch under ``jax.lax.scan``.

K runs (seeds, abnormal classes) trained together keep K TrainStates, K uint8 image arrays on
the devices and K batch-index streams; one call of the chunk program advances every run by up
to ``steps_per_chunk`` steps, gathering each batch on the device by index. ``--run_axis_impl``
(same math, tested equal): ``unroll`` writes the K steps one after another (faster on XLA:CPU,
each run keeps its own static settings); ``vmap`` stacks runs with identical static settings
into one group (fills a GPU); ``auto`` unrolls on CPU and maps elsewhere. The whole chunk runs
under ``jax.shard_map`` over the data axis ``batch``.

A run whose epoch is over, whose training diverged or which resumed past this epoch is
inactive for those steps (its state is left untouched), so a run trained together is exactly
the run trained alone. XLA:CPU runs a step inside ``lax.scan`` or ``lax.cond`` many times
slower than alone (:func:`loops_run_fast`), so on CPU the chunk's steps are written out and
inactive steps are selects, one step per jitted call by default; accelerators keep a rolled
scan of 10 steps. Why: docs/design.md, sections 5 and 12; measurements: docs/benchmarks.md,
sections 3-4.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sagan_jax import methods
from sagan_jax.config import RunNeutral, run_neutral_key
from sagan_jax.data.pipeline import to_float_np
from sagan_jax.devices import DATA_AXIS, put_replicated


def resolve_impl(impl: str) -> str:
    """``auto`` -> ``unroll`` on CPU (measured, docs/design.md, section 12), ``vmap`` elsewhere."""
    if impl != "auto":
        return impl
    return "unroll" if jax.default_backend() == "cpu" else "vmap"


@dataclasses.dataclass(frozen=True)
class Group:
    ids: tuple          # run indices, in order
    cfg: object         # the group's static settings (its first run's Config)
    g_tx: object
    d_tx: object
    vmap: bool


class RunLayout:
    """How K runs are laid out in the program: groups (vmap) or single runs (unroll), and how
    per-run values are packed into the program's arguments and unpacked again."""

    def __init__(self, cfgs: Sequence, txs: Sequence, steps_per_epoch: Sequence[int], impl: str):
        self.cfgs, self.txs = list(cfgs), list(txs)
        self.impl = resolve_impl(impl)
        groups = []
        if self.impl == "vmap":
            keyed = {}
            for i, c in enumerate(self.cfgs):
                key = (run_neutral_key(c), steps_per_epoch[i])
                keyed.setdefault(key, []).append(i)
            for ids in keyed.values():
                groups.append(Group(tuple(ids), self.cfgs[ids[0]], *self.txs[ids[0]], True))
        elif self.impl == "unroll":
            groups = [Group((i,), c, *self.txs[i], False) for i, c in enumerate(self.cfgs)]
        else:
            raise ValueError(f"--run_axis_impl={impl!r}; choose auto, vmap or unroll")
        self.groups = groups
        self.k = len(self.cfgs)

    def pack(self, values: Sequence, pad: bool = False):
        """Per-run values -> a tuple over groups: a stacked pytree for a vmap group (leading
        run axis; with ``pad`` arrays are zero-padded along their first axis to the group's
        longest), a one-element tuple for an unrolled run."""
        out = []
        for g in self.groups:
            vals = [values[i] for i in g.ids]
            if g.vmap:
                if pad:
                    n = max(v.shape[0] for v in vals)
                    vals = [_pad_first(v, n) for v in vals]
                out.append(jax.tree.map(lambda *xs: jnp.stack(xs), *vals))
            else:
                out.append(vals[0])
        return tuple(out)

    def unpack(self, packed) -> list:
        """Inverse of pack (without padding): a list of per-run values."""
        out = [None] * self.k
        for g, p in zip(self.groups, packed):
            if g.vmap:
                for j, i in enumerate(g.ids):
                    out[i] = jax.tree.map(lambda a: a[j], p)
            else:
                out[g.ids[0]] = p
        return out


def _pad_first(a, n):
    if a.shape[0] == n:
        return a
    pad = [(0, n - a.shape[0])] + [(0, 0)] * (a.ndim - 1)
    return jnp.pad(a, pad) if isinstance(a, jax.Array) else np.pad(a, pad)


def loops_run_fast() -> bool:
    """Whether this backend runs the training step inside ``lax.scan`` / ``lax.cond`` as fast
    as alone. XLA:CPU does not: the SAGAN step (ngf 32, batch 32, jax 0.10.2, 2 cores) took
    0.34 s alone and 8.1 s inside either (docs/benchmarks.md, "Control flow on XLA:CPU"):
    inside a conditional or loop body XLA:CPU leaves the backward convolutions to its own
    convolution thunks instead of YNNPACK. So on CPU a chunk's steps are unrolled (no loop)
    and an inactive step is a select."""
    return jax.default_backend() != "cpu"


def steps_per_chunk(cfg) -> int:
    """--steps_per_chunk, or with 0 (auto) 1 on CPU (each extra unrolled step is compiled
    again) and 10 elsewhere (one lax.scan of 10 steps per host sync)."""
    if cfg.steps_per_chunk:
        return cfg.steps_per_chunk
    return 10 if loops_run_fast() else 1


def _one_step(cfg, g_tx, d_tx, axis_name, state, images, idx, active, key_data):
    """One training step of one run, or no change when ``active`` is false (``lax.cond``; on
    CPU, where a step inside a conditional runs 25x slower, the step is computed and the old
    state selected: see loops_run_fast)."""
    step = methods.get(cfg.model).step
    key = jax.random.wrap_key_data(key_data)

    def run(s):
        batch = to_float_np(jnp.take(images, idx, axis=0))
        return step(s, batch, jax.random.fold_in(key, s.step), cfg=cfg, g_tx=g_tx, d_tx=d_tx,
                    axis_name=axis_name)

    metric_shapes = jax.eval_shape(run, state)[1]

    def skip(s):
        return s, jax.tree.map(lambda m: jnp.full(m.shape, jnp.nan, m.dtype)
                               if jnp.issubdtype(m.dtype, jnp.floating)
                               else jnp.zeros(m.shape, m.dtype), metric_shapes)

    if loops_run_fast():
        return jax.lax.cond(active, run, skip, state)
    new, metrics = run(state)
    _, nothing = skip(state)
    pick = lambda a, b: jnp.where(active, a, b)  # noqa: E731
    return jax.tree.map(pick, new, state), jax.tree.map(pick, metrics, nothing)


def make_chunk_program(layout: RunLayout, mesh=None, donate: bool = True):
    """The jitted chunk: (states, images, idx, active, keys) -> (states, metrics), all packed
    by ``layout``. Per run: idx (batch, steps) int32 image indices (batch axis first, so the
    data axis shards it), active (steps,) bool, keys the run's step-stream key data.
    Metrics come back per run as a dict of (steps,) arrays (NaN where inactive)."""
    axis_name = DATA_AXIS if mesh is not None and mesh.devices.size > 1 else None

    def chunk(states, images, idx, active, keys):
        def body(carry, t):
            new, metrics = [], []
            for g, s, im, ix, ac, kd in zip(layout.groups, carry, images, idx, active, keys):
                f = functools.partial(_one_step, g.cfg, g.g_tx, g.d_tx, axis_name)
                if g.vmap:
                    # stacked: ix (runs, batch, steps) after the batch-first transpose below
                    s2, m = jax.vmap(f)(s, im, ix[:, :, t], ac[:, t], kd)
                else:
                    s2, m = f(s, im, ix[:, t], ac[t], kd)
                new.append(s2)
                metrics.append(m)
            return tuple(new), tuple(metrics)

        n_steps = (active[0].shape[-1])
        # vmap groups carry idx as (batch, runs, steps) for the data-axis split; move runs first
        idx = tuple(jnp.moveaxis(ix, 1, 0) if g.vmap else ix
                    for g, ix in zip(layout.groups, idx))
        if loops_run_fast():
            states, metrics = jax.lax.scan(body, states, jnp.arange(n_steps))
        else:  # XLA:CPU runs the step inside a loop 25x slower: the steps written out in turn
            per_step = []
            for t in range(n_steps):
                states, m = body(states, t)
                per_step.append(m)
            metrics = jax.tree.map(lambda *xs: jnp.stack(xs), *per_step)
        # metrics: per group, leaves (steps, ...) or (steps, runs) -> runs first for vmap
        metrics = tuple(jax.tree.map(lambda a: jnp.moveaxis(a, 0, -1), m) for m in metrics)
        return states, metrics

    donate_argnums = (0,) if donate else ()
    if axis_name is None:
        return jax.jit(chunk, donate_argnums=donate_argnums)
    sharded = jax.shard_map(chunk, mesh=mesh, in_specs=(P(), P(), P(DATA_AXIS), P(), P()),
                            out_specs=(P(), P()), check_vma=False)
    return jax.jit(sharded, donate_argnums=donate_argnums)


def pack_chunk_inputs(layout: RunLayout, idx_per_run, active_per_run, keys_per_run):
    """Host arrays of one chunk, packed: idx (batch, steps) per run (vmap groups: (batch,
    runs, steps)), active (steps,) per run, keys (2,) uint32 per run."""
    idx, active, keys = [], [], []
    for g in layout.groups:
        if g.vmap:
            idx.append(np.stack([idx_per_run[i] for i in g.ids], axis=1))
            active.append(np.stack([active_per_run[i] for i in g.ids]))
            keys.append(np.stack([keys_per_run[i] for i in g.ids]))
        else:
            i = g.ids[0]
            idx.append(idx_per_run[i])
            active.append(active_per_run[i])
            keys.append(keys_per_run[i])
    return tuple(idx), tuple(active), tuple(keys)


def unpack_metrics(layout: RunLayout, metrics) -> list:
    """Per run: a dict of host (steps,) arrays."""
    host = jax.device_get(metrics)
    out = [None] * layout.k
    for g, m in zip(layout.groups, host):
        if g.vmap:
            for j, i in enumerate(g.ids):
                out[i] = {k: np.asarray(v)[j] for k, v in m.items()}
        else:
            out[g.ids[0]] = {k: np.asarray(v) for k, v in m.items()}
    return out


# ---- scoring ------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("cfgs", "batch_size", "keep_recon", "split"))
def _score_runs_batch(variables, images, starts, cfgs, batch_size, keep_recon, split=None):
    """(R, L[, recon]) of one batch of every run: run k scores images[k][starts[k]:+bs],
    gathered on the device from its padded uint8 array; with ``split`` (a sharding of the
    batch axis over the local devices) each device scores its part of the batch."""
    out = []
    for k, cfg in enumerate(c.cfg for c in cfgs):
        im = images[k]
        x = jax.lax.dynamic_slice_in_dim(im, starts[k], batch_size, axis=0)
        if split is not None:
            x = jax.lax.with_sharding_constraint(x, split)
        r, lat, recon = methods.get(cfg.model).components(cfg, variables[k], to_float_np(x),
                                                          cfg.eval_batch_stats)
        out.append((r, lat, recon) if keep_recon else (r, lat))
    return tuple(out)


def device_images(images_u8: np.ndarray, batch_size: int, device=None):
    """A split's uint8 images on one device (or replicated over a local mesh's devices),
    zero-padded to a multiple of ``batch_size``."""
    n = len(images_u8)
    padded = _pad_first(images_u8, max(batch_size, -(-n // batch_size) * batch_size))
    if isinstance(device, jax.sharding.Mesh):
        return put_replicated(padded, device)
    return jax.device_put(padded, device)


def batch_split(mesh, batch_size: int):
    """The sharding that splits a scoring batch over ``mesh`` (None: one device, or a batch
    that does not divide, scored on one device)."""
    n = mesh.devices.size
    return NamedSharding(mesh, P(DATA_AXIS)) if n > 1 and batch_size % n == 0 else None


def score_runs(cfgs: Sequence, variables: Sequence, images: Sequence, counts: Sequence[int],
               batch_size: int, keep_recon: bool = False, mesh=None):
    """Per-image (R, L[, recon]) of each run's images (device arrays from device_images, with
    ``counts`` real images each), all runs in one program per batch, in image order; with a
    local ``mesh`` (variables and images replicated over it) each batch is split over it."""
    split = batch_split(mesh, batch_size) if mesh is not None else None
    cfgs = tuple(RunNeutral(c) for c in cfgs)  # runs differing only in seed/class: one program
    n_batches = max(-(-n // batch_size) for n in counts)
    parts = [[] for _ in cfgs]
    for b in range(n_batches):
        starts = np.array([min(b, max(0, -(-n // batch_size) - 1)) * batch_size
                           for n in counts], np.int32)
        res = jax.device_get(_score_runs_batch(tuple(variables), tuple(images), starts, cfgs,
                                               batch_size, keep_recon, split))
        for k, n in enumerate(counts):
            if b * batch_size < n:
                parts[k].append(res[k])
    out = []
    for k, n in enumerate(counts):
        cols = [np.concatenate([np.asarray(p[j]) for p in parts[k]])[:n]
                for j in range(3 if keep_recon else 2)]
        out.append(tuple(cols))
    return out


def local_copy(tree, device: Optional[object] = None):
    """A replicated (possibly multi-process) pytree as arrays on one local device."""
    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            a = a.addressable_data(0)
        return jax.device_put(a, device) if device is not None else a
    return jax.tree.map(one, tree)


def replicate(tree, mesh):
    """Host (or one-device) values as arrays replicated over the mesh, in every process."""
    sharding = NamedSharding(mesh, P())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), tree)


def shard_indices(tree, mesh):
    """Index arrays with the batch axis first, split over the mesh's data axis; each process
    supplies only its devices' share (jax.make_array_from_process_local_data)."""
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def one(a):
        a = np.asarray(a)
        per_proc = a.shape[0] // jax.process_count()
        lo = jax.process_index() * per_proc
        return jax.make_array_from_process_local_data(sharding, a[lo:lo + per_proc], a.shape)
    return jax.tree.map(one, tree)
