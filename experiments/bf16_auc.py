"""The quickstart's AUC in float32 and in bfloat16, over seeds (issue 12, item 4).

    python -m experiments.bf16_auc [--seeds 0,1,2] [--out workdirs/bf16_auc] [--no_docs]

Trains SAGAN with experiments/quickstart.cfg (embedded digits, digit 0 abnormal) for every
seed, once with ``--compute_dtype=float32`` and once with ``--compute_dtype=bfloat16`` (each
dtype's seeds together as one program; a rerun reads finished runs back), and reports per seed
the last-epoch test AUC of both dtypes, their mean ± std, and the wall time of each program.
The seed draws the split and the initial weights, so seed s of both dtypes starts from the
same float32 parameters on the same split; only the compute dtype differs. Writes the section
``bf16_auc`` of docs/results.md (unless --no_docs). The one-step error of bfloat16 against
float32 is experiments/bf16_check.py's.
"""
from __future__ import annotations

import argparse
import logging
import os
import time

from experiments import common
from experiments.demo import aucs_of, mean_std

MODULE = "experiments.bf16_auc"
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
    monitor = common.LoadMonitor()
    aucs, walls = {}, {}
    for dtype in DTYPES:
        t0 = time.time()
        result = train(cfg.replace(compute_dtype=dtype, workdir=os.path.join(args.out, dtype)))
        walls[dtype] = time.time() - t0
        aucs[dtype] = aucs_of(result)
    seeds = [s.strip() for s in args.seeds.split(",") if s.strip()]
    lines = ["| seed | float32 AUC | bfloat16 AUC | difference |", "|---|---:|---:|---:|"]
    for i, s in enumerate(seeds):
        a, b = aucs["float32"][i], aucs["bfloat16"][i]
        lines.append(f"| {s} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
    (m32, s32), (m16, s16) = mean_std(aucs["float32"]), mean_std(aucs["bfloat16"])
    diffs = [b - a for a, b in zip(aucs["float32"], aucs["bfloat16"])]
    md, sd = mean_std(diffs)
    lines.append(f"| mean ± std | {m32:.3f} ± {s32:.3f} | {m16:.3f} ± {s16:.3f} | "
                 f"{md:+.3f} ± {sd:.3f} |")
    body = "\n".join([
        f"Command: `{common.command_line(MODULE, argv)}`: SAGAN with "
        f"`experiments/quickstart.cfg` (digits, digit {cfg.abnormal_class} abnormal, "
        f"{cfg.isize}x{cfg.isize}, ngf {cfg.ngf}, kernels_per_layer {cfg.kernels_per_layer}, "
        f"{cfg.epochs} epochs), seeds {', '.join(seeds)} as one program per dtype; "
        f"last-epoch test AUC. Wall time of each program (a rerun that reads finished runs "
        f"back shows seconds): float32 {walls['float32']:.0f} s, bfloat16 "
        f"{walls['bfloat16']:.0f} s.", "",
        *lines, "",
        common.machine_header(monitor.report(), packages=("jax", "jaxlib", "flax")),
    ])
    print(body)
    if not args.no_docs:
        common.replace_section(common.RESULTS_MD, "bf16_auc", body, heading=HEADING)


if __name__ == "__main__":
    common.run_script(main)
