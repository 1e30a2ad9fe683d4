"""How each depthwise-separable convolution is computed under ``--dsc_impl=auto``.

Every ``DepthwiseSeparableConv`` form computes the same function with the same parameters
(sagan_jax.models.layers), but they round differently and their speed depends on the layer's
shape, the channel multiplier, the device count and the backend.

- Default: :func:`rule_mapping`, a fixed table (``dsc_table.json`` beside this file, measured
  on a quiet machine by experiments/dsc_table.py and shown in docs/benchmarks.md), keyed by
  backend, device count and layer shape, else the shape rule
  :func:`sagan_jax.models.layers.auto_dsc_impl`. Nothing is timed, so the same flags give
  the same program and the same numbers on every run.
- Opt-in (``--dsc_autotune``): :func:`resolve_dsc_impls` times the candidate forms of each
  layer shape on this machine (compiled ahead, a warm-up, alternating rounds, medians) and
  caches the winners on disk (``~/.cache/sagan_jax/dsc_autotune.json`` or
  ``$SAGAN_JAX_AUTOTUNE_CACHE``). Timings under load can pick other forms.
- Either way the chosen forms are written to metrics.json and the checkpoint; a resumed run
  keeps them (sagan_jax.training.loop.resolve_dsc_forms) and scoring uses them (:func:`pin`).

On CPU the candidates are 'shift', 'shift_vjp' and 'dense': XLA:CPU's grouped convolution
('xla', 'repeat') is many times slower there (docs/benchmarks.md). Other backends use 'xla'
until measured (``candidates=`` times any set).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import json
import logging
import math
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from sagan_jax import methods
from sagan_jax.devices import put_batch, put_replicated
from sagan_jax.models.layers import DepthwiseSeparableConv, auto_dsc_impl

log = logging.getLogger(__name__)

CACHE_ENV = "SAGAN_JAX_AUTOTUNE_CACHE"
ENABLE_ENV = "SAGAN_JAX_DSC_AUTOTUNE"
DEFAULT_CACHE = os.path.join("~", ".cache", "sagan_jax", "dsc_autotune.json")
# The fixed table 'auto' uses by default: per backend, device count and layer shape, the form
# that was fastest in quiet measurements (experiments/dsc_table.py writes it;
# docs/benchmarks.md shows it).
TABLE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dsc_table.json")
CACHE_FILE_NAME = "dsc_autotune.json"
# Bump when the candidate set or the timing method changes: old entries are then ignored.
TUNE_VERSION = 1
AUTOTUNE_BACKENDS = ("cpu",)
PRUNE_FACTOR = 4.0     # drop candidates whose warm-up run is this many times the fastest's
REPS = 3               # timed rounds per surviving candidate (median)
MIN_SAMPLE_S = 0.01    # a sample of a fast candidate is the median of calls filling this long
MAX_INNER = 20

Mapping = Tuple[Tuple[str, str], ...]
Timer = Callable[..., Dict[str, float]]


@dataclasses.dataclass(frozen=True)
class DSCLayer:
    """One depthwise-separable convolution of a network: its name ('inc.conv1', 'up4.conv2')
    and input/output shape (per example)."""
    name: str
    h: int
    w: int
    cin: int
    cout: int
    m: int
    input_grad: bool = True  # False for a layer fed by the data (no input gradient in training)


# ---- the layers of a model ------------------------------------------------------------------
def dsc_layers(cfg) -> Tuple[DSCLayer, ...]:
    """Every DepthwiseSeparableConv of ``cfg.model``'s generator, in call order, from an
    abstract trace of its initialisation (no compilation, no FLOPs)."""
    import flax.linen as nn


    if not getattr(cfg, "use_dsc", False):
        return ()
    g, _ = methods.get(cfg.model).build(cfg.replace(dsc_impl="dense"))
    found = []

    def interceptor(next_fun, args, kwargs, context):
        mod = context.module
        if isinstance(mod, DepthwiseSeparableConv) and context.method_name == "__call__":
            _, h, w, cin = args[0].shape
            found.append(DSCLayer(".".join(mod.path), h, w, cin, mod.features,
                                  mod.kernels_per_layer, input_grad=bool(found)))
        return next_fun(*args, **kwargs)

    x = jax.ShapeDtypeStruct((1, cfg.isize, cfg.isize, 3), jnp.float32)
    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda x: g.init(jax.random.key(0), x, train=False), x)
    return tuple(found)


def per_device_batch(cfg) -> int:
    """The training batch one device sees: --batch_size split over the local devices used."""
    n = cfg.num_devices or jax.local_device_count()
    return max(1, cfg.batch_size // max(1, n))


def candidates_for(backend: str, m: int) -> Tuple[str, ...]:
    """The impls timed for a layer with channel multiplier ``m`` on ``backend`` (the module
    docstring says why some are left out on CPU)."""
    if backend == "cpu":
        return ("shift", "shift_vjp", "dense")
    return ("xla", "repeat", "shift", "shift_vjp", "dense") if m > 1 else (
        "xla", "shift", "shift_vjp", "dense")


def compute_dtype_of(cfg) -> str:
    return jnp.dtype(getattr(cfg, "compute_dtype", "float32")).name


def autotune_enabled(cfg) -> bool:
    env = os.environ.get(ENABLE_ENV, "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    return bool(getattr(cfg, "dsc_autotune", False))


# ---- the cache file ---------------------------------------------------------------------------
def cache_path(path: Optional[str] = None) -> str:
    """The JSON cache file: ``path``, else $SAGAN_JAX_AUTOTUNE_CACHE, else the default; a
    folder means <folder>/dsc_autotune.json."""
    p = os.path.expanduser(path or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    if os.path.isdir(p) or p.endswith(os.sep):
        p = os.path.join(p, CACHE_FILE_NAME)
    return p


def layer_key(layer: DSCLayer, batch: int, dtype: str, backend: str,
              device_kind: Optional[str] = None) -> str:
    """The cache key of one layer shape: everything the timing depends on."""
    if device_kind is None:
        device_kind = jax.devices(backend)[0].device_kind
    return (f"v{TUNE_VERSION}|{backend}|{device_kind}|jax{jax.__version__}|{dtype}|b{batch}|"
            f"{layer.h}x{layer.w}|{layer.cin}->{layer.cout}|m{layer.m}|"
            f"{'dx' if layer.input_grad else 'nodx'}")


def load_cache(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        entries = data.get("entries", {}) if isinstance(data, dict) else {}
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        return {}


def save_entries(path: str, new: dict) -> None:
    """Merge ``new`` into the file (re-read first, so concurrent runs lose at most their own
    entries) and replace it atomically."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    entries = load_cache(path)
    entries.update(new)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".dsc_autotune.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"version": TUNE_VERSION, "entries": entries}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---- timing ---------------------------------------------------------------------------------
def time_candidates(layer: DSCLayer, batch: int, dtype: str, candidates: Sequence[str],
                    reps: int = REPS, mesh=None) -> Dict[str, float]:
    """Seconds per forward + backward call of each candidate impl on ``layer`` at ``batch``:
    compiled ahead of time, one warm-up call each, candidates slower than PRUNE_FACTOR x the
    fastest warm-up dropped (their warm-up time is reported), the rest timed in ``reps``
    alternating rounds (rotating order) and reported as medians. Runs eagerly even when
    called while a function is being traced."""
    with jax.ensure_compile_time_eval():
        return _time_candidates(layer, batch, dtype, candidates, reps, mesh)


def _time_candidates(layer, batch, dtype, candidates, reps, mesh=None):
    dt = jnp.dtype(dtype)
    kx, kp, kr = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (batch, layer.h, layer.w, layer.cin), jnp.float32).astype(dt)
    r = jax.random.normal(kr, (batch, layer.h, layer.w, layer.cout), jnp.float32)
    if mesh is not None:  # ``batch`` split over the mesh's devices, as a training step does
        x, r = put_batch(x, mesh), put_batch(r, mesh)
    argnums = (0, 1) if layer.input_grad else 0

    def build(impl):
        mod = DepthwiseSeparableConv(layer.cout, 3, layer.m, impl, dtype=dt)
        params = mod.init(kp, x)
        if mesh is not None:
            params = put_replicated(params, mesh)

        def loss(p, x):
            return jnp.sum(mod.apply(p, x).astype(jnp.float32) * r)

        return jax.jit(jax.grad(loss, argnums=argnums)).lower(params, x), params

    # Trace here, compile the candidates concurrently (XLA compiles outside the GIL).
    t0 = time.perf_counter()
    lowered = {impl: build(impl) for impl in candidates}
    with concurrent.futures.ThreadPoolExecutor(max(1, min(len(candidates),
                                                         os.cpu_count() or 1))) as pool:
        futures = {impl: pool.submit(low.compile) for impl, (low, _) in lowered.items()}
        compiled = {impl: (f.result(), lowered[impl][1]) for impl, f in futures.items()}
    t_compiled = time.perf_counter()

    def call(impl):
        c, p = compiled[impl]
        t0 = time.perf_counter()
        jax.block_until_ready(c(p, x))
        return time.perf_counter() - t0

    # Warm-up: two calls each (the first allocates); the second decides the pruning.
    warm = {}
    for impl in candidates:
        call(impl)
        warm[impl] = call(impl)
    best = min(warm.values())
    alive = [i for i in candidates if warm[i] <= PRUNE_FACTOR * best]
    # A sample is the median of `inner` calls (enough calls for ~MIN_SAMPLE_S), so one
    # descheduled call does not decide it; rounds alternate the candidates, rotating the order.
    inner = max(1, min(MAX_INNER, math.ceil(MIN_SAMPLE_S / max(best, 1e-9))))
    samples = {i: [] for i in alive}
    for rnd in range(reps):
        k = rnd % len(alive)
        for impl in alive[k:] + alive[:k]:
            samples[impl].append(statistics.median(call(impl) for _ in range(inner)))
    out = dict(warm)
    out.update({i: statistics.median(s) for i, s in samples.items()})
    log.debug("dsc autotune: %s: trace + compile %.1f s, timing %.1f s", layer.name,
              t_compiled - t0, time.perf_counter() - t_compiled)
    return out


# ---- resolving a model's mapping ------------------------------------------------------------
_MEMO: Dict[tuple, Mapping] = {}


def _arch_key(cfg, backend: str) -> tuple:
    return (cfg.model, cfg.isize, cfg.ngf, cfg.use_dsc, cfg.use_cbam, cfg.kernels_per_layer,
            cfg.pool_after_cbam, cfg.dsc_impl, autotune_enabled(cfg), compute_dtype_of(cfg),
            backend, devices_of(cfg))


def clear_memo() -> None:
    """Forget this process's resolved mappings (the cache file is untouched)."""
    _MEMO.clear()


def table_key(layer: DSCLayer, backend: str, devices: int) -> str:
    """The key of one layer shape in the fixed table (TABLE_FILE)."""
    return (f"{backend}|d{devices}|{layer.h}x{layer.w}|{layer.cin}->{layer.cout}|m{layer.m}|"
            f"{'dx' if layer.input_grad else 'nodx'}")


_TABLE: Optional[Dict[str, str]] = None


def fixed_table() -> Dict[str, str]:
    """{table_key: impl} from TABLE_FILE, shipped with the package (read once)."""
    global _TABLE
    if _TABLE is None:
        with open(TABLE_FILE) as f:
            _TABLE = {k: e["impl"] for k, e in json.load(f)["entries"].items()}
    return _TABLE


def rule_mapping(layers: Sequence[DSCLayer], backend: str, devices: int = 1) -> Mapping:
    """The deterministic choice per layer: the fixed table's measured winner for this backend,
    device count and shape, else the shape rule :func:`auto_dsc_impl`. Never times anything,
    so the same flags give the same compiled program, and the same numbers, on every run."""
    table = fixed_table()
    return tuple((l.name, table.get(table_key(l, backend, devices))
                  or auto_dsc_impl(l.cin, l.m, l.cout, l.h, l.w, backend)) for l in layers)


def devices_of(cfg) -> int:
    """The devices one training batch is split over (--num_devices, else all local ones)."""
    return cfg.num_devices or jax.local_device_count()


def pin(cfg, mapping: Mapping) -> None:
    """Make ``mapping`` the one every later build of ``cfg``'s architecture in this process
    uses (a resumed run keeps the forms it was trained with)."""
    _MEMO[_arch_key(cfg, jax.default_backend())] = tuple(tuple(p) for p in mapping)


def resolve_dsc_impls(cfg, batch: Optional[int] = None, *, timer: Optional[Timer] = None,
                      path: Optional[str] = None, candidates: Optional[Sequence[str]] = None,
                      reps: int = REPS) -> Mapping:
    """((layer, impl), ...) for every DSC of ``cfg.model``'s generator; pass it to the
    generator as ``dsc_impls`` (sagan_jax.methods.sagan.build does so via :func:`impls_for`).

    --dsc_impl other than 'auto': that impl everywhere. 'auto' on a backend that is not
    autotuned, or with --dsc_autotune=false / $SAGAN_JAX_DSC_AUTOTUNE=0: the fixed rule
    (:func:`auto_dsc_impl`). Else the cached or freshly measured fastest impl per layer shape
    at ``batch`` (default: the per-device training batch). ``timer(layer, batch, dtype,
    candidates, reps=...) -> {impl: seconds}`` replaces the measurement (tests); ``path``
    the cache file; ``candidates`` the impls timed. The result is remembered for this
    process, so later builds of the same architecture use it."""
    backend = jax.default_backend()
    layers = dsc_layers(cfg)
    if not layers:
        mapping: Mapping = ()
    elif cfg.dsc_impl != "auto":
        mapping = tuple((l.name, cfg.dsc_impl) for l in layers)
    elif not autotune_enabled(cfg) or (backend not in AUTOTUNE_BACKENDS and candidates is None):
        mapping = rule_mapping(layers, backend, devices_of(cfg))
    else:
        with jax.ensure_compile_time_eval():
            mapping = _autotune(layers, batch or per_device_batch(cfg), compute_dtype_of(cfg),
                                backend, timer or time_candidates, cache_path(path),
                                candidates, reps)
    _MEMO[_arch_key(cfg, backend)] = mapping
    return mapping


def _autotune(layers, batch, dtype, backend, timer, path, candidates, reps) -> Mapping:
    entries = load_cache(path)
    device_kind = jax.devices(backend)[0].device_kind
    chosen: Dict[str, str] = {}
    t_start, n_timed = time.perf_counter(), 0
    for layer in layers:
        key = layer_key(layer, batch, dtype, backend, device_kind)
        cands = tuple(candidates or candidates_for(backend, layer.m))
        entry = entries.get(key)
        if key not in chosen and not (entry and entry.get("impl") in cands):
            times = timer(layer, batch, dtype, cands, reps=reps)
            impl = min(times, key=times.get)
            entry = {"impl": impl, "ms": {i: round(1e3 * t, 3) for i, t in times.items()},
                     "when": datetime.datetime.now(datetime.timezone.utc).isoformat(
                         timespec="seconds")}
            entries[key] = entry
            save_entries(path, {key: entry})
            n_timed += 1
            log.info("dsc autotune: %s (%dx%d, %d->%d, m=%d, batch %d, %s): %s  %s",
                     layer.name, layer.h, layer.w, layer.cin, layer.cout, layer.m, batch, dtype,
                     impl, " ".join(f"{i}={ms:.1f}ms" for i, ms in entry["ms"].items()))
        chosen[key] = entry["impl"]
    if n_timed:
        log.info("dsc autotune: timed %d layer shape(s) in %.1f s; choices cached in %s",
                 n_timed, time.perf_counter() - t_start, path)
    return tuple((l.name, chosen[layer_key(l, batch, dtype, backend, device_kind)])
                 for l in layers)


def impls_for(cfg) -> Mapping:
    """The per-layer mapping model building uses, without timing anything: this process's
    last :func:`resolve_dsc_impls` for the architecture, else the cached choices for the
    default per-device batch when the cache holds every layer, else () (the layers then apply
    ``cfg.dsc_impl`` themselves, 'auto' = the fixed rule)."""
    if cfg.dsc_impl != "auto" or not cfg.use_dsc:
        return ()
    backend = jax.default_backend()
    key = _arch_key(cfg, backend)
    if key in _MEMO:
        return _MEMO[key]
    mapping: Mapping = ()
    if not autotune_enabled(cfg):
        mapping = rule_mapping(dsc_layers(cfg), backend, devices_of(cfg))
    elif backend in AUTOTUNE_BACKENDS:
        path = cache_path()
        if os.path.exists(path):
            entries = load_cache(path)
            layers = dsc_layers(cfg)
            batch, dtype = per_device_batch(cfg), compute_dtype_of(cfg)
            kind = jax.devices(backend)[0].device_kind
            got = [entries.get(layer_key(l, batch, dtype, backend, kind)) for l in layers]
            if layers and all(e and "impl" in e for e in got):
                mapping = tuple((l.name, e["impl"]) for l, e in zip(layers, got))
    _MEMO[key] = mapping
    return mapping
