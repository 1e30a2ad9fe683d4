"""Measure the fixed table that ``--dsc_impl=auto`` reads (sagan_jax/methods/dsc_table.json).

For each generator shape below and one device count, every depthwise-separable layer's exact
forms are timed (forward + backward at the default global batch 64, split over the devices as
a training step splits it; dsc_autotune.time_candidates: compiled ahead, warm-up, alternating
rounds, medians) and the fastest is written to the table with its timings, the machine, the
load and the date. Run it once per device count on a quiet machine:

    python -m experiments.benchmarks.dsc_table --devices 1
    python -m experiments.benchmarks.dsc_table --devices 2
    python -m experiments.benchmarks.dsc_table --report     # the table -> docs/benchmarks.md (dsc_table)

Run time: a few minutes per device count on a 2-core machine. Timing never happens at run
time unless a user opts in with --dsc_autotune, so every run with the same flags computes
the same forms, and the same numbers.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os

from experiments import common, sections
from experiments.machine import cpu_model

SHAPES = [  # (ngf, kernels_per_layer) at isize 32: the paper's, the authors' code's, narrow
    (64, 2), (64, 1), (32, 2), (32, 1), (16, 2), (16, 1)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, help="XLA host devices to time on")
    ap.add_argument("--report", action="store_true",
                    help="write the table file's contents to docs/benchmarks.md and stop")
    ap.add_argument("--batch", type=int, default=64, help="global training batch")
    ap.add_argument("--isize", type=int, default=32)
    ap.add_argument("--out", default=None, help="table file (default: the package's)")
    args = ap.parse_args()
    if args.report:
        return report(args.out)
    if not args.devices or args.devices < 1:
        ap.error("--devices=N (a positive number) or --report is required")

    from sagan_jax.devices import configure

    configure(str(args.devices), args.batch, args.batch)
    import jax

    from sagan_jax.config import Config
    from sagan_jax.devices import local_mesh
    from sagan_jax.methods import dsc_autotune as at

    path = args.out or at.TABLE_FILE
    mesh = local_mesh() if args.devices > 1 else None
    backend = jax.default_backend()
    with open(path) if os.path.exists(path) else open(os.devnull) as f:
        text = f.read()
    table = json.loads(text) if text.strip() else {"entries": {}}
    load_before = os.getloadavg()[0]
    done = set()
    for ngf, m in SHAPES:
        cfg = Config(ngf=ngf, kernels_per_layer=m, isize=args.isize, batch_size=args.batch,
                     num_devices=args.devices)
        for layer in at.dsc_layers(cfg):
            key = at.table_key(layer, backend, args.devices)
            if key in done:
                continue
            done.add(key)
            times = at.time_candidates(layer, args.batch, "float32",
                                       at.candidates_for(backend, layer.m), mesh=mesh)
            impl = min(times, key=times.get)
            table["entries"][key] = {"impl": impl,
                                     "ms": {i: round(1e3 * t, 3) for i, t in times.items()}}
            print(f"{key}: {impl}  " + " ".join(f"{i}={1e3 * t:.2f}ms"
                                                 for i, t in sorted(times.items())), flush=True)
    table.setdefault("measured", {})[f"{backend}|d{args.devices}"] = {
        "date": datetime.date.today().isoformat(), "machine": cpu_model(),
        "cores": os.cpu_count(), "jax": jax.__version__,
        "global_batch": args.batch, "load_1min": [round(load_before, 2),
                                                  round(os.getloadavg()[0], 2)]}
    table["entries"] = dict(sorted(table["entries"].items()))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {len(done)} entries to {path}")


def report(path=None) -> None:
    """docs/benchmarks.md's dsc_table section, rebuilt from the table file."""
    from sagan_jax.methods import dsc_autotune as at

    with open(path or at.TABLE_FILE) as f:
        table = json.load(f)
    lines = []
    for where, m in sorted(table.get("measured", {}).items()):
        lines.append(f"- `{where}`: {m['date']}, {m['machine']}, {m['cores']} logical CPUs, "
                     f"jax {m['jax']}, global batch {m['global_batch']}, 1-minute load "
                     f"{m['load_1min'][0]} before and {m['load_1min'][1]} after.")
    lines += ["", "| backend, devices | map | channels | m | input grad | chosen | "
              "dense ms | shift ms | shift_vjp ms |", "|---|---|---|---:|---|---|---:|---:|---:|"]
    for key, e in table["entries"].items():
        backend, dev, hw, ch, m, dx = key.split("|")
        ms = e["ms"]
        lines.append(f"| {backend}, {dev[1:]} | {hw} | {ch} | {m[1:]} | "
                     f"{'yes' if dx == 'dx' else 'no'} | **{e['impl']}** | "
                     + " | ".join(f"{ms[i]:.1f}" if i in ms else "-"
                                  for i in ("dense", "shift", "shift_vjp")) + " |")
    lines += ["", "Command: `python -m experiments.benchmarks.dsc_table --devices N` per device "
              "count, then `python -m experiments.benchmarks.dsc_table --report`."]
    sections.replace_section(common.BENCHMARKS_MD, "dsc_table", "\n".join(lines),
                           heading="## Depthwise-separable convolution forms (the fixed table)")
    print(f"wrote the dsc_table section of {common.BENCHMARKS_MD}")


if __name__ == "__main__":
    common.run_script(main)
