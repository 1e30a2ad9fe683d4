"""`make demo`: SAGAN beside the two non-GAN baselines on the same digits splits.

    python -m experiments.demo [--flagfile experiments/quickstart.cfg] [--out workdirs/demo]

Trains SAGAN with the quickstart's flags (experiments/quickstart.cfg) for --seeds (default
0,1,2, together as one program), then fits --model=pca and --model=knn with the same seeds (the seed also draws the
digits' train/test split, so each model sees the same splits), and prints one line per model
(last-epoch test AUC, mean ± std over the seeds) and one line saying what the comparison shows.
Everything runs in this one process (one JAX start-up). Each model writes its usual workdir
(OUT/sagan, OUT/pca, OUT/knn: runs/<run>/metrics.json, checkpoints, summary.json); a rerun
reads finished runs back instead of training them again. Other settings over seeds:
`python -m experiments.results.demo_sweep`.
"""
from __future__ import annotations

import argparse
import os
import time

from experiments import common

MODULE = "experiments.demo"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flagfile", default=common.flagfile("quickstart.cfg"))
    ap.add_argument("--out", default=os.path.join("workdirs", "demo"))
    ap.add_argument("--seeds", default="0,1,2,3,4",
                    help="seeds of every model (SAGAN: trained together as one program)")
    ap.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                    help="extra flag for every model (repeatable), e.g. --set progress=false")
    return ap.parse_args(argv)


def aucs_by_seed(result) -> dict:
    """{seed: last-epoch test AUC, or None for a run that diverged} of every run of a train()
    result (one run or a summary). A diverged run may carry an earlier epoch's AUC: not its
    result."""
    runs = result["results"] if "results" in result else [result]
    return {r["flags"]["seed"]: (r["auc"] if "auc" in r and not r.get("diverged") else None)
            for r in runs}


def aucs_of(result) -> list:
    """The last-epoch test AUCs of the runs of a train() result that finished."""
    return [a for a in aucs_by_seed(result).values() if a is not None]


def failed_seeds(result) -> list:
    return [s for s, a in aucs_by_seed(result).items() if a is None]


def mean_std(values):
    import numpy as np

    a = np.asarray(values, np.float64)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else 0.0)


def interval(mean_sd, n: int) -> tuple:
    """The 95% confidence interval of a mean over ``n`` seeds (Student's t; the spread taken
    as at least 0.01, so identical seeds still give an interval): the demo's verdicts compare
    intervals, never single means, so float noise between machines, which moves each seed's
    AUC, moves a verdict only when an interval really sits at a line."""
    from scipy import stats

    m, sd = mean_sd
    half = float(stats.t.ppf(0.975, max(n - 1, 1))) * max(sd, 0.01) / max(n, 1) ** 0.5
    return m - half, m + half


def reliable(sagan, n: int) -> bool:
    """SAGAN's 95% interval over the seeds lies above chance (0.5)."""
    return interval(sagan, n)[0] > 0.5


def conclusion(sagan, pca, knn, n_seeds: int, n_base: int = None) -> str:
    """One line: where SAGAN stands against chance and the baselines, from the 95% intervals
    of the means over the seeds (README: "Reading the demo")."""
    n_base = n_base or n_seeds
    lo, hi = interval(sagan, n_seeds)
    p_iv, k_iv = interval(pca, n_base), interval(knn, n_base)
    best_name, best_iv = ("kNN", k_iv) if knn[0] >= pca[0] else ("PCA", p_iv)
    if hi < 0.5:
        where = "scores the abnormal digit LOWER than the normals (below chance)"
    elif lo <= 0.5:
        where = f"is not reliably better than chance (95% interval {lo:.2f} to {hi:.2f})"
    else:
        where = f"beats chance (95% interval {lo:.2f} to {hi:.2f})"
    if hi < best_iv[0]:
        verdict = (f"a {best_name} baseline with no training beats it (its interval "
                   f"{best_iv[0]:.2f} to {best_iv[1]:.2f}): at this budget on 8x8 digits the demo "
                   "shows the pipeline end to end, not SAGAN's advantage (the paper's claims "
                   "need its budget and CIFAR-10; docs/results.md)")
    elif lo > best_iv[1]:
        verdict = (f"it beats both baselines (best: {best_name}, {best_iv[0]:.2f} to "
                   f"{best_iv[1]:.2f})")
    else:
        verdict = (f"its interval overlaps the best baseline's ({best_name}, {best_iv[0]:.2f} "
                   f"to {best_iv[1]:.2f}): no verdict between them at {n_seeds} seeds")
    return f"What this shows: over {n_seeds} seeds SAGAN {where} on this split; {verdict}."


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = common.config_from_flagfiles(args.flagfile, overrides={"seeds": args.seeds},
                                           args=common.set_args(args.set))
    except common.FlagError as e:
        common.fail(str(e))
    from sagan_jax.main import configure_logging, enable_compilation_cache

    configure_logging()
    from sagan_jax.training.loop import train

    enable_compilation_cache(cfg.compilation_cache)
    t_all = time.time()
    rows = []
    for model, extra in (("sagan", {}), ("pca", {}), ("knn", {})):
        mcfg = cfg.replace(model=model, workdir=os.path.join(args.out, model), **extra)
        t0 = time.time()
        result = train(mcfg)
        aucs, failed = aucs_of(result), ", ".join(map(str, failed_seeds(result)))
        if not aucs:
            common.fail(f"every {model} run diverged (seeds {failed}); see {mcfg.workdir}", MODULE)
        rows.append((model, mcfg, mean_std(aucs), len(aucs), time.time() - t0))
        if failed:
            print(f"{model}: seeds {failed} diverged: no result, not in the mean below",
                  flush=True)
    seeds = cfg.seeds or str(cfg.seed)
    print()
    print(f"Embedded digits, digit {cfg.abnormal_class} abnormal, seeds {seeds} (each seed its "
          f"own train/test split; the same splits for every model); last-epoch test AUC, mean "
          f"± std over the seeds:")
    names = {"sagan": f"SAGAN ({cfg.epochs} epochs, ngf {cfg.ngf}, kernels_per_layer "
                      f"{cfg.kernels_per_layer}, score {cfg.score_lambda:g} R + "
                      f"{1 - cfg.score_lambda:g} L)",
             "pca": f"PCA baseline ({cfg.pca_components} components, no training loop)",
             "knn": f"kNN baseline (k = {cfg.knn_k}, pixel space, no training loop)"}
    width = max(len(n) for n in names.values())
    for model, mcfg, (m, sd), n, wall in rows:
        print(f"  {names[model]:<{width}}  AUC {m:.3f} ± {sd:.3f}  ({n} runs, {wall:.0f} s; "
              f"{os.path.join(mcfg.workdir, 'summary.json' if n > 1 else 'metrics.json')})")
    print(conclusion(rows[0][2], rows[1][2], rows[2][2], rows[0][3], rows[1][3]))
    if not reliable(rows[0][2], rows[0][3]):
        print("Other settings (width, epochs, score weight) over seeds, with the baselines on the "
              "same splits: python -m experiments.results.demo_sweep.")
    print(f"Total wall time {time.time() - t_all:.0f} s. Score new digits with a run: "
          f"sagan-jax --mode=score --workdir={os.path.join(args.out, 'sagan', 'runs', '<run>')} "
          "--input=IMAGE_OR_FOLDER (runs: the folders under runs/).")

