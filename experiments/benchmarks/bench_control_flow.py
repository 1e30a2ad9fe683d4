"""The SAGAN training step alone, inside ``lax.cond``, inside ``lax.scan``, and in the chunk
program the training loop runs (sagan_jax/training/program.py), on this backend.

XLA:CPU runs the step inside a conditional or a while loop about 25x slower than alone
(measured with this script: docs/benchmarks.md, "Control flow on XLA:CPU"); that is why the
chunk program writes its steps out one after another on CPU and selects instead of branching
(``program.loops_run_fast``). Each variant is jitted once, run once (compilation, reported),
then timed over ``--repeats`` calls; the per-step time is the median call divided by the steps
per call.

    python -m experiments.benchmarks.bench_control_flow                 # ngf 32, batch 32
    python -m experiments.benchmarks.bench_control_flow --ngf 64 --batch 64 --no-write
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time

from experiments import common, machine

MODULE = "experiments.benchmarks.bench_control_flow"


def step_config(ngf: int, batch: int, isize: int = 32, dsc_impl: str = "auto"):
    """The Config of the measured step; a bad size raises ConfigError here, before any wait."""
    from sagan_jax.config import Config

    return Config(ngf=ngf, ndf=ngf, isize=isize, batch_size=batch, progress=False,
                  dsc_impl=dsc_impl)


def step_functions(ngf: int, batch: int, isize: int = 32, dsc_impl: str = "auto",
                   scan_steps: int = 2):
    """(cfg, g_tx, d_tx, alone, in_cond, in_scan): the SAGAN training step on a fixed batch as a
    function of the state, alone, inside ``lax.cond`` and as ``scan_steps`` steps inside
    ``lax.scan`` (each returns (state, metrics); not jitted)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sagan_jax import methods
    from sagan_jax.methods import dsc_autotune
    from sagan_jax.training.state import make_optimizers

    cfg = step_config(ngf, batch, isize, dsc_impl)
    dsc_autotune.resolve_dsc_impls(cfg, batch)
    g_tx, d_tx = make_optimizers(cfg, steps_per_epoch=1000)
    step = functools.partial(methods.get(cfg.model).step, cfg=cfg, g_tx=g_tx, d_tx=d_tx)
    x = jnp.asarray(np.random.default_rng(0).uniform(
        -1, 1, (batch, isize, isize, 3)).astype(np.float32))
    key = jax.random.key(1)

    def alone(s):
        return step(s, x, key)

    def in_cond(s):
        shapes = jax.eval_shape(alone, s)[1]
        nothing = lambda s: (s, jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), shapes))  # noqa: E731
        return jax.lax.cond(s.step >= 0, alone, nothing, s)

    def in_scan(s):
        return jax.lax.scan(lambda c, t: alone(c), s, jnp.arange(scan_steps))

    return cfg, g_tx, d_tx, alone, in_cond, in_scan


def measure(args) -> list:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sagan_jax import seeds
    from sagan_jax.training import program as prog
    from sagan_jax.training.state import init_state

    cfg, g_tx, d_tx, alone, in_cond, in_scan = step_functions(
        args.ngf, args.batch, args.isize, args.dsc_impl, args.scan_steps)
    variants = [("alone", "step alone (jit)", jax.jit(alone), (), 1),
                ("cond", "step inside lax.cond", jax.jit(in_cond), (), 1),
                ("scan", f"{args.scan_steps} steps inside lax.scan", jax.jit(in_scan), (),
                 args.scan_steps)]
    # the training loop's own chunk program (one run, data on the device), as it is built here
    images = np.random.default_rng(0).integers(0, 256, (args.batch * 4, args.isize, args.isize, 3),
                                                         np.uint8)
    layout = prog.RunLayout([cfg], [(g_tx, d_tx)], [4], "unroll")
    program = prog.make_chunk_program(layout, None, donate=False)
    keys = [np.asarray(jax.random.key_data(seeds.step_base_key(0)))]
    idx, act, kd = prog.pack_chunk_inputs(
        layout, [np.arange(args.batch, dtype=np.int32)[:, None]], [np.ones(1, bool)], keys)
    ims = layout.pack([jnp.asarray(images)])
    rows = []
    variants.append(("chunk", "the loop's chunk program, 1 step "
                     f"({'lax.scan + lax.cond' if prog.loops_run_fast() else 'unrolled, select'})",
                     program, (ims, idx, act, kd), 1))
    for key_, name, f, extra, n in variants:
        if key_ not in args.variants:
            continue
        s = init_state(cfg, jax.random.key(0), g_tx, d_tx)
        if key_ == "chunk":
            s = layout.pack([s])
        t = time.perf_counter()
        compiled = f.lower(s, *extra).compile()  # ahead of time: its text says what XLA made
        s, m = compiled(s, *extra)
        jax.block_until_ready(m)
        first = time.perf_counter() - t
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            s, m = compiled(s, *extra)
            jax.block_until_ready(m)
            times.append((time.perf_counter() - t) / n)
        convs = conv_kinds(compiled.as_text())
        rows.append((name, first, statistics.median(times), convs))
        print(f"  {name}: first call {first:.1f} s, {rows[-1][2] * 1000:.0f} ms per step; "
              f"{convs[0]} of {convs[0] + convs[1]} convolutions left to XLA's own convolution "
              "thunk", flush=True)
    return rows


def conv_kinds(hlo_text: str) -> tuple:
    """(convolutions compiled as XLA's own convolution op, convolutions handed to a library:
    YNNPACK/XNNPACK fusions on XLA:CPU) in an optimised HLO module's text. Each convolution of
    the source is either one or, inside a library fusion, part of one (counted once per
    fusion: the fusion's body holds the convolution)."""
    import re

    plain = len(re.findall(r"^\s*(?:ROOT\s+)?%[\w.\-]+ = \S+ convolution\(", hlo_text, re.M))
    bodies = set(re.findall(r"kind=kCustom, calls=(%[\w.\-]+).*__[xy]nn_fusion", hlo_text))
    library = 0
    for name in bodies:  # library fusions whose body holds a convolution
        m = re.search(r"^" + re.escape(name) + r" [^\n]*\{\n(.*?)^\}", hlo_text, re.M | re.S)
        if m and " convolution(" in m.group(1):
            library += 1
    in_bodies = 0
    for name in bodies:
        m = re.search(r"^" + re.escape(name) + r" [^\n]*\{\n(.*?)^\}", hlo_text, re.M | re.S)
        if m:
            in_bodies += len(re.findall(r" convolution\(", m.group(1)))
    return plain - in_bodies, library


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ngf", type=common.positive_int, default=32)
    ap.add_argument("--batch", type=common.positive_int, default=32)
    ap.add_argument("--isize", type=int, default=32, help="image size (a multiple of 16)")
    ap.add_argument("--dsc_impl", default="auto", help="DSC impl (auto: autotuned per layer)")
    ap.add_argument("--variants", default="alone,cond,scan,chunk",
                    type=lambda v: [x for x in v.split(",") if x],
                    help="which of alone,cond,scan,chunk to run (alone first: the ratios' base)")
    ap.add_argument("--md", default="", help="also write the table to this file")
    ap.add_argument("--scan_steps", type=common.positive_int, default=2)
    ap.add_argument("--repeats", type=common.positive_int, default=3)
    machine.add_output_arguments(ap, common.BENCHMARKS_MD)
    machine.add_load_arguments(ap)
    args = ap.parse_args(argv)
    unknown = sorted(set(args.variants) - {"alone", "cond", "scan", "chunk"})
    if unknown or not args.variants or args.variants[0] != "alone":
        ap.error(f"--variants={','.join(args.variants)}: a comma list of alone,cond,scan,chunk "
                 "starting with alone (the base of the ratios)")
    step_config(args.ngf, args.batch, args.isize, args.dsc_impl)  # bad sizes: before waiting
    machine.wait_for_quiet(args.wait_quiet)
    monitor = machine.LoadMonitor()
    rows = measure(args)
    load = monitor.report()
    base = rows[0][2]
    import jax

    lines = [
        machine.machine_header(load, packages=("jax", "jaxlib", "flax")),
        "",
        f"SAGAN training step, {args.isize}x{args.isize}, batch {args.batch}, ngf = ndf = "
        f"{args.ngf}, dsc_impl {args.dsc_impl}{' (autotuned)' if args.dsc_impl == 'auto' else ''}"
        f"; JAX on {jax.default_backend()}; median of {args.repeats} calls after the first.",
        "",
        "| variant | first call s (compile + run) | ms per step | vs alone | convolutions left "
        "to XLA's own op / in library (YNNPACK) fusions |",
        "|---|---:|---:|---:|---:|",
    ] + [f"| {name} | {first:.1f} | {1000 * per:.0f} | {per / base:.2f}x | {c[0]} / {c[1]} |"
         for name, first, per, c in rows] + [
        "",
        f"Command: `{common.command_line(MODULE)}`.",
    ]
    if args.md:
        with open(args.md, "w") as f:
            f.write("\n".join(lines) + "\n")
    raw = {"rows": [{"variant": name, "first_call_s": first, "s_per_step": per,
                     "convolutions_xla_own": c[0], "convolutions_library": c[1]}
                    for name, first, per, c in rows]}
    machine.publish(args, "bench_control_flow", "\n".join(lines), load, raw)


if __name__ == "__main__":
    common.run_script(main)
