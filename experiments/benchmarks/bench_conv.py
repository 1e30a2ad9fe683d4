"""Plain 3x3 'same' convolution on XLA:CPU: lax.conv vs two exact reformulations.

The SAGAN ablation without DSCs is bound by dense 3x3 convolutions, where PyTorch's oneDNN beats
XLA:CPU (docs/benchmarks.md). This times forward + backward (gradient of sum(y^2) w.r.t. input
and kernel) at batch 64 for the generator's layer shapes, median of --repeats alternating
repeats after a warm-up, for
  conv      jax.lax.conv_general_dilated (what the models use)
  im2col    the 9 shifted views concatenated on channels, one (N*H*W, 9*Cin) x (9*Cin, Cout) matmul
  shifted   the sum of 9 shifted (N*H*W, Cin) x (Cin, Cout) matmuls
and the largest kernel-gradient difference from conv's, relative to its largest entry. Prints
the machine, versions and its load during the run (experiments/machine.py); writes no docs.

    python -m experiments.benchmarks.bench_conv [--repeats 3] [--batch 64]
"""
from __future__ import annotations

import argparse
import time

from experiments import common, machine

SHAPES = ((64, 64, 32), (128, 128, 16), (256, 256, 8), (512, 512, 4))


def conv(x, w):
    import jax

    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def views(x, k):
    import jax.numpy as jnp

    p, (h, w) = k // 2, x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    return [xp[:, i:i + h, j:j + w, :] for i in range(k) for j in range(k)]


def im2col(x, w):
    import jax.numpy as jnp

    return jnp.concatenate(views(x, w.shape[0]), axis=-1) @ w.reshape(-1, w.shape[-1])


def shifted(x, w):
    k = w.shape[0]
    return sum(v @ w[i // k, i % k] for i, v in enumerate(views(x, k)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=common.positive_int, default=3)
    ap.add_argument("--batch", type=common.positive_int, default=64)
    machine.add_load_arguments(ap, writes_docs=False)
    args = ap.parse_args(argv)
    import jax
    import jax.numpy as jnp
    import numpy as np

    machine.wait_for_quiet(args.wait_quiet)
    monitor = machine.LoadMonitor()
    print("| cin->cout | HxW | conv ms | im2col ms | shifted ms | im2col err | shifted err |")
    print("|---|---|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for cin, cout, hw in SHAPES:
        x = jnp.asarray(rng.standard_normal((args.batch, hw, hw, cin)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((3, 3, cin, cout)) * 0.05, jnp.float32)
        fns = {n: jax.jit(jax.grad(lambda x, w, f=f: jnp.sum(f(x, w) ** 2), argnums=(0, 1)))
               for n, f in (("conv", conv), ("im2col", im2col), ("shifted", shifted))}
        outs = {n: jax.block_until_ready(g(x, w)) for n, g in fns.items()}  # warm-up
        times = {n: [] for n in fns}
        for _ in range(args.repeats):
            for n, g in fns.items():
                t = time.perf_counter()
                jax.block_until_ready(g(x, w))
                times[n].append(1000 * (time.perf_counter() - t))
        ref = outs["conv"][1]
        err = {n: float(jnp.max(jnp.abs(outs[n][1] - ref)) / jnp.max(jnp.abs(ref))) for n in fns}
        med = {n: np.median(v) for n, v in times.items()}
        print(f"| {cin}->{cout} | {hw}x{hw} | {med['conv']:.0f} | {med['im2col']:.0f} | "
              f"{med['shifted']:.0f} | {err['im2col']:.1e} | {err['shifted']:.1e} |", flush=True)
    print()
    print(machine.machine_header(monitor.report(), packages=("jax", "jaxlib")))
    print(f"Command: `{common.command_line('experiments.benchmarks.bench_conv')}`.")


if __name__ == "__main__":
    common.run_script(main)
