"""One frozen configuration object, built from flags and validated in one place."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

MODES = ("train", "eval", "summary", "score", "export")
PROTOCOLS = ("ganomaly", "clean")
ON_BAD_IMAGE = ("error", "skip")
ON_SMALL_IMAGE = ("error", "upsample")
RESIZE_MODES = ("crop", "squash", "pad")  # sagan_jax.data.images
DSC_IMPLS = ("auto", "dense", "shift", "shift_vjp", "repeat", "xla")  # sagan_jax.models.layers
ANOMALY_MAPS = ("residual", "grad")
RUN_AXIS_IMPLS = ("auto", "vmap", "unroll")
COMPUTE_DTYPES = ("float32", "bfloat16")
DIGIT_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


# What a field is for; every list of flags that other modules keep is derived from these.
ROLES = {
    "experiment": "defines the result (training and scoring rules)",
    "network": "the shape of the networks: a checkpoint is usable only with the same values",
    "data": "which images, and how they are read",
    "runtime": "where and how fast it runs, what is logged and kept; not the result",
    "scoring_io": "what --mode=score reads and writes",
    "run_specific": "tells the runs of a run list apart; never reaches a compiled program",
}
# Where --mode=score and --mode=eval take a field from: the checkpoint's run ("run"), the
# command line ("line"), or the command line when passed there, else the run ("line_if_passed").
SCORE_SOURCES = ("run", "line", "line_if_passed")


def flag(default, help_text: str, role: str, *, score: str = "run",
         resume: Optional[bool] = None, result: Optional[bool] = None,
         location: bool = False):
    """A Config field that is also an absl flag of the same name; its help text and its role
    (ROLES) live here. ``resume``: whether a resumed or reopened run may change it (default:
    runtime and scoring_io fields may, the others define the experiment); ``result``: whether
    a finished run's numbers depend on it (default: the fields a resume may not change);
    ``location``: a path to data that another machine keeps elsewhere (the same images);
    ``score``: where --mode=score takes it from (SCORE_SOURCES)."""
    if role not in ROLES or score not in SCORE_SOURCES:
        raise ValueError(f"unknown role {role!r} or score source {score!r}")
    if resume is None:
        resume = role in ("runtime", "scoring_io")
    return dataclasses.field(default=default, metadata={
        "help": help_text, "role": role, "score": score, "resume": resume,
        "result": (not resume) if result is None else result, "location": location})


class ConfigError(ValueError):
    """An invalid setting; its message is one line naming the problem and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Config:
    # What to run.
    mode: str = flag("train", 'train | eval (score the test set with the checkpoint in --workdir) | summary | score (score new images from --input with the trained --workdir) | export (write model.jaxexport and model.json into WORKDIR/export or --output: the scoring function, loadable with jax alone; with --export_savedmodel also a TensorFlow SavedModel)', "runtime", score="line")
    model: str = flag("sagan", "the model (the registry in sagan_jax/methods; each model's original settings in experiments/model_<name>.cfg)", "network")
    workdir: str = flag("workdirs/default", 'output folder: checkpoints, metrics.json, metrics.jsonl; resumes if it holds a run', "run_specific", score="line", resume=True)
    seed: int = flag(0, 'seed of initialisation, data order and splits', "run_specific")
    # Data.
    dataset: str = flag("digits", 'digits (embedded, offline) | cifar10 | image_folder | anomaly_folder', "data")
    abnormal_class: str = flag("0", 'the class held out as abnormal (a digit 0-9, a CIFAR-10 class name, a class folder of an image_folder)', "run_specific")
    protocol: str = flag("ganomaly", 'ganomaly (abnormal test images from both splits) | clean (test split only)', "data")
    data_dir: Optional[str] = flag(None, 'tensorflow-datasets data_dir (cifar10: tfds default; anomaly_folder: where the decoded folder is cached when tensorflow-datasets imports, default ~/.cache/sagan_jax/tfds)', "data", resume=True)
    data_root: Optional[str] = flag(None, 'root folder of an image_folder (train|test/<class>/<image>) or anomaly_folder (train/0.normal, test/0.normal, test/1.abnormal; or MVTec AD: train/good, test/good, test/<defect_type>, ground_truth/<defect_type>) dataset', "data", location=True)
    isize: int = flag(32, 'image size, a multiple of 16', "network")
    max_train_images: int = flag(0, 'train on a seeded subset of this many normal images (0 = all)', "data")
    val_fraction: float = flag(0.0, 'fraction of normal training images held out for validation', "data")
    digits_test_fraction: float = flag(0.2, 'digits: fraction of each normal digit held out for the test set', "data")
    on_bad_image: str = flag("error", 'error (stop at the first corrupt, empty or non-image file, naming it) | skip (drop such files with a warning; their number is logged)', "data", score="line")
    on_small_image: str = flag("error", 'error (stop at an image smaller than isize, naming it) | upsample', "data", score="line")
    resize: str = flag("crop", 'how images (and masks) become isize x isize: crop (shorter side to isize, centre crop; the originals) | squash (both sides to isize, aspect ratio lost) | pad (longer side to isize, centred on black)', "data")
    mask_root: Optional[str] = flag(None, 'anomaly_folder: folder of defect masks, flat (<stem>[_mask].png) or mirroring the test folders (<test folder>/<stem>[_mask].png); default DATA_ROOT/ground_truth', "data", location=True)
    download: bool = flag(True, 'cifar10: let tensorflow-datasets download it when --data_dir lacks it', "data", resume=True)
    # Optimisation (docs/design.md, section 5).
    batch_size: int = flag(64, 'global training batch size (split over the devices)', "experiment")
    eval_batch_size: int = flag(64, 'batch size for scoring', "runtime", score="line_if_passed", result=True)
    epochs: int = flag(15, 'number of training epochs', "experiment", resume=True, result=True)
    lr: float = flag(2e-3, 'Adam learning rate of both networks (paper 2e-3)', "experiment")
    beta1: float = flag(0.5, 'Adam beta1', "experiment")
    beta2: float = flag(0.999, 'Adam beta2', "experiment")
    niter: int = flag(15, 'epochs at the initial learning rate (lambda decay)', "experiment")
    niter_decay: int = flag(100, 'epochs of linear decay (lambda decay)', "experiment")
    w_adv: float = flag(1.0, 'weight of L_adv', "experiment")
    w_con: float = flag(40.0, 'weight of L_con (paper 40)', "experiment")
    w_lat: float = flag(1.0, 'weight of L_lat', "experiment")
    d_lat_loss: bool = flag(False, "also train D on L_lat (the authors' code)", "experiment")
    reinit_d_threshold: float = flag(1e-5, 're-initialise D when L_D falls below this', "experiment")
    # Model (docs/design.md, sections 3-4).
    ngf: int = flag(64, 'generator base width', "network")
    ndf: int = flag(64, 'discriminator base width', "network")
    nz: int = flag(100, 'latent size', "network")
    use_dsc: bool = flag(True, 'depthwise-separable convolutions in the generator', "network")
    use_cbam: bool = flag(True, 'CBAM attention on the skips', "network")
    kernels_per_layer: int = flag(2, "DSC channel multiplier (paper's Table 1: 2; authors' code: 1)", "network")
    dsc_impl: str = flag("auto", 'how DSCs are computed (same math, other float rounding): auto (per layer from a fixed table of measured winners by backend, device count and shape, else a shape rule; GPU/TPU: xla) | dense | shift | shift_vjp | repeat | xla', "runtime", score="line")
    pool_after_cbam: bool = flag(False, "pool CBAM(x) instead of x (the paper's prose)", "experiment")
    # Non-GAN baselines, fitted without a training loop (sagan_jax/methods/pca.py, knn.py).
    pca_components: int = flag(16, "--model=pca: principal components of the normal training images kept; the score is the mean squared residual of the projection onto them", "experiment")
    knn_k: int = flag(1, "--model=knn: the score is the mean squared pixel distance to the k nearest normal training images (exact search)", "experiment")
    # Scoring (docs/design.md, section 7).
    score_lambda: float = flag(0.2, 'A = lambda R + (1 - lambda) L (paper 0.2, code 0.9)', "experiment")
    eval_batch_stats: bool = flag(False, 'score with test-batch BatchNorm statistics, as the PyTorch originals', "experiment")
    bn_recalibration_batches: int = flag(20, "before each evaluation, recompute BatchNorm running statistics with the current weights over this many training batches (0 = use the training run's moving averages)", "experiment")
    eval_originals: bool = flag(False, "also score the test set after each evaluated epoch as the PyTorch originals do (BatchNorm in training mode, the test set in its stored order, batches of --batch_size, A with --originals_score_lambda), recorded per epoch as test_auc_originals beside the order-independent test_auc; order-dependent, so never the result (experiments/table2.py --three_way)", "experiment")
    originals_score_lambda: float = flag(0.9, "lambda of A = lambda R + (1 - lambda) L under --eval_originals (the authors' and Skip-GANomaly's code: 0.9)", "experiment")
    eval_every: int = flag(1, 'score the test set after every N-th epoch and always after the last one (0 = only after the last; fewer test passes, no per-epoch test curve)', "runtime", result=True)
    anomaly_map: str = flag("residual", "pixel anomaly map of score mode and pixel AUROC: residual (|x - G(x)| averaged over channels) | grad (|d score / d x| averaged over channels, jax.grad under jax.vmap)", "scoring_io", score="line_if_passed")
    # Many runs as one program (docs/extending.md).
    seeds: str = flag("", "comma-separated seeds trained together as one program, e.g. 0,1,2 ('' = --seed alone); results per run under WORKDIR/runs/<name>/", "run_specific", resume=True)
    abnormal_classes: str = flag("", "comma-separated abnormal classes trained together, or 'all' ('' = --abnormal_class alone); combined with --seeds", "run_specific", resume=True)
    run_axis_impl: str = flag("auto", "how runs trained together are mapped: auto (unroll on CPU, vmap elsewhere) | vmap | unroll (same math)", "runtime")
    max_runs_per_program: int = flag(0, "split a long run list into groups of at most this many runs per program (0 = all in one)", "runtime")
    steps_per_chunk: int = flag(0, "training steps per jitted chunk (lax.scan; unrolled on CPU, where XLA runs a step inside a loop 25x slower); the host syncs (logs, progress, NaN check) between chunks; 0 = auto: 1 on CPU, 10 elsewhere", "runtime")
    # Numerics.
    compute_dtype: str = flag("float32", "dtype of activations and convolutions: float32 | bfloat16 (parameters, optimiser state and BatchNorm statistics stay float32)", "experiment")
    dsc_autotune: bool = flag(False, "dsc_impl=auto: instead of the fixed table, time each depthwise-separable layer's exact forms on this machine (cached on disk). Opt-in: timings under load can pick other forms, and other forms round differently, so results then depend on the machine's load; the forms chosen are written to metrics.json and kept on resume", "runtime", score="line")
    # Several processes (docs/scaling.md).
    coordinator_address: str = flag("", "host:port of process 0 for multi-process training with jax.distributed ('' = single process unless a cluster (Slurm, Open MPI) is detected)", "runtime", score="line")
    num_processes: int = flag(0, "number of processes in a multi-process run (0 = single process or auto-detected)", "runtime", score="line")
    process_id: int = flag(-1, "this process's index in a multi-process run (-1 = auto-detected)", "runtime", score="line")
    # Devices and output.
    host_devices: str = flag("auto", "CPU: split each batch over this many XLA host devices, one per core (auto = the usable cores, lowered to the largest count that divides --batch_size and --eval_batch_size, and 1 per process in a multi-process run; N = exactly N). Same math; set before JAX starts, so it applies to the CLI and the experiment scripts", "runtime", score="line")
    num_devices: int = flag(0, 'local devices for data parallelism (0 = all)', "runtime", score="line")
    progress: bool = flag(True, 'show a progress bar', "runtime", score="line")
    tensorboard: bool = flag(True, 'write TensorBoard event files to WORKDIR/tensorboard', "runtime")
    plots: bool = flag(True, 'write PNG pictures to WORKDIR/plots after training', "runtime")
    keep_checkpoints: int = flag(3, 'keep the newest N checkpoints (plus the best on validation data)', "runtime")
    compilation_cache: str = flag("~/.cache/sagan_jax/xla", "folder of JAX's persistent compilation cache, so reruns of the same model skip XLA compilation ('' = off; $JAX_COMPILATION_CACHE_DIR wins)", "runtime", score="line")
    threshold_fpr: float = flag(0.05, 'decision threshold for --mode=score: this false-positive rate on normal validation images (if there is no val split: training normals; for fitted models (knn, pca) each scored by the model refitted without it)', "experiment")
    # Scoring new images (--mode=score).
    input: Optional[str] = flag(None, '--mode=score: an image file or a folder of images to score', "scoring_io", score="line")
    output: Optional[str] = flag(None, '--mode=score: CSV path (default WORKDIR/scores.csv); the anomaly maps go to the folder <CSV path without .csv>_maps. --mode=export: the folder to write (default WORKDIR/export)', "scoring_io", score="line")
    export_savedmodel: bool = flag(False, '--mode=export: also write saved_model/ beside model.jaxexport, a TensorFlow SavedModel of the same scoring function through jax2tf (signature serving_default: uint8 images -> score, map; any batch size), for serving stacks that want one; needs TensorFlow (pip install ".[tfds]")', "scoring_io", score="line")
    max_pictures: int = flag(200, '--mode=score and --mode=eval: at most this many overlay pictures (image, anomaly map, decision, score, mask outline): score mode into <csv name>_overlays/ beside the CSV, eval into WORKDIR/overlays/; the first ones in input order, the rest named in the log; 200 covers a usual test set (an MVTec AD category) without writing thousands of files from a large folder by accident; 0 = none', "scoring_io", score="line")

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
    """Known class names of a dataset (None for folders: read from disk); the dataset
    registry's (sagan_jax.data.registry)."""
    return _Registries.dataset_classes(dataset)


def flags_where(**wanted) -> tuple:
    """The names of the Config fields whose metadata has every ``key=value`` of ``wanted``
    (a value may be a tuple of allowed values), in field order."""
    def match(meta, key, value):
        return meta[key] in value if isinstance(value, tuple) else meta[key] == value

    return tuple(f.name for f in dataclasses.fields(Config)
                 if all(match(f.metadata, k, v) for k, v in wanted.items()))


# Fields that tell the runs of a run list apart without changing any compiled program.
RUN_SPECIFIC = flags_where(role="run_specific")


def run_neutral_key(cfg: Config) -> tuple:
    """The fields of ``cfg`` that a compiled program may depend on: all but RUN_SPECIFIC."""
    d = cfg.to_dict()
    for k in RUN_SPECIFIC:
        d.pop(k, None)
    return tuple(sorted(d.items()))


class RunNeutral:
    """``cfg`` as a static argument of ``jax.jit``: equal (one compiled program) for configs
    that differ only in RUN_SPECIFIC fields, so the runs of a run list, and repeated runs in
    one process, share their compiled programs. The traced function reads ``.cfg``, the config
    of the first call with that key; only RUN_SPECIFIC fields can differ from the caller's."""

    __slots__ = ("cfg", "_key")

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._key = run_neutral_key(cfg)

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, RunNeutral) and self._key == other._key


def parse_seeds(cfg) -> list:
    """``--seeds`` as a list of distinct integers (``[--seed]`` when empty)."""
    if not cfg.seeds.strip():
        return [cfg.seed]
    try:
        seeds = [int(s) for s in cfg.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds={cfg.seeds!r} must be comma-separated integers, e.g. 0,1,2")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"--seeds={cfg.seeds!r} lists a seed twice or none; list each once")
    return seeds


def parse_host_devices(value: str) -> int:
    """``--host_devices`` as a number: 0 for 'auto', else the positive count it names."""
    v = str(value).strip().lower()
    if v == "auto":
        return 0
    if v.isdigit() and int(v) > 0:
        return int(v)
    raise ValueError(value)


class _Registries:
    """The model and dataset registries as validation sees them. config imports nothing of
    the package, so sagan_jax.methods and sagan_jax.data install theirs here when they are
    imported (sagan_jax/__init__.py imports both, so every Config is checked against them)."""
    model_names = staticmethod(lambda: ())
    validate_model = staticmethod(lambda cfg: None)
    unused_by_model = staticmethod(lambda cfg: {})
    dataset_names = staticmethod(lambda: ())
    dataset_classes = staticmethod(lambda name: None)
    needs_data_root = staticmethod(lambda name: False)
    unused_by_dataset = staticmethod(lambda cfg: {})


def flags_not_read(flag_name: str, value: str, reads: tuple, others_read, ignores: dict) -> dict:
    """{flag: why} of the flags an entry of a registry (a model, a dataset) does not read: the
    flags other entries read (``others_read``, an iterable of tuples) that it does not, and the
    common ones it ``ignores`` ({flag: why}); the shared rule behind both registries'
    unused-flag warnings."""
    out = {name: f"by --{flag_name}={value}" for other in others_read for name in other
           if name not in reads}
    out.update({name: f"by --{flag_name}={value} ({why})" for name, why in ignores.items()})
    return out


def use_model_registry(names, validate, unused) -> None:
    """Called by sagan_jax.methods: ``names()`` lists the models, ``validate(cfg)`` runs the
    chosen model's own flag checks, ``unused(cfg)`` gives {flag: why} of the flags it ignores."""
    _Registries.model_names = staticmethod(names)
    _Registries.validate_model = staticmethod(validate)
    _Registries.unused_by_model = staticmethod(unused)


def use_dataset_registry(names, classes, needs_data_root, unused) -> None:
    """Called by sagan_jax.data.registry: ``names()`` lists the datasets, ``classes(name)``
    their known class names (None: any), ``needs_data_root(name)`` whether --data_root is
    required, ``unused(cfg)`` {flag: why} of the data flags the dataset does not read."""
    _Registries.dataset_names = staticmethod(names)
    _Registries.dataset_classes = staticmethod(classes)
    _Registries.needs_data_root = staticmethod(needs_data_root)
    _Registries.unused_by_dataset = staticmethod(unused)


def dataset_names() -> tuple:
    """The allowed --dataset values: the dataset registry's."""
    return tuple(_Registries.dataset_names())


def validate(cfg: Config) -> None:
    _choice("mode", cfg.mode, MODES)
    _choice("model", cfg.model, _Registries.model_names())
    _choice("dataset", cfg.dataset, dataset_names())
    _choice("protocol", cfg.protocol, PROTOCOLS)
    _choice("dsc_impl", cfg.dsc_impl, DSC_IMPLS)
    _choice("on_bad_image", cfg.on_bad_image, ON_BAD_IMAGE)
    _choice("on_small_image", cfg.on_small_image, ON_SMALL_IMAGE)
    _choice("anomaly_map", cfg.anomaly_map, ANOMALY_MAPS)
    _choice("run_axis_impl", cfg.run_axis_impl, RUN_AXIS_IMPLS)
    _choice("compute_dtype", cfg.compute_dtype, COMPUTE_DTYPES)
    for f in dataclasses.fields(cfg):  # --lr=nan, --w_con=inf, ...: refused, never trained
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{f.name}={value} is not a finite number; pass a finite value")
    if cfg.max_runs_per_program < 0:
        raise ConfigError(f"--max_runs_per_program={cfg.max_runs_per_program} must be >= 0 "
                          "(0 = every run in one program)")
    if cfg.steps_per_chunk < 0:
        raise ConfigError(f"--steps_per_chunk={cfg.steps_per_chunk} must be >= 0 (0 = auto)")
    if cfg.num_processes < 0 or not -1 <= cfg.process_id < max(cfg.num_processes, 1) + (
            cfg.process_id == -1):
        raise ConfigError(f"--process_id={cfg.process_id} must lie in [0, --num_processes="
                          f"{cfg.num_processes}) (or -1 = detected)")
    if cfg.seeds.strip():
        parse_seeds(cfg)
    _choice("resize", cfg.resize, RESIZE_MODES)
    if cfg.max_pictures < 0:
        raise ConfigError(f"--max_pictures={cfg.max_pictures} must be >= 0 (0 = no overlays)")
    if cfg.mask_root and cfg.dataset != "anomaly_folder":
        raise ConfigError(f"--mask_root is read by --dataset=anomaly_folder only, not "
                          f"--dataset={cfg.dataset}; drop --mask_root or use anomaly_folder")
    if _Registries.needs_data_root(cfg.dataset) and not cfg.data_root:
        raise ConfigError(
            f"--dataset={cfg.dataset} needs --data_root=DIR, the folder that holds the images"
        )
    known = classes_of(cfg.dataset)
    listed = [c.strip() for c in cfg.abnormal_classes.split(",") if c.strip()]
    if listed == ["all"]:
        listed = []
    flag_name = "abnormal_classes" if listed else "abnormal_class"
    for c in listed or ([] if cfg.abnormal_classes.strip() else [cfg.abnormal_class]):
        if known is not None and c not in known:
            raise ConfigError(
                f"--{flag_name}={c!r} is not a class of {cfg.dataset}; "
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
    if not 0.0 <= cfg.originals_score_lambda <= 1.0:
        raise ConfigError(
            f"--originals_score_lambda={cfg.originals_score_lambda} must lie in [0, 1]")
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
    try:
        parse_host_devices(cfg.host_devices)
    except ValueError:
        raise ConfigError(f"--host_devices={cfg.host_devices!r} must be 'auto' or a positive "
                          "number of CPU devices, e.g. --host_devices=2") from None
    if cfg.num_devices < 0:
        raise ConfigError(f"--num_devices={cfg.num_devices} must be >= 0 (0 = all local devices)")
    _Registries.validate_model(cfg)


# Flags read only in some modes: (flag, predicate "unused for cfg", why). The flags of some
# datasets or models only come from their registries (their entries' options and ignores).
_USE = (
    ("input", lambda c: c.mode != "score", lambda c: f"in --mode={c.mode}"),
    ("max_pictures", lambda c: c.mode not in ("score", "eval"), lambda c: f"in --mode={c.mode}"),
    ("output", lambda c: c.mode not in ("score", "export"), lambda c: f"in --mode={c.mode}"),
    ("export_savedmodel", lambda c: c.mode != "export", lambda c: f"in --mode={c.mode}"),
    ("originals_score_lambda", lambda c: not c.eval_originals,
     lambda c: "without --eval_originals"),
)


def unused_flags(cfg: Config, given) -> list:
    """(flag, why) for each flag in ``given`` that ``cfg``'s dataset, model (its spec's options
    and ignores) or mode ignores, in field order."""
    found = {name: why(cfg) for name, unused, why in _USE if name in given and unused(cfg)}
    for unused in (_Registries.unused_by_dataset(cfg), _Registries.unused_by_model(cfg)):
        found.update({k: v for k, v in unused.items() if k in given})
    order = [f.name for f in dataclasses.fields(Config)]
    return sorted(found.items(), key=lambda item: order.index(item[0]))
