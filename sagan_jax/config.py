"""One frozen configuration object, built from flags and validated in one place."""
from __future__ import annotations

import dataclasses
from typing import Optional

MODES = ("train", "eval", "summary", "score")
DATASETS = ("digits", "cifar10", "image_folder", "anomaly_folder")
PROTOCOLS = ("ganomaly", "clean")
ON_BAD_IMAGE = ("error", "skip")
ON_SMALL_IMAGE = ("error", "upsample")
FOLDER_DATASETS = ("image_folder", "anomaly_folder")
MODELS = ("sagan", "skip_ganomaly", "ganomaly", "egbad")  # sagan_jax.models.registry
DSC_IMPLS = ("auto", "dense", "shift", "repeat", "xla")
DIGIT_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


class ConfigError(ValueError):
    """An invalid setting; its message is one line naming the problem and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Config:
    # What to run.
    mode: str = "train"
    model: str = "sagan"
    workdir: str = "workdirs/default"
    seed: int = 0
    # Data.
    dataset: str = "digits"
    abnormal_class: str = "0"
    protocol: str = "ganomaly"
    data_dir: Optional[str] = None   # tfds data_dir (prepared tfds datasets)
    data_root: Optional[str] = None  # image-folder root
    isize: int = 32
    max_train_images: int = 0        # 0 = all normal training images
    val_fraction: float = 0.0
    digits_test_fraction: float = 0.2
    on_bad_image: str = "error"      # error | skip (corrupt, empty or non-image files)
    on_small_image: str = "error"    # error | upsample (images smaller than isize)
    download: bool = True            # let tfds download cifar10 when it is not prepared
    # Optimisation (SPEC section 5).
    batch_size: int = 64
    eval_batch_size: int = 64
    epochs: int = 15
    lr: float = 2e-3
    beta1: float = 0.5
    beta2: float = 0.999
    niter: int = 15
    niter_decay: int = 100
    w_adv: float = 1.0
    w_con: float = 40.0
    w_lat: float = 1.0
    d_lat_loss: bool = False
    reinit_d_threshold: float = 1e-5
    # Model (SPEC sections 2-3).
    ngf: int = 64
    ndf: int = 64
    nz: int = 100
    use_dsc: bool = True
    use_cbam: bool = True
    kernels_per_layer: int = 2
    dsc_impl: str = "auto"         # per-layer fastest exact DSC impl (models.layers.auto_dsc_impl)
    pool_after_cbam: bool = False
    # Scoring (SPEC section 6).
    score_lambda: float = 0.2
    eval_batch_stats: bool = False
    bn_recalibration_batches: int = 20  # recompute running BN stats before evaluating (0 = off)
    eval_every: int = 1              # score the test set after every N-th epoch and the last (0 = last only)
    # Devices and output.
    num_devices: int = 0             # 0 = every local device
    progress: bool = True
    tensorboard: bool = True
    plots: bool = True
    keep_checkpoints: int = 3
    compilation_cache: str = "~/.cache/sagan_jax/xla"  # persistent XLA cache ("" = off)
    threshold_fpr: float = 0.05      # decision threshold: this false-positive rate on normals
    # Scoring new images (--mode=score).
    input: Optional[str] = None      # an image file or a folder of images
    output: Optional[str] = None     # CSV path (default WORKDIR/scores.csv)

    def __post_init__(self):
        validate(self)

    def replace(self, **kw) -> "Config":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def evaluates_after(self, epoch: int) -> bool:
        """Whether the test set is scored after ``epoch`` (0-based): every ``eval_every``-th
        epoch, and always the last one."""
        last = epoch == self.epochs - 1
        return last or (self.eval_every > 0 and (epoch + 1) % self.eval_every == 0)


def _choice(name, value, allowed):
    if value not in allowed:
        raise ConfigError(f"--{name}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _positive(name, value):
    if value <= 0:
        raise ConfigError(f"--{name}={value} must be a positive number")


def classes_of(dataset: str):
    """Known class names of a built-in dataset (None for folders: read from disk)."""
    return {"digits": DIGIT_CLASSES, "cifar10": CIFAR10_CLASSES}.get(dataset)


def validate(cfg: Config) -> None:
    _choice("mode", cfg.mode, MODES)
    _choice("model", cfg.model, MODELS)
    _choice("dataset", cfg.dataset, DATASETS)
    _choice("protocol", cfg.protocol, PROTOCOLS)
    _choice("dsc_impl", cfg.dsc_impl, DSC_IMPLS)
    _choice("on_bad_image", cfg.on_bad_image, ON_BAD_IMAGE)
    _choice("on_small_image", cfg.on_small_image, ON_SMALL_IMAGE)
    if cfg.dataset in FOLDER_DATASETS and not cfg.data_root:
        raise ConfigError(
            f"--dataset={cfg.dataset} needs --data_root=DIR, the folder that holds the images"
        )
    known = classes_of(cfg.dataset)
    if known is not None and cfg.abnormal_class not in known:
        raise ConfigError(
            f"--abnormal_class={cfg.abnormal_class!r} is not a class of {cfg.dataset}; "
            f"choose one of: {', '.join(known)}"
        )
    if cfg.isize < 16 or cfg.isize % 16:
        raise ConfigError(
            f"--isize={cfg.isize} must be a multiple of 16 (16, 32, 64, 128, ...): "
            "the generator pools four times and the discriminator halves down to 4x4"
        )
    for name in ("batch_size", "eval_batch_size", "epochs", "lr", "ngf", "ndf", "nz",
                 "kernels_per_layer", "niter_decay"):
        _positive(name, getattr(cfg, name))
    if cfg.niter < 0:
        raise ConfigError(f"--niter={cfg.niter} must be >= 0")
    if cfg.max_train_images < 0:
        raise ConfigError(f"--max_train_images={cfg.max_train_images} must be >= 0 (0 = all)")
    for name in ("w_adv", "w_con", "w_lat"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"--{name}={getattr(cfg, name)} must be >= 0")
    if not 0.0 <= cfg.score_lambda <= 1.0:
        raise ConfigError(f"--score_lambda={cfg.score_lambda} must lie in [0, 1]")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ConfigError(f"--val_fraction={cfg.val_fraction} must lie in [0, 1)")
    if not 0.0 < cfg.digits_test_fraction < 1.0:
        raise ConfigError(f"--digits_test_fraction={cfg.digits_test_fraction} must lie in (0, 1)")
    if not 0.0 < cfg.beta1 < 1.0 or not 0.0 < cfg.beta2 < 1.0:
        raise ConfigError(f"--beta1={cfg.beta1} and --beta2={cfg.beta2} must lie in (0, 1)")
    if cfg.bn_recalibration_batches < 0:
        raise ConfigError(
            f"--bn_recalibration_batches={cfg.bn_recalibration_batches} must be >= 0 (0 = off)")
    if cfg.eval_every < 0:
        raise ConfigError(
            f"--eval_every={cfg.eval_every} must be >= 0 (N = every N-th epoch, 0 = last only)")
    if cfg.keep_checkpoints < 1:
        raise ConfigError(f"--keep_checkpoints={cfg.keep_checkpoints} must be >= 1")
    if not 0.0 < cfg.threshold_fpr < 1.0:
        raise ConfigError(f"--threshold_fpr={cfg.threshold_fpr} must lie in (0, 1)")
    if cfg.mode == "score" and not cfg.input:
        raise ConfigError("--mode=score needs --input=IMAGE_OR_FOLDER (and the trained --workdir)")
    if cfg.num_devices < 0:
        raise ConfigError(f"--num_devices={cfg.num_devices} must be >= 0 (0 = all local devices)")
    if cfg.model == "skip_ganomaly" and cfg.isize < 32:
        raise ConfigError(
            f"--isize={cfg.isize} is too small for --model=skip_ganomaly: its U-Net halves "
            "log2(isize) >= 5 times; use 32, 64, 128, ..."
        )
    if cfg.model != "sagan" and cfg.isize & (cfg.isize - 1):
        raise ConfigError(
            f"--isize={cfg.isize} must be a power of two (16, 32, 64, ...) for --model={cfg.model}"
        )
    if cfg.ngf % 16 and cfg.use_cbam and cfg.model == "sagan":
        raise ConfigError(
            f"--ngf={cfg.ngf} must be a multiple of 16 with CBAM (reduction ratio 16)"
        )
