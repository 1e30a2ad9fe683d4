"""Per-layer timing of the exact DSC implementations (docs/design.md, section 11) on this machine.

For every depthwise-separable convolution of the SAGAN generator (ngf, isize, batch as
given), times forward + backward (gradients w.r.t. the input and all four kernels/biases)
of each ``DepthwiseSeparableConv`` impl, jitted, median over repeats after a warm-up, and
prints which impl is fastest per layer and what ``impl='auto'`` picks. The rule behind
'auto' (sagan_jax.models.layers.auto_dsc_impl) was derived from these numbers. Prints the
machine, versions and its load during the run (experiments/machine.py); writes no docs.

    python -m experiments.benchmarks.bench_dsc [--ngf 64] [--isize 32] [--batch 64] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from experiments import common, machine


def generator_dsc_shapes(ngf: int, isize: int):
    """(name, cin, cout, spatial) of every DSC in the SAGAN generator."""
    w = ngf
    out = [("inc.conv1", 3, w, isize), ("inc.conv2", w, w, isize)]
    widths = (w, 2 * w, 4 * w, 8 * w, 8 * w)
    s = isize
    for i in range(1, 5):
        s //= 2
        out += [(f"down{i}.conv1", widths[i - 1], widths[i], s), (f"down{i}.conv2", widths[i], widths[i], s)]
    ins, outs = (16 * w, 8 * w, 4 * w, 2 * w), (4 * w, 2 * w, w, w)
    for i in range(4):
        s *= 2
        out += [(f"up{i + 1}.conv1", ins[i], ins[i] // 2, s), (f"up{i + 1}.conv2", ins[i] // 2, outs[i], s)]
    return out


def time_impl(impl, cin, cout, s, batch, m, repeats):
    import jax
    import jax.numpy as jnp

    from sagan_jax.models.layers import DepthwiseSeparableConv

    layer = DepthwiseSeparableConv(cout, 3, m, impl)
    x = jax.random.normal(jax.random.key(0), (batch, s, s, cin), jnp.float32)
    params = layer.init(jax.random.key(1), x)
    r = jax.random.normal(jax.random.key(2), (batch, s, s, cout), jnp.float32)

    @jax.jit
    def fwd_bwd(params, x):
        return jax.grad(lambda p, x: jnp.sum(layer.apply(p, x) * r), argnums=(0, 1))(params, x)

    jax.block_until_ready(fwd_bwd(params, x))  # compile + warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fwd_bwd(params, x))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ngf", type=common.positive_int, default=64)
    ap.add_argument("--isize", type=int, default=32)
    ap.add_argument("--batch", type=common.positive_int, default=64)
    ap.add_argument("--kernels_per_layer", type=common.positive_int, default=2)
    ap.add_argument("--repeats", type=common.positive_int, default=3)
    ap.add_argument("--impls", default="shift,dense,repeat")
    ap.add_argument("--json", default="", help="also write the figures to this JSON file")
    machine.add_load_arguments(ap, writes_docs=False)
    args = ap.parse_args(argv)
    import jax

    from sagan_jax.models.layers import DSC_IMPLS, auto_dsc_impl

    impls = [i for i in args.impls.split(",") if i]
    unknown = [i for i in impls if i not in DSC_IMPLS or i == "auto"]
    if unknown or not impls:
        choices = ", ".join(i for i in DSC_IMPLS if i != "auto")
        ap.error(f"--impls={args.impls}: choose from {choices} (auto is always measured)")
    machine.wait_for_quiet(args.wait_quiet)
    monitor = machine.LoadMonitor()
    rows, totals = [], {i: 0.0 for i in impls + ["auto"]}
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, batch {args.batch}, "
          f"m {args.kernels_per_layer}; forward+backward ms per layer (median of {args.repeats})")
    print(f"{'layer':<10} {'cin':>5} {'cout':>5} {'HxW':>6} " + " ".join(f"{i:>8}" for i in impls)
          + "  fastest  auto")
    for name, cin, cout, s in generator_dsc_shapes(args.ngf, args.isize):
        t = {i: time_impl(i, cin, cout, s, args.batch, args.kernels_per_layer, args.repeats)
             for i in impls}
        auto = auto_dsc_impl(cin, args.kernels_per_layer, cout, s, s)
        for i in impls:
            totals[i] += t[i]
        t_auto = t[auto] if auto in t else time_impl(  # auto's pick, measured if not listed
            auto, cin, cout, s, args.batch, args.kernels_per_layer, args.repeats)
        totals["auto"] += t_auto
        best = min(t, key=t.get)
        rows.append(dict(layer=name, cin=cin, cout=cout, hw=s, ms={i: 1e3 * t[i] for i in impls},
                         fastest=best, auto=auto, auto_ms=1e3 * t_auto))
        print(f"{name:<10} {cin:>5} {cout:>5} {s:>3}x{s:<2} "
              + " ".join(f"{1e3 * t[i]:8.1f}" for i in impls) + f"  {best:<8} {auto}", flush=True)
    print("total ms  " + "  ".join(f"{k} {1e3 * v:.0f}" for k, v in totals.items()))
    load = monitor.report()
    print(machine.machine_header(load, packages=("jax", "jaxlib", "flax")))
    print(f"Command: `{common.command_line('experiments.benchmarks.bench_dsc')}`.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), rows=rows, load=load.to_dict(),
                           totals_ms={k: 1e3 * v for k, v in totals.items()}), f, indent=1)


if __name__ == "__main__":
    common.run_script(main)
