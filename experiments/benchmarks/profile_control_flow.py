"""Which XLA:CPU thunks take the time when the SAGAN training step runs alone and inside
``lax.cond`` (docs/benchmarks.md, "Control flow on XLA:CPU"): one profiled call of each after a
warm-up call, with ``jax.profiler`` (a Perfetto trace), and the slowest thunks by HLO op name.
The op names say which thunks are YNNPACK fusions (``ynn_fusion.N``) and which are XLA's own
convolutions (``conv_general_dilated.N``, ``convolution.N``). Prints; writes no docs.

    python -m experiments.benchmarks.profile_control_flow [--ngf 32] [--batch 32] [--top 8]
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import tempfile
import time

from experiments import common, machine


def profile(args, variant: str) -> tuple:
    import jax

    from experiments.benchmarks.bench_control_flow import step_functions
    from sagan_jax.training.state import init_state

    cfg, g_tx, d_tx, alone, in_cond, _ = step_functions(args.ngf, args.batch)
    f = jax.jit(alone if variant == "alone" else in_cond)
    s = init_state(cfg, jax.random.key(0), g_tx, d_tx)
    s, m = f(s)
    jax.block_until_ready(m)
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d, create_perfetto_trace=True)
        t = time.perf_counter()
        s, m = f(s)
        jax.block_until_ready(m)
        wall = time.perf_counter() - t
        jax.profiler.stop_trace()
        path = glob.glob(os.path.join(d, "**", "perfetto_trace.json.gz"), recursive=True)[0]
        with gzip.open(path) as fh:
            trace = json.load(fh)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    per_op = collections.Counter()
    for e in events:
        a = e.get("args") or {}
        if e.get("ph") == "X" and "hlo_op" in a:
            per_op[a["hlo_op"]] += e["dur"] / 1000.0
    return wall, per_op


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ngf", type=common.positive_int, default=32)
    ap.add_argument("--batch", type=common.positive_int, default=32)
    ap.add_argument("--top", type=common.positive_int, default=8, help="slowest thunks shown per variant")
    machine.add_load_arguments(ap, writes_docs=False)
    args = ap.parse_args(argv)
    from experiments.benchmarks.bench_control_flow import step_config

    step_config(args.ngf, args.batch)  # bad sizes: before waiting
    machine.wait_for_quiet(args.wait_quiet)
    monitor = machine.LoadMonitor()
    out = []
    for variant in ("alone", "cond"):
        wall, per_op = profile(args, variant)
        kinds = collections.Counter()
        for op, ms in per_op.items():
            kinds["YNNPACK fusions" if op.startswith("ynn_fusion") else
                  "XLA convolutions" if op.startswith(("conv_general_dilated", "convolution"))
                  else "other thunks"] += ms
        out.append(f"**step {'alone' if variant == 'alone' else 'inside lax.cond'}**: one call "
                   f"{1000 * wall:.0f} ms; thunk time by kind: "
                   + ", ".join(f"{k} {v:.0f} ms" for k, v in kinds.most_common()))
        out.append("")
        out.append("| thunk (HLO op) | ms |\n|---|---:|")
        out += [f"| {op} | {ms:.1f} |" for op, ms in per_op.most_common(args.top)]
        out.append("")
    print(f"SAGAN training step, 32x32, batch {args.batch}, ngf = ndf = {args.ngf}, dsc_impl auto; "
          "one profiled call per variant after a warm-up call; summed thunk durations "
          "(concurrent thunks overlap).\n")
    print("\n".join(out))
    print(machine.machine_header(monitor.report(), packages=("jax", "jaxlib")))
    print("Command: `" + common.command_line("experiments.benchmarks.profile_control_flow", argv)
          + "`")


if __name__ == "__main__":
    common.run_script(main)
