"""XLA:CPU's two operation orders for the SAGAN training step: the concurrency-optimised
scheduler (XLA's default) against the memory-minded one that the entry points choose
(``--xla_cpu_enable_concurrency_optimized_scheduler=false``, sagan_jax.devices.configure).

Each (size, schedule) pair runs in a fresh process with the default host devices (one per
core), in alternating order over ``--repeats`` rounds. Per process: the compiled step's
temporary arena per device (XLA's memory analysis), the process's peak resident memory, the
median step time, and a hash of the TrainState after the timed steps (both orders must compute
the same bits).

    python -m experiments.benchmarks.xla_schedule                  # writes docs/benchmarks.md
    python -m experiments.benchmarks.xla_schedule --sizes 32:2 --repeats 1 --no-write
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from experiments import common, machine

MODULE = "experiments.benchmarks.xla_schedule"
FLAG = "xla_cpu_enable_concurrency_optimized_scheduler"
SCHEDULES = (("concurrency-optimised (XLA's default)", "true"),
             ("memory-minded (the entry points' default)", "false"))


def child(args) -> dict:
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = f"--{FLAG}={args.concurrency}"
    from sagan_jax.devices import configure

    n = configure("auto", args.batch)
    from experiments.benchmarks.step_probe import probe_step

    return probe_step(args.ngf, args.kernels_per_layer, args.batch, args.steps, n)


def run_child(args, ngf: int, k: int, concurrency: str) -> dict:
    cmd = [sys.executable, "-m", MODULE, "--child", "--concurrency", concurrency,
           "--ngf", str(ngf), "--kernels_per_layer", str(k), "--batch", str(args.batch),
           "--steps", str(args.steps)]
    env = {key: v for key, v in os.environ.items()
           if key not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES", "SAGAN_JAX_HOST_DEVICES")}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=common.ROOT, env=env)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="64:2,64:1,32:2",
                   help="comma-separated NGF:KERNELS_PER_LAYER pairs")
    p.add_argument("--batch", type=common.positive_int, default=64)
    p.add_argument("--steps", type=common.positive_int, default=4)
    p.add_argument("--repeats", type=common.positive_int, default=2)
    machine.add_output_arguments(p, common.BENCHMARKS_MD)
    machine.add_load_arguments(p)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--concurrency", default="false", help=argparse.SUPPRESS)
    p.add_argument("--ngf", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--kernels_per_layer", type=int, default=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    try:
        sizes = [tuple(int(v) for v in s.split(":")) for s in args.sizes.split(",")]
        assert all(len(s) == 2 for s in sizes)
    except (ValueError, AssertionError):
        common.fail(f"--sizes={args.sizes!r}: give NGF:KERNELS_PER_LAYER pairs, e.g. 64:2,32:2",
                    MODULE)
    machine.wait_for_quiet(args.wait_quiet)
    monitor = machine.LoadMonitor()
    res = {(s, c): [] for s in sizes for _, c in SCHEDULES}
    for r in range(args.repeats):
        for s in sizes:
            order = SCHEDULES if r % 2 == 0 else SCHEDULES[::-1]
            for _, c in order:
                res[(s, c)].append(run_child(args, *s, c))
                print(f"{s} {c}: {res[(s, c)][-1]}", file=sys.stderr, flush=True)
    load = monitor.report()
    lines = [f"SAGAN training step, batch {args.batch}, 32x32, host devices: "
             f"{res[(sizes[0], 'false')][0]['devices']} (one per core); medians over "
             f"{args.repeats} fresh process(es) per cell, {args.steps} timed steps each.", "",
             "| ngf, kernels_per_layer | schedule | temporary arena per device, MiB | peak RSS, "
             "MB | step s | bits equal to the other schedule's |",
             "|---|---|---:|---:|---:|---|"]
    for s in sizes:
        hashes = {c: {r["state"] for r in res[(s, c)]} for _, c in SCHEDULES}
        same = "yes" if hashes["true"] == hashes["false"] and len(hashes["true"]) == 1 else "no"
        for label, c in SCHEDULES:
            rs = res[(s, c)]
            med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
            lines.append(f"| {s[0]}, {s[1]} | {label} | {med('arena_mib'):.0f} | "
                         f"{med('rss_mb'):.0f} | {med('step_s'):.2f} | {same} |")
    text = (f"`python -m {MODULE}` writes this table.\n\n" + "\n".join(lines) + "\n\n"
            + machine.machine_header(load))
    machine.publish(args, "xla_schedule", text, load, raw={
        "results": {f"{s[0]}:{s[1]}:{c}": v for (s, c), v in res.items()}})


if __name__ == "__main__":
    common.run_script(main)
