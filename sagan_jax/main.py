"""Command line: python -m sagan_jax.main --flagfile=experiments/NAME.cfg [--flag=value ...]

Every field of sagan_jax.config.Config is a flag of the same name. Invalid input exits with
status 2 and one line on stderr that says what is wrong and what is allowed.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import typing

from absl import app, flags

from sagan_jax.checkpoints import CheckpointError
from sagan_jax.config import Config, ConfigError
from sagan_jax.data.base import DataError
from sagan_jax.training.errors import NonFiniteLossError



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


def config_from_flags() -> Config:
    return Config(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(Config)})


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


def run(cfg: Config) -> dict:
    from sagan_jax.models.summary import summary_text

    if cfg.mode == "summary":
        print(summary_text(cfg))
        return {}
    check_workdir(cfg.workdir)
    enable_compilation_cache(cfg.compilation_cache)
    from sagan_jax.data import load_data

    if cfg.mode == "train":
        from sagan_jax.training.loop import train_and_evaluate

        result = train_and_evaluate(cfg, load_data(cfg))
        print(f"AUC {result['auc']:.4f}  AP {result['ap']:.4f}  F1 {result['f1']:.4f}  "
              f"(last epoch {result['last_epoch']}; wall time {result['wall_time_s']:.1f} s; "
              f"metrics in {os.path.join(cfg.workdir, 'metrics.json')})")
        return result
    if cfg.mode == "score":
        from sagan_jax.inference import score_new_images

        result = score_new_images(cfg)
        print(f"scored {result['n']} images: {result['abnormal']} abnormal; "
              f"CSV {result['csv']}, anomaly maps in {result['maps']}")
        return result
    from sagan_jax.training.loop import evaluate_checkpoint

    result = evaluate_checkpoint(cfg, load_data(cfg))
    print(f"AUC {result['auc']:.4f}  AP {result['ap']:.4f}  F1 {result['f1']:.4f}  "
          f"(checkpoint step {result['step']}; {os.path.join(cfg.workdir, 'eval.json')})")
    return result


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        cfg = config_from_flags()
        run(cfg)
    except (ConfigError, DataError, CheckpointError, NonFiniteLossError) as e:
        fail(str(e))


def flags_parser(argv):
    check_flagfiles(argv)
    try:
        return FLAGS(argv)
    except flags.Error as e:
        fail(f"{e}; run with --helpfull to list the flags")


if __name__ == "__main__":
    app.run(main, flags_parser=flags_parser)
