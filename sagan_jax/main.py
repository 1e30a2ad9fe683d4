"""Command line: python -m sagan_jax.main --flagfile=experiments/NAME.cfg [--flag=value ...]

Every field of sagan_jax.config.Config is a flag of the same name. Invalid input exits with
status 2 and one line on stderr that says what is wrong and what is allowed.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import signal
import sys
import typing

from absl import app, flags

from sagan_jax.checkpoints import CheckpointError
from sagan_jax.config import Config, ConfigError
from sagan_jax.data.base import DataError
from sagan_jax.training.errors import NonFiniteLossError



# Errors a user's input can cause: one line on stderr, exit status 2 (also experiments/common.py).
USER_ERRORS = (ConfigError, DataError, CheckpointError, NonFiniteLossError)

def _define_flags():
    for f in dataclasses.fields(Config):
        default, help_ = f.default, f.metadata["help"]
        if f.name == "model":
            from sagan_jax import methods

            help_ += "; registered: " + "; ".join(
                f"{n} ({methods.get(n).description})" for n in methods.names())
        hint = typing.get_type_hints(Config)[f.name]
        if hint is bool:
            flags.DEFINE_bool(f.name, default, help_)
        elif hint is int:
            flags.DEFINE_integer(f.name, default, help_)
        elif hint is float:
            flags.DEFINE_float(f.name, default, help_)
        else:
            flags.DEFINE_string(f.name, default, help_)


_define_flags()
FLAGS = flags.FLAGS


# A singular flag and its list form: passing both would silently ignore the singular one.
PAIRED_FLAGS = (("seed", "seeds"), ("abnormal_class", "abnormal_classes"))


def check_paired_flags(values: dict, present) -> None:
    """Refuse a singular flag passed beside its non-empty list form (PAIRED_FLAGS): the list
    wins, so the singular one would be ignored without a word."""
    for one, many in PAIRED_FLAGS:
        if one in present and many in present and str(values[many]).strip():
            raise ConfigError(
                f"--{one}={values[one]!r} and --{many}={values[many]!r} are both given (on the "
                f"command line or in a --flagfile); "
                f"--{many} replaces --{one}: pass only one of them")


def config_from_flags() -> Config:
    values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(Config)}
    check_paired_flags(values, {n for n in values if FLAGS[n].present})
    if values["mode"] in ("score", "eval"):  # the run's flags from its checkpoint (inference.py)
        from sagan_jax.inference import score_config

        return score_config(values, [n for n in values if FLAGS[n].present])
    return Config(**values)


def fail(message: str) -> typing.NoReturn:
    print(f"sagan_jax: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_flagfiles(argv) -> None:
    for arg in argv[1:]:
        if arg.startswith("--flagfile="):
            path = arg.split("=", 1)[1]
            if not os.path.isfile(path):
                fail(f"flagfile {path!r} does not exist; pass an existing file, e.g. "
                     "--flagfile=experiments/quickstart.cfg")


def check_workdir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        fail(f"--workdir={path!r} is not writable ({e.strerror}); choose a folder you can write")


def enable_compilation_cache(path: str) -> None:
    if not path or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def say(message: str) -> None:
    """Print the result line, from process 0 only in a multi-process run."""
    import jax

    if jax.process_index() == 0:
        print(message)


def run(cfg: Config) -> dict:
    from sagan_jax.models.summary import summary_text

    if cfg.mode == "summary":
        from sagan_jax.training.fit import fit_summary_text, is_fitted

        print(fit_summary_text(cfg) if is_fitted(cfg) else summary_text(cfg))
        return {}
    if cfg.mode != "score":  # score mode writes to --output only (a read-only workdir is fine)
        check_workdir(cfg.workdir)
    enable_compilation_cache(cfg.compilation_cache)
    init_distributed(cfg)

    if cfg.mode == "train":
        from sagan_jax.training.loop import train

        result = train(cfg)
        if "per_class" in result:  # several runs
            from sagan_jax.training.results import summary_markdown

            say(summary_markdown(result, cfg.model).rstrip())
            say(f"summary in {os.path.join(cfg.workdir, 'summary.json')}; each run's "
                  f"metrics in {os.path.join(cfg.workdir, 'runs', '<run>', 'metrics.json')}")
            diverged = [r["run"] for r in result["results"] if "diverged" in r]
            if diverged:
                raise NonFiniteLossError(
                    f"{len(diverged)} of {len(result['results'])} runs diverged and stopped "
                    f"({', '.join(diverged)}); the others finished (see summary.json)")
            return result
        say(f"AUC {result['auc']:.4f}  AP {result['ap']:.4f}  F1 {result['f1']:.4f}  "
              f"(last epoch {result['last_epoch']}; wall time {result['wall_time_s']:.1f} s; "
              f"metrics in {os.path.join(cfg.workdir, 'metrics.json')})")
        return result
    if cfg.mode == "score":
        from sagan_jax.inference import score_new_images

        result = score_new_images(cfg)
        say(f"scored {result['n']} images: {result['abnormal']} abnormal; "
              f"CSV {result['csv']}, anomaly maps in {result['maps']}")
        return result
    from sagan_jax.data import load_data
    from sagan_jax.training.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(cfg, load_data(cfg))
    say(f"AUC {result['auc']:.4f}  AP {result['ap']:.4f}  F1 {result['f1']:.4f}  "
          f"(checkpoint step {result['step']}; {os.path.join(cfg.workdir, 'eval.json')})")
    return result


def init_distributed(cfg) -> None:
    """Start JAX's multi-controller runtime when asked (--coordinator_address, --num_processes,
    --process_id) or when a cluster environment (Slurm, Open MPI) is detected; a no-op for a
    single process."""
    import jax

    explicit = bool(cfg.coordinator_address or cfg.num_processes)
    cluster = any(v in os.environ for v in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE"))
    if not explicit and not cluster:
        return
    if explicit and not (cfg.coordinator_address and cfg.num_processes and cfg.process_id >= 0):
        raise ConfigError("a multi-process run needs all of --coordinator_address=HOST:PORT, "
                          "--num_processes=N and --process_id=I (0 <= I < N)")
    # CPU processes talk through gloo (jax's CPU collectives); GPUs use NCCL regardless.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if explicit:
        kwargs = dict(coordinator_address=cfg.coordinator_address,
                      num_processes=cfg.num_processes, process_id=cfg.process_id)
    jax.distributed.initialize(**kwargs)
    logging.getLogger("sagan_jax").info(
        "process %d of %d; %d local and %d global devices", jax.process_index(),
        jax.process_count(), jax.local_device_count(), jax.device_count())


def warn_unused_flags(cfg: Config) -> None:
    """Name each flag given on the command line (or in a flagfile) that this dataset, model or
    mode does not read: it is not an error, but it changes nothing."""
    from sagan_jax.config import unused_flags

    given = {f.name for f in dataclasses.fields(Config) if FLAGS[f.name].present}
    for name, why in unused_flags(cfg, given):
        logging.getLogger("sagan_jax").warning("--%s is not used %s; it changes nothing", name, why)


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    from sagan_jax.training.errors import interrupt_requested, request_interrupt

    signal.signal(signal.SIGINT, request_interrupt)  # recorded too: see training/errors.py
    try:
        cfg = config_from_flags()
        warn_unused_flags(cfg)
        run(cfg)
        if interrupt_requested():  # a Ctrl-C raised where Python swallowed it
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted(FLAGS.mode, FLAGS.workdir)
    except USER_ERRORS as e:
        fail(str(e))
    except OSError as e:  # a full disk, a read-only folder, a vanished file: one line
        if e.errno is None:
            raise
        where = f" ({e.filename})" if e.filename else ""
        hint = {errno.ENOSPC: "free some space or choose another --workdir",
                errno.EROFS: "choose a writable --workdir/--output",
                errno.EACCES: "choose a folder you can write",
                errno.EDQUOT: "free some space or choose another --workdir"}.get(
                    e.errno, "check the path and try again")
        fail(f"{e.strerror}{where}; {hint}")


def interrupted(mode: str, workdir: str) -> typing.NoReturn:
    """Ctrl-C: one line, exit status 130 (128 + SIGINT). Checkpoints are written whole
    (a save in progress completes first), so training resumes from the last one."""
    what = (f"the checkpoints in {workdir} are intact; rerun the same command to resume"
            if mode == "train" else "nothing was half-written")
    print(f"sagan_jax: interrupted (Ctrl-C); {what}", file=sys.stderr)
    sys.exit(130)


def flags_parser(argv):
    check_flagfiles(argv)
    try:
        return FLAGS(argv)
    except flags.Error as e:
        fail(f"{e}; run with --helpfull to list the flags")


if __name__ == "__main__":
    app.run(main, flags_parser=flags_parser)
