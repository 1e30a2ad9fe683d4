"""Table 2's evaluation-mode study (--eval_modes): a finished run's last checkpoint re-scored
with BatchNorm's running averages, with test-batch statistics in the originals' order, and with
them on a shuffled test set; each run's eval_modes.json, and the report's table of them."""
from __future__ import annotations

import json
import logging
import os
import time

from experiments.results.table2_record import legacy_workdir, run_workdir
from sagan_jax.config import Config

log = logging.getLogger("table2")


EVAL_MODES = (("running_averages", "(a) running averages (default)"),
              ("batch_stats_original_order", "(b) test-batch statistics, originals' order"),
              ("batch_stats_shuffled", "(c) test-batch statistics, shuffled test set"))


def eval_mode_study(cfg: Config, data, seed: int = 0) -> dict:
    """Re-score the test set with the run's last checkpoint three ways:
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


def study_if_requested(args, cfg, cls, model, get_data):
    """The study of a finished run that --eval_modes names (with --report_only: only one
    already written); ``get_data()`` loads its data when the study is still to do."""
    if model not in args.eval_modes_models or cls not in args.eval_modes_classes:
        return
    done = os.path.join(cfg.workdir, "eval_modes.json")
    if args.report_only and not os.path.exists(done):
        return
    data = None if os.path.exists(done) else get_data()
    eval_mode_study(cfg, data)


def collect_studies(args) -> list:
    """The eval_modes.json of every requested run that has one (either workdir layout)."""
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
