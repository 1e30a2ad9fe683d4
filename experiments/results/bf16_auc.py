"""The quickstart's AUC in float32 and in bfloat16, over seeds.

    python -m experiments.results.bf16_auc [--seeds 0,1,2] [--out workdirs/bf16_auc] [--no_docs]

Trains SAGAN with experiments/quickstart.cfg (embedded digits, digit 0 abnormal) for every
seed, once with ``--compute_dtype=float32`` and once with ``--compute_dtype=bfloat16`` (each
dtype's seeds together as one program; a rerun reads finished runs back), and reports per seed
the last-epoch test AUC of both dtypes, their mean ± std, and the wall time of each program.
The seed draws the split and the initial weights, so seed s of both dtypes starts from the
same float32 parameters on the same split; only the compute dtype differs. Writes the section
``bf16_auc`` of docs/results.md (unless --no_docs). The one-step error of bfloat16 against
float32 is experiments/benchmarks/bf16_check.py's.
"""
from __future__ import annotations

import argparse
import logging
import os
import time

from experiments import common, machine, sections
from experiments.results.demo import aucs_by_seed, mean_std

MODULE = "experiments.results.bf16_auc"
HEADING = "## Mixed precision: quickstart AUC in float32 and bfloat16 over seeds"
DTYPES = ("float32", "bfloat16")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=os.path.join("workdirs", "bf16_auc"))
    ap.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                    help="extra flag for both dtypes (repeatable)")
    ap.add_argument("--no_docs", action="store_true")
    args = ap.parse_args(argv)
    try:
        cfg = common.config_from_flagfiles(
            common.flagfile("quickstart.cfg"),
            overrides={"seeds": args.seeds, "progress": False, "plots": False,
                       "tensorboard": False}, args=common.set_args(args.set))
    except common.FlagError as e:
        common.fail(str(e), MODULE)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    from sagan_jax.main import enable_compilation_cache
    from sagan_jax.training.loop import train

    enable_compilation_cache(cfg.compilation_cache)
    monitor = machine.LoadMonitor()
    aucs, walls = {}, {}
    for dtype in DTYPES:
        t0 = time.time()
        result = train(cfg.replace(compute_dtype=dtype, workdir=os.path.join(args.out, dtype)))
        walls[dtype] = time.time() - t0
        aucs[dtype] = aucs_by_seed(result)
    seeds = sorted(aucs["float32"])
    lines = ["| seed | float32 AUC | bfloat16 AUC | difference |", "|---|---:|---:|---:|"]
    pairs = []  # seeds where both dtypes finished: the means and differences
    for s in seeds:
        a, b = aucs["float32"].get(s), aucs["bfloat16"].get(s)
        if a is None or b is None:
            lines.append(f"| {s} | {'diverged' if a is None else f'{a:.3f}'} | "
                         f"{'diverged' if b is None else f'{b:.3f}'} | – |")
            continue
        pairs.append((a, b))
        lines.append(f"| {s} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
    if not pairs:
        common.fail("no seed finished in both dtypes: nothing to compare", MODULE)
    (m32, s32), (m16, s16) = mean_std([a for a, _ in pairs]), mean_std([b for _, b in pairs])
    md, sd = mean_std([b - a for a, b in pairs])
    label = "mean ± std" + ("" if len(pairs) == len(seeds) else
                            f" ({len(pairs)} seeds finished in both)")
    lines.append(f"| {label} | {m32:.3f} ± {s32:.3f} | {m16:.3f} ± {s16:.3f} | "
                 f"{md:+.3f} ± {sd:.3f} |")
    body = "\n".join([
        f"Command: `{common.command_line(MODULE, argv)}`: SAGAN with "
        f"`experiments/quickstart.cfg` (digits, digit {cfg.abnormal_class} abnormal, "
        f"{cfg.isize}x{cfg.isize}, ngf {cfg.ngf}, kernels_per_layer {cfg.kernels_per_layer}, "
        f"{cfg.epochs} epochs), seeds {', '.join(map(str, seeds))} as one program per dtype; "
        f"last-epoch test AUC. Wall time of each program (a rerun that reads finished runs "
        f"back shows seconds): float32 {walls['float32']:.0f} s, bfloat16 "
        f"{walls['bfloat16']:.0f} s.", "",
        *lines, "",
        machine.machine_header(monitor.report(), packages=("jax", "jaxlib", "flax")),
    ])
    print(body)
    if not args.no_docs:
        sections.replace_section(common.RESULTS_MD, "bf16_auc", body, heading=HEADING)


if __name__ == "__main__":
    common.run_script(main)
