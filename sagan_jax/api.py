"""A small Python API, the one the command line uses:

    from sagan_jax.api import Detector, train
    metrics = train(Config(dataset="anomaly_folder", data_root="parts", workdir="w"))
    det = Detector.load("w")
    res = det.score(["a.png", "b.png"])      # or a folder, or uint8 images (N, isize, isize, 3)
    res.scores, res.abnormal, res.maps, res.skipped

``Detector`` restores the newest checkpoint of a workdir read-only with the run's own flags
(the same rules as --mode=score, sagan_jax.inference.score_config), checks it (finite weights,
a finite threshold) and scores with BatchNorm running averages, so an image's score never
depends on what else is scored with it. ``train`` is --mode=train.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np

from sagan_jax import anomaly_maps
from sagan_jax.config import Config
from sagan_jax.data.base import DataError
from sagan_jax.data.images import decode_images
from sagan_jax.data.pipeline import to_float_np
from sagan_jax.export import export_detector
from sagan_jax.inference import checked_calibration, input_files, map_scale, score_config
from sagan_jax.methods.spec import variables_of
from sagan_jax.training.checkpoints import restore_for_inference
from sagan_jax.training.evaluate import final_score, score_images
from sagan_jax.training.loop import train as train_runs, train_and_evaluate


@dataclasses.dataclass
class Scores:
    """What ``Detector.score`` returns, one entry per image scored (in input order; files
    that could not be read are in ``skipped`` with the reason, never silently dropped)."""
    scores: np.ndarray        # raw anomaly score (higher = more anomalous), float64
    normalised: np.ndarray    # (raw - calibration min) / (max - min) of the normal images
    abnormal: np.ndarray      # decisions: raw score > threshold
    maps: np.ndarray          # pixel anomaly maps (N, isize, isize), float32
    r: np.ndarray             # the score's two terms (the model's components)
    lat: np.ndarray
    images: np.ndarray        # the images as scored, uint8 (N, isize, isize, 3)
    paths: Optional[tuple] = None     # source files (None for arrays)
    skipped: tuple = ()               # ((path, reason), ...)
    threshold: float = float("nan")


class Detector:
    """A trained workdir, ready to score images (see the module doc)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg.replace(eval_batch_stats=False)  # running averages only
        self.state, self.meta = restore_for_inference(self.cfg)
        self.calibration = checked_calibration(self.cfg, self.state, self.meta)
        self.variables = variables_of(self.state)
        self.map_scale = map_scale(self.cfg, self.variables, self.calibration)

    @classmethod
    def load(cls, workdir: str, **flags) -> "Detector":
        """The newest checkpoint in ``workdir``; ``flags``: scoring flags (anomaly_map,
        eval_batch_size, on_bad_image, ...); a model or data flag that differs from the
        run's is refused (ConfigError)."""
        values = {f.name: f.default for f in dataclasses.fields(Config)}
        values.update(flags, workdir=str(workdir), mode="eval")
        return cls(score_config(values, flags.keys(), caller="Detector.load"))

    @property
    def threshold(self) -> float:
        return float(self.calibration["threshold"])

    def score(self, images) -> Scores:
        """Scores, decisions and anomaly maps of ``images``: an image file, a folder (every
        file under it), a list of files, or uint8 images (N, isize, isize, 3) as one array or
        a list of (isize, isize, 3) arrays."""
        cfg = self.cfg
        want = f"uint8 (N, {cfg.isize}, {cfg.isize}, 3)"
        if isinstance(images, (list, tuple)) and any(isinstance(x, np.ndarray) for x in images):
            for i, x in enumerate(images):
                if not (isinstance(x, np.ndarray) and x.dtype == np.uint8
                        and x.shape == (cfg.isize, cfg.isize, 3)):
                    got = (f"shape {x.shape} and dtype {x.dtype}" if isinstance(x, np.ndarray)
                           else f"a {type(x).__name__}")
                    raise DataError(f"image {i} of the list has {got}; expected uint8 "
                                    f"({cfg.isize}, {cfg.isize}, 3) arrays, or a list of image "
                                    "files (which are resized)")
            images = np.stack(images)
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.shape[1:] != (cfg.isize, cfg.isize, 3):
                raise DataError(f"images of shape {images.shape} and dtype {images.dtype}; "
                                f"expected {want}, or image files")
            if len(images) == 0:
                raise DataError(f"no images: an empty array; pass {want} with N >= 1")
            return self.score_arrays(images)
        unfollowed = []  # (path, why): folder links that loop back, listed as skipped
        if isinstance(images, (str, os.PathLike)):
            files, unfollowed = input_files(str(images))
        else:
            files = [str(p) for p in images]
        decoded = decode_images(files, cfg.isize, on_bad_image=cfg.on_bad_image,
                                on_small_image=cfg.on_small_image, resize=cfg.resize)
        if len(decoded.images) == 0:
            raise DataError(f"no readable image among {len(files)} files "
                            f"({len(decoded.skipped)} skipped)")
        return self.score_arrays(decoded.images, tuple(decoded.paths),
                                 tuple(decoded.skipped) + tuple(unfollowed))

    def score_arrays(self, images_u8, paths=None, skipped=()) -> Scores:
        """``score`` of images already brought to isize (uint8 (N, isize, isize, 3))."""
        cfg, calib = self.cfg, self.calibration
        r, lat, recon = score_images(cfg, self.state, images_u8, keep_recon=True)
        raw = final_score(cfg, r, lat)
        span = (calib["max"] - calib["min"]) or 1.0
        maps = anomaly_maps.maps(cfg, self.variables, to_float_np(images_u8),
                                 cfg.anomaly_map, recon=recon)
        return Scores(scores=raw, normalised=(raw - calib["min"]) / span,
                      abnormal=raw > calib["threshold"], maps=maps, r=r, lat=lat,
                      images=np.asarray(images_u8), paths=paths, skipped=tuple(skipped),
                      threshold=self.threshold)

    def export(self, folder: Optional[str] = None) -> dict:
        """Write the portable export (sagan_jax.export) into ``folder`` (default
        WORKDIR/export); its paths."""
        return export_detector(self, folder or os.path.join(self.cfg.workdir, "export"))


def train(config: Config, data=None) -> dict:
    """Train (or fit) the run(s) of ``config`` as --mode=train does; the result of one run
    (its metrics.json), or the summary of several. ``data``: an AnomalyData to train one run
    on instead of loading ``config``'s dataset."""
    if data is not None:
        return train_and_evaluate(config, data)
    return train_runs(config)
