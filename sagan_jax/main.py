"""Command line: sagan-jax (or python -m sagan_jax.main) --flagfile=NAME.cfg [--flag=value ...]

NAME.cfg: a flagfile's path, or the name of one shipped with the package (sagan_jax/configs;
experiments/NAME.cfg in a checkout).

Every field of sagan_jax.config.Config is a flag of the same name. Invalid input exits with
status 2 and one line on stderr that says what is wrong and what is allowed.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import signal
import sys
import typing

from absl import app, flags

from sagan_jax import methods
from sagan_jax.config import Config, ConfigError, parse_host_devices, unused_flags
from sagan_jax.data.base import DataError
from sagan_jax.devices import configure, usable_cores
from sagan_jax.training.checkpoints import CheckpointError
from sagan_jax.training.errors import NonFiniteLossError, interrupt_requested, request_interrupt


# Errors a user's input can cause: one line on stderr, exit status 2 (also experiments/common.py).
USER_ERRORS = (ConfigError, DataError, CheckpointError, NonFiniteLossError)

def _define_flags():
    for f in dataclasses.fields(Config):
        default, help_ = f.default, f.metadata["help"]
        if f.name == "model":
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
    if values["mode"] in ("score", "eval", "export"):  # the run's flags from its checkpoint
        from sagan_jax.inference import score_config

        return score_config(values, [n for n in values if FLAGS[n].present])
    return Config(**values)


def configure_logging() -> None:
    """This package's messages at INFO; every other library's (jax's backend probing, e.g.
    the libtpu line; orbax; matplotlib) only from WARNING up."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", force=True)
    logging.getLogger("sagan_jax").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)


def fail(message: str) -> typing.NoReturn:
    print(f"sagan_jax: error: {message}", file=sys.stderr)
    sys.exit(2)


def check_flagfiles(argv) -> list:
    """``argv`` with each --flagfile resolved: an existing path, else the packaged flagfile of
    that name (sagan_jax.configs); a flagfile that is neither stops with one line."""
    from sagan_jax import configs

    out = list(argv[:1])
    for arg in argv[1:]:
        if arg.startswith("--flagfile="):
            path = arg.split("=", 1)[1]
            found = configs.resolve(path)
            if found is None:
                fail(f"flagfile {path!r} does not exist; pass an existing file or a packaged "
                     f"flagfile's name ({', '.join(configs.names())}), e.g. "
                     "--flagfile=quickstart.cfg")
            arg = f"--flagfile={found}"
        out.append(arg)
    return out


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


def f1_text(result: dict) -> str:
    """The F1 part of a result line: the F1 of the run's own decisions at its calibrated
    threshold, then the oracle F1 (threshold chosen on the test labels), labelled as such."""
    oracle = f"oracle F1 {result['f1_oracle']:.4f} (best threshold on the test set)"
    if result.get("f1") is None:
        return oracle
    where = f", from {result['threshold_source']}" if result.get("threshold_source") else ""
    return (f"F1 {result['f1']:.4f} at the calibrated threshold {result['threshold']:.4g}"
            f"{where}; {oracle}")


def run(cfg: Config) -> dict:
    from sagan_jax.methods.summary import summary_text

    if cfg.mode == "summary":
        from sagan_jax.training.fit import fit_summary_text

        print(fit_summary_text(cfg) if methods.is_fitted(cfg.model) else summary_text(cfg))
        return {}
    configure_host_devices(cfg)  # first: a refused device count leaves nothing behind
    if cfg.mode not in ("score", "export"):  # score mode writes to --output only
        check_workdir(cfg.workdir)
    enable_compilation_cache(cfg.compilation_cache)
    init_distributed(cfg)

    if cfg.mode == "train":
        from sagan_jax.api import train

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
        if "auc" not in result:  # good images only: no AUC (metrics_absent says why)
            say(f"false-positive rate at the threshold {result['fpr_at_threshold']:.4f} on "
                f"normal test images; {result['metrics_absent']} (last epoch "
                f"{result['last_epoch']}; metrics in {os.path.join(cfg.workdir, 'metrics.json')})")
            return result
        say(f"AUC {result['auc']:.4f}  AP {result['ap']:.4f}  {f1_text(result)}  "
              f"(last epoch {result['last_epoch']}; wall time {result['wall_time_s']:.1f} s; "
              f"metrics in {os.path.join(cfg.workdir, 'metrics.json')})")
        return result
    if cfg.mode == "export":
        from sagan_jax.api import Detector

        result = Detector(cfg).export(cfg.output)
        saved = f" and the SavedModel {result['saved_model']}" if "saved_model" in result else ""
        say(f"exported to {result['model']} and {result['meta']}{saved}")
        return result
    if cfg.mode == "score":
        from sagan_jax.score_mode import score_new_images

        result = score_new_images(cfg)
        say(f"scored {result['n']} images: {result['abnormal']} abnormal; "
              f"CSV {result['csv']}, anomaly maps in {result['maps']}")
        return result
    from sagan_jax.data import load_data
    from sagan_jax.training.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(cfg, load_data(cfg))
    if "auc" not in result:  # good images only
        fpr = result.get("fpr_at_threshold")
        say(f"false-positive rate at the threshold "
            f"{'unknown (no threshold saved)' if fpr is None else f'{fpr:.4f}'} on normal test "
            f"images; {result['metrics_absent']} (checkpoint step {result['step']}; "
            f"{os.path.join(cfg.workdir, 'eval.json')})")
        return result
    say(f"AUC {result['auc']:.4f}  AP {result['ap']:.4f}  {f1_text(result)}  "
          f"(checkpoint step {result['step']}; {os.path.join(cfg.workdir, 'eval.json')})")
    return result


def host_devices_asked(host_devices: str, num_processes: int) -> str:
    """--host_devices; 'auto' (the default) gives way to $SAGAN_JAX_HOST_DEVICES when set (a
    machine running several JAX programs at once, e.g. a test suite: one device per core in
    each would oversubscribe the cores, and XLA aborts a program whose device threads wait
    too long for each other), and means one device per process in a multi-process run (each
    process is one device of the global mesh)."""
    if str(host_devices).strip().lower() != "auto":
        return host_devices
    multi = num_processes > 1 or any(v in os.environ
                                     for v in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE"))
    return "1" if multi else os.environ.get("SAGAN_JAX_HOST_DEVICES", "auto")


def configure_host_devices(cfg) -> None:
    """One XLA:CPU device per core (--host_devices), before anything starts JAX's backend. An
    explicit count (the flag, or $SAGAN_JAX_HOST_DEVICES under 'auto') that does not split a
    GAN's training batch is refused: the batch is never resized, and 'auto' picks a count that
    divides it."""
    asked = host_devices_asked(cfg.host_devices, cfg.num_processes)
    source = (f"--host_devices={cfg.host_devices}" if asked == cfg.host_devices
              else f"$SAGAN_JAX_HOST_DEVICES={asked}")
    try:
        n = parse_host_devices(asked)
    except ValueError:
        raise ConfigError(f"{source} must be 'auto' or a positive number of host devices; fix "
                          "or unset it") from None
    trains = cfg.mode == "train" and not methods.is_fitted(cfg.model)
    if n > 1 and trains and not cfg.num_devices and cfg.batch_size % n:
        raise ConfigError(f"--batch_size={cfg.batch_size} does not split over the {n} host "
                          f"devices of {source}; use a multiple of {n}, or --host_devices=auto "
                          "(the most devices that divide the batch)")
    platforms = [p.strip() for p in os.environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if n > usable_cores() and (not platforms or "cpu" in platforms):  # host devices: CPU only
        logging.getLogger("sagan_jax").warning(
            "%s asks for %d host devices but this process may use %d cores: the devices share "
            "cores, which is slower than one per core (--host_devices=auto)", source, n,
            usable_cores())
    configure(asked, cfg.batch_size, cfg.eval_batch_size)


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
    given = {f.name for f in dataclasses.fields(Config) if FLAGS[f.name].present}
    for name, why in unused_flags(cfg, given):
        logging.getLogger("sagan_jax").warning("--%s is not used %s; it changes nothing", name, why)


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    configure_logging()
    signal.signal(signal.SIGINT, request_interrupt)  # recorded too: see training/errors.py
    try:
        # before anything (score mode reads its checkpoint's flags) starts JAX's backend
        try:
            configure(host_devices_asked(FLAGS.host_devices, FLAGS.num_processes),
                      FLAGS.batch_size, FLAGS.eval_batch_size)
        except ValueError:  # a bad --host_devices: Config's check names it in one line
            pass
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
                errno.EPERM: ("the folder may not be changed (permissions or an immutable "
                              "flag); choose one you can write"),
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
    argv = check_flagfiles(argv)
    try:
        return FLAGS(argv)
    except flags.Error as e:
        fail(f"{e}; run with --helpfull to list the flags")


def console() -> None:
    """The ``sagan-jax`` console command: ``python -m sagan_jax.main``, its help included (absl
    shows the __main__ module's docstring and the flags it defines)."""
    if not getattr(sys.modules["__main__"], "__doc__", None):
        sys.modules["__main__"].__doc__ = __doc__
    for f in dataclasses.fields(Config):
        FLAGS.register_flag_by_module(sys.argv[0], FLAGS[f.name])
    app.run(main, flags_parser=flags_parser)


if __name__ == "__main__":
    console()
