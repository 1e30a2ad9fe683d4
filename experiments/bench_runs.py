"""Runs trained together (the run axis, sagan_jax/training/program.py) against the same runs as
separate processes, and the training step with and without lax.scan (issue 11, item 6).

For each K in --ks, on the same machine in one invocation, alternating:
  - one program: one ``python -m sagan_jax.main --seeds=0,...,K-1`` process (all K runs in
    one jitted program, --run_axis_impl=--impl);
  - K processes: K ``python -m sagan_jax.main --seed=i`` processes started together
    (concurrent; ``--separate=sequential`` runs them one after another instead).
Then, at the first K, the same one-program run with ``--steps_per_chunk=1`` (one jitted call
per step, no lax.scan) against ``--steps_per_chunk=--chunk`` (lax.scan over the chunk on
accelerators; on CPU the chunk's steps are unrolled, since XLA:CPU runs a step inside a loop
25x slower: experiments/bench_control_flow.py).

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

    python -m experiments.bench_runs --ks 1,2,4,8,10 --impl vmap            # GPU
    python -m experiments.bench_runs --ks 1,2 --ngf 16 --isize 16 --batch_size 16 \\
        --steps 4 --epochs 1 --no-write                                      # smoke
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

from experiments import common, machine

MODULE = "experiments.bench_runs"
CHILD = "--_child_timing"
TORCH_CHILD = "--_torch_child"


# --- child: sagan_jax.main with its scoring calls timed ---------------------------------------
def child_main(timing_path: str, main_argv: list) -> None:
    """Run ``python -m sagan_jax.main MAIN_ARGV`` in this process, timing every call of the
    loop's scoring (Trainer._score: device-resident scoring of every run, synchronous since it
    fetches the scores) into TIMING_PATH."""
    from absl import app

    import sagan_jax.main as sm
    from sagan_jax.training import loop

    calls, seen = [], set()
    original = loop.Trainer._score

    def timed(self, items, states, keep_recon=False):
        t0 = time.perf_counter()
        out = original(self, items, states, keep_recon)
        dt = time.perf_counter() - t0
        if items:
            sig = (tuple(len(im) for _, im in items), bool(keep_recon))
            calls.append({"images_per_run": [len(im) for _, im in items], "seconds": dt,
                          "warm": sig in seen})
            seen.add(sig)
        return out

    loop.Trainer._score = timed
    try:
        app.run(sm.main, argv=["sagan_jax.main", *main_argv], flags_parser=sm.flags_parser)
    finally:
        with open(timing_path, "w") as f:
            json.dump({"score_calls": calls}, f)


def torch_child_main(out_path: str, threads: int, seeds: list, main_argv: list) -> None:
    """Train the PyTorch reference (sagan_jax.torch_ref.train) for each of ``seeds`` one after
    another in this process with ``threads`` intra-op threads, on the data and budget that
    ``python -m sagan_jax.main MAIN_ARGV`` would train; write per-run figures to OUT_PATH."""
    from sagan_jax.data import load_data
    from sagan_jax.torch_ref.train import train_and_evaluate

    cfg = common.config_from_flagfiles(args=main_argv)
    runs = []
    for s in seeds:
        c = cfg.replace(seed=s)
        t0 = time.monotonic()
        m = train_and_evaluate(c, load_data(c), threads=threads)
        runs.append({"seed": s, "wall_s": round(time.monotonic() - t0, 2), "auc": m["auc"],
                     "train_img_per_s": _med([r["train_img_per_s"] for r in m["history"]
                                              if r["epoch"] >= 1]),
                     "time_to_first_step_s": m["time_to_first_step_s"]})
    with open(out_path, "w") as f:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
        json.dump({"runs": runs, "threads": threads, "peak_host_memory_mb": round(peak_mb, 1)},
                  f)


# --- parent ----------------------------------------------------------------------------------
class ProcessFailed(RuntimeError):
    pass


def base_flags(args) -> list:
    epochs = 1 + args.epochs
    return [f"--isize={args.isize}", f"--ngf={args.ngf}", f"--ndf={args.ndf or args.ngf}",
            f"--batch_size={args.batch_size}", f"--eval_batch_size={args.batch_size}",
            f"--max_train_images={args.steps * args.batch_size}", f"--epochs={epochs}",
            f"--niter={epochs}", "--eval_every=0", "--noplots", "--notensorboard",
            "--noprogress", f"--bn_recalibration_batches={args.recal_batches}",
            "--keep_checkpoints=1", f"--run_axis_impl={args.impl}", *common.set_args(args.set)]


def start(args, flags: list, workdir: str, label: str, env: dict):
    os.makedirs(workdir, exist_ok=True)
    timing = os.path.join(workdir, "timing.json")
    logf = open(os.path.join(workdir, "process.log"), "w")
    cmd = [sys.executable, "-m", MODULE, CHILD, timing, *flags, f"--workdir={workdir}"]
    p = subprocess.Popen(cmd, cwd=common.ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT)
    return {"p": p, "log": logf, "workdir": workdir, "timing": timing, "label": label,
            "t0": time.monotonic()}


def wait(procs: list, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    failed = []
    for h in procs:
        try:
            h["p"].wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            h["p"].kill()
            h["p"].wait()
            h["timed_out"] = True
        h["t1"] = time.monotonic()
        h["log"].close()
        if h["p"].returncode != 0:
            failed.append(h)
    for h in failed:
        with open(os.path.join(h["workdir"], "process.log")) as f:
            tail = f.read()[-2000:]
        why = "timed out" if h.get("timed_out") else f"exit status {h['p'].returncode}"
        raise ProcessFailed(f"{h['label']} ({h['workdir']}) {why}; its log ends:\n{tail}")


def run_metrics(workdir: str, k: int, cls: str, seeds) -> list:
    if k == 1:
        paths = [os.path.join(workdir, "metrics.json")]
    else:
        paths = [os.path.join(workdir, "runs", f"{cls}_seed{s}", "metrics.json") for s in seeds]
    out = []
    for p in paths:
        with open(p) as f:
            out.append(json.load(f))
    return out


def timed_epochs(metrics: dict) -> list:
    return [r for r in metrics["history"] if r["epoch"] >= 1]


def score_rates(timing_path: str):
    """(per-run img/s, all-runs img/s) of the warm scoring calls, or (None, None)."""
    with open(timing_path) as f:
        calls = [c for c in json.load(f)["score_calls"] if c["warm"]]
    if not calls:
        return None, None
    secs = sum(c["seconds"] for c in calls)
    per_run = sum(statistics.fmean(c["images_per_run"]) for c in calls) / secs
    return per_run, sum(sum(c["images_per_run"]) for c in calls) / secs


def _med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise_process(h, k: int, cls: str, seeds) -> dict:
    ms = run_metrics(h["workdir"], k, cls, seeds)
    per_run = [_med([r["train_img_per_s"] for r in timed_epochs(m)]) for m in ms]
    if k > 1:
        all_runs = _med([r.get("train_img_per_s_all_runs") for r in timed_epochs(ms[0])])
    else:
        all_runs = per_run[0]
    steps = [r["step"] for r in ms[0]["history"]]
    s_run, s_all = score_rates(h["timing"])
    return {
        "train_img_per_s_per_run": _med(per_run), "train_img_per_s_all_runs": all_runs,
        "score_img_per_s_per_run": s_run, "score_img_per_s_all_runs": s_all,
        "steps_per_epoch": steps[1] - steps[0] if len(steps) > 1 else steps[0],
        "time_to_first_step_s": ms[0].get("time_to_first_step_s"),
        "process_wall_s": round(h["t1"] - h["t0"], 2),
        "peak_host_memory_mb": max(m.get("peak_host_memory_mb", 0) for m in ms),
        "peak_device_memory_mb": max((m.get("peak_device_memory_mb") or 0) for m in ms) or None,
        "devices": ms[0].get("devices"), "run_axis_impl": ms[0].get("run_axis_impl"),
        "runs_in_program": ms[0].get("runs_in_program"),
    }


def measure_together(args, k: int, flags, env, root, tag, chunk=None) -> dict:
    seeds = list(range(k))
    work = os.path.join(root, f"{tag}_k{k}")
    shutil.rmtree(work, ignore_errors=True)
    extra = [f"--seeds={','.join(map(str, seeds))}",
             f"--steps_per_chunk={chunk or args.chunk}"]
    h = start(args, flags + extra, work, f"one program, K={k}", env)
    wait([h], args.proc_timeout_s)
    out = summarise_process(h, k, args.cls, seeds)
    out["job_wall_s"] = out["process_wall_s"]
    return out


def measure_separate(args, k: int, flags, env, root, tag) -> dict:
    work = os.path.join(root, f"{tag}_k{k}")
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.monotonic()
    handles = []
    for s in range(k):
        h = start(args, flags + [f"--seed={s}", f"--steps_per_chunk={args.chunk}"],
                  os.path.join(work, f"seed{s}"), f"process {s + 1} of {k}", env)
        if args.separate == "sequential":
            wait([h], args.proc_timeout_s)
        handles.append(h)
    if args.separate == "concurrent":
        wait(handles, args.proc_timeout_s)
    job = time.monotonic() - t0
    per = [summarise_process(h, 1, args.cls, [s]) for s, h in enumerate(handles)]
    out = {
        "train_img_per_s_per_run": _med([p["train_img_per_s_per_run"] for p in per]),
        "score_img_per_s_per_run": _med([p["score_img_per_s_per_run"] for p in per]),
        "time_to_first_step_s": _med([p["time_to_first_step_s"] for p in per]),
        "process_wall_s": _med([p["process_wall_s"] for p in per]),
        "peak_host_memory_mb": max(p["peak_host_memory_mb"] for p in per),
        "peak_device_memory_mb": max((p["peak_device_memory_mb"] or 0) for p in per) or None,
        "steps_per_epoch": per[0]["steps_per_epoch"], "devices": per[0]["devices"],
        "job_wall_s": round(job, 2), "processes": per,
    }
    if args.separate == "concurrent":
        out["train_img_per_s_all_runs"] = sum(p["train_img_per_s_per_run"] for p in per)
        scores = [p["score_img_per_s_per_run"] for p in per]
        out["score_img_per_s_all_runs"] = sum(scores) if None not in scores else None
    else:  # one after another: the machine does one run at a time
        out["train_img_per_s_all_runs"] = out["train_img_per_s_per_run"]
        out["score_img_per_s_all_runs"] = out["score_img_per_s_per_run"]
    return out


def measure_torch(args, k: int, arrangement: str, flags, env, root) -> dict:
    """The same K runs trained by the PyTorch reference: P processes started together with T
    threads each (arrangement 'PxT'), the seeds dealt round-robin; job wall time from the
    first start to the last exit (imports, data, training, scoring)."""
    n_proc, threads = (int(v) for v in arrangement.split("x"))
    work = os.path.join(root, f"torch_{arrangement}_k{k}")
    shutil.rmtree(work, ignore_errors=True)
    groups = [list(range(k))[i::n_proc] for i in range(n_proc)]
    groups = [g for g in groups if g]
    t0 = time.monotonic()
    handles = []
    torch_flags = [f for f in flags if not f.startswith("--run_axis_impl")]
    for i, g in enumerate(groups):
        d = os.path.join(work, f"proc{i}")
        os.makedirs(d, exist_ok=True)
        out = os.path.join(d, "torch_runs.json")
        logf = open(os.path.join(d, "process.log"), "w")
        cmd = [sys.executable, "-m", MODULE, TORCH_CHILD, out, str(threads),
               ",".join(map(str, g)), *torch_flags, f"--workdir={d}"]
        penv = dict(env, OMP_NUM_THREADS=str(threads))
        p = subprocess.Popen(cmd, cwd=common.ROOT, env=penv, stdout=logf,
                             stderr=subprocess.STDOUT)
        handles.append({"p": p, "log": logf, "workdir": d, "out": out, "t0": t0,
                        "label": f"PyTorch process {i + 1} of {len(groups)}"})
    wait(handles, args.proc_timeout_s)
    job = time.monotonic() - t0
    runs, peak = [], 0.0
    for h in handles:
        with open(h["out"]) as f:
            d = json.load(f)
        runs += d["runs"]
        peak = max(peak, d["peak_host_memory_mb"])
    per_run = _med([r["train_img_per_s"] for r in runs])
    return {
        "train_img_per_s_per_run": per_run,
        # runs of one process go one after another; the processes run at the same time
        "train_img_per_s_all_runs": per_run * len(groups),
        "score_img_per_s_per_run": None, "score_img_per_s_all_runs": None,
        "time_to_first_step_s": _med([r["time_to_first_step_s"] for r in runs]),
        "job_wall_s": round(job, 2), "peak_host_memory_mb": peak,
        "peak_device_memory_mb": None, "processes": len(groups), "threads": threads,
        "aucs": [r["auc"] for r in runs],
    }


def plan(args) -> list:
    """(what, K) in order. --order=pairs: per K the one-program and the K-process runs
    (alternating which goes first), the scan comparison right after the first K.
    --order=curve: the one-program runs for every K first, then the K-process runs, then the
    scan comparison (what a short --budget_s should keep: the throughput curve)."""
    if args.order == "curve":
        items = [("together", k) for k in args.ks for _ in range(args.repeats)]
        items += [("separate", k) for k in args.ks if k in args.separate_ks
                  for _ in range(args.repeats)]
        items += [(f"torch_{a}", k) for k in args.ks for a in args.torch
                  for _ in range(args.repeats)]
        return items + ([("no_scan", args.ks[0])] * args.repeats if args.scan else [])
    items = []
    for i, k in enumerate(args.ks):
        for rep in range(args.repeats):
            pair = [("together", k)] + ([("separate", k)] if k in args.separate_ks else [])
            pair += [(f"torch_{a}", k) for a in args.torch]
            items += pair if (i + rep) % 2 == 0 else pair[::-1]
            if i == 0 and args.scan:
                items.append(("no_scan", k))
    return items


def aggregate(samples: dict) -> dict:
    """Medians over repeats of each (what, K)."""
    out = {}
    for key, reps in samples.items():
        ok = [r for r in reps if "error" not in r]
        if not ok:
            out[key] = {"error": reps[-1]["error"]}
            continue
        agg = {}
        for field in ok[0]:
            vals = [r.get(field) for r in ok]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                agg[field] = statistics.median(vals)
            else:
                agg[field] = vals[-1]
        agg["repeats"] = len(ok)
        out[key] = agg
    return out


def _f(v, fmt="{:.1f}"):
    return "–" if v is None else fmt.format(v)


def markdown(args, results: dict, load, skipped: list) -> str:
    devices = next((r.get("devices") for r in results.values() if r.get("devices")), None)
    sep_label = "K processes" + (" (concurrent)" if args.separate == "concurrent"
                                 else " (one after another)")
    lines = [
        machine.machine_header(load, packages=("jax", "jaxlib", "flax", "optax"))
        + (f" Devices seen by the runs: {', '.join(devices)}." if devices else ""),
        "",
        f"SAGAN on {_dataset(args)}, {args.isize}x{args.isize}, batch {args.batch_size}, "
        f"ngf {args.ngf}, ndf {args.ndf or args.ngf}; per run {args.steps} steps per epoch, one "
        f"warm-up epoch and {args.epochs} timed epoch(s); --run_axis_impl={args.impl}, "
        f"--steps_per_chunk={args.chunk}; medians of {args.repeats} repeat(s). Training img/s "
        "from the timed epochs' train_img_per_s (metrics.json); scoring img/s from the loop's "
        "scoring calls after the warm-up (calibration images). 'all runs' = per-run figure x "
        "runs trained at the same time. Ratio = one program / K processes, all runs.",
        "",
        "| K | how | train img/s per run | train img/s all runs | ratio | score img/s per run "
        "| score img/s all runs | first step s | job wall s | peak host MB | peak device MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in args.ks:
        one, sep = results.get(f"together_k{k}"), results.get(f"separate_k{k}")
        rows = [("one program", one), (sep_label, sep)]
        rows += [(_torch_label(a), results.get(f"torch_{a}_k{k}")) for a in args.torch]
        for label, r in rows:
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {k} | {label} | failed: {r['error'].splitlines()[0][:120]} "
                             "| | | | | | | | |")
                continue
            ratio = None
            if label == "one program" and sep and "error" not in sep and \
                    sep.get("train_img_per_s_all_runs"):
                ratio = r["train_img_per_s_all_runs"] / sep["train_img_per_s_all_runs"]
            lines.append(
                f"| {k} | {label} | {_f(r['train_img_per_s_per_run'])} | "
                f"{_f(r['train_img_per_s_all_runs'])} | {_f(ratio, '{:.2f}')} | "
                f"{_f(r['score_img_per_s_per_run'])} | {_f(r['score_img_per_s_all_runs'])} | "
                f"{_f(r['time_to_first_step_s'])} | {_f(r['job_wall_s'])} | "
                f"{_f(r['peak_host_memory_mb'], '{:.0f}')} | "
                f"{_f(r['peak_device_memory_mb'], '{:.0f}')} |")
    if args.torch:
        lines += [
            "",
            "Total wall time for the same K runs: the JAX run axis against "
            "PyTorch's best arrangement on the same cores. Ratio = PyTorch's best job wall / "
            "JAX one program's (above 1: JAX finishes first).",
            "",
            "| K | JAX one program s | JAX K processes s | "
            + " | ".join(f"{_torch_label(a)} s" for a in args.torch)
            + " | PyTorch best s | ratio |",
            "|---:|---:|---:|" + "---:|" * len(args.torch) + "---:|---:|",
        ]
        for k in args.ks:
            one, sep = results.get(f"together_k{k}"), results.get(f"separate_k{k}")
            walls = [results.get(f"torch_{a}_k{k}") for a in args.torch]
            walls = [w.get("job_wall_s") if w and "error" not in w else None for w in walls]
            ok = [w for w in walls if w is not None]
            best = min(ok) if ok else None
            jw = one.get("job_wall_s") if one and "error" not in one else None
            sw = sep.get("job_wall_s") if sep and "error" not in sep else None
            lines.append(f"| {k} | {_f(jw)} | {_f(sw)} | " + " | ".join(_f(w) for w in walls)
                         + f" | {_f(best)} | "
                         + _f(best / jw if best and jw else None, "{:.2f}") + " |")
        lines += [
            "",
            "Both train the same budget on the same data (sagan_jax.torch_ref.train: the same "
            "batch order and hyperparameters) and score the test set once at the end. The JAX "
            "loop also recomputes BatchNorm statistics and scores up to 1,000 calibration images "
            "after every epoch (thresholds, checkpoints); the PyTorch loop does neither, and "
            "writes no checkpoints. JAX's wall includes XLA compilation (cache filled by the "
            "warm-up process).",
        ]
    k0 = args.ks[0]
    scan, no_scan = results.get(f"together_k{k0}"), results.get(f"no_scan_k{k0}")
    if args.scan and scan and no_scan and "error" not in scan and "error" not in no_scan:
        ms = lambda r: 1000.0 * args.batch_size / r["train_img_per_s_per_run"]  # noqa: E731
        lines += [
            "",
            f"Training step with and without lax.scan (K={k0}, one program):",
            "",
            "| steps per jitted call | ms per step | train img/s per run | first step s |",
            "|---|---:|---:|---:|",
            f"| 1 (--steps_per_chunk=1, no scan) | {ms(no_scan):.1f} | "
            f"{no_scan['train_img_per_s_per_run']:.1f} | {_f(no_scan['time_to_first_step_s'])} |",
            f"| {args.chunk} (lax.scan) | {ms(scan):.1f} | {scan['train_img_per_s_per_run']:.1f} "
            f"| {_f(scan['time_to_first_step_s'])} |",
        ]
    if skipped:
        lines += ["", f"Not measured (time budget --budget_s={args.budget_s:g} spent): "
                  + ", ".join(f"{w} K={k}" for w, k in skipped) + "."]
    lines += [
        "",
        "first step: seconds from the process's start of training to the first chunk's result "
        "(compilation included; the processes share one compilation cache, "
        + ("filled by a warm-up process, " if args.warmup else "with no warm-up process, ")
        + "so a program compiled once is loaded after that). job wall: start of the first "
        "process to the end of the last (imports, data, compilation, training, scoring, "
        "checkpoints).",
        "",
        f"Command: `{common.command_line(MODULE)}`.",
    ]
    return "\n".join(lines)


def _torch_label(arrangement: str) -> str:
    p, t = arrangement.split("x")
    return (f"PyTorch, {p} process{'es' if p != '1' else ''} x {t} thread"
            f"{'s' if t != '1' else ''}")


def _dataset(args) -> str:
    for item in args.set:
        if item.lstrip("-").startswith("dataset="):
            return item.split("=", 1)[1]
    return "the embedded digits"


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
                         "(issue 15, item 4: the run axis against PyTorch's best arrangement)")
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
