"""Which XLA:CPU settings decide the bits of a training run: the instruction-set limit, the
library (YNNPACK) fusions, Eigen's threads, the cores the process may use and the host devices.

Each setting runs in a fresh process (XLA_FLAGS, the CPU affinity and the device count are read
when JAX starts). The process trains SAGAN for ``--steps`` steps on one fixed random batch from
a fixed initialisation, then hashes the final TrainState (every parameter, BatchNorm statistic
and Adam moment); it also hashes the output of one convolution (64x16x16x128, 3x3, 128
filters), the operation XLA:CPU hands to its YNNPACK library by default. The table says, per
setting, whether each hash equals the default setting's, and the median step time against the
default's. Two runs with equal hashes computed the same bits; a setting that changes nothing on
this CPU may still matter on another (this script cannot run a second CPU model).

    python -m experiments.benchmarks.reproducibility                 # writes docs/benchmarks.md
    python -m experiments.benchmarks.reproducibility --ngf 16 --steps 1 --no-write   # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from experiments import common, machine

MODULE = "experiments.benchmarks.reproducibility"
NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="  # an empty list: no YNNPACK fusions

# (label, XLA_FLAGS, cores: "all" or "one", host devices: "auto" (one per core) or a count)
SETTINGS = (
    ("default (`--host_devices=auto`: one host device per core)", "", "all", "auto"),
    ("`--xla_cpu_max_isa=AVX2`", "--xla_cpu_max_isa=AVX2", "all", "auto"),
    ("`--xla_cpu_max_isa=AVX`", "--xla_cpu_max_isa=AVX", "all", "auto"),
    ("`--xla_cpu_max_isa=SSE4_2`", "--xla_cpu_max_isa=SSE4_2", "all", "auto"),
    ("`--xla_cpu_multi_thread_eigen=false`", "--xla_cpu_multi_thread_eigen=false", "all", "auto"),
    ("one host device, all cores", "", "all", "1"),
    ("one host device, one core (CPU affinity)", "", "one", "1"),
    (f"no YNNPACK fusions (`{NO_YNN}`)", NO_YNN, "all", "auto"),
    ("no YNNPACK fusions, `--xla_cpu_max_isa=AVX2`", f"{NO_YNN} --xla_cpu_max_isa=AVX2", "all",
     "auto"),
)


def child(args) -> dict:
    """One fresh process: train, hash, time; and one convolution's output hashed."""
    if args.cores == "one":
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = args.xla_flags
    from sagan_jax.devices import configure

    n_devices = configure(args.devices, args.batch)
    import jax
    import numpy as np

    from experiments.benchmarks.step_probe import digest, probe_step

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 16, 16, 128)).astype(np.float32)
    w = rng.standard_normal((3, 3, 128, 128)).astype(np.float32)
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    out = probe_step(args.ngf, args.kernels_per_layer, args.batch, args.steps, n_devices)
    return {**out, "conv": digest(conv(x, w)),
            "conv_ynn": "ynn" in conv.lower(x, w).compile().as_text(),
            "cores": len(os.sched_getaffinity(0))}


def run_setting(args, flags: str, cores: str, devices: str) -> dict:
    cmd = [sys.executable, "-m", MODULE, "--child", f"--xla_flags={flags}", "--cores", cores,
           "--devices", devices, "--ngf", str(args.ngf), "--batch", str(args.batch),
           "--kernels_per_layer", str(args.kernels_per_layer), "--steps", str(args.steps)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "SAGAN_JAX_HOST_DEVICES", "JAX_NUM_CPU_DEVICES")}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=common.ROOT, env=env)
    if out.returncode != 0:
        raise SystemExit(f"the setting {flags or 'default'!r} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(args, results) -> str:
    def same_as(i, key):
        rows = [str(j + 1) for j, r in enumerate(results) if j != i and r[key] == results[i][key]]
        return ", ".join(rows) or "none"

    lines = [f"SAGAN, ngf = ndf = {args.ngf}, kernels_per_layer {args.kernels_per_layer}, batch "
             f"{args.batch}, 32x32: {args.steps} timed steps after the first, on one fixed "
             "batch from one initialisation. Rows whose final TrainState (or convolution "
             "output) is bit-identical are listed under \"same bits as\"; the digests (first "
             "12 hex digits of a SHA-256 over every byte) compare rows across machines: the "
             "same digest in the same row of two machines' tables is the same bits.", "",
             "| # | setting | host devices, cores | final state: same bits as | state digest | "
             "one convolution: same bits as | convolution digest | convolution in YNNPACK | "
             "step s | speed vs row 1 |",
             "|---:|---|---|---|---|---|---|---|---:|---:|"]
    for i, ((label, *_), r) in enumerate(zip(SETTINGS, results)):
        lines.append(f"| {i + 1} | {label} | {r['devices']}, {r['cores']} | "
                     f"{same_as(i, 'state')} | `{r['state']}` | {same_as(i, 'conv')} | "
                     f"`{r['conv']}` | "
                     f"{'yes' if r['conv_ynn'] else 'no'} | {r['step_s']:.2f} | "
                     f"{results[0]['step_s'] / r['step_s']:.2f}x |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--kernels_per_layer", type=int, default=2)
    p.add_argument("--steps", type=common.positive_int, default=3)
    machine.add_output_arguments(p, common.BENCHMARKS_MD)
    machine.add_load_arguments(p)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--xla_flags", default="", help=argparse.SUPPRESS)
    p.add_argument("--cores", default="all", help=argparse.SUPPRESS)
    p.add_argument("--devices", default="auto", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    if len(os.sched_getaffinity(0)) < 2:
        common.fail("this study compares one core with several; run it where the process "
                    "may use at least 2 cores", MODULE)
    machine.wait_for_quiet(args.wait_quiet)
    monitor = machine.LoadMonitor()
    results = []
    for label, flags, cores, devices in SETTINGS:
        results.append(run_setting(args, flags, cores, devices))
        print(f"{label}: {results[-1]}", file=sys.stderr, flush=True)
    load = monitor.report()
    text = (f"`python -m {MODULE}` writes this table.\n\n{table(args, results)}\n\n"
            f"{machine.machine_header(load)}")
    machine.publish(args, "reproducibility", text, load, raw={"results": results})


if __name__ == "__main__":
    common.run_script(main)
