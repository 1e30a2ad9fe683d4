"""bench_runs' table: medians over repeats and the Markdown section of docs/benchmarks.md."""
from __future__ import annotations

import statistics

from experiments import common, machine
from experiments.benchmarks.bench_runs_measure import MODULE


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
