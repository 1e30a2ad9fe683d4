"""The anomaly-folder cache: a tfds builder that stores what ``anomaly_folder_read.read_folder``
decodes (Pillow) as TFRecords under ``data_dir``, so later runs skip decoding.

Imported only when tensorflow-datasets imports (``anomaly_folder.load_anomaly_folder``). The
builder config's name is a fingerprint of the files (names, sizes, modification times), the
layout and the decoding options, so a changed folder is prepared again, never read stale.
Images and masks are stored as PNG (lossless): reading back gives the arrays ``read_folder``
returned, in the same order, with the same paths, classes, skipped files and warnings.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from sagan_jax.data.anomaly_folder_read import Layout, fingerprint, read_folder
from sagan_jax.data.base import AnomalyData, Split
from sagan_jax.data.tfds_import import import_tfds

tfds = import_tfds()
log = logging.getLogger("sagan_jax")


@dataclasses.dataclass(eq=False)
class AnomalyFolderConfig(tfds.core.BuilderConfig):
    layout: Layout = None
    isize: int = 32
    on_bad_image: str = "error"
    on_small_image: str = "error"
    resize: str = "crop"


class AnomalyFolder(tfds.core.GeneratorBasedBuilder):
    """tfds builder of one anomaly folder (its config names the folder and the options)."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "train/0.normal, test/0.normal, test/1.abnormal, ground_truth (tf decoding).",
        "2.0.0": "Pillow decoding, MVTec AD layout, test folder index, --resize.",
    }

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        """None: nothing is downloaded, so no checksum file is looked up next to the code.
        (tfds 4.9.10's own lookup imports ``importlib_resources``, absent on Python >= 3.9.)"""
        return None

    def _info(self):
        c = self.builder_config
        features = {
            "image": tfds.features.Image(shape=(c.isize, c.isize, 3)),
            "label": tfds.features.ClassLabel(names=["normal", "abnormal"]),
            "class": tfds.features.Scalar(np.int32),
            "index": tfds.features.Scalar(np.int64),
            "path": tfds.features.Text(),
        }
        if c.layout.has_masks:
            features["mask"] = tfds.features.Image(shape=(c.isize, c.isize, 1))
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(),
            description=f"Anomaly folder {c.layout.root} at {c.isize}x{c.isize}.",
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        notes = []
        data = read_folder(c.layout, c.isize, c.on_bad_image, c.on_small_image, c.resize, notes)
        self.info.metadata["skipped"] = [list(s) for s in data.skipped]
        self.info.metadata["class_names"] = list(data.class_names)
        self.info.metadata["notes"] = notes
        self.info.metadata["name"] = data.name
        return {"train": self._generate_examples(data.train),
                "test": self._generate_examples(data.test)}

    def _generate_examples(self, split: Split):
        root = self.builder_config.layout.root
        for i, (img, path) in enumerate(zip(split.images, split.paths)):
            ex = {"image": img, "label": int(split.labels[i]), "class": int(split.classes[i]),
                  "index": i, "path": os.path.relpath(path, root)}
            if self.builder_config.layout.has_masks:
                ex["mask"] = (split.masks[i][..., None] if split.masks is not None
                              else np.zeros_like(img[..., :1]))
            yield i, ex


def _read_split(builder, split: str, root: str, with_masks: bool) -> Split:
    ex = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
    order = np.argsort(ex["index"], kind="stable")
    paths = tuple(os.path.join(root, p.decode()) for p in ex["path"][order])
    masks = ex["mask"][order][..., 0] if with_masks else None
    return Split(ex["image"][order], ex["label"][order].astype(np.int32), paths, masks,
                 ex["class"][order].astype(np.int32))


def load_cached(layout: Layout, isize: int, on_bad_image: str, on_small_image: str,
                resize: str, data_dir: str) -> AnomalyData:
    """Prepare (once) and read the cached anomaly folder."""
    fp = fingerprint(layout, isize, on_bad_image, on_small_image, resize,
                     str(AnomalyFolder.VERSION))
    config = AnomalyFolderConfig(name=f"s{isize}_{fp}", layout=layout, isize=isize,
                                 on_bad_image=on_bad_image, on_small_image=on_small_image,
                                 resize=resize)
    builder = AnomalyFolder(config=config, data_dir=data_dir)
    prepared_now = not builder.is_prepared()
    if prepared_now:
        log.info("preparing %s into %s", layout.root, builder.data_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP))
    meta = builder.info.metadata
    skipped = tuple(tuple(s) for s in meta.get("skipped", []))
    if not prepared_now:  # warnings were logged while preparing; repeat them on every read
        for path, reason in skipped[:20]:
            log.warning("skipped bad image: %s", reason)
        for note in meta.get("notes", []):
            log.warning("%s", note)
    return AnomalyData(
        name=meta.get("name", f"anomaly_folder({os.path.basename(layout.root)})"),
        train=_read_split(builder, "train", layout.root, False),
        test=_read_split(builder, "test", layout.root, layout.has_masks),
        skipped=skipped,
        class_names=tuple(meta.get("class_names", layout.class_names)),
    )
