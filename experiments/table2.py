"""Table 2 of the paper (CIFAR-10 leave-one-class-out AUC), reproduced in this framework.

Runs every (model, abnormal class, seed) under one data protocol and budget. All runs of a model
train together as one program (the run axis: ``train(cfg)`` with --abnormal_classes and
--seeds, sagan_jax/training/loop.py), in the model's workdir OUT/runs/<model>; each run writes
to OUT/runs/<model>/runs/<class>_seed<seed>/ (metrics.json, checkpoints, logs), and the program
writes OUT/runs/<model>/summary.json and summary.md. A run whose metrics.json records all its
epochs is read back, not retrained, also from the earlier layout OUT/runs/<model>/<class>/seed<seed>
(one process per run); a run stopped half-way resumes from its last epoch checkpoint (the training
loop does that; one stopped in the earlier layout resumes there, alone). Then writes
  OUT/table2.md   the paper's Table 2 layout: one column per abnormal class plus the average;
                  per model the paper's row, our last-epoch row (the result) and our
                  best-epoch row (selected on the test set, the paper's protocol: not a result)
  OUT/runs.csv    one line per run: model, class, seed, epochs, last-epoch AUC, best-epoch AUC
                  (test-set selected), the three-way AUCs, AP, F1 at the calibrated threshold,
                  oracle F1 (threshold chosen on the test set), pixel AUROC and AUPRO (with
                  defect masks; empty otherwise), wall time, workdir, runs in its program (runs
                  trained together share one wall time: the program's), and the flags that
                  define the run (JSON; what --record compares)

Each model starts from its flagfile experiments/model_<model>.cfg (its originals' weights,
score lambda and learning rate; see those files), then the budget preset, then --set; the
flags are parsed by absl as `python -m sagan_jax.main` parses them (experiments/common.py).

  python -m experiments.table2 --models=sagan,skip_ganomaly --classes=bird,cat \\
      --dataset=image_folder --data_root=~/.cache/sagan_jax/cifar10_jpg --budget=reduced \\
      --out=workdirs/table2_reduced
  python -m experiments.table2 --dataset=digits --classes=0,1 --budget=tiny --out=/tmp/t2
  python -m experiments.table2 --out=workdirs/table2_reduced --report_only   # table only

Every report says which of the requested runs (--models x --classes x --seeds) it holds and,
when some are missing, what each missing one is (not run, started, diverged) and the commands
that complete it. --doc_section=NAME also writes the report into that marked section of
docs/results.md (the three-way part with --three_way), so the docs' tables come from here.

--record=CSV (default with --doc_section=NAME: docs/runs/NAME.csv) is the committed per-run
record: one line per finished run, its numbers and the flags that define it. Runs found there
are read back, not retrained, and every finished run is added to it; so a fresh checkout, which
has no workdirs, regenerates the report and completes a partial one (the coverage line's
commands carry --record). A recorded run trained with other flags than the command's is refused,
never mixed into the table.

Budgets (SPEC section 10: the paper's budget takes hours per run on the 2-core CPU):
  paper    the model's own settings, all training images, 15 epochs
  reduced  experiments/cifar10_quick.cfg's reduction: 4,000 training images, 3 epochs, ngf 32
  tiny     1,000 training images, 1 epoch, ngf 16, ndf 32 (a smoke test, not a result)
  digits   the quickstart's training flags for the embedded digits: all training images,
           3 epochs, ngf 16, kernels_per_layer 1 (the quickstart's isize is 16; Skip-GANomaly's
           U-Net needs 32, so the digits' table runs every model at --isize=32)

--three_way (issue 13) scores each epoch's checkpoint three ways and writes that table: (a) as
the PyTorch originals (--eval_originals), (b) honestly (precise BN, last epoch), (c) at the
epoch chosen on --val_fraction of held-out normal training images. The digits' table:

  python -m experiments.table2 --dataset=digits --isize=32 --budget=digits --three_way \
      --models=pca,knn,sagan,skip_ganomaly --classes=0,1,2,3,4,5,6,7,8,9 --seeds=0,1,2 \
      --out=workdirs/table2_digits
  python -m experiments.table2 ... --models=ganomaly --seeds=0     # GANomaly: one seed
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import shlex
import statistics
import sys
import time

from experiments import common
from sagan_jax.config import RUN_SPECIFIC, Config

MODULE = "experiments.table2"

# SPEC section 9 (the paper's Table 2).
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
PAPER.update(pca={}, knn={})  # the non-GAN baselines (issue 13): not in the paper
NAMES = {"egbad": "EGBAD", "ganomaly": "GANomaly", "skip_ganomaly": "Skip-GANomaly",
         "sagan": "SAGAN (proposed)", "pca": "PCA (baseline)", "knn": "kNN (baseline)"}
MODEL_ORDER = ("pca", "knn", "egbad", "ganomaly", "skip_ganomaly", "sagan")
FITTED = ("pca", "knn")  # no training loop, no BatchNorm, no epochs
BUDGETS = {
    "paper": {"epochs": 15, "max_train_images": 0},
    "reduced": {"epochs": 3, "max_train_images": 4000, "ngf": 32},
    "tiny": {"epochs": 1, "max_train_images": 1000, "ngf": 16, "ndf": 32},
    # the quickstart's training flags (experiments/quickstart.cfg) for the embedded digits
    "digits": {"epochs": 3, "max_train_images": 0, "ngf": 16, "kernels_per_layer": 1,
                   "dsc_autotune": False},
}
CSV_FIELDS = ("model", "abnormal_class", "seed", "epochs", "auc_last_epoch",
              "auc_best_epoch_test_selected", "best_epoch", "auc_originals_evaluation",
              "originals_best_epoch", "auc_val_selected", "val_selected_epoch",
              "ap_last_epoch", "f1_last_epoch", "f1_oracle_last_epoch", "pixel_auc_last_epoch",
              "pixel_aupro_last_epoch",
              "wall_time_s", "train_s", "budget", "dataset", "protocol", "workdir",
              "runs_in_program", "flags")
# Value types of a row read back from a CSV (runs.csv, a --record); every other field is text.
INT_FIELDS = ("seed", "epochs", "best_epoch", "originals_best_epoch", "val_selected_epoch",
              "runs_in_program")
FLOAT_FIELDS = ("auc_last_epoch", "auc_best_epoch_test_selected", "auc_originals_evaluation",
                "auc_val_selected", "ap_last_epoch", "f1_last_epoch", "f1_oracle_last_epoch",
                "pixel_auc_last_epoch", "pixel_aupro_last_epoch", "wall_time_s", "train_s")
# Records written before the F1 rename: their f1_last_epoch was the oracle F1 (the best over
# thresholds chosen on the test set); read as f1_oracle_last_epoch, f1_last_epoch not measured.
LEGACY_COLUMNS = {"f1_last_epoch": "f1_oracle_last_epoch"}
# Columns a record written before they existed may lack (read as '': not measured). The pixel
# metrics need defect masks (an anomaly folder with ground truth): empty for CIFAR-10 and digits.
OPTIONAL_FIELDS = ("pixel_auc_last_epoch", "pixel_aupro_last_epoch")
# Of checkpoints.RESUMABLE_CHANGES (flags a resumed run may change), the ones that do change a
# finished run's numbers (eval_batch_size: with --eval_batch_stats), so the record keeps them.
RECORD_DEFINING = ("epochs", "eval_every", "eval_batch_size")
# Where a run's data lies: another machine keeps the same images elsewhere (not recorded).
RECORD_LOCATIONS = ("data_root", "mask_root")
# The Config fields that decide a run's data (sagan_jax.data.load_data): runs that agree on
# them (the same class and seed under different models) share one loaded dataset.
DATA_FIELDS = ("dataset", "data_root", "data_dir", "download", "abnormal_class", "protocol",
               "isize", "max_train_images", "val_fraction", "digits_test_fraction", "seed",
               "on_bad_image", "on_small_image", "resize", "mask_root")

log = logging.getLogger("table2")


def model_workdir(out: str, model: str) -> str:
    """The workdir of a model's program: its runs live in runs/<class>_seed<seed>/ below."""
    return os.path.join(out, "runs", model)


def run_workdir(out: str, model: str, cls: str, seed: int) -> str:
    """Where one run lives: the training loop's layout of a run list (training/runs.py)."""
    return os.path.join(model_workdir(out, model), "runs", f"{cls}_seed{seed}")


def legacy_workdir(out: str, model: str, cls: str, seed: int) -> str:
    """Where one run lived before the run axis (one process per run); read back, resumed."""
    return os.path.join(out, "runs", model, cls, f"seed{seed}")


def _config(args, model: str, **overrides) -> Config:
    """experiments/model_<model>.cfg, then the budget, the data flags and the run's place,
    then --set (raises common.FlagError)."""
    o = dict(BUDGETS[args.budget])
    if args.three_way:  # issue 13: (a) the originals' evaluation, (b) honest, (c) val-selected
        o.update(eval_originals=True, val_fraction=args.val_fraction, eval_every=1,
                 originals_score_lambda=args.originals_lambda)
    o.update(dataset=args.dataset, protocol=args.protocol, isize=args.isize, progress=False,
             data_root=args.data_root or None, data_dir=args.data_dir or None, **overrides)
    return common.config_from_flagfiles(common.flagfile(f"model_{model}.cfg"),
                                        overrides=o, args=common.set_args(args.set))


def run_config(args, model: str, cls: str, seed: int) -> Config:
    """One run's Config (as the training loop derives it from its program's), in its
    workdir OUT/runs/<model>/runs/<class>_seed<seed>."""
    return _config(args, model, abnormal_class=cls, seed=seed,
                   workdir=run_workdir(args.out, model, cls, seed))


def program_config(args, model: str, classes, seeds) -> Config:
    """The Config of one program training every (class, seed) of ``classes`` x ``seeds``
    together; a single run is that run's own Config (the loop writes a lone run at the top
    of its workdir)."""
    if len(classes) * len(seeds) == 1:
        return run_config(args, model, classes[0], seeds[0])
    return _config(args, model, abnormal_class=classes[0], seed=seeds[0],
                   abnormal_classes=",".join(classes), seeds=",".join(map(str, seeds)),
                   workdir=model_workdir(args.out, model))


def finished_run(args, model: str, cls: str, seed: int):
    """(run Config, metrics) of a run that finished all its epochs, in the run-axis layout
    or the earlier one (the Config's workdir is where it was found); (Config, None) if none."""
    cfg = run_config(args, model, cls, seed)
    epochs = 1 if model in FITTED else cfg.epochs  # a fitted model's one "epoch" is its fit
    for workdir in (cfg.workdir, legacy_workdir(args.out, model, cls, seed)):
        metrics = common.done_metrics(workdir, epochs)
        if metrics is not None:
            return cfg.replace(workdir=workdir), metrics
    return cfg, None


def run_flags(flags: dict) -> str:
    """The flags that define a run's numbers (a Config's ``to_dict()``, or the ``flags`` a
    run's metrics.json saved), as the record keeps them: all of them, less the ones a rerun may
    change without changing a finished run's result (checkpoints.RESUMABLE_CHANGES but
    RECORD_DEFINING), the run's own class, seed and workdir (RUN_SPECIFIC), and where its data
    lies (RECORD_LOCATIONS: another machine keeps the same images elsewhere). Sorted compact
    JSON, so equal flags are equal text."""
    from sagan_jax.training.checkpoints import RESUMABLE_CHANGES

    return json.dumps({k: v for k, v in flags.items()
                       if k not in RUN_SPECIFIC and k not in RECORD_LOCATIONS
                       and (k not in RESUMABLE_CHANGES or k in RECORD_DEFINING)},
                      sort_keys=True, separators=(",", ":"))


def flag_differences(had: dict, want: dict) -> list:
    """``--flag=recorded (now wanted)`` for each flag both define differently (a flag one of
    them lacks, e.g. one added to the package after the run, is not compared)."""
    return [f"--{k}={had[k]} (now {want[k]})" for k in sorted(set(had) & set(want))
            if had[k] != want[k]]


def _typed(row: dict) -> dict:
    """A row read back from CSV with its numbers as numbers ('' stays '': not measured)."""
    out = dict(row)
    for k in INT_FIELDS:
        if out.get(k, "") != "":
            out[k] = int(out[k])
    for k in FLOAT_FIELDS:
        if out.get(k, "") != "":
            out[k] = float(out[k])
    return out


def read_record(path: str) -> dict:
    """The runs a --record file holds, by (model, class, seed); {} when it does not exist yet.
    A file that is not such a record (a missing or unknown column, a short or long line, a
    number or flags cell that does not parse, a run twice) is refused with common.FlagError,
    never half-read."""
    if not path or not os.path.exists(path):
        return {}

    def bad(what: str, fix: str = "restore the file from git, or give a new path"):
        return common.FlagError(f"--record={_home_as_tilde(path)}: {what}; {fix}")

    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or ())
            legacy = {old: new for old, new in LEGACY_COLUMNS.items()
                      if old in columns and new not in columns}
            columns = [legacy.get(k, k) for k in columns]
            for old, new in legacy.items():
                columns.insert(columns.index(new), old)
            missing = [k for k in CSV_FIELDS if k not in columns and k not in OPTIONAL_FIELDS]
            extra = [k for k in columns if k not in CSV_FIELDS]
            if missing or extra:
                raise bad(f"not a table2 record (no column {missing[0]})" if missing else
                          f"column {extra[0]} is not a record column",
                          "give a file this script wrote, or a new path" if missing else
                          "remove it (the record keeps only what table2 writes)")
            raw = [{**r, **{new: r[old] for old, new in legacy.items()},
                    **{old: "" for old in legacy}} if legacy else r for r in reader]
    except OSError as e:
        raise bad(f"cannot be read ({e.strerror})", "give a CSV file's path") from None
    out = {}
    for n, r in enumerate(raw, start=2):
        if None in r or any(v is None for v in r.values()):
            raise bad(f"line {n} has {'more' if None in r else 'fewer'} cells than columns")
        try:
            r = _typed(r)
            flags = json.loads(r["flags"])
        except ValueError as e:
            raise bad(f"line {n} does not parse ({e})") from None
        if not isinstance(flags, dict):
            raise bad(f"line {n}: its flags are not a JSON object")
        key = (r["model"], r["abnormal_class"], r["seed"])
        if key in out:
            raise bad(f"run {key[0]} class {key[1]} seed {key[2]} appears twice",
                      "keep one line per run")
        out[key] = r
    return out


def check_finished(args) -> None:
    """Every finished run this command would read back, from a workdir or the record, must
    have been trained with this command's flags (run_flags): a table never mixes two
    experiments, and a record never labels a run with flags it was not trained with."""
    for model in args.models:
        for cls in args.classes:
            for seed in args.seeds:
                want = json.loads(run_flags(run_config(args, model, cls, seed).to_dict()))
                cfg, metrics = finished_run(args, model, cls, seed)
                if metrics is not None:
                    where = f"workdir {_home_as_tilde(cfg.workdir)}"
                    had = json.loads(run_flags(metrics.get("flags") or {}))
                    fix = "use another --out, or this run's flags"
                elif (model, cls, seed) in args.recorded:
                    where = f"--record={args.record_shown}"
                    had = json.loads(args.recorded[(model, cls, seed)]["flags"])
                    fix = ("rerun with the record's flags, or give another --record (or "
                           "--doc_section) for a new table")
                else:
                    continue
                diff = flag_differences(had, want)
                if diff:
                    raise common.FlagError(
                        f"{where}: run {model} class {cls} seed {seed} there was trained with "
                        f"other flags: {', '.join(diff)}; {fix}")


def write_record(args, rows: list) -> None:
    """This report's rows into --record, beside the runs recorded there that it did not ask
    for (kept: nothing is dropped). Under a lock on the record's folder the file is read again
    (another command may have added runs since this one started), merged, written to a
    temporary file and renamed: a crash leaves the previous record whole."""
    import fcntl

    folder = os.path.dirname(os.path.abspath(args.record))
    os.makedirs(folder, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    tmp = f"{args.record}.tmp{os.getpid()}"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        merged = read_record(args.record)
        for r in rows:
            merged[(r["model"], r["abnormal_class"], int(r["seed"]))] = r
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, CSV_FIELDS, restval="")
            w.writeheader()
            for key in sorted(merged):
                w.writerow({k: (_home_as_tilde(v) if k == "workdir" else v)
                            for k, v in merged[key].items()})
        os.replace(tmp, args.record)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        os.close(fd)  # releases the lock


class DataCache:
    """Datasets loaded once per (class, seed) and shared by the models (``train``'s loader)."""

    def __init__(self):
        self.data = {}

    def load(self, cfg: Config):
        from sagan_jax.data import load_data

        key = tuple(getattr(cfg, f) for f in DATA_FIELDS)
        if key not in self.data:
            self.data[key] = load_data(cfg)
        return self.data[key]


def _rounded(value):
    return "" if value is None else round(value, 4)


def row_of(cfg: Config, metrics: dict, budget: str) -> dict:
    best = metrics["best_epoch_on_test_set"]
    orig = metrics.get("originals_evaluation") or {}
    val = metrics.get("val_selected_epoch") or {}
    return {
        "auc_originals_evaluation": (round(orig["auc"], 4) if orig else ""),
        "originals_best_epoch": orig.get("epoch", ""),
        "auc_val_selected": (round(val["auc"], 4) if val else ""),
        "val_selected_epoch": val.get("epoch", ""),
        "model": cfg.model, "abnormal_class": cfg.abnormal_class, "seed": cfg.seed,
        "epochs": metrics["last_epoch"], "auc_last_epoch": round(metrics["auc"], 4),
        "auc_best_epoch_test_selected": round(best["auc"], 4), "best_epoch": best["epoch"],
        "ap_last_epoch": round(metrics["ap"], 4),
        # metrics.json written before the rename: f1 was the oracle F1, f1_at_threshold ours
        "f1_last_epoch": _rounded(metrics.get("f1_at_threshold" if "f1_oracle" not in metrics
                                              else "f1")),
        "f1_oracle_last_epoch": _rounded(metrics.get("f1_oracle", metrics.get("f1"))),
        **{f"{k}_last_epoch": (round(metrics[k], 4) if metrics.get(k) is not None else "")
           for k in ("pixel_auc", "pixel_aupro")},
        "wall_time_s": metrics["wall_time_s"],
        "train_s": round(sum(r.get("train_s", 0.0) for r in metrics.get("history", [])), 2),
        "budget": budget, "dataset": cfg.dataset,
        "protocol": cfg.protocol, "workdir": cfg.workdir,
        "runs_in_program": metrics.get("runs_in_program", 1),
        "flags": run_flags(metrics.get("flags") or cfg.to_dict()),  # what it trained with
    }


EVAL_MODES = (("running_averages", "(a) running averages (default)"),
              ("batch_stats_original_order", "(b) test-batch statistics, originals' order"),
              ("batch_stats_shuffled", "(c) test-batch statistics, shuffled test set"))


def eval_mode_study(cfg: Config, data, seed: int = 0) -> dict:
    """Re-score the test set with the run's last checkpoint three ways (issue 6, item 5):
    (a) BatchNorm running averages (our default); (b) each test batch's own statistics, the
    test set in the originals' order (normal test images, abnormal train, abnormal test) and
    batches of the training batch size, as the PyTorch originals score; (c) the same batch
    statistics with the test set shuffled (seeded), so that batches mix normal and abnormal.
    Writes eval_modes.json in the run's workdir."""
    import dataclasses

    import numpy as np

    from sagan_jax.training.evaluate import evaluate_checkpoint

    path = os.path.join(cfg.workdir, "eval_modes.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    test = data.test
    bs = cfg.replace(eval_batch_stats=True, eval_batch_size=cfg.batch_size)
    perm = np.random.RandomState(seed).permutation(len(test))
    shuffled = dataclasses.replace(data, test=type(test)(test.images[perm], test.labels[perm]))
    out = {"model": cfg.model, "abnormal_class": cfg.abnormal_class, "seed": cfg.seed,
           "eval_batch_size": bs.eval_batch_size, "test_counts": test.counts()}
    for (key, _), (c, d) in zip(EVAL_MODES, ((cfg, data), (bs, data), (bs, shuffled))):
        t = time.time()
        res = evaluate_checkpoint(c, d)
        out[key] = {k: res.get(k) for k in ("auc", "ap", "auc_r", "auc_lat")}
        log.info("eval mode %s, %s: AUC %.4f (%.0f s)", key, cfg.abnormal_class, res["auc"],
                 time.time() - t)
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    return out


def eval_modes_table(studies: list) -> str:
    lines = ["| model | abnormal class | seed | " + " | ".join(l for _, l in EVAL_MODES) + " |",
             "|---|---|---|" + "---:|" * len(EVAL_MODES)]
    for s in sorted(studies, key=lambda s: (s["model"], s["abnormal_class"], s["seed"])):
        lines.append(f"| {s['model']} | {s['abnormal_class']} | {s['seed']} | "
                     + " | ".join(f"{s[k]['auc']:.3f}" for k, _ in EVAL_MODES) + " |")
    return "\n".join(lines)


def run_all(args, monitor: common.LoadMonitor) -> list:
    """Every (model, class, seed): finished runs read back; per model, the runs still to do
    trained together in one program (one per set of classes that lack the same seeds)."""
    from sagan_jax.training.loop import train

    import jax

    rows, cache, trained = [], DataCache(), 0
    for model in args.models:
        pending, legacy = {}, []
        for cls in args.classes:
            for seed in args.seeds:
                cfg, metrics = finished_run(args, model, cls, seed)
                if metrics is not None:
                    log.info("done already: %s", cfg.workdir)
                    rows.append(row_of(cfg, metrics, args.budget))
                    _study(args, cfg, cls, model, lambda c=cfg: cache.load(c))
                    continue
                recorded = args.recorded.get((model, cls, seed))
                if recorded is not None:  # finished where the record was written: not retrained
                    log.info("recorded in %s: %s %s seed %d", args.record_shown, model, cls, seed)
                    rows.append(recorded)
                    continue
                if args.report_only:
                    continue
                old = legacy_workdir(args.out, model, cls, seed)
                if os.path.exists(os.path.join(old, "metrics.jsonl")):
                    legacy.append(cfg.replace(workdir=old))  # stopped half-way: resume there
                else:
                    pending.setdefault(cls, []).append(seed)
        programs = [([c.abnormal_class], [c.seed], c) for c in legacy]
        by_seeds = {}
        for cls, seeds in pending.items():
            by_seeds.setdefault(tuple(seeds), []).append(cls)
        programs += [(classes, list(seeds), program_config(args, model, classes, list(seeds)))
                     for seeds, classes in by_seeds.items()]
        for classes, seeds, cfg in programs:
            if trained:  # free the previous program's compiled code (see loop.train: a long
                # list of programs in one process otherwise exhausts vm.max_map_count)
                jax.clear_caches()
            trained += 1
            log.info("run %s: abnormal %s, seeds %s in one program -> %s", model,
                     ",".join(classes), ",".join(map(str, seeds)), cfg.workdir)
            t = time.time()
            result = train(cfg, load=cache.load)
            results = result["results"] if "per_class" in result else [result]
            done = [(c, s) for c in classes for s in seeds]  # the loop's order: classes outer
            for (cls, seed), metrics in zip(done, results):
                rcfg = (cfg if len(done) == 1 else run_config(args, model, cls, seed))
                epochs = 1 if model in FITTED else rcfg.epochs  # as finished_run reads it back
                why = common.no_result(metrics, epochs)
                if why:  # not a result: the report's coverage line names it
                    log.warning("%s %s seed %d: no row, %s", model, cls, seed, why)
                    continue
                log.info("%s %s seed %d: AUC %.4f (last epoch)", model, cls, seed,
                         metrics["auc"])
                rows.append(row_of(rcfg, metrics, args.budget))
            log.info("%s: %d run(s) in %.0f s", model, len(done), time.time() - t)
            write_outputs(args, rows, monitor.report())  # partial results stay readable
            for cls, seed in done:
                rcfg = cfg if len(done) == 1 else run_config(args, model, cls, seed)
                _study(args, rcfg, cls, model, lambda c=rcfg: cache.load(c))
    return rows


def _study(args, cfg, cls, model, get_data):
    if model not in args.eval_modes_models or cls not in args.eval_modes_classes:
        return
    done = os.path.join(cfg.workdir, "eval_modes.json")
    if args.report_only and not os.path.exists(done):
        return
    data = None if os.path.exists(done) else get_data()
    eval_mode_study(cfg, data)


def collect_studies(args) -> list:
    out = []
    for model in args.models:
        for cls in args.classes:
            for seed in args.seeds:
                for workdir in (run_workdir(args.out, model, cls, seed),
                                legacy_workdir(args.out, model, cls, seed)):
                    path = os.path.join(workdir, "eval_modes.json")
                    if os.path.exists(path):
                        with open(path) as f:
                            out.append(json.load(f))
                        break
    return out


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
    for model in [m for m in MODEL_ORDER if m in models]:
        paper = PAPER[model]
        p_vals = [paper.get(c) for c in classes]
        known = [v for v in p_vals if v is not None]
        p_avg = f"{statistics.mean(known):.3f}" if known else "–"
        if known and len(known) == len(PAPER_CLASSES):
            p_avg = f"{paper['average']:.3f}"
        if known:
            lines.append(f"| {NAMES[model]}, paper | "
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
                f"{statistics.mean(means):.3f} ({len(means)} of {len(classes)})" if means else "–")
            lines.append(f"| {NAMES[model]}, {label} | " + " | ".join(cells) + f" | {avg} |")
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
    """Issue 13's table: per model, each run's checkpoints scored (a) as the PyTorch
    originals score (training-mode BatchNorm, test set in stored order, batches of the
    training batch size, their score weight, best epoch on the test set), (b) honestly
    (precise BatchNorm, last epoch: the result), (c) at the epoch with the lowest mean score
    on held-out validation normals. Mean ± std over seeds; then what (a) adds over (b)."""
    classes = list(classes)
    lines = ["| Model | evaluation | " + " | ".join(classes) + " | Average | seeds |",
             "|---|---|" + "---|" * (len(classes) + 2)]
    gaps = []
    for model in [m for m in MODEL_ORDER if m in models]:
        mine = [r for r in rows if r["model"] == model]  # none: rows of '–'
        seeds = ",".join(map(str, sorted({r["seed"] for r in mine}))) or "–"
        for key, label in THREE_WAY:
            if model in FITTED and key != "auc_last_epoch":
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
            name = label if model not in FITTED else "(a) = (b) = (c): no BatchNorm, no epochs"
            lines.append(f"| {NAMES[model]} | {name} | " + " | ".join(cells) + f" | {avg} | "
                         f"{seeds} |")
        d = [] if model in FITTED else originals_gains(mine)
        if d:
            gaps.append(f"{NAMES[model]}: (a) - (b) = {statistics.mean(d):+.1f} AUC points on "
                        f"average over {len(d)} runs (from {min(d):+.1f} to {max(d):+.1f})")
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
    for model in [m for m in MODEL_ORDER if m in models]:
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        b = [r["auc_last_epoch"] for r in mine]
        below = sum(v < 0.5 for v in b)
        walls = [r["wall_time_s"] / (r.get("runs_in_program") or 1) for r in mine]
        trains = [r["train_s"] for r in mine if r.get("train_s")] if model not in FITTED else []
        if model in FITTED:
            c_last = c_gain = a_gap = "–"
        else:
            with_c = [r for r in mine if r["auc_val_selected"] != ""]
            c_last = (f"{sum(r['val_selected_epoch'] == r['epochs'] for r in with_c)} of "
                      f"{len(with_c)}") if with_c else "–"
            gains = [100 * (r["auc_val_selected"] - r["auc_last_epoch"]) for r in with_c]
            c_gain = f"{statistics.mean(gains):+.1f}" if gains else "–"
            d = originals_gains(mine)
            a_gap = f"{statistics.mean(d):+.1f} [{min(d):+.1f}, {max(d):+.1f}]" if d else "–"
        lines.append(f"| {NAMES[model]} | {len(mine)} | {statistics.mean(b):.3f} | "
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
    word = f"{name}={_home_as_tilde(value)}" if eq else _home_as_tilde(word)
    return word if re.fullmatch(r"[\w@%+=:,./~-]+", word) else shlex.quote(word)


def command(argv) -> str:
    return " ".join(["python", "-m", MODULE, *map(_shell_word, argv)])


def coverage(args, rows: list) -> str:
    """Which of the requested runs (--models x --classes x --seeds) the report holds; when
    some are missing, what each missing one is (not run, started, diverged) and the commands
    that complete the table."""
    have = {(r["model"], str(r["abnormal_class"]), int(r["seed"])) for r in rows}
    models = [m for m in MODEL_ORDER if m in args.models]
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
        parts.append(f"{NAMES[model]}: " + "; ".join([complete, *notes]))
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


def _home_as_tilde(path: str) -> str:
    """``path`` with the user's home as ``~``: a report names no one's home folder."""
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if path == home or path.startswith(home + os.sep) else path


def _header(args, load) -> str:
    text = common.machine_header(load, packages=("jax", "jaxlib", "flax"))
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
        + (f" --data_root={_home_as_tilde(args.data_root)}" if args.data_root else "")
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
        text += ["## Three evaluations of the same checkpoints (issue 13)", "", *three_way]
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
        common.replace_section(args.doc, args.doc_section,
                               "\n".join([*head, *(three_way or main_table)]))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter,
                                allow_abbrev=False)  # the coverage commands edit argv by name
    p.add_argument("--models", default="sagan,skip_ganomaly",
                   help="comma-separated: sagan, skip_ganomaly, ganomaly, egbad")
    p.add_argument("--classes", default=",".join(PAPER_CLASSES),
                   help="comma-separated abnormal classes (default: the paper's 8)")
    p.add_argument("--seeds", type=common.int_list, default="0", help="comma-separated seeds")
    p.add_argument("--dataset", default="image_folder")
    p.add_argument("--data_root", default="~/.cache/sagan_jax/cifar10_jpg")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--protocol", default="ganomaly", choices=("ganomaly", "clean"))
    p.add_argument("--isize", type=int, default=32)
    p.add_argument("--budget", default="reduced", choices=sorted(BUDGETS))
    p.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                   help="override any sagan_jax flag for every run (repeatable)")
    p.add_argument("--out", default="workdirs/table2")
    p.add_argument("--eval_modes", default="",
                   help="MODEL:CLASS,CLASS,... e.g. sagan:bird,cat,frog - after those runs, "
                        "re-score the test set with (a) running averages, (b) test-batch "
                        "statistics in the originals' order, (c) batch statistics shuffled")
    p.add_argument("--three_way", action="store_true",
                   help="issue 13: score every epoch also as the originals do (--eval_originals) "
                        "and hold out --val_fraction of the normal training images to choose an "
                        "epoch; writes the three-way table")
    p.add_argument("--val_fraction", type=float, default=0.1,
                   help="with --three_way: normal training images held out for (c)")
    p.add_argument("--originals_lambda", type=float, default=0.9,
                   help="with --three_way: the originals' score weight on R (their code: 0.9)")
    p.add_argument("--report_only", action="store_true",
                   help="only collect finished runs and write the table and CSV")
    p.add_argument("--doc_section", default="", metavar="NAME",
                   help="also write the report (the three-way part with --three_way) between "
                        "the <!-- NAME:begin/end --> markers of --doc, e.g. "
                        "table2_reduced_three_way")
    p.add_argument("--doc", default=common.RESULTS_MD, help="the Markdown file of --doc_section")
    p.add_argument("--record", default="", metavar="CSV",
                   help="a committed per-run record (one line per finished run, with the flags "
                        "that define it): runs found there are read from it, not retrained, and "
                        "every finished run is written to it, so a fresh checkout without the "
                        "workdirs can redo the report and complete it. Default with "
                        "--doc_section=NAME: runs/NAME.csv beside --doc; else none")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not args.record and args.doc_section:
        args.record = os.path.join(os.path.dirname(os.path.abspath(args.doc)), "runs",
                                   f"{args.doc_section}.csv")
    args.record = os.path.expanduser(args.record)
    rel = os.path.relpath(os.path.abspath(args.record)) if args.record else ""
    args.record_shown = _home_as_tilde(args.record if rel.startswith("..") else rel)
    try:
        args.recorded = read_record(args.record)
    except common.FlagError as e:
        p.error(str(e))
    if args.doc_section and (not os.path.exists(args.doc)
                             or common.read_section(args.doc, args.doc_section) is None):
        begin, end = common.markers(args.doc_section)
        p.error(f"--doc_section={args.doc_section}: {args.doc} has no {begin} ... {end} "
                "markers; add them where the report belongs")
    args.models = [m for m in args.models.split(",") if m]
    args.classes = [c for c in args.classes.split(",") if c]
    em_model, _, em_classes = args.eval_modes.partition(":")
    args.eval_modes_models = [em_model] if em_model else []
    args.eval_modes_classes = [c for c in em_classes.split(",") if c]
    if args.dataset not in ("image_folder", "anomaly_folder"):
        args.data_root = None
    elif args.data_root:
        args.data_root = os.path.expanduser(args.data_root)
    if not args.seeds:
        p.error("--seeds: give at least one seed, e.g. --seeds=0,1,2")
    for name in ("models", "classes", "seeds"):
        values = getattr(args, name)
        if not values or len(set(values)) < len(values):
            p.error(f"--{name}={','.join(map(str, values))}: give distinct values, at least one")
    for m in args.models:
        if m not in PAPER:
            p.error(f"--models: {m!r} is not one of {', '.join(MODEL_ORDER)}")
    if args.eval_modes and (not em_model or not args.eval_modes_classes
                            or em_model not in args.models
                            or any(c not in args.classes for c in args.eval_modes_classes)):
        p.error(f"--eval_modes={args.eval_modes}: give MODEL:CLASS,... with the model in "
                f"--models and the classes in --classes, e.g. --eval_modes=sagan:bird,cat")
    return args


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    import jax

    # The runs differ only in data: compiled steps are reused across classes from this cache.
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser("~/.cache/sagan_jax/jax_compilation_cache"))
    try:  # fail early on a bad combination or a record of other flags, before any training
        for m in args.models:
            for c in args.classes:
                run_config(args, m, c, args.seeds[0])
            program_config(args, m, args.classes, args.seeds)
        check_finished(args)
    except common.FlagError as e:
        common.fail(str(e))
    monitor = common.LoadMonitor()
    rows = run_all(args, monitor)
    write_outputs(args, rows, None if args.report_only else monitor.report())
    print(open(os.path.join(args.out, "table2.md")).read())


if __name__ == "__main__":
    common.run_script(main)
