"""Runs trained together (the run axis, sagan_jax/training/program.py) against the same runs as
separate processes, and the training step with and without lax.scan.

For each K in --ks, on the same machine in one invocation, alternating:
  - one program: one ``python -m sagan_jax.main --seeds=0,...,K-1`` process (all K runs in
    one jitted program, --run_axis_impl=--impl);
  - K processes: K ``python -m sagan_jax.main --seed=i`` processes started together
    (concurrent; ``--separate=sequential`` runs them one after another instead).
Then, at the first K, the same one-program run with ``--steps_per_chunk=1`` (one jitted call
per step, no lax.scan) against ``--steps_per_chunk=--chunk`` (lax.scan over the chunk on
accelerators; on CPU the chunk's steps are unrolled, since XLA:CPU runs a step inside a loop
25x slower: experiments/benchmarks/bench_control_flow.py).

Every process trains a fixed budget: ``--steps`` steps per epoch (``--max_train_images =
steps x batch``), one warm-up epoch (compilation) and ``--epochs`` timed epochs, test set
scored only after the last (--eval_every=0), no plots or TensorBoard, --noprogress, few
precise-BN batches. Read back from each run's metrics.json (WORKDIR/metrics.json for one run,
WORKDIR/runs/<class>_seed<s>/metrics.json for several):
  - training img/s per run: the timed epochs' ``train_img_per_s`` (median); all runs: the
    program's ``train_img_per_s_all_runs``, or for K processes the sum of theirs (they
    overlap in time when started together);
  - scoring img/s: each process times the loop's scoring calls (``Trainer._score``, wrapped
    by this script's child mode; calls of a shape scored before, so no compilation): the
    calibration images scored after every epoch;
  - time to the first step (compilation included), the process's wall time, peak host and
    device memory (metrics.json), and the wall time of the whole job (start of the first
    process to the end of the last).
All processes share one persistent compilation cache (in --workdir), filled by a warm-up
process before the timed ones, so K processes do not each pay for compiling the one-run
program; the one-program runs at K > 1 compile their own programs (shown as first step).
Processes get ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so that K of them share one GPU.

The machine's load is recorded (experiments/machine.py); figures go to section bench_runs of
docs/benchmarks.md only from a quiet machine, a loaded machine's only with --allow_loaded (to
section bench_runs_loaded). Raw figures: WORKDIR/bench_runs.json (rewritten after each
measurement, so a run stopped part-way leaves what it measured).

    python -m experiments.benchmarks.bench_runs --ks 1,2,4,8,10 --impl vmap            # GPU
    python -m experiments.benchmarks.bench_runs --ks 1,2 --ngf 16 --isize 16 --batch_size 16 \\
        --steps 4 --epochs 1 --no-write                                      # smoke
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from experiments import common, machine
from experiments.benchmarks.bench_runs_measure import (CHILD, TORCH_CHILD, ProcessFailed,
                                                       base_flags, child_main, measure_separate,
                                                       measure_together, measure_torch, plan,
                                                       torch_child_main)
from experiments.benchmarks.bench_runs_report import aggregate, markdown


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", type=common.int_list, default=[1, 2, 4, 8, 10], help="runs trained together")
    ap.add_argument("--separate_ks", type=common.int_list, default=None,
                    help="the Ks also run as K separate processes (default: all of --ks)")
    ap.add_argument("--separate", choices=("concurrent", "sequential"), default="concurrent")
    ap.add_argument("--impl", default="auto", choices=("auto", "vmap", "unroll"),
                    help="--run_axis_impl of every run")
    ap.add_argument("--ngf", type=common.positive_int, default=64)
    ap.add_argument("--ndf", type=int, default=0, help="default: --ngf")
    ap.add_argument("--isize", type=int, default=32)
    ap.add_argument("--batch_size", type=common.positive_int, default=64)
    ap.add_argument("--steps", type=common.positive_int, default=20,
                    help="training steps per epoch and run (--max_train_images = steps x batch; "
                         "the digits hold about 1,300 normal training images)")
    ap.add_argument("--epochs", type=common.positive_int, default=2, help="timed epochs after the warm-up epoch")
    ap.add_argument("--chunk", type=int, default=0,
                    help="--steps_per_chunk (0 = auto: 1 on CPU, a lax.scan of 10 elsewhere; on "
                         "CPU N > 1 unrolls N steps per call)")
    ap.add_argument("--no-scan", dest="scan", action="store_false",
                    help="skip the --steps_per_chunk=1 comparison")
    ap.add_argument("--recal_batches", type=int, default=2, help="--bn_recalibration_batches")
    ap.add_argument("--repeats", type=common.positive_int, default=1)
    ap.add_argument("--order", choices=("pairs", "curve"), default="pairs",
                    help="pairs: per K, one program and K processes alternately; curve: every "
                         "K's one program first (see --budget_s)")
    ap.add_argument("--torch", default="",
                    help="also train the same K runs with the PyTorch reference in these "
                         "arrangements, PROCESSESxTHREADS, comma-separated, e.g. 1x2,2x1 "
                         "(the run axis against PyTorch's best arrangement)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the warm-up process that fills the compilation cache")
    ap.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                    help="any sagan_jax flag for every run (repeatable), e.g. dataset=image_folder")
    ap.add_argument("--workdir", default="workdirs/bench_runs")
    ap.add_argument("--json", default="", help="raw figures (default WORKDIR/bench_runs.json)")
    ap.add_argument("--md", default="", help="also write the Markdown section to this file")
    ap.add_argument("--proc_timeout_s", type=float, default=1800.0,
                    help="a process (or K concurrent ones) running longer is killed")
    ap.add_argument("--budget_s", type=float, default=0.0,
                    help="start no new measurement after this many seconds (0 = no limit)")
    ap.add_argument("--no-write", dest="write", action="store_false",
                    help="print the table only (default: also write docs/benchmarks.md)")
    ap.add_argument("--doc", default=common.BENCHMARKS_MD)
    machine.add_load_arguments(ap)
    args = ap.parse_args(argv)
    if args.separate_ks is None:
        args.separate_ks = list(args.ks)
    args.torch = [a for a in args.torch.split(",") if a]
    for a in args.torch:
        parts = a.split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            ap.error(f"--torch: {a!r} is not PROCESSESxTHREADS (e.g. 1x2,2x1)")
    if not args.ks or min(args.ks) < 1:
        ap.error("--ks must list positive numbers of runs")
    if any(k not in args.ks for k in args.separate_ks):
        ap.error(f"--separate_ks={','.join(map(str, args.separate_ks))}: each must be one of "
                 f"--ks={','.join(map(str, args.ks))} (K processes are measured beside K runs "
                 "in one program)")
    if not args.proc_timeout_s > 0 or args.budget_s < 0:
        ap.error("--proc_timeout_s must be > 0 and --budget_s >= 0 (0 = no limit)")
    args.workdir = os.path.abspath(args.workdir)
    args.json = args.json or os.path.join(args.workdir, "bench_runs.json")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD]:
        return child_main(argv[1], argv[2:])
    if argv[:1] == [TORCH_CHILD]:
        return torch_child_main(argv[1], int(argv[2]), [int(v) for v in argv[3].split(",")],
                                argv[4:])
    args = parse_args(argv)
    try:  # the runs' flags, checked once before any process starts
        cfg = common.config_from_flagfiles(args=base_flags(args) + ["--workdir=" + args.workdir])
    except common.FlagError as e:
        common.fail(str(e), prog="bench_runs")
    args.cls = cfg.abnormal_class  # the runs' names: runs/<class>_seed<s>
    flags = base_flags(args)
    os.makedirs(args.workdir, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", XLA_PYTHON_CLIENT_PREALLOCATE="false",
               JAX_COMPILATION_CACHE_DIR=os.path.join(args.workdir, "xla_cache"),
               PYTHONUNBUFFERED="1")
    shutil.rmtree(env["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

    machine.wait_for_quiet(args.wait_quiet)
    monitor = machine.LoadMonitor()
    t_start = time.monotonic()
    samples, skipped, warmup = {}, [], None

    def save():
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items()}, "warmup": warmup,
                       "samples": samples, "results": aggregate(samples), "skipped": skipped},
                      f, indent=1, default=str)

    if args.warmup:
        print("warm-up: one run (fills the compilation cache)", flush=True)
        try:
            warmup = measure_together(args, args.ks[0], flags, env, args.workdir, "warmup")
        except ProcessFailed as e:
            warmup = {"error": str(e)}
            print(f"warm-up failed: {e}", file=sys.stderr, flush=True)
    for what, k in plan(args):
        if args.budget_s and time.monotonic() - t_start > args.budget_s:
            skipped.append((what, k))
            continue
        print(f"{what} K={k} ...", flush=True)
        try:
            if what == "separate":
                r = measure_separate(args, k, flags, env, args.workdir, "separate")
            elif what.startswith("torch_"):
                r = measure_torch(args, k, what[len("torch_"):], flags, env, args.workdir)
            else:
                r = measure_together(args, k, flags, env, args.workdir, what,
                                     chunk=1 if what == "no_scan" else None)
            print(f"  train {r['train_img_per_s_per_run']:.1f} img/s per run, "
                  f"{r['train_img_per_s_all_runs']:.1f} all runs; job {r['job_wall_s']:.0f} s",
                  flush=True)
        except (ProcessFailed, OSError, KeyError, ValueError, IndexError) as e:
            r = {"error": f"{type(e).__name__}: {e}"}
            print(f"  failed: {r['error']}", file=sys.stderr, flush=True)
        samples.setdefault(f"{what}_k{k}", []).append(r)
        save()
    load = monitor.report()  # after every child exited: their CPU time is this run's
    results = aggregate(samples)
    save()
    text = markdown(args, results, load, skipped)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text + "\n")
    if any("error" in r for r in results.values()):
        print(f"bench_runs: some measurements failed (see above and {args.workdir}/*/"
              "process.log); docs not written", file=sys.stderr)
        sys.exit(4)
    if args.write and not machine.write_benchmark_section(args.doc, "bench_runs", text, load,
                                                         args.allow_loaded):
        sys.exit(3)
    return results


if __name__ == "__main__":
    common.run_script(main)
