"""bench_runs' measurements: the child processes (sagan_jax.main with its scoring calls timed;
the PyTorch reference), the flags every process trains with, starting and waiting for them, and
the figures read back from their metrics.json; the order of the measurements (``plan``)."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from experiments import common, machine

MODULE = "experiments.benchmarks.bench_runs"
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
        peak_mb = machine.peak_rss_mb()
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
