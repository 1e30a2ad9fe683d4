"""JAX start-up time of a SAGAN training run: initialisation and the first training step's
compilation, with a cold and a warm persistent compilation cache.

Each measurement runs in a fresh subprocess (nothing cached in memory): first with an empty
compilation-cache folder (cold), then again with the folder the first one filled (warm), as
``--compilation_cache`` in sagan_jax/main.py does (entries of programs that took at least
1 s to compile). Per process it times

  - init: ``init_state`` (one jitted program: trace + compile or cache load + run);
  - init (op by op): ``init_state_eager``, the previous initialisation, with ``--eager_init``;
  - step trace+lower: tracing the training step into StableHLO (Python, never cached);
  - step compile: XLA compilation of the step (or its load from the cache);
  - step first run: the first execution of the compiled step;
  - peak resident memory (ru_maxrss) after initialisation, after the step's compilation and
    after the first step, which tells compilation's share of the peak from the buffers';
  - DSC autotune: ``resolve_dsc_impls`` with a fresh (cold) / the filled (warm) autotune cache,
    with ``--autotune`` (otherwise the fixed rule is used and this row is absent).

It prints a table; it writes no docs (the machine is shared: pass the figures to whoever
decides). The step is the data-parallel one the training loop compiles
(sagan_jax.training.step.make_train_step over a one-device mesh).

    python -m experiments.benchmarks.startup_time [--ngf 64] [--batch 64] [--kernels_per_layer 2]
        [--xla_flags "--xla_cpu_..."] [--eager_init] [--autotune] [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from experiments import common, machine

ROWS = (("init_s", "init (jitted init_state)"),
        ("init_eager_s", "init (op by op, previous)"),
        ("trace_lower_s", "step trace + lower"),
        ("compile_s", "step compile (XLA)"),
        ("first_run_s", "step first run"),
        ("total_s", "init + first step, total"),
        ("autotune_s", "DSC autotune (resolve_dsc_impls)"),
        ("rss_init_mb", "peak RSS after import and init, MB"),
        ("rss_compile_mb", "peak RSS after the step's compilation, MB"),
        ("rss_end_mb", "peak RSS after the first step, MB"))


def child(args) -> dict:
    """One fresh process: time the start-up phases and return them."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if not args.autotune:
        os.environ["SAGAN_JAX_DSC_AUTOTUNE"] = "0"
    else:
        os.environ["SAGAN_JAX_AUTOTUNE_CACHE"] = os.path.join(args.cache_dir, "autotune.json")
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    t0 = time.perf_counter()
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_compilation_cache_dir", os.path.join(args.cache_dir, "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", args.min_compile_time)

    from sagan_jax.config import Config
    from sagan_jax.methods import dsc_autotune
    from sagan_jax.training.state import init_state, init_state_eager, make_optimizers
    from sagan_jax.training.step import make_mesh, make_train_step

    out = {"import_s": time.perf_counter() - t0}
    cfg = Config(ngf=args.ngf, ndf=args.ngf, batch_size=args.batch,
                 kernels_per_layer=args.kernels_per_layer, dsc_impl=args.dsc_impl,
                 compute_dtype=args.compute_dtype)
    if args.autotune:
        t = time.perf_counter()
        mapping = dsc_autotune.resolve_dsc_impls(cfg, args.batch)
        out["autotune_s"] = time.perf_counter() - t
        out["dsc_impls"] = dict(mapping)
    g_tx, d_tx = make_optimizers(cfg, 100)
    key = jax.random.key(0)
    t_start = time.perf_counter()
    state = jax.block_until_ready(init_state(cfg, key, g_tx, d_tx))
    out["init_s"] = time.perf_counter() - t_start
    out["rss_init_mb"] = machine.peak_rss_mb()
    if args.eager_init:
        t = time.perf_counter()
        jax.block_until_ready(init_state_eager(cfg, key, g_tx, d_tx))
        out["init_eager_s"] = time.perf_counter() - t
    step = make_train_step(cfg, g_tx, d_tx, mesh=make_mesh(1))
    x = jax.random.uniform(jax.random.key(1), (args.batch, cfg.isize, cfg.isize, 3),
                           jnp.float32, -1, 1)
    rng = jax.random.key(2)
    t = time.perf_counter()
    lowered = step.lower(state, x, rng)
    out["trace_lower_s"] = time.perf_counter() - t
    t = time.perf_counter()
    compiled = lowered.compile()
    out["compile_s"] = time.perf_counter() - t
    out["rss_compile_mb"] = machine.peak_rss_mb()
    t = time.perf_counter()
    jax.block_until_ready(compiled(state, x, rng))
    out["first_run_s"] = time.perf_counter() - t
    out["rss_end_mb"] = machine.peak_rss_mb()
    out["total_s"] = out["init_s"] + out["trace_lower_s"] + out["compile_s"] + out["first_run_s"]
    out["hlo_ops"] = lowered.as_text().count("\n")
    return out


def run_child(args, cache_dir: str) -> dict:
    cmd = [sys.executable, "-m", "experiments.benchmarks.startup_time", "--child",
           "--cache_dir", cache_dir,
           "--ngf", str(args.ngf), "--batch", str(args.batch),
           "--kernels_per_layer", str(args.kernels_per_layer), "--dsc_impl", args.dsc_impl,
           "--compute_dtype", args.compute_dtype,
           "--min_compile_time", str(args.min_compile_time)]
    if args.xla_flags:
        cmd += ["--xla_flags=" + args.xla_flags]
    cmd += ["--eager_init"] if args.eager_init else []
    cmd += ["--autotune"] if args.autotune else []
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=common.ROOT)
    if res.returncode:
        sys.stderr.write(res.stderr[-4000:])
        raise SystemExit(f"child failed ({res.returncode}): {' '.join(cmd)}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ngf", type=common.positive_int, default=64, help="generator and discriminator width")
    ap.add_argument("--batch", type=common.positive_int, default=64)
    ap.add_argument("--kernels_per_layer", type=common.positive_int, default=2)
    ap.add_argument("--dsc_impl", default="auto")
    ap.add_argument("--compute_dtype", default="float32")
    ap.add_argument("--xla_flags", default="", help="extra XLA_FLAGS for the measured processes")
    ap.add_argument("--eager_init", action="store_true",
                    help="also time the previous op-by-op initialisation")
    ap.add_argument("--autotune", action="store_true",
                    help="autotune the DSC impls (cold: a fresh autotune cache) before the step")
    ap.add_argument("--repeats", type=common.positive_int, default=1, help="cold/warm pairs (medians)")
    ap.add_argument("--min_compile_time", type=float, default=1.0,
                    help="jax_persistent_cache_min_compile_time_secs (main.py: 1.0)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cache_dir", default="", help=argparse.SUPPRESS)
    machine.add_load_arguments(ap, writes_docs=False)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    from sagan_jax.config import Config

    Config(ngf=args.ngf, ndf=args.ngf, batch_size=args.batch,  # the child's flags, checked now
           kernels_per_layer=args.kernels_per_layer, dsc_impl=args.dsc_impl,
           compute_dtype=args.compute_dtype)
    machine.wait_for_quiet(args.wait_quiet)
    monitor = machine.LoadMonitor()
    cold, warm = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="sagan_jax_startup_") as d:
            cold.append(run_child(args, d))
            warm.append(run_child(args, d))
    load = monitor.report()
    print(f"SAGAN start-up, ngf = ndf = {args.ngf}, batch {args.batch}, kernels_per_layer "
          f"{args.kernels_per_layer}, dsc_impl {args.dsc_impl}"
          f"{' (autotuned)' if args.autotune else ' (fixed rule)'}, {args.compute_dtype}"
          f"{', XLA_FLAGS ' + args.xla_flags if args.xla_flags else ''}; seconds, "
          f"median of {args.repeats} fresh process(es) each.\n")
    print("| phase | cold cache | warm cache |\n|---|---:|---:|")
    for key, label in ROWS:
        if key in cold[0]:
            c = statistics.median(r[key] for r in cold)
            w = statistics.median(r[key] for r in warm)
            fmt = ".0f" if key.endswith("_mb") else ".1f"
            print(f"| {label} | {c:{fmt}} | {w:{fmt}} |")
    print(f"\nStableHLO of the step: {cold[0]['hlo_ops']} lines.")
    if "dsc_impls" in cold[0]:
        print("DSC impls:", ", ".join(f"{k}={v}" for k, v in cold[0]["dsc_impls"].items()))
    print("\n" + machine.machine_header(load))
    print("Command: `" + common.command_line("experiments.benchmarks.startup_time", argv) + "`")


if __name__ == "__main__":
    common.run_script(main)
