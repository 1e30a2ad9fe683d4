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

HELP = {
    "mode": "train | eval (score the test set with the checkpoint in --workdir) | summary | "
            "score (score new images from --input with the trained --workdir)",
    "model": "sagan | skip_ganomaly | ganomaly | egbad (the paper's baselines; per-model "
             "defaults in experiments/model_<name>.cfg)",
    "workdir": "output folder: checkpoints, metrics.json, metrics.jsonl; resumes if it holds a run",
    "seed": "seed of initialisation, data order and splits",
    "dataset": "digits (embedded, offline) | cifar10 | image_folder | anomaly_folder",
    "abnormal_class": "the class held out as abnormal (a digit 0-9, a CIFAR-10 class name, a "
                      "class folder of an image_folder)",
    "protocol": "ganomaly (abnormal test images from both splits) | clean (test split only)",
    "data_dir": "tensorflow-datasets data_dir (cifar10: tfds default; anomaly_folder: where the "
                "prepared folder is cached, default ~/.cache/sagan_jax/tfds)",
    "data_root": "root folder of an image_folder (train|test/<class>/<image>) or anomaly_folder "
                 "(train/0.normal, test/0.normal, test/1.abnormal) dataset",
    "isize": "image size, a multiple of 16",
    "max_train_images": "train on a seeded subset of this many normal images (0 = all)",
    "val_fraction": "fraction of normal training images held out for validation",
    "digits_test_fraction": "digits: fraction of each normal digit held out for the test set",
    "on_bad_image": "error (stop at the first corrupt, empty or non-image file, naming it) | "
                    "skip (drop such files with a warning; their number is logged)",
    "on_small_image": "error (stop at an image smaller than isize, naming it) | upsample",
    "download": "cifar10: let tensorflow-datasets download it when --data_dir lacks it",
    "batch_size": "global training batch size (split over the devices)",
    "eval_batch_size": "batch size for scoring",
    "epochs": "number of training epochs",
    "lr": "Adam learning rate of both networks (paper 2e-3)",
    "beta1": "Adam beta1", "beta2": "Adam beta2",
    "niter": "epochs at the initial learning rate (lambda decay)",
    "niter_decay": "epochs of linear decay (lambda decay)",
    "w_adv": "weight of L_adv", "w_con": "weight of L_con (paper 40)", "w_lat": "weight of L_lat",
    "d_lat_loss": "also train D on L_lat (the authors' code)",
    "reinit_d_threshold": "re-initialise D when L_D falls below this",
    "ngf": "generator base width", "ndf": "discriminator base width", "nz": "latent size",
    "use_dsc": "depthwise-separable convolutions in the generator",
    "use_cbam": "CBAM attention on the skips",
    "kernels_per_layer": "DSC channel multiplier (paper's Table 1: 2; authors' code: 1)",
    "dsc_impl": "how DSCs are computed (same math): auto | dense | shift | repeat | xla",
    "pool_after_cbam": "pool CBAM(x) instead of x (the paper's prose)",
    "score_lambda": "A = lambda R + (1 - lambda) L (paper 0.2, code 0.9)",
    "eval_batch_stats": "score with test-batch BatchNorm statistics, as the PyTorch originals",
    "num_devices": "local devices for data parallelism (0 = all)",
    "progress": "show a progress bar",
    "tensorboard": "write TensorBoard event files to WORKDIR/tensorboard",
    "eval_every": "score the test set after every N-th epoch and always after the last one "
                  "(0 = only after the last; fewer test passes, no per-epoch test curve)",
    "plots": "write PNG pictures to WORKDIR/plots after training",
    "compilation_cache": "folder of JAX's persistent compilation cache, so reruns of the same "
                         "model skip XLA compilation ('' = off; $JAX_COMPILATION_CACHE_DIR wins)",
    "bn_recalibration_batches": "before each evaluation, recompute BatchNorm running statistics "
                                "with the current weights over this many training batches "
                                "(0 = use the training run's moving averages)",
    "keep_checkpoints": "keep the newest N checkpoints (plus the best on validation data)",
    "threshold_fpr": "decision threshold for --mode=score: this false-positive rate on normal "
                     "validation images (training normals if there is no val split)",
    "input": "--mode=score: an image file or a folder of images to score",
    "output": "--mode=score: CSV path (default WORKDIR/scores.csv)",
}


def _define_flags():
    for f in dataclasses.fields(Config):
        default, help_ = f.default, HELP[f.name]
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
