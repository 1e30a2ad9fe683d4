"""Residual vs gradient anomaly maps on defects with exact masks.

Trains (or reuses) SAGAN with the quickstart flags (embedded digits, digit 0 abnormal) for each
seed, then pastes synthetic defects into NORMAL test digits, each with its exact mask (the
pixels the paste changed):

  bright square   a white square (side isize/4: 8x8 at 32x32, 4x4 at 16x16) at a random position
  dark square     a black square of that side centred on a random stroke pixel (the background
                  is black)
  noise square    a square of that side of uniform random colours at a random position
  digit-0 patch   a patch (side 3 isize/8: 12x12 at 32x32, 6x6 at 16x16) of an abnormal test
                  digit (a 0), same place in both images

and reports, per defect kind, the pixel AUROC of the ``--anomaly_map=residual`` maps
(|x - G(x)|) and of the ``--anomaly_map=grad`` maps (|d score / d x|, sagan_jax.anomaly_maps)
over all pixels of the defect images, and the image AUROC of the defect images against their
clean originals (the model's own score). The defects are the same for every seed (defect seed
fixed), so the seeds differ only in the trained model.

    python -m experiments.results.anomaly_maps [--seeds 0,1,2] [--n_images 100] [--no_docs]

Writes the section ``anomaly_maps`` of docs/results.md (unless --no_docs) and
WORKDIR/anomaly_maps.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from experiments import common, machine, sections

MODULE = "experiments.results.anomaly_maps"
KINDS = ("bright square", "dark square", "noise square", "digit-0 patch")
HEADING = "## Anomaly maps: residual vs gradient, synthetic defects with exact masks"


def make_defects(images, abnormal, kind, rng, square=None, patch=None):
    """(defect images, masks) of ``kind`` pasted into copies of ``images`` (uint8 NHWC);
    mask = the pixels the paste changed. Sizes default to isize/4 (squares) and 3 isize/8
    (patches), so a defect covers the same share of the image at every isize."""
    import numpy as np

    out = images.copy()
    n, h, w, c = images.shape
    square = square or max(1, h // 4)
    patch = patch or max(1, 3 * h // 8)
    for i in range(n):
        if kind == "digit-0 patch":
            src = abnormal[rng.integers(len(abnormal))]
            top, left = rng.integers(0, h - patch + 1), rng.integers(0, w - patch + 1)
            out[i, top:top + patch, left:left + patch] = src[top:top + patch, left:left + patch]
            continue
        if kind == "dark square":
            ys, xs = np.nonzero(images[i].max(axis=-1) > 127)
            j = rng.integers(len(ys))
            top = int(np.clip(ys[j] - square // 2, 0, h - square))
            left = int(np.clip(xs[j] - square // 2, 0, w - square))
        else:
            top, left = rng.integers(0, h - square + 1), rng.integers(0, w - square + 1)
        block = {"bright square": 255, "dark square": 0}.get(kind)
        if block is None:  # noise square
            block = rng.integers(0, 256, (square, square, c), dtype=np.uint8)
        out[i, top:top + square, left:left + square] = block
    masks = (out != images).any(axis=-1).astype(np.uint8)
    return out, masks


def measure(cfg, n_images: int, defect_seed: int) -> dict:
    """{kind: {pixel_auc_residual, pixel_auc_grad, image_auc, defect_pixels}} for the newest
    checkpoint in cfg.workdir."""
    import numpy as np

    from sagan_jax import anomaly_maps, scoring
    from sagan_jax.training.checkpoints import restore_for_inference
    from sagan_jax.data import load_data
    from sagan_jax.data.pipeline import to_float_np
    from sagan_jax.methods.spec import variables_of
    from sagan_jax.training.evaluate import final_score, score_images

    state, _ = restore_for_inference(cfg)
    variables = variables_of(state)
    data = load_data(cfg)
    normal = data.test.images[data.test.labels == 0][:n_images]
    abnormal = data.test.images[data.test.labels == 1]
    clean_scores = final_score(cfg, *score_images(cfg, state, normal))
    out = {"n_normal": int(len(normal))}  # fewer than n_images when the test set holds fewer
    for k, kind in enumerate(KINDS):
        rng = np.random.default_rng([defect_seed, k])
        bad, masks = make_defects(normal, abnormal, kind, rng)
        r, lat, recon = score_images(cfg, state, bad, keep_recon=True)
        x = to_float_np(bad)
        row = {"defect_pixels": float(masks.mean())}
        for map_kind in anomaly_maps.KINDS:
            maps = anomaly_maps.maps(cfg, variables, x, map_kind, recon=recon)
            row[f"pixel_auc_{map_kind}"] = scoring.pixel_auroc(masks, maps)
        labels = np.r_[np.zeros(len(normal)), np.ones(len(bad))]
        row["image_auc"] = scoring.detection_metrics(
            labels, np.r_[clean_scores, final_score(cfg, r, lat)])["auc"]
        out[kind] = row
    return out


def table(per_seed: dict) -> str:
    import numpy as np

    seeds = sorted(per_seed)
    lines = ["| defect | defect pixels | pixel AUROC, residual | pixel AUROC, grad | "
             "image AUROC (defect vs clean) |", "|---|---:|---|---|---|"]

    def cell(kind, key):
        vals = [per_seed[s][kind][key] for s in seeds]
        each = ", ".join(f"{v:.3f}" for v in vals)
        return f"**{np.mean(vals):.3f}** ({each})" if len(vals) > 1 else f"{vals[0]:.3f}"

    for kind in KINDS:
        frac = per_seed[seeds[0]][kind]["defect_pixels"]
        lines.append(f"| {kind} | {100 * frac:.1f}% | {cell(kind, 'pixel_auc_residual')} | "
                     f"{cell(kind, 'pixel_auc_grad')} | {cell(kind, 'image_auc')} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=os.path.join("workdirs", "anomaly_maps"),
                    help="one run per seed in WORKDIR/seed<S> (finished runs are reused)")
    ap.add_argument("--seeds", type=common.int_list, default="0,1,2",
                    help="training seeds, comma-separated")
    ap.add_argument("--n_images", type=common.positive_int, default=100,
                    help="normal test digits that receive each kind of defect")
    ap.add_argument("--defect_seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a flag of experiments/quickstart.cfg (repeatable)")
    ap.add_argument("--no_docs", action="store_true", help="do not write docs/results.md")
    args = ap.parse_args(argv)
    if not args.seeds or len(set(args.seeds)) < len(args.seeds):
        ap.error(f"--seeds={','.join(map(str, args.seeds))}: give distinct seeds, at least one")
    seeds = args.seeds
    monitor = machine.LoadMonitor()
    per_seed, train_s = {}, {}
    for seed in seeds:
        try:
            cfg = common.config_from_flagfiles(
                common.flagfile("quickstart.cfg"),
                overrides={"workdir": os.path.join(args.workdir, f"seed{seed}"), "seed": seed,
                           "progress": False, "plots": False, "tensorboard": False},
                args=common.set_args(args.set))
        except common.FlagError as e:
            common.fail(str(e), MODULE)
        from sagan_jax.main import enable_compilation_cache

        enable_compilation_cache(cfg.compilation_cache)  # the seeds' programs are the same
        t0 = time.time()
        if common.done_metrics(cfg.workdir, cfg.epochs) is None:
            from sagan_jax.training.loop import train

            train(cfg)
        train_s[seed] = round(time.time() - t0, 1)
        per_seed[seed] = measure(cfg, args.n_images, args.defect_seed)
        print(f"seed {seed}: " + json.dumps(per_seed[seed]), flush=True)
    n_used = min(r["n_normal"] for r in per_seed.values())
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "anomaly_maps.json"), "w") as f:
        json.dump({"seeds": per_seed, "train_s": train_s, "n_images": args.n_images,
                   "defect_seed": args.defect_seed}, f, indent=2)
    body = "\n".join([
        f"Command: `{common.command_line(MODULE)}`: SAGAN with `experiments/quickstart.cfg` "
        f"(digits, digit {cfg.abnormal_class} abnormal, {cfg.isize}x{cfg.isize}, ngf "
        f"{cfg.ngf}, {cfg.epochs} epochs; "
        f"{'overrides ' + ', '.join(args.set) + '; ' if args.set else ''}"
        f"training seeds {', '.join(map(str, seeds))}; training "
        f"{', '.join(f'{train_s[s]:.0f} s' for s in seeds)} (0 = reused)). "
        f"{n_used} normal test digits receive each defect"
        f"{f' (--n_images={args.n_images}: the test set holds no more)' if n_used < args.n_images else ''}"
        f" (defect seed "
        f"{args.defect_seed}, the same defects for every model); mask = the pixels the paste "
        "changed. Pixel AUROC: all pixels of the defect images, map value against mask. Image "
        "AUROC: the model's score of the defect images against their clean originals. Cells: "
        "mean over seeds in bold, then each seed.",
        "",
        machine.machine_header(monitor.report(), packages=("jax", "jaxlib", "flax")),
        "",
        table(per_seed),
    ])
    print(body)
    if not args.no_docs:
        sections.replace_section(common.RESULTS_MD, "anomaly_maps", body, heading=HEADING)


if __name__ == "__main__":
    common.run_script(main)
