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
This module trains and reads back the runs; table2_record.py keeps the per-run record,
table2_report.py writes the tables, table2_eval_modes.py runs the evaluation-mode study.

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

Budgets (the paper's budget takes hours per run on a 2-core CPU):
  paper    the model's own settings, all training images, 15 epochs
  reduced  experiments/cifar10_quick.cfg's reduction: 4,000 training images, 3 epochs, ngf 32
  tiny     1,000 training images, 1 epoch, ngf 16, ndf 32 (a smoke test, not a result)
  digits   the quickstart's training flags for the embedded digits: all training images,
           3 epochs, ngf 16, kernels_per_layer 1 (the quickstart's isize is 16; Skip-GANomaly's
           U-Net needs 32, so the digits' table runs every model at --isize=32)

--three_way scores each epoch's checkpoint three ways and writes that table: (a) as
the PyTorch originals (--eval_originals), (b) honestly (precise BN, last epoch), (c) at the
epoch chosen on --val_fraction of held-out normal training images. The digits' table:

  python -m experiments.table2 --dataset=digits --isize=32 --budget=digits --three_way \
      --models=pca,knn,sagan,skip_ganomaly --classes=0,1,2,3,4,5,6,7,8,9 --seeds=0,1,2 \
      --out=workdirs/table2_digits
  python -m experiments.table2 ... --models=ganomaly --seeds=0     # GANomaly: one seed
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from experiments import common, machine, sections
from experiments.results.table2_eval_modes import study_if_requested
from experiments.results.table2_record import (BUDGETS, flag_differences, home_as_tilde,
                                               legacy_workdir, model_workdir, read_record, row_of,
                                               run_flags, run_workdir)
from experiments.results.table2_report import PAPER_CLASSES, write_outputs
from sagan_jax import methods
from sagan_jax.config import Config


# The Config fields that decide a run's data (sagan_jax.data.load_data): runs that agree on
# them (the same class and seed under different models) share one loaded dataset.
DATA_FIELDS = ("dataset", "data_root", "data_dir", "download", "abnormal_class", "protocol",
               "isize", "max_train_images", "val_fraction", "digits_test_fraction", "seed",
               "on_bad_image", "on_small_image", "resize", "mask_root")
log = logging.getLogger("table2")


def _config(args, model: str, **overrides) -> Config:
    """experiments/model_<model>.cfg, then the budget, the data flags and the run's place,
    then --set (raises common.FlagError)."""
    o = dict(BUDGETS[args.budget])
    if args.three_way:  # (a) the originals' evaluation, (b) honest, (c) val-selected
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
    epochs = 1 if methods.is_fitted(model) else cfg.epochs  # a fitted model's one "epoch" is its fit
    for workdir in (cfg.workdir, legacy_workdir(args.out, model, cls, seed)):
        metrics = common.done_metrics(workdir, epochs)
        if metrics is not None:
            return cfg.replace(workdir=workdir), metrics
    return cfg, None


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
                    where = f"workdir {home_as_tilde(cfg.workdir)}"
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


def run_all(args, monitor: machine.LoadMonitor) -> list:
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
                    study_if_requested(args, cfg, cls, model, lambda c=cfg: cache.load(c))
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
                epochs = 1 if methods.is_fitted(model) else rcfg.epochs  # as finished_run reads it back
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
                study_if_requested(args, rcfg, cls, model, lambda c=rcfg: cache.load(c))
    return rows


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
                   help="score every epoch also as the originals do (--eval_originals) "
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
    args.record_shown = home_as_tilde(args.record if rel.startswith("..") else rel)
    try:
        args.recorded = read_record(args.record)
    except common.FlagError as e:
        p.error(str(e))
    if args.doc_section and (not os.path.exists(args.doc)
                             or sections.read_section(args.doc, args.doc_section) is None):
        begin, end = sections.markers(args.doc_section)
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
        if m not in methods.names():
            p.error(f"--models: {m!r} is not one of {', '.join(methods.names())} (the "
                    "registered models)")
    if args.eval_modes and (not em_model or not args.eval_modes_classes
                            or em_model not in args.models
                            or any(c not in args.classes for c in args.eval_modes_classes)):
        p.error(f"--eval_modes={args.eval_modes}: give MODEL:CLASS,... with the model in "
                f"--models and the classes in --classes, e.g. --eval_modes=sagan:bird,cat")
    return args


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    from sagan_jax.main import enable_compilation_cache

    try:  # fail early on a bad combination or a record of other flags, before any training
        for m in args.models:
            for c in args.classes:
                run_config(args, m, c, args.seeds[0])
            program_config(args, m, args.classes, args.seeds)
        check_finished(args)
    except common.FlagError as e:
        common.fail(str(e))
    # The runs differ only in data: compiled steps are reused across classes from the cache
    # (--set compilation_cache=..., as in sagan_jax.main; '' = off).
    enable_compilation_cache(run_config(args, args.models[0], args.classes[0],
                                        args.seeds[0]).compilation_cache)
    monitor = machine.LoadMonitor()
    rows = run_all(args, monitor)
    write_outputs(args, rows, None if args.report_only else monitor.report())
    print(open(os.path.join(args.out, "table2.md")).read())

