"""AUC against images seen: SAGAN at the paper's width on CIFAR-10, epoch by epoch.

Each GAN run trains with the paper's settings (sagan_jax/configs/cifar10_paper.cfg: ngf 64,
kernels_per_layer 2, isize 32, all 45,000 normal training images, 15 epochs, whose learning
rate is constant over those 15 epochs, so every epoch's checkpoint is a point of the same
schedule) on the shared JPEG copy of CIFAR-10 as an image folder, and scores the test set after
every epoch both ways: honestly (BatchNorm statistics recomputed for the weights, scores
independent of the test order) and as the PyTorch originals score (training-mode BatchNorm over
the stored order, --eval_originals). PCA and kNN are fitted once on the same normal images:
their AUC is a line, not a curve.

    python -m experiments.results.budget_curve --train --models=sagan --classes=frog   # one run, resumes
    python -m experiments.results.budget_curve --collect            # finished epochs -> the record
    python -m experiments.results.budget_curve --report             # the record -> docs/results.md

--train runs (or resumes) the runs; stop it at any time: every finished epoch is checkpointed
and --collect adds what is finished to the committed record (docs/runs/budget_curve.csv, one
line per run and epoch). --report writes the table and the plot (docs/budget_curve.png) from
the record alone, so a fresh checkout regenerates them.
"""
from __future__ import annotations

import argparse
import csv
import os

from experiments import common, sections
from sagan_jax import methods

MODULE = "experiments.results.budget_curve"
RECORD = os.path.join(common.DOCS, "runs", "budget_curve.csv")
PLOT = os.path.join(common.DOCS, "budget_curve.png")
SECTION = "budget_curve"
FIELDS = ("model", "abnormal_class", "seed", "epoch", "images_seen", "auc_honest",
          "auc_originals", "train_images", "ngf", "kernels_per_layer", "isize", "batch_size")
DEFAULT_OUT = os.path.join("workdirs", "budget_curve")
DATA_ROOT = os.path.join("~", ".cache", "sagan_jax", "cifar10_jpg")


def run_config(model: str, cls: str, seed: int, out: str, data_root: str):
    """The Config of one run: the paper's flags, the model's own, the JPEG folder."""
    files = [common.flagfile("cifar10_paper.cfg"), common.flagfile(f"model_{model}.cfg")]
    return common.config_from_flagfiles(*files, overrides=dict(
        dataset="image_folder", data_root=data_root, abnormal_class=cls, seed=seed,
        eval_originals=not methods.is_fitted(model), plots=False, progress=False,
        workdir=os.path.join(out, model, f"{cls}_seed{seed}")))


def epoch_rows(model: str, cls: str, seed: int, workdir: str) -> list:
    """One record line per scored epoch in a run's workdir (its metrics.jsonl; a run still
    training has the epochs it finished)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    from sagan_jax.training.checkpoints import saved_meta
    from sagan_jax.training.metric_writer import read_jsonl

    cfg = saved_meta(workdir)["config"]
    flags = {k: cfg[k] for k in ("ngf", "kernels_per_layer", "isize", "batch_size")}
    rows = []
    for r in read_jsonl(path, "epoch"):
        if "test_auc" not in r:
            continue
        fitted = methods.is_fitted(model)
        rows.append({"model": model, "abnormal_class": cls, "seed": seed,
                     "epoch": r["epoch"] + 1,
                     "images_seen": 0 if fitted else int(r["step"]) * cfg["batch_size"],
                     "auc_honest": round(r["test_auc"], 4),
                     "auc_originals": ("" if fitted or r.get("test_auc_originals") is None
                                       else round(r["test_auc_originals"], 4)),
                     "train_images": cfg["max_train_images"] or "all", **flags})
    return rows


def read_record(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        if tuple(r) != FIELDS:
            raise SystemExit(f"budget_curve: {path} has columns {list(r)}, expected "
                             f"{list(FIELDS)}; regenerate it with --collect")
    return rows


def write_record(path: str, rows: list) -> None:
    key = lambda r: (r["model"], r["abnormal_class"], int(r["seed"]), int(r["epoch"]))  # noqa
    merged = {key(r): {k: r[k] for k in FIELDS} for r in read_record(path)}
    merged.update({key(r): {k: r[k] for k in FIELDS} for r in rows})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for k in sorted(merged):
            w.writerow(merged[k])
    os.replace(tmp, path)


def report(rows: list) -> str:
    """The results section: per class, one row per epoch with each GAN's two AUCs, the
    baselines' AUCs beside them."""
    lines = ["Command: `python -m experiments.results.budget_curve --report` (from the record "
             "docs/runs/budget_curve.csv; `--train` and `--collect` add points).", ""]
    if not rows:
        return "\n".join(lines + ["No points recorded yet."])
    for cls in sorted({r["abnormal_class"] for r in rows}):
        rs = [r for r in rows if r["abnormal_class"] == cls]
        base = {r["model"]: r["auc_honest"] for r in rs if methods.is_fitted(r["model"])}
        gans = sorted({r["model"] for r in rs} - set(base))
        lines += [f"**{cls} abnormal** (baselines: " + (", ".join(
            f"{m} {float(a):.3f}" for m, a in sorted(base.items())) or "not run") + ")", ""]
        lines += ["| model | epoch | images seen | honest AUC | originals' AUC | bonus |",
                  "|---|---:|---:|---:|---:|---:|"] if gans else [
            "No GAN epoch is recorded yet (`--train`, then `--collect`)."]
        for m in gans:
            for r in sorted((r for r in rs if r["model"] == m), key=lambda r: int(r["epoch"])):
                o = r["auc_originals"]
                bonus = f"{float(o) - float(r['auc_honest']):+.3f}" if o else ""
                lines.append(f"| {m} | {r['epoch']} | {int(r['images_seen']):,} | "
                             f"{float(r['auc_honest']):.3f} | {o and f'{float(o):.3f}'} | "
                             f"{bonus} |")
        lines.append("")
    lines.append("![AUC against images seen](budget_curve.png)")
    return "\n".join(lines)


def plot(rows: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted({r["abnormal_class"] for r in rows})
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    models = sorted({r["model"] for r in rows})
    color = {m: cycle[i % len(cycle)] for i, m in enumerate(models)}  # one per model, all plots
    fig, axes = plt.subplots(1, len(classes), figsize=(5 * len(classes), 3.6), squeeze=False)
    for ax, cls in zip(axes[0], classes):
        rs = [r for r in rows if r["abnormal_class"] == cls]
        for m in sorted({r["model"] for r in rs}):
            pts = sorted((int(r["images_seen"]), float(r["auc_honest"]),
                          float(r["auc_originals"]) if r["auc_originals"] else None)
                         for r in rs if r["model"] == m)
            if methods.is_fitted(m):
                ax.axhline(pts[0][1], ls=":", color=color[m], label=f"{m}")
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color[m],
                    label=f"{m} honest")
            ax.plot([p[0] for p in pts if p[2] is not None],
                    [p[2] for p in pts if p[2] is not None], "s--", color=color[m],
                    label=f"{m} originals'")
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set(title=f"CIFAR-10, {cls} abnormal", xlabel="training images seen",
               ylabel="test AUC", ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="store_true", help="train (or resume) the runs")
    ap.add_argument("--collect", action="store_true", help="finished epochs -> the record")
    ap.add_argument("--report", action="store_true", help="the record -> docs/results.md")
    ap.add_argument("--models", default="sagan,ganomaly,pca,knn")
    ap.add_argument("--classes", default="frog")
    ap.add_argument("--seeds", type=common.int_list, default="0")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--data_root", default=DATA_ROOT)
    ap.add_argument("--record", default=RECORD)
    args = ap.parse_args(argv)
    if not (args.train or args.collect or args.report):
        ap.error("choose --train, --collect and/or --report")
    models = [m for m in args.models.split(",") if m]
    classes = [c for c in args.classes.split(",") if c]
    seeds = args.seeds
    unknown = [m for m in models if m not in methods.names()]
    if unknown or not models:
        ap.error(f"--models={args.models}: choose from {', '.join(methods.names())}, "
                 "e.g. --models=sagan,ganomaly,pca,knn")
    if not classes or not seeds:
        ap.error("--classes and --seeds: give at least one each, e.g. --classes=frog --seeds=0")
    runs = [(m, c, s) for c in classes for m in models for s in seeds]
    if args.train:
        from sagan_jax.main import configure_logging
        from sagan_jax.training.loop import train

        configure_logging()

        for m, c, s in runs:
            train(run_config(m, c, s, args.out, args.data_root))
    if args.collect:
        rows, empty = [], []
        for m, c, s in runs:
            got = epoch_rows(m, c, s, os.path.join(args.out, m, f"{c}_seed{s}"))
            rows += got
            if not got:
                empty.append(f"{m} {c} seed {s}")
        write_record(args.record, rows)
        print(f"{len(rows)} points from {args.out} in {args.record}"
              + (f"; no scored epoch yet for: {', '.join(empty)}" if empty else ""))
    if args.report:
        rows = read_record(args.record)
        if rows:
            plot(rows, PLOT)
        sections.replace_section(common.RESULTS_MD, SECTION, report(rows),
                               heading="## Budget curve: AUC against images seen")
        print(f"wrote the {SECTION} section of {common.RESULTS_MD}")


if __name__ == "__main__":
    common.run_script(main)
