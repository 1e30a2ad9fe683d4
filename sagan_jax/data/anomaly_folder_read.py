"""Anomaly folders in two layouts, told apart by their training folder:

LBOT / Skip-GANomaly (``train/0.normal``)::

    ROOT/train/0.normal/<image>      normal training images
    ROOT/test/0.normal/<image>       normal test images (label 0)
    ROOT/test/1.abnormal/<image>     abnormal test images (label 1); optional
    ROOT/ground_truth/<stem>.<ext>   optional defect masks of the abnormal test images

MVTec AD (``train/good``)::

    ROOT/train/good/<image>                      normal training images
    ROOT/test/good/<image>                       normal test images (label 0)
    ROOT/test/<defect_type>/<image>              abnormal test images (label 1), one folder
                                                 per defect type; optional
    ROOT/ground_truth/<defect_type>/<stem>_mask.png   optional defect masks

Good images only: without abnormal test images (no, or empty, abnormal test folders) the
folder trains and calibrates as usual; its test set reports the false-positive rate at the
threshold instead of an AUC (one warning says so).

Each test image keeps its folder: ``Split.classes`` indexes ``AnomalyData.class_names``
(the normal folder first, then the abnormal folders in natural order), so results can be
reported per defect type. Masks are read from ``mask_root`` (``--mask_root``; default
``ROOT/ground_truth``) in either of two layouts, recognised automatically: flat
(``<stem>.<ext>``) or mirroring the test folders (``<test folder>/<stem>.<ext>``); a
``_mask`` suffix on the stem is optional in both. With masks, every abnormal test image needs
one (a nonzero pixel marks a defect, binarised at > 127) of its image's size; normal test images
get empty masks; masks reach ``Split.masks`` as uint8 0/1 (N, isize, isize), brought to isize
by the same ``resize`` rule as the images. A mask folder (or a subfolder of it) in a layout
that is not recognised is named in a warning, never silently ignored; with ``--resize=crop``
one warning counts the defective images whose defect pixels all fall outside the crop.

Images are PNG, JPEG or BMP of any size, converted to RGB and resized to isize with Pillow
(sagan_jax.data.images). This module needs no TensorFlow. When tensorflow-datasets imports,
``load_anomaly_folder`` caches the decoded arrays as a tfds dataset under ``data_dir``
(sagan_jax.data.anomaly_folder_tfds; prepared once, named by a fingerprint of the files and
options, read back bit for bit); without it the folder is decoded on every run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Optional

import numpy as np

from sagan_jax.data.base import AnomalyData, DataError, Split
from sagan_jax.data.image_folder import check_root
from sagan_jax.data.images import (
    IMAGE_EXTS, decode_images, is_image_name, link_problem, list_files, natural_key,
)

log = logging.getLogger("sagan_jax")
LBOT, MVTEC = "lbot", "mvtec"
NORMAL_FOLDER = {LBOT: "0.normal", MVTEC: "good"}
MASKS = "ground_truth"
LAYOUT = "train/0.normal/, test/0.normal/ and test/1.abnormal/"
MVTEC_LAYOUT = "train/good/, test/good/ and test/<defect_type>/"
LAYOUT_HINT = f"expected {LAYOUT} (Skip-GANomaly layout) or {MVTEC_LAYOUT} (MVTec AD layout)"
DEFAULT_DATA_DIR = "~/.cache/sagan_jax/tfds"
MASK_SUFFIX = "_mask"


@dataclasses.dataclass(frozen=True)
class Layout:
    root: str
    kind: str                 # LBOT or MVTEC
    train: tuple              # paths of the normal training images
    test: tuple               # ((folder, label, paths), ...): the normal folder first
    mask_dir: Optional[str] = None   # where masks are read from (None: no masks)
    mirrored: tuple = ()      # ((test folder, {stem: mask path}), ...)
    flat: tuple = ()          # ((stem, mask path), ...) of masks directly in mask_dir

    def __repr__(self):  # short: tfds logs its builder config, which holds the layout
        n_test = sum(len(ps) for _, _, ps in self.test)
        return (f"Layout({self.root!r}, {self.kind}, {len(self.train)} train, {n_test} test "
                f"images, masks: {self.mask_dir!r})")

    @property
    def class_names(self) -> tuple:
        return tuple(name for name, _, _ in self.test)

    @property
    def has_masks(self) -> bool:
        return self.mask_dir is not None

    def files(self) -> list:
        """Every file the dataset reads (images, then masks)."""
        out = list(self.train) + [p for _, _, ps in self.test for p in ps]
        out += sorted(p for _, m in self.mirrored for p in m.values())
        out += sorted(p for _, p in self.flat)
        return out

    def find_mask(self, folder: str, path: str) -> str:
        """The mask of abnormal test image ``path`` (in test/``folder``), or DataError."""
        stem = os.path.splitext(os.path.basename(path))[0]
        got = dict(self.mirrored).get(folder, {}).get(stem) or dict(self.flat).get(stem)
        if got is not None:
            return got
        if self.mirrored:
            expected = (f"{os.path.join(self.mask_dir, folder, stem)}{MASK_SUFFIX}.png "
                        f"(or {stem}.png; .jpg, .bmp)")
        else:
            expected = f"{os.path.join(self.mask_dir, stem)}.png (or .jpg, .bmp)"
        raise DataError(f"{path}: no defect mask; expected {expected}")


def _folder(path: str, layout: str) -> str:
    """``path`` if it is a folder, else DataError naming the ``layout`` expected."""
    problem = link_problem(path)
    if problem is not None:
        raise DataError(problem.replace("an existing image file", "an existing folder")
                        + f" ({layout})")
    if not os.path.isdir(path):
        raise DataError(f"{path}: not a folder; expected {layout}")
    return path


def _images_in(folder: str) -> list:
    files = list_files(folder)
    if not any(is_image_name(f) for f in files):
        raise DataError(f"{folder}: class folder has no images; expected "
                        f"{', '.join(IMAGE_EXTS)} files")
    return files


def _has_entries(folder: str) -> bool:
    """Whether ``folder`` exists and holds anything (an empty or missing abnormal test folder
    means good images only)."""
    return os.path.isdir(folder) and bool(list_files(folder))


def _mask_index(folder: str) -> dict:
    """{stem: path} of the image files in ``folder``; a trailing ``_mask`` is optional."""
    out, alias = {}, {}
    for p in list_files(folder):
        if os.path.isdir(p) or not is_image_name(p):
            continue
        stem = os.path.splitext(os.path.basename(p))[0]
        out.setdefault(stem, p)
        if stem.endswith(MASK_SUFFIX):
            alias.setdefault(stem[: -len(MASK_SUFFIX)], p)
    for stem, p in alias.items():
        out.setdefault(stem, p)
    return out


def _scan_masks(root: str, test: tuple, mask_root) -> dict:
    """Layout fields of the mask folder (empty when there is none or it is not recognised)."""
    if mask_root:
        mask_dir = os.path.abspath(os.path.expanduser(str(mask_root)))
        if not os.path.isdir(mask_dir):
            raise DataError(f"--mask_root={mask_root}: not a folder; expected the folder of "
                            "defect masks (<stem>.png, or <test folder>/<stem>.png)")
    else:
        mask_dir = os.path.join(root, MASKS)
        if not os.path.isdir(mask_dir):
            return {}
    folders = {name: label for name, label, _ in test}
    entries = list_files(mask_dir)
    mirrored, ignored = [], []
    for p in entries:
        if not os.path.isdir(p):
            continue
        name = os.path.basename(p)
        if folders.get(name) == 1:
            index = _mask_index(p)
            nested = [q for q in list_files(p) if os.path.isdir(q)]
            if nested:
                log.warning("%s: ignoring %d subfolders of a mask folder (first: %s); expected "
                            "the masks directly in it", p, len(nested), nested[0])
            if index:
                mirrored.append((name, index))
            else:
                ignored.append(p)
        elif folders.get(name) == 0:
            log.info("%s: masks of normal test images are not read (normal images have none)", p)
        else:
            ignored.append(p)
    for p in ignored:
        log.warning("%s: mask folder not read: it mirrors no abnormal test folder or holds no "
                    "images; expected %s/<abnormal test folder>/<stem>[_mask].png (abnormal test "
                    "folders: %s)", p, mask_dir,
                    ", ".join(n for n, lab in folders.items() if lab == 1))
    flat = _mask_index(mask_dir)
    if not mirrored and not flat:
        log.warning("%s: mask folder layout not recognised, no masks read; expected "
                    "%s/<stem>[_mask].png or %s/<abnormal test folder>/<stem>[_mask].png "
                    "(mirroring test/)", mask_dir, mask_dir, mask_dir)
        return {}
    return {"mask_dir": mask_dir, "mirrored": tuple(mirrored), "flat": tuple(sorted(flat.items()))}


def scan(root, mask_root=None) -> Layout:
    """The layout of an anomaly folder (LBOT or MVTec AD), checked; no image is decoded."""
    root = os.path.abspath(check_root(root))
    if os.path.isdir(os.path.join(root, "train", NORMAL_FOLDER[LBOT])):
        kind = LBOT
    elif os.path.isdir(os.path.join(root, "train", NORMAL_FOLDER[MVTEC])):
        kind = MVTEC
    else:
        for rel, layout in (("train/0.normal", f"{LAYOUT} (Skip-GANomaly layout)"),
                            ("train/good", f"{MVTEC_LAYOUT} (MVTec AD layout)")):
            if os.path.islink(os.path.join(root, rel)):
                _folder(os.path.join(root, rel), layout)
        raise DataError(f"{root}: no train/0.normal/ folder; {LAYOUT_HINT}")
    normal = NORMAL_FOLDER[kind]
    train = _images_in(os.path.join(root, "train", normal))
    test_dir = os.path.join(root, "test")
    if kind == LBOT:
        if not os.path.isdir(os.path.join(root, "test/0.normal")):
            raise DataError(f"{root}: no test/0.normal/ folder; expected {LAYOUT} "
                            "(Skip-GANomaly layout; test/1.abnormal/ may be left out when only "
                            "good images are known)")
        abnormal = ["1.abnormal"] if _has_entries(os.path.join(root, "test/1.abnormal")) else []
    else:
        _folder(os.path.join(test_dir, normal), f"{MVTEC_LAYOUT} (MVTec AD layout)")
        entries = list_files(test_dir)
        abnormal = [os.path.basename(p) for p in entries if os.path.isdir(p)
                    and os.path.basename(p) != normal]
        empty = [a for a in abnormal if not _has_entries(os.path.join(test_dir, a))]
        if empty:  # a defect folder without images: named, never silently dropped
            log.warning("%s: %d defect folders hold no images and are left out: %s", test_dir,
                        len(empty), ", ".join(sorted(empty, key=natural_key)))
        abnormal = [a for a in abnormal if a not in empty]
        loose = [p for p in entries if not os.path.isdir(p)]
        if loose:
            log.warning("%s: ignoring %d files outside the test folders (first: %s)", test_dir,
                        len(loose), loose[0])
        extra = [p for p in list_files(os.path.join(root, "train"))
                 if os.path.basename(p) != normal]
        if extra:
            log.warning("%s: ignoring %d entries besides train/good/ (first: %s); MVTec AD "
                        "trains on good images only", os.path.join(root, "train"), len(extra),
                        extra[0])
    test = [(normal, 0, tuple(_images_in(os.path.join(test_dir, normal))))]
    test += [(name, 1, tuple(_images_in(os.path.join(test_dir, name))))
             for name in sorted(abnormal, key=natural_key)]
    test = tuple(test)
    if not abnormal:
        log.warning("%s: no abnormal test images (good images only): the model trains and "
                    "calibrates its threshold on normal images (held out with --val_fraction), "
                    "and the test set reports fpr_at_threshold (normal test images flagged); "
                    "AUC, AP, F1 and the pixel metrics are absent, as they need abnormal "
                    "images", test_dir)
    return Layout(root, kind, tuple(train), test, **_scan_masks(root, test, mask_root))


def _stat_key(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:  # a broken link: its own entry (decoding reports it)
        st = os.lstat(path)
    return f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n"


def fingerprint(layout: Layout, *options) -> str:
    """Hash of the layout kind, every file's name, size and mtime, and the decoding options."""
    h = hashlib.sha1(repr((layout.kind, layout.mask_dir) + options).encode())
    for p in layout.files():
        h.update(_stat_key(p).encode())
    return h.hexdigest()[:16]


def _decode_masks(layout: Layout, test: Split, dec_sizes, isize: int, on_small_image: str,
                  resize: str, notes: list) -> np.ndarray:
    """0/1 masks of the kept test images: read for abnormal ones, empty for normal ones."""
    names = layout.class_names
    abnormal = np.flatnonzero(test.labels == 1)
    wanted = [layout.find_mask(names[test.classes[i]], test.paths[i]) for i in abnormal]
    dec = decode_images(wanted, isize, on_bad_image="error", on_small_image=on_small_image,
                        channels=1, nearest=True, resize=resize)
    for i, mask_path, mask_hw in zip(abnormal, wanted, dec.sizes):
        if tuple(mask_hw) != tuple(dec_sizes[i]):
            (mh, mw), (h, w) = mask_hw, dec_sizes[i]
            raise DataError(f"{mask_path}: mask is {mw}x{mh} but its image {test.paths[i]} is "
                            f"{w}x{h}; expected a mask of its image's size")
    out = np.zeros((len(test), isize, isize), np.uint8)
    out[abnormal] = (dec.images[..., 0] > 127).astype(np.uint8)
    cropped = [test.paths[i] for i, (inside_file, inside_window) in zip(abnormal, dec.defects)
               if inside_file and not inside_window]
    if cropped:
        notes.append(
            f"{len(cropped)} of {len(abnormal)} defective test images lose all their defect "
            f"pixels to --resize={resize} at --isize={isize} (first: {cropped[0]}); pixel AUROC "
            "counts them as defect-free (--resize=pad or squash keeps the whole image)")
    faded = [test.paths[i] for i, (_, inside_window), m in zip(abnormal, dec.defects, out[abnormal])
             if inside_window and not m.any()]
    if faded:
        notes.append(
            f"{len(faded)} of {len(abnormal)} defective test images have defects too small to "
            f"survive resizing their masks to --isize={isize} (first: {faded[0]}); pixel AUROC "
            "counts them as defect-free")
    return out


def read_folder(layout: Layout, isize: int, on_bad_image: str = "error",
                on_small_image: str = "error", resize: str = "crop", notes=None) -> AnomalyData:
    """Decode a scanned anomaly folder with Pillow (no cache). Warnings about the masks are
    logged and appended to ``notes``."""
    notes = [] if notes is None else notes
    opts = dict(on_bad_image=on_bad_image, on_small_image=on_small_image, resize=resize)
    train = decode_images(layout.train, isize, **opts)
    if len(train.images) == 0:
        raise DataError(f"{os.path.dirname(layout.train[0])}: class folder has no readable "
                        "images; expected at least one PNG, JPEG or BMP image")
    paths = [p for _, _, ps in layout.test for p in ps]
    folder_of = {p: i for i, (_, _, ps) in enumerate(layout.test) for p in ps}
    test = decode_images(paths, isize, **opts)
    classes = np.array([folder_of[p] for p in test.paths], np.int32)
    for i, (name, _, ps) in enumerate(layout.test):
        if not np.any(classes == i):
            raise DataError(f"{os.path.dirname(ps[0])}: class folder has no readable images; "
                            "expected at least one PNG, JPEG or BMP image")
    labels = np.array([layout.test[c][1] for c in classes], np.int32)
    test_split = Split(test.images, labels, test.paths, classes=classes)
    if layout.has_masks:
        masks = _decode_masks(layout, test_split, test.sizes, isize, on_small_image, resize,
                              notes)
        test_split = dataclasses.replace(test_split, masks=masks)
    for note in notes:
        log.warning("%s", note)
    return AnomalyData(
        name=f"anomaly_folder({os.path.basename(layout.root)})",
        train=Split(train.images, np.zeros(len(train.images), np.int32), train.paths,
                    classes=np.zeros(len(train.images), np.int32)),
        test=test_split,
        skipped=train.skipped + test.skipped,
        class_names=layout.class_names,
    )
