"""The training loop: one or many runs (seeds x abnormal classes) trained as one program.

  train(cfg)                     the run list of cfg, in program groups; summary of many runs
  train_and_evaluate(cfg, data)  one run on given data (today's single run)
  Trainer                        one program of runs:
    .train_epoch(epoch)            the chunks of one epoch (lax.scan, data on the devices)
    .end_of_epoch(epoch)           per run: finiteness, precise BN, test scores (all runs
                                   together), then epoch_end's calibration, record, log,
                                   checkpoint (shared with the fitted models, fit.py)
    .finish()                      per run: epoch_end's metrics.json, plots

Reported results are the LAST epoch's test metrics; the best epoch on the test set is
recorded beside them, labelled as test-selected (the paper's protocol). Rerunning with the same
workdir resumes every run from its newest checkpoint (only when the experiment's flags match).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time

import jax
import numpy as np

from sagan_jax import methods, seeds
from sagan_jax.config import ConfigError
from sagan_jax.data import load_data
from sagan_jax.data.pipeline import epoch_order, padded_batch_size
from sagan_jax.devices import local_mesh, put_replicated
from sagan_jax.methods import dsc_autotune
from sagan_jax.methods.spec import variables_of
from sagan_jax.training import checkpoints, fit, program as prog
from sagan_jax.training.bn_recalibration import recalibrate_batchnorm
from sagan_jax.training.errors import NonFiniteLossError, check_interrupt
from sagan_jax.training.metric_writer import MetricWriter, read_jsonl
from sagan_jax.training.runs import Run, check_layout, plan_runs, program_groups
from sagan_jax.training.state import init_state, make_optimizers
from sagan_jax.training.step import make_mesh
from sagan_jax.training.epoch_end import (add_record, epoch_record, is_scored, log_test,
                                          run_result, save_checkpoint, test_metrics,
                                          write_plots, write_result)
from sagan_jax.training.evaluate import (calibration, calibration_images, metrics_from_scores,
                                         originals_auc, score_images)
from sagan_jax.training.results import (peak_memory, summarise_runs, summary_markdown,
                                        write_json)

log = logging.getLogger("sagan_jax")
make_chunk_program = prog.make_chunk_program  # module attribute, so tests can wrap it
COMPILING = "compiling the training step (first call, cached afterwards)"


def is_writer() -> bool:
    """Process 0 writes logs, metrics, plots and summaries; every process checkpoints."""
    return jax.process_index() == 0


def _progress(total, disable, desc):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, disable=disable, unit="step", dynamic_ncols=True, leave=False)
    bar.set_description(desc)
    return bar


# ---- entry points ---------------------------------------------------------------------------
def train(cfg, load=None) -> dict:
    """Train every run of ``cfg`` (``--seeds`` x ``--abnormal_classes``). One run: its result
    (metrics.json). Several: WORKDIR/summary.json and summary.md, and the summary."""
    load = load or load_data
    runs = plan_runs(cfg)
    check_layout(cfg, runs)
    for run in runs:  # before any data is loaded or program built
        checkpoints.check_resumable(run.cfg)
    with checkpoints.WorkdirLock(cfg.workdir) if is_writer() else _nothing():
        results = []
        if methods.is_fitted(cfg.model):  # PCA, kNN: fitted in one call each (training/fit.py)
            results = fit.fit_runs(runs, load)
        groups = [] if methods.is_fitted(cfg.model) else program_groups(runs, cfg.max_runs_per_program)
        for i, group in enumerate(groups):
            if i:  # free the last group's compiled programs: each maps memory, and a long run
                # list in one process otherwise exhausts vm.max_map_count (LLVM "Cannot
                # allocate memory" after ~20 groups of differently shaped data)
                jax.clear_caches()
            results += Trainer(cfg, group, [load(r.cfg) for r in group]).run()
    if len(runs) == 1:
        return results[0]
    summary = summarise_runs(runs, results)
    summary.update(peak_memory())
    if is_writer():
        write_json(os.path.join(cfg.workdir, "summary.json"), summary)
        with open(os.path.join(cfg.workdir, "summary.md"), "w") as f:
            f.write(summary_markdown(summary, cfg.model))
    summary["results"] = results
    return summary


def train_and_evaluate(cfg, data) -> dict:
    """Train and evaluate one run of ``cfg`` on ``data`` (its result, as in metrics.json)."""
    run = Run("", cfg.replace(seeds="", abnormal_classes=""))
    with checkpoints.WorkdirLock(cfg.workdir) if is_writer() else _nothing():
        if methods.is_fitted(cfg.model):
            return fit.fit_and_evaluate(run, data)
        return Trainer(cfg, [run], [data]).run()[0]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---- one run's host-side bookkeeping --------------------------------------------------------
class RunTracker:
    """One run's data, checkpoints, logs and history on the host."""

    def __init__(self, run, data, steps_per_epoch: int, g_tx, d_tx):
        self.run, self.cfg, self.data = run, run.cfg, data
        self.steps_per_epoch = steps_per_epoch
        self.label = run.name or "run"
        os.makedirs(self.cfg.workdir, exist_ok=True)
        self.mngr = checkpoints.manager(self.cfg.workdir, self.cfg.keep_checkpoints)
        self.best_mngr = (checkpoints.manager(self.cfg.workdir, 1, name="best")
                          if data.val is not None else None)
        self.history, self.best_val, self.start_epoch = [], float("inf"), 0
        self.wall_before, self.diverged, self.finished_result = 0.0, None, None
        self.last_saved_epoch = None
        abstract = jax.eval_shape(lambda: init_state(self.cfg, seeds.init_key(self.cfg.seed),
                                                     g_tx, d_tx))
        restored, meta = checkpoints.restore_latest(self.mngr, abstract, self.cfg, resume=True)
        if restored is None:
            self.state = init_state(self.cfg, seeds.init_key(self.cfg.seed), g_tx, d_tx)
        else:
            self.state, self.start_epoch = restored, meta["epoch"] + 1
            self.last_saved_epoch = meta["epoch"]
            self.history = meta.get("history", [])
            self.best_val = float("inf") if meta.get("best_val") is None else meta["best_val"]
            self.wall_before = float(meta.get("wall_time_s", 0.0))
            log.info("%s: resumed from %s after epoch %d (step %d)", self.label,
                     self.mngr.directory, self.start_epoch, int(self.state.step))
            metrics_path = os.path.join(self.cfg.workdir, "metrics.json")
            if self.start_epoch >= self.cfg.epochs and os.path.exists(metrics_path):
                log.info("%s: the run already finished its %d epochs: %s", self.label,
                         self.cfg.epochs, metrics_path)
                with open(metrics_path) as f:
                    self.finished_result = json.load(f)
        self.writer = None
        if is_writer():
            self.writer = MetricWriter(self.cfg.workdir, tensorboard=self.cfg.tensorboard)
            # A killed process may have logged steps after its last checkpoint: drop them, so a
            # resumed run's log has each step once.
            self.writer.truncate(first_step=int(jax.device_get(self.state.step)),
                                 first_epoch=self.start_epoch)
        self.t0 = time.time()

    def trains_in(self, epoch: int) -> bool:
        return self.diverged is None and self.finished_result is None and epoch >= self.start_epoch

    @property
    def wall_time_s(self) -> float:
        """Wall time of every process of this run up to now (resumed runs add up)."""
        return self.wall_before + time.time() - self.t0

    def stop_diverged(self, step: int, what: str):
        last = (f"last good checkpoint: epoch {self.last_saved_epoch + 1}"
                if self.last_saved_epoch is not None else "no checkpoint was saved")
        self.diverged = {"step": step, "what": what, "last_good_checkpoint_epoch":
                         None if self.last_saved_epoch is None else self.last_saved_epoch + 1}
        msg = f"training stopped at step {step}: {what}; {last} (try a lower --lr)"
        if self.run.name:
            msg = f"run {self.run.name}: {msg}"
        log.error(msg)
        return msg

    def write_steps(self, first_step: int, metrics: dict, n: int):
        """Log ``n`` steps from ``first_step``; the first non-finite loss stops the run."""
        for j in range(n):
            m = {k: float(v[j]) for k, v in metrics.items()}
            for name in ("l_g", "l_d"):
                if not math.isfinite(m[name]):
                    return self.stop_diverged(first_step + j, f"loss {name} = {m[name]}")
            if self.writer is not None:
                self.writer.write("step", first_step + j, m)
        return None

    def close(self):
        if self.writer is not None:
            self.writer.close()
        for mngr in (self.mngr, self.best_mngr):  # waits for checkpoints still being written
            if mngr is not None:
                mngr.close()


def resolve_dsc_forms(runs, per_device_batch: int):
    """The exact form of each DSC layer for this program (None without DSCs), before anything
    is built. The forms are part of what defines a run (other forms round differently, and
    training amplifies it): a run resumed from a checkpoint keeps the forms it was trained
    with, and asking for other ones (--dsc_impl, --dsc_autotune, another device count) is
    refused. A fresh run gets the fixed table's, or with --dsc_autotune this machine's
    timed, forms."""
    cfg = runs[0].cfg
    if "dsc_impl" not in methods.get(cfg.model).options or not cfg.use_dsc:
        return None
    saved = {}
    for run in runs:
        try:
            forms = checkpoints.saved_meta(run.cfg.workdir).get("dsc_impls")
        except checkpoints.CheckpointError:
            continue
        if forms:
            saved[run.cfg.workdir] = {k: v for k, v in forms.items()}
    if len({json.dumps(f, sort_keys=True) for f in saved.values()}) > 1:
        raise ConfigError("the runs of this program were trained with different DSC forms "
                          f"({', '.join(sorted(saved))}); resume them in separate commands "
                          "(--max_runs_per_program=1)")
    if saved:
        forms = next(iter(saved.values()))
        if cfg.dsc_impl == "auto" and dsc_autotune.autotune_enabled(cfg):
            wanted = forms  # timing would only pick again what the run already uses
        else:
            wanted = dict(dsc_autotune.resolve_dsc_impls(cfg, per_device_batch))
        if wanted != forms:
            diff = sorted(k for k in forms if wanted.get(k) != forms[k])
            raise ConfigError(
                f"{next(iter(saved))} was trained with other DSC forms than these flags give "
                f"({', '.join(f'{k}: {forms[k]} now {wanted.get(k)}' for k in diff[:3])}"
                f"{', ...' if len(diff) > 3 else ''}); they round differently, so resume with "
                "the run's flags (--dsc_impl, --dsc_autotune, --host_devices) or use a new "
                "--workdir")
        dsc_autotune.pin(cfg, tuple(forms.items()))
        return dict(forms)
    return dict(dsc_autotune.resolve_dsc_impls(cfg, per_device_batch))


# ---- one program of runs --------------------------------------------------------------------
class Trainer:
    """Runs trained together: one jitted chunk program over their states (program.py)."""

    def __init__(self, cfg, runs, datas):
        self.cfg, self.runs = cfg, runs
        for run in runs:  # checks that need no computation first (a changed --isize, ...)
            checkpoints.check_resumable(run.cfg)
        self.mesh = make_mesh(cfg.num_devices, cfg.batch_size)
        if self.mesh.devices.size < jax.local_device_count() and not cfg.num_devices:
            log.info("--batch_size=%d splits evenly over %d of the %d devices: training on %d "
                     "(the batch size is kept)", cfg.batch_size, self.mesh.devices.size,
                     jax.local_device_count(), self.mesh.devices.size)
        n_dev = self.mesh.devices.size
        if cfg.batch_size % n_dev:
            raise ConfigError(f"--batch_size={cfg.batch_size} is not divisible by the {n_dev} "
                              f"devices; use a multiple of {n_dev}")
        self.dsc_impls = resolve_dsc_forms(runs, cfg.batch_size // n_dev)
        self.trackers = []
        txs = []
        for run, data in zip(runs, datas):
            spe = len(data.train) // cfg.batch_size
            if spe == 0:
                raise ConfigError(
                    f"{len(data.train)} training images are fewer than one batch of "
                    f"{cfg.batch_size}; lower --batch_size")
            g_tx, d_tx = make_optimizers(run.cfg, spe)
            txs.append((g_tx, d_tx))
            self.trackers.append(RunTracker(run, data, spe, g_tx, d_tx))
        self.layout = prog.RunLayout([r.cfg for r in runs], txs,
                                     [t.steps_per_epoch for t in self.trackers],
                                     cfg.run_axis_impl)
        self.program = make_chunk_program(self.layout, self.mesh)
        self.states = prog.replicate(self.layout.pack([t.state for t in self.trackers]),
                                     self.mesh)
        for t in self.trackers:
            t.state = None  # the packed states are the live copy
        self.images = prog.replicate(
            self.layout.pack([d.train.images for d in datas], pad=True), self.mesh)
        self.keys = [np.asarray(jax.random.key_data(seeds.step_base_key(r.cfg.seed)))
                     for r in runs]
        self.score_device = jax.local_devices()[0]
        # Scoring and recalibration split each batch over the devices this process trains on
        # (all of them unless --num_devices says fewer; a process's own in a multi-process run).
        self.score_mesh = local_mesh() if jax.process_count() > 1 else self.mesh
        self.first_step_s = None

    # -- training -------------------------------------------------------------------------
    def train_epoch(self, epoch: int):
        cfg, n = self.cfg, prog.steps_per_chunk(self.cfg)
        active_runs = [t.trains_in(epoch) for t in self.trackers]
        orders = [epoch_order(len(t.data.train), cfg.batch_size, t.cfg.seed, epoch) if a
                  else None for t, a in zip(self.trackers, active_runs)]
        total = max(t.steps_per_epoch for t, a in zip(self.trackers, active_runs) if a)
        first = [int(t.history[-1]["step"]) if t.history else 0 for t in self.trackers]
        show = cfg.progress and is_writer()
        bar = None  # started once the program is compiled: its ETA never counts compilation
        if self.first_step_s is None and is_writer():
            log.info(COMPILING)
        else:
            bar = _progress(total, not show, f"epoch {epoch + 1}/{cfg.epochs}")
        t_start = time.time()
        pending = None
        for c0 in range(0, total, n):
            check_interrupt()  # a Ctrl-C that Python swallowed still stops the run here
            idx, act = [], []
            for k, t in enumerate(self.trackers):
                ix = np.zeros((cfg.batch_size, n), np.int32)
                ac = np.zeros((n,), bool)
                if active_runs[k] and t.diverged is None and c0 < t.steps_per_epoch:
                    m = min(n, t.steps_per_epoch - c0)
                    ix[:, :m] = orders[k][c0:c0 + m].T
                    ac[:m] = True
                idx.append(ix)
                act.append(ac)
            p_idx, p_act, p_keys = prog.pack_chunk_inputs(self.layout, idx, act, self.keys)
            self.states, metrics = self.program(
                self.states, self.images, prog.shard_indices(p_idx, self.mesh),
                prog.replicate(p_act, self.mesh), prog.replicate(p_keys, self.mesh))
            if self.first_step_s is None:
                jax.block_until_ready(metrics)
                self.first_step_s = time.time() - self.trackers[0].t0
            if bar is None:
                bar = _progress(total, not show, f"epoch {epoch + 1}/{cfg.epochs}")
            if pending is not None:
                self._flush(*pending, bar)
            pending = (c0, metrics, act, first)
        if pending is not None:
            self._flush(*pending, bar)
        if bar is not None:
            bar.close()
        return time.time() - t_start

    def _flush(self, c0, metrics, act, first, bar):
        per_run = prog.unpack_metrics(self.layout, metrics)
        for k, t in enumerate(self.trackers):
            n_active = int(act[k].sum())
            if n_active and t.diverged is None:
                msg = t.write_steps(first[k] + c0, per_run[k], n_active)
                if msg is not None and len(self.trackers) == 1:
                    raise NonFiniteLossError(msg)
        bar.update(int(max(a.sum() for a in act)))
        m = per_run[0]
        if len(m["l_g"]) and np.isfinite(m["l_g"][0]):
            bar.set_postfix(l_g=f"{m['l_g'][0]:.3f}", l_d=f"{m['l_d'][0]:.3f}")

    # -- end of epoch -------------------------------------------------------------------
    def end_of_epoch(self, epoch: int, train_s: float):
        cfg = self.cfg
        t_eval = time.time()
        states = self.layout.unpack(self.states)
        live = []
        for k, t in enumerate(self.trackers):
            if not t.trains_in(epoch):
                continue
            state = prog.local_copy(states[k])
            if not checkpoints.all_finite(state):
                msg = t.stop_diverged(int(jax.device_get(state.step)),
                                      "parameters or BatchNorm statistics are not finite")
                if len(self.trackers) == 1:
                    raise NonFiniteLossError(msg)
                continue
            state = recalibrate_batchnorm(t.cfg, state, t.data.train.images,
                                          seeds.recalibration_seed(t.cfg.seed, epoch),
                                          self.score_mesh)
            if not checkpoints.all_finite(state):
                msg = t.stop_diverged(int(jax.device_get(state.step)),
                                      "recalibrated BatchNorm statistics are not finite")
                if len(self.trackers) == 1:
                    raise NonFiniteLossError(msg)
                continue
            states[k] = prog.replicate(state, self.mesh)
            live.append(k)
        if not live:
            return
        # Scores of every live run, in one program per batch: test set (when scheduled) and
        # the calibration images.
        evaluating = [k for k in live if self.trackers[k].cfg.evaluates_after(epoch)]
        last = epoch == cfg.epochs - 1
        keep_recon = {k: (cfg.plots and last) or self.trackers[k].data.test.masks is not None
                      for k in evaluating}
        test_scores = self._score([(k, self.trackers[k].data.test.images) for k in evaluating],
                                  states, keep_recon=any(keep_recon.values()))
        calib_sets = {k: calibration_images(self.trackers[k].data) for k in live}
        calib_scores = self._score([(k, calib_sets[k][0]) for k in live], states,
                                   keep_recon=True)  # recon: the residual maps' colour scale
        for k in live:
            t = self.trackers[k]
            step = int(jax.device_get(states[k].step))
            base = {"epoch": epoch, "step": step, "train_s": round(train_s, 2),
                    "train_img_per_s": round(t.steps_per_epoch * cfg.batch_size / train_s, 2)}
            if len(self.trackers) > 1:
                base["train_img_per_s_all_runs"] = round(sum(
                    self.trackers[j].steps_per_epoch for j in live) * cfg.batch_size / train_s, 2)
            head = f"{t.run.name}: " if t.run.name else ""
            head += f"epoch {epoch + 1}/{cfg.epochs}"
            test = originals = None
            try:
                variables = prog.local_copy(_variables(states[k]), self.score_device)
                calib = calibration(t.cfg, variables, *calib_sets[k], *calib_scores[k])
                if k in test_scores:
                    r, lat = test_scores[k][:2]
                    test = test_metrics(t.cfg, t.data, r, lat,
                                        test_scores[k][2] if keep_recon.get(k) else None,
                                        calib, variables)
                    t.last_test = test
                    if "metrics_absent" not in test and t.cfg.eval_originals:
                        # the originals' evaluation: never the result
                        originals = originals_auc(t.cfg, states[k], t.data.test)
                        log.info("%s: test AUC under the originals' evaluation (training-mode "
                                 "BatchNorm, stored order, lambda %g): %.4f", head,
                                 t.cfg.originals_score_lambda, originals)
                    log_test(head, test, calib, _log_detail(test, base["train_img_per_s"]))
                else:
                    log.info("%s: trained (%.1f img/s); test set not scored (--eval_every=%d)",
                             head, base["train_img_per_s"], cfg.eval_every)
            except FloatingPointError as e:
                msg = t.stop_diverged(step, f"scores are not finite ({e})")
                if len(self.trackers) == 1:
                    raise NonFiniteLossError(msg)
                continue
            record = epoch_record(base, calib, t.data.val is not None, test, originals)
            # end of training to this record: BatchNorm recalibration, scoring, metrics (the
            # runs of a program share the batched scoring, so theirs overlap)
            record["eval_s"] = round(time.time() - t_eval, 2)
            add_record(t.history, record, t.writer)
            is_best = t.data.val is not None and calib["mean"] < t.best_val
            if t.data.val is not None:
                t.best_val = min(t.best_val, calib["mean"])
            meta = save_checkpoint(t.mngr, states[k], epoch, t.cfg, t.history, calib,
                                   t.best_val if math.isfinite(t.best_val) else None,
                                   t.wall_time_s, dsc_impls=self.dsc_impls)
            t.last_saved_epoch = epoch
            if is_best:
                checkpoints.save(t.best_mngr, states[k], epoch, t.cfg, meta)
        # the recalibrated statistics carry on into the next epoch, as in a single run
        self.states = self.layout.pack(states)

    def _score(self, items, states, keep_recon: bool = False) -> dict:
        """{run index: (R, L[, recon])} of the given uint8 images under ``states``."""
        if not items:
            return {}
        cfg = self.cfg
        if any(self.trackers[k].cfg.eval_batch_stats for k, _ in items):
            # test-batch statistics depend on the exact batches: the host path, batch by batch
            return {k: score_images(self.trackers[k].cfg, states[k], images, keep_recon)
                    for k, images in items}
        # never a batch beyond what the largest image set needs (a huge --eval_batch_size)
        bs = padded_batch_size(max(len(im) for _, im in items), cfg.eval_batch_size)
        mesh = self.score_mesh
        variables = [put_replicated(prog.local_copy(_variables(states[k])), mesh)
                     for k, _ in items]
        images = [prog.device_images(im, bs, mesh) for _, im in items]
        out = prog.score_runs([self.trackers[k].cfg for k, _ in items], variables, images,
                              [len(im) for _, im in items], bs, keep_recon, mesh)
        return {k: o for (k, _), o in zip(items, out)}

    # -- the whole program ------------------------------------------------------------------
    def run(self) -> list:
        try:
            start = min((t.start_epoch for t in self.trackers if t.finished_result is None),
                        default=self.cfg.epochs)
            for epoch in range(start, self.cfg.epochs):
                if not any(t.trains_in(epoch) for t in self.trackers):
                    continue
                train_s = self.train_epoch(epoch)
                self.end_of_epoch(epoch, train_s)
            return [self.finish(k) for k in range(len(self.trackers))]
        finally:
            for t in self.trackers:
                t.close()

    def finish(self, k: int) -> dict:
        t = self.trackers[k]
        if t.finished_result is not None:
            return t.finished_result
        head = {"run": t.run.name or None, "epochs": t.cfg.epochs,
                "wall_time_s": round(t.wall_time_s, 2),
                "time_to_first_step_s": (None if self.first_step_s is None
                                         else round(self.first_step_s, 2)),
                "runs_in_program": len(self.trackers),
                "run_axis_impl": self.layout.impl,
                "devices": [str(d) for d in self.mesh.devices.flat],
                "processes": jax.process_count(),
                "data": {"name": t.data.name, "counts": t.data.counts()},
                "flags": t.cfg.to_dict()}
        if self.dsc_impls:
            # Which exact form each DSC layer computed in (--dsc_impl=auto picks per layer by
            # timing on this machine): the same math, but not the same float rounding, which
            # training amplifies, so a run's numbers depend on it (docs/results.md).
            head["dsc_impls"] = self.dsc_impls
        if t.diverged is not None:
            head["diverged"] = t.diverged
        elif not any(is_scored(r) for r in t.history):
            raise ConfigError(f"--epochs={t.cfg.epochs} trains nothing: no epochs were run")
        result = run_result(head, t.history)
        if is_writer():  # the last scored epoch's per-image scores, pictures, metrics.json
            write_result(t.cfg, result, t.data.test, getattr(t, "last_test", None),
                         None if t.diverged is not None else lambda: self._plots(k))
        return result

    def _plots(self, k: int):
        t = self.trackers[k]
        test = getattr(t, "last_test", None)
        if test is None or "recon" not in test:  # a run reopened after it finished training
            state = checkpoints.restore_latest(t.mngr, jax.eval_shape(
                lambda: init_state(t.cfg, seeds.init_key(0), *make_optimizers(t.cfg, 1))),
                t.cfg)[0]
            r, lat, recon = score_images(t.cfg, state, t.data.test.images, keep_recon=True)
            test = metrics_from_scores(t.cfg, t.data.test, r, lat, recon,
                                       variables=_variables(state))
        return write_plots(t.cfg, t.data.test, test,
                           read_jsonl(t.writer.path, "step") if t.writer else [])


def _variables(state) -> dict:
    return variables_of(state)


def _log_detail(test: dict, img_per_s: float) -> str:
    """What a GAN epoch's test line adds to epoch_end.log_test's: the AUC of each score term
    alone, the pixel metrics where there are masks, and the training throughput."""
    if "metrics_absent" in test:
        return ""
    pixel = (f"; pixel AUROC {test['pixel_auc']:.4f} AUPRO {test['pixel_aupro']:.4f}"
             if "pixel_auc" in test else "")
    return (f"; AUC of R alone {test['auc_r']:.4f}, of L alone {test['auc_lat']:.4f}{pixel}; "
            f"{img_per_s:.1f} img/s")
