"""An LBOT-style anomaly folder (Skip-GANomaly's custom-dataset layout) as a tfds builder:

    ROOT/train/0.normal/<image>      normal training images
    ROOT/test/0.normal/<image>       normal test images (label 0)
    ROOT/test/1.abnormal/<image>     abnormal test images (label 1)
    ROOT/ground_truth/<stem>.<ext>   optional defect masks of the abnormal test images

Images are PNG, JPEG or BMP of any size, converted to RGB and resized to isize (see
sagan_jax.data.images). With a ground_truth/ folder every abnormal test image needs a mask with
its file stem (a nonzero pixel marks a defect); normal test images get empty masks; masks
reach Split.masks as uint8 0/1 (N, isize, isize).

``download_and_prepare`` decodes the folder once (in parallel, bad files reported by path) and
writes TFRecords under ``data_dir``; later runs read those. The builder config's name is a
fingerprint of the files (names, sizes, modification times) and the decoding options, so a
changed folder is prepared again, never read stale.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from sagan_jax.data.base import AnomalyData, DataError, Split
from sagan_jax.data.image_folder import check_root
from sagan_jax.data.images import IMAGE_EXTS, decode_images, is_image_name, list_files

log = logging.getLogger("sagan_jax")
FOLDERS = {("train", 0): "train/0.normal", ("test", 0): "test/0.normal",
           ("test", 1): "test/1.abnormal"}
MASKS = "ground_truth"
LAYOUT = "train/0.normal/, test/0.normal/ and test/1.abnormal/"
DEFAULT_DATA_DIR = "~/.cache/sagan_jax/tfds"


def scan(root: str) -> dict:
    """{(split, label): [paths]} plus {'masks': {stem: path}} when ground_truth/ exists."""
    root = check_root(root)
    out = {}
    for key, rel in FOLDERS.items():
        folder = os.path.join(root, rel)
        if not os.path.isdir(folder):
            raise DataError(f"{root}: no {rel}/ folder; expected {LAYOUT} (Skip-GANomaly layout)")
        files = list_files(folder)
        if not any(is_image_name(f) for f in files):
            raise DataError(f"{folder}: class folder has no images; expected "
                            f"{', '.join(IMAGE_EXTS)} files")
        out[key] = files
    mask_dir = os.path.join(root, MASKS)
    if os.path.isdir(mask_dir):
        out["masks"] = {os.path.splitext(os.path.basename(p))[0]: p for p in list_files(mask_dir)}
    return out


def fingerprint(layout: dict, *options) -> str:
    """Hash of every file's name, size and mtime, and the decoding options."""
    h = hashlib.sha1(repr(options).encode())
    files = [p for k, v in layout.items() if k != "masks" for p in v]
    files += sorted(layout.get("masks", {}).values())
    for p in files:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


@dataclasses.dataclass(eq=False)
class AnomalyFolderConfig(tfds.core.BuilderConfig):
    root: str = ""
    isize: int = 32
    on_bad_image: str = "error"
    on_small_image: str = "error"
    has_masks: bool = False


class AnomalyFolder(tfds.core.GeneratorBasedBuilder):
    """tfds builder of one anomaly folder (its config names the folder and the options)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "train/0.normal, test/0.normal, test/1.abnormal, ground_truth."}

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
            "index": tfds.features.Scalar(np.int64),
            "path": tfds.features.Text(),
        }
        if c.has_masks:
            features["mask"] = tfds.features.Image(shape=(c.isize, c.isize, 1))
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(),
            description=f"Anomaly folder {c.root} at {c.isize}x{c.isize}.",
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        layout = scan(c.root)
        splits, skipped = {}, []
        for split in ("train", "test"):
            paths, labels = [], []
            for s, label in FOLDERS:
                if s == split:
                    paths += layout[(s, label)]
                    labels += [label] * len(layout[(s, label)])
            dec = decode_images(paths, c.isize, on_bad_image=c.on_bad_image,
                                on_small_image=c.on_small_image)
            skipped += list(dec.skipped)
            label_of = dict(zip(paths, labels))
            kept_labels = [label_of[p] for p in dec.paths]
            for (s, label), rel in FOLDERS.items():
                if s == split and label not in kept_labels:
                    raise DataError(f"{os.path.join(c.root, rel)}: class folder has no readable "
                                    "images; expected at least one PNG, JPEG or BMP image")
            masks = None
            if c.has_masks and split == "test":
                masks = self._masks(layout["masks"], dec.paths, kept_labels)
            splits[split] = (dec, kept_labels, masks)
        self.info.metadata["skipped"] = [list(s) for s in skipped]
        return {split: self._generate_examples(*v) for split, v in splits.items()}

    def _masks(self, by_stem: dict, paths, labels) -> np.ndarray:
        """0/1 masks of the test images: from ground_truth/ for abnormal ones, else empty."""
        c = self.builder_config
        wanted = []
        for p, label in zip(paths, labels):
            if label != 1:
                continue
            stem = os.path.splitext(os.path.basename(p))[0]
            if stem not in by_stem:
                raise DataError(f"{p}: no defect mask; expected "
                                f"{os.path.join(c.root, MASKS, stem)}.png (or .jpg, .bmp)")
            wanted.append(by_stem[stem])
        dec = decode_images(wanted, c.isize, on_bad_image="error",
                            on_small_image=c.on_small_image, channels=1, nearest=True)
        out = np.zeros((len(paths), c.isize, c.isize, 1), np.uint8)
        out[np.asarray(labels) == 1] = (dec.images > 127).astype(np.uint8)
        return out

    def _generate_examples(self, dec, labels, masks):
        root = self.builder_config.root
        for i, (img, path, label) in enumerate(zip(dec.images, dec.paths, labels)):
            ex = {"image": img, "label": label, "index": i, "path": os.path.relpath(path, root)}
            if self.builder_config.has_masks:
                ex["mask"] = masks[i] if masks is not None else np.zeros_like(img[..., :1])
            yield i, ex


def _read_split(builder, split: str, root: str, has_masks: bool) -> Split:
    ex = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
    order = np.argsort(ex["index"], kind="stable")
    paths = tuple(os.path.join(root, p.decode()) for p in ex["path"][order])
    masks = ex["mask"][order][..., 0] if has_masks and split == "test" else None
    return Split(ex["image"][order], ex["label"][order].astype(np.int32), paths, masks)


def load_anomaly_folder(root, isize: int, on_bad_image: str = "error",
                        on_small_image: str = "error", data_dir=None) -> AnomalyData:
    """Prepare (once) and read an anomaly folder; masks, if any, in ``test.masks``."""
    root = os.path.abspath(check_root(root))
    layout = scan(root)
    has_masks = "masks" in layout
    fp = fingerprint(layout, isize, on_bad_image, on_small_image, AnomalyFolder.VERSION)
    config = AnomalyFolderConfig(name=f"s{isize}_{fp}", root=root, isize=isize,
                                 on_bad_image=on_bad_image, on_small_image=on_small_image,
                                 has_masks=has_masks)
    data_dir = os.path.expanduser(data_dir or DEFAULT_DATA_DIR)
    builder = AnomalyFolder(config=config, data_dir=data_dir)
    if not builder.is_prepared():
        log.info("preparing %s into %s", root, builder.data_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP))
    skipped = tuple(tuple(s) for s in builder.info.metadata.get("skipped", []))
    for path, reason in skipped[:20]:
        log.warning("skipped bad image: %s", reason)
    return AnomalyData(
        name=f"anomaly_folder({os.path.basename(root)})",
        train=_read_split(builder, "train", root, has_masks),
        test=_read_split(builder, "test", root, has_masks),
        skipped=skipped,
    )
