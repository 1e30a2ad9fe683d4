"""Table 2's report: the paper's numbers, the Markdown tables (the paper's layout, the three
evaluations and their facts), the coverage line with the commands that complete a partial table,
and the files a report writes (OUT/runs.csv, OUT/table2.md, --record, the docs section)."""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import statistics

from experiments import common, machine, sections
from experiments.results.table2_eval_modes import collect_studies, eval_modes_table
from experiments.results.table2_record import (BUDGETS, CSV_FIELDS, home_as_tilde,
                                               legacy_workdir, run_workdir, write_record)
from sagan_jax import methods


MODULE = "experiments.table2"
# The paper's Table 2 (docs/design.md, section 10).
PAPER_CLASSES = ("frog", "bird", "cat", "deer", "dog", "horse", "ship", "truck")
PAPER = {
    "egbad": dict(zip(PAPER_CLASSES, (0.512, 0.523, 0.466, 0.467, 0.502, 0.387, 0.534, 0.579)),
                  average=0.496),
    "ganomaly": dict(zip(PAPER_CLASSES, (0.777, 0.552, 0.647, 0.684, 0.815, 0.683, 0.818, 0.844)),
                     average=0.728),
    "skip_ganomaly": dict(zip(PAPER_CLASSES,
                              (0.955, 0.611, 0.670, 0.845, 0.706, 0.666, 0.909, 0.857)),
                          average=0.777),
    "sagan": dict(zip(PAPER_CLASSES, (0.996, 0.957, 0.951, 0.998, 0.975, 0.891, 0.990, 0.980)),
                  average=0.967),
}
PAPER.update(pca={}, knn={})  # the non-GAN baselines: not in the paper
# The tables' labels and order of the built-in models; any other registered model (--models)
# follows them, under its --model name, with no paper numbers.
NAMES = {"egbad": "EGBAD", "ganomaly": "GANomaly", "skip_ganomaly": "Skip-GANomaly",
         "sagan": "SAGAN (proposed)", "pca": "PCA (baseline)", "knn": "kNN (baseline)"}
MODEL_ORDER = ("pca", "knn", "egbad", "ganomaly", "skip_ganomaly", "sagan")


def in_table_order(models) -> list:
    """``models`` in the tables' order: the built-in ones as MODEL_ORDER, then the others."""
    return ([m for m in MODEL_ORDER if m in models]
            + [m for m in models if m not in MODEL_ORDER])


def model_label(model: str) -> str:
    return NAMES.get(model, model)


def _fmt(values):
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def markdown_table(rows: list, classes, models) -> str:
    classes = list(classes)
    head = "| Model | " + " | ".join(classes) + " | Average |"
    sep = "|---|" + "---|" * (len(classes) + 1)
    lines = [head, sep]
    for model in in_table_order(models):
        paper = PAPER.get(model, {})
        p_vals = [paper.get(c) for c in classes]
        known = [v for v in p_vals if v is not None]
        p_avg = f"{statistics.mean(known):.3f}" if known else "–"
        if known and len(known) == len(PAPER_CLASSES):
            p_avg = f"{paper['average']:.3f}"
        if known:
            lines.append(f"| {model_label(model)}, paper | "
                         + " | ".join("–" if v is None else f"{v:.3f}" for v in p_vals)
                         + f" | {p_avg} |")
        for key, label in (("auc_last_epoch", "ours, last epoch"),
                           ("auc_best_epoch_test_selected", "ours, best epoch (test-selected)")):
            cells, means = [], []
            for c in classes:
                vals = [r[key] for r in rows if r["model"] == model and r["abnormal_class"] == c]
                cells.append(_fmt(vals))
                if vals:
                    means.append(statistics.mean(vals))
            avg = f"{statistics.mean(means):.3f}" if len(means) == len(classes) else (
                f"{statistics.mean(means):.3f} ({len(means)} of {len(classes)})" if means
                else "–")
            lines.append(f"| {model_label(model)}, {label} | " + " | ".join(cells) + f" | {avg} |")
    return "\n".join(lines)


THREE_WAY = (
    ("auc_originals_evaluation", "(a) originals' evaluation"),
    ("auc_last_epoch", "(b) honest: precise BN, last epoch"),
    ("auc_val_selected", "(c) epoch chosen on validation normals"),
)


def originals_gains(rows: list) -> list:
    """(a) - (b) in AUC points, per run that was scored both ways."""
    return [100 * (r["auc_originals_evaluation"] - r["auc_last_epoch"]) for r in rows
            if r["auc_originals_evaluation"] != ""]


def three_way_table(rows: list, classes, models) -> str:
    """The three-way table: per model, each run's checkpoints scored (a) as the PyTorch
    originals score (training-mode BatchNorm, test set in stored order, batches of the
    training batch size, their score weight, best epoch on the test set), (b) honestly
    (precise BatchNorm, last epoch: the result), (c) at the epoch with the lowest mean score
    on held-out validation normals. Mean ± std over seeds; then what (a) adds over (b)."""
    classes = list(classes)
    lines = ["| Model | evaluation | " + " | ".join(classes) + " | Average | seeds |",
             "|---|---|" + "---|" * (len(classes) + 2)]
    gaps = []
    for model in in_table_order(models):
        mine = [r for r in rows if r["model"] == model]  # none: rows of '–'
        seeds = ",".join(map(str, sorted({r["seed"] for r in mine}))) or "–"
        for key, label in THREE_WAY:
            if methods.is_fitted(model) and key != "auc_last_epoch":
                continue
            cells, means = [], []
            for c in classes:
                vals = [r[key] for r in mine if r["abnormal_class"] == c and r[key] != ""]
                cells.append(_fmt(vals))
                if vals:
                    means.append(statistics.mean(vals))
            avg = (f"{statistics.mean(means):.3f}" if len(means) == len(classes) else
                   f"{statistics.mean(means):.3f} ({len(means)} of {len(classes)})" if means
                   else "–")
            name = ("(a) = (b) = (c): no BatchNorm, no epochs" if methods.is_fitted(model)
                    else label)
            lines.append(f"| {model_label(model)} | {name} | " + " | ".join(cells) + f" | {avg} | "
                         f"{seeds} |")
        d = [] if methods.is_fitted(model) else originals_gains(mine)
        if d:
            gaps.append(f"{model_label(model)}: (a) - (b) = {statistics.mean(d):+.1f} AUC points "
                        f"on average over {len(d)} runs (from {min(d):+.1f} to {max(d):+.1f})")
    if gaps:
        lines += ["", "What the originals' evaluation adds over the honest one: " + "; ".join(gaps)
                  + "."]
    return "\n".join(lines)


def _median(values, fmt):
    return fmt.format(statistics.median(values)) if values else "–"


def three_way_facts(rows: list, models) -> str:
    """The figures a reading of the three-way table rests on, per model, from the runs
    themselves: how many runs are below chance by (b), how often (c) chose the last epoch
    and what it changed, the spread of (a) - (b), and the time a run takes."""
    lines = ["| Model | runs | (b) mean | runs with (b) < 0.5 | (c) chose the last epoch | "
             "(c) - (b), points | (a) - (b), points: mean [min, max] | wall time per run "
             "(median) | of it training (median) |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for model in in_table_order(models):
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        b = [r["auc_last_epoch"] for r in mine]
        below = sum(v < 0.5 for v in b)
        walls = [r["wall_time_s"] / (r.get("runs_in_program") or 1) for r in mine]
        trains = [r["train_s"] for r in mine if r.get("train_s")] if not methods.is_fitted(model) else []
        if methods.is_fitted(model):
            c_last = c_gain = a_gap = "–"
        else:
            with_c = [r for r in mine if r["auc_val_selected"] != ""]
            c_last = (f"{sum(r['val_selected_epoch'] == r['epochs'] for r in with_c)} of "
                      f"{len(with_c)}") if with_c else "–"
            gains = [100 * (r["auc_val_selected"] - r["auc_last_epoch"]) for r in with_c]
            c_gain = f"{statistics.mean(gains):+.1f}" if gains else "–"
            d = originals_gains(mine)
            a_gap = f"{statistics.mean(d):+.1f} [{min(d):+.1f}, {max(d):+.1f}]" if d else "–"
        lines.append(f"| {model_label(model)} | {len(mine)} | {statistics.mean(b):.3f} | "
                     f"{below} of {len(mine)} | {c_last} | {c_gain} | {a_gap} | "
                     f"{_median(walls, '{:.0f} s')} | "
                     f"{_median(trains, '{:.0f} s')} |")
    return "\n".join(lines)


def run_state(args, model: str, cls: str, seed: int) -> str:
    """Why a requested run has no row: it diverged, it started and stopped (the next training
    command resumes it from its last checkpoint), or it was not run."""
    for workdir in (run_workdir(args.out, model, cls, seed),
                    legacy_workdir(args.out, model, cls, seed)):
        path = os.path.join(workdir, "metrics.json")
        if os.path.exists(path):
            with open(path) as f:
                metrics = json.load(f)
            if metrics.get("diverged"):
                return common.no_result(metrics, 0)
        if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
            return "started, not finished"
    return "not run"


def _argv_without(argv, names) -> list:
    """``argv`` less the options ``names`` (``--name=value``, ``--name value`` or a bare
    ``--name``)."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in names:
            takes_value = "=" not in a and name not in ("--report_only",)
            skip = takes_value and i + 1 < len(argv) and not argv[i + 1].startswith("--")
            continue
        out.append(a)
    return out


def _shell_word(word: str) -> str:
    """``word`` as a shell command shows it: home folders as ``~`` (table2 expands ``~`` in
    paths itself), quoted only where the shell would split or expand it."""
    name, eq, value = word.partition("=")
    word = f"{name}={home_as_tilde(value)}" if eq else home_as_tilde(word)
    return word if re.fullmatch(r"[\w@%+=:,./~-]+", word) else shlex.quote(word)


def command(argv) -> str:
    return " ".join(["python", "-m", MODULE, *map(_shell_word, argv)])


def coverage(args, rows: list) -> str:
    """Which of the requested runs (--models x --classes x --seeds) the report holds; when
    some are missing, what each missing one is (not run, started, diverged) and the commands
    that complete the table."""
    have = {(r["model"], str(r["abnormal_class"]), int(r["seed"])) for r in rows}
    models = in_table_order(args.models)
    total = len(models) * len(args.classes) * len(args.seeds)
    found = sum((m, c, s) in have for m in models for c in args.classes for s in args.seeds)
    shape = " x ".join(f"{n} {one if n == 1 else many}" for n, one, many in (
        (len(models), "model", "models"), (len(args.classes), "class", "classes"),
        (len(args.seeds), "seed", "seeds")))
    if found == total:
        return f"Coverage: complete, all {total} requested runs ({shape}) finished."
    parts, commands, any_diverged = [], [], False
    base = _argv_without(args.argv, ("--report_only", "--models", "--seeds", "--doc_section",
                                     "--doc", "--record"))
    if args.record:  # the training commands read and extend the same record
        base.append(f"--record={args.record_shown}")
    n_classes = len(args.classes)
    for model in models:
        full, rerun, unrun, notes = [], [], [], []
        for seed in args.seeds:
            done = [c for c in args.classes if (model, c, seed) in have]
            if len(done) == n_classes:
                full.append(seed)
                continue
            states = {c: run_state(args, model, c, seed) for c in args.classes
                      if (model, c, seed) not in have}
            diverged = [c for c, st in states.items() if st.startswith("diverged")]
            any_diverged |= bool(diverged)
            if len(diverged) < len(states):  # a command trains the others
                rerun.append(seed)
            if not done and all(st == "not run" for st in states.values()):
                unrun.append(seed)
                continue
            n_unrun = sum(st == "not run" for st in states.values())
            notes.append(f"seed {seed}: {len(done)} of {n_classes} classes finished"
                         + (f" ({', '.join(done)})" if done else "")
                         + "".join(f", class {c} {st}" for c, st in states.items()
                                   if st != "not run")
                         + (f", {n_unrun} not run" if n_unrun else ""))
        if unrun:
            notes.append(("seeds " if len(unrun) > 1 else "seed ") + ",".join(map(str, unrun))
                         + " not run")
        complete = ((("seeds " if len(full) > 1 else "seed ") + ",".join(map(str, full))
                     + " complete") if full else "no seed complete")
        parts.append(f"{model_label(model)}: " + "; ".join([complete, *notes]))
        if rerun:
            commands.append(command([*base, f"--models={model}",
                                     f"--seeds={','.join(map(str, rerun))}"]))
    lines = [f"Coverage: PARTIAL, {found} of {total} requested runs ({shape}) finished. "
             + ". ".join(parts) + "."]
    if commands:
        lines += ["", "To complete it (finished runs are read back, a started one resumes from "
                      "its last checkpoint), then rerun this report's command:", "",
                  *(f"    {c}" for c in commands)]
    if any_diverged:
        lines += ["", "A diverged run is not retried by a command: with the same flags it "
                      "resumes from its last good checkpoint and would likely diverge again. "
                      "Remove its folder to retrain it from scratch, or change its flags "
                      "(--set), and say so beside its numbers."]
    return "\n".join(lines)


def _header(args, load) -> str:
    text = machine.machine_header(load, packages=("jax", "jaxlib", "flax"))
    if args.report_only:  # this process trained nothing: say what it did
        return ("Report written " + text.removeprefix("Run ").rstrip(".")
                + " (--report_only: it read the runs' metrics.json"
                + (f" and the record {args.record_shown}" if args.record else "")
                + "; when and where each run trained is not in this line).")
    return text + (" Runs found finished were read back, not retrained; each run's own wall "
                   "time is in runs.csv" + (f" and {args.record_shown}" if args.record else "")
                   + ".")


def write_outputs(args, rows: list, load=None) -> None:
    """OUT/runs.csv and OUT/table2.md; with --doc_section, the report (less the title) also in
    that section of --doc."""
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS, restval="")
        w.writeheader()
        for r in sorted(rows, key=lambda r: (r["model"], r["abnormal_class"], r["seed"])):
            w.writerow(r)
    # runs trained together each record the program's wall time: count it once
    total = sum(r["wall_time_s"] / (r.get("runs_in_program") or 1) for r in rows)
    head = [
        f"Command: `{command(args.argv)}`",
        f"Data: --dataset={args.dataset} --protocol={args.protocol}"
        + (f" --data_root={home_as_tilde(args.data_root)}" if args.data_root else "")
        + f"; budget {args.budget}: {BUDGETS[args.budget]}"
        + (f"; overrides {args.set}" if args.set else ""),
        f"Per-model settings: experiments/model_<model>.cfg. Seeds: "
        f"{','.join(map(str, args.seeds))}."
        + (f" Per-run record (each finished run's numbers and defining flags; runs found there "
           f"are not retrained): {args.record_shown}." if args.record else ""),
        _header(args, load) + f" Wall time of the runs listed: {total / 60:.1f} min.",
        "",
        coverage(args, rows),
        "",
    ]
    main_table = [
        "AUC of ROC, abnormal class per column. 'last epoch' is the result; 'best epoch' is the "
        "best epoch on the test set (the paper's protocol), shown only for comparison. With "
        "several seeds: mean ± standard deviation. The paper's average is over its 8 classes "
        "when all 8 are shown, else over the classes shown.",
        "",
        markdown_table(rows, args.classes, args.models),
        "",
    ]
    three_way = [
        f"(a) the PyTorch originals' evaluation: BatchNorm in training mode, the test set in "
        f"its stored order in batches of the training batch size, score weight lambda "
        f"{args.originals_lambda} on R, and the best epoch on the test set (order- and "
        f"test-set-dependent: not a result); (b) the honest one: BatchNorm statistics "
        f"recomputed for the final weights, per-image scores, the last epoch (the result); "
        f"(c) the epoch whose mean score on a held-out {args.val_fraction:g} of the normal "
        f"training images is lowest (chosen without the test set). Mean ± std over seeds; "
        f"no ± where one seed ran; '–': no finished run.",
        "",
        three_way_table(rows, args.classes, args.models),
        "",
        "Per model, over its runs ((b) mean over runs, not over class means; wall time: "
        "the run's recorded wall_time_s, compilation, training and every evaluation, not "
        "process start-up or data loading; runs trained together share their program's "
        "wall time equally):",
        "",
        three_way_facts(rows, args.models),
        "",
    ] if args.three_way else []
    text = [f"# Table 2 reproduction ({args.budget} budget)", "", *head, *main_table]
    if three_way:
        text += ["## Three evaluations of the same checkpoints", "", *three_way]
    studies = collect_studies(args)
    if studies:
        text += [
            "## Evaluation mode (BatchNorm statistics at test time)",
            "",
            "Last-epoch checkpoint of each run re-scored three ways; AUC. (b) is how the PyTorch "
            "originals score (training-mode BatchNorm, batches of the training batch size, "
            "normal test images first, then abnormal train, then abnormal test images).",
            "",
            eval_modes_table(studies),
            "",
        ]
    with open(os.path.join(args.out, "table2.md"), "w") as f:
        f.write("\n".join(text))
    if args.record:
        write_record(args, rows)
    if args.doc_section:  # the three-way report has the (b) rows already: not the main table
        sections.replace_section(args.doc, args.doc_section,
                               "\n".join([*head, *(three_way or main_table)]))
