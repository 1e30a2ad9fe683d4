"""Labelled image folders in the ``split/label/image`` layout that ``tfds.ImageFolder`` reads,
as leave-one-class-out anomaly data:

    ROOT/train/<class>/<image>     ROOT/test/<class>/<image>

Both splits must hold the same class folders; classes are sorted by name (CIFAR-10's folder
names sort into its label order). Within a class, files are in natural order ('2' before
'10'); the originals' interleaved order of classes is not recoverable from folders, so the
protocol's blocks are class-major. Other top-level folders are ignored (logged); dotfiles are
ignored. The shared ``cifar10_jpg.tar.gz`` unpacked is such a root.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from sagan_jax.data.base import AnomalyData, DataError
from sagan_jax.data.images import IMAGE_EXTS, decode_images, is_image_name, list_files
from sagan_jax.data.protocols import leave_one_class_out

log = logging.getLogger("sagan_jax")
SPLITS = ("train", "test")
LAYOUT = "train/<class>/<image> and test/<class>/<image>"


def check_root(root) -> str:
    """``root`` as a string, or DataError when it is missing or not a folder."""
    if not root:
        raise DataError("no --data_root given; expected the folder that holds the dataset")
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise DataError(f"{root}: data root does not exist or is not a folder; expected a folder "
                        "holding the dataset")
    return root


def scan(root: str) -> dict:
    """{split: {class: [paths]}} of a labelled root, with its layout checked."""
    root = check_root(root)
    for split in SPLITS:
        if not os.path.isdir(os.path.join(root, split)):
            raise DataError(f"{root}: no {split}/ folder; expected {LAYOUT}")
    extra = sorted(n for n in os.listdir(root)
                   if n not in SPLITS and not n.startswith(".") and os.path.isdir(os.path.join(root, n)))
    if extra:
        log.info("%s: ignoring folders %s (only train/ and test/ are read)", root, ", ".join(extra))
    out = {}
    for split in SPLITS:
        folder = os.path.join(root, split)
        entries = list_files(folder)
        classes = [os.path.basename(p) for p in entries if os.path.isdir(p)]
        if not classes:
            raise DataError(f"{folder}: no class folders; expected {split}/<class>/<image>")
        loose = [p for p in entries if not os.path.isdir(p)]
        if loose:
            log.warning("%s: ignoring %d files outside class folders (first: %s)", folder,
                        len(loose), loose[0])
        out[split] = {c: list_files(os.path.join(folder, c)) for c in sorted(classes)}
    train_cls, test_cls = set(out["train"]), set(out["test"])
    if train_cls != test_cls:
        missing = ", ".join(sorted(train_cls - test_cls)) or "none"
        extra_cls = ", ".join(sorted(test_cls - train_cls)) or "none"
        raise DataError(f"{os.path.join(root, 'test')}: class folders differ from train/ "
                        f"(missing: {missing}; extra: {extra_cls}); expected the same classes "
                        "in both splits")
    for split in SPLITS:
        for cls, files in out[split].items():
            if not any(is_image_name(f) for f in files):
                raise DataError(f"{os.path.join(root, split, cls)}: class folder has no images; "
                                f"expected {', '.join(IMAGE_EXTS)} files")
    return out


def _decode_split(by_class: dict, classes: list, isize: int, on_bad_image: str,
                  on_small_image: str, resize: str = "crop"):
    paths, ids = [], []
    for i, cls in enumerate(classes):
        paths += by_class[cls]
        ids += [i] * len(by_class[cls])
    dec = decode_images(paths, isize, on_bad_image=on_bad_image, on_small_image=on_small_image,
                        resize=resize)
    cls_of = dict(zip(paths, ids))
    kept_ids = np.array([cls_of[p] for p in dec.paths], np.int32)
    for i, cls in enumerate(classes):
        if not np.any(kept_ids == i):
            folder = os.path.dirname(by_class[cls][0])
            raise DataError(f"{folder}: class folder has no readable images; expected at least "
                            "one PNG, JPEG or BMP image")
    return dec, kept_ids


def load_image_folder(root, abnormal_class: str, protocol: str, isize: int,
                      on_bad_image: str = "error", on_small_image: str = "error",
                      resize: str = "crop") -> AnomalyData:
    """Leave-one-class-out AnomalyData of a labelled folder (``abnormal_class`` a folder name)."""
    layout = scan(root)
    root = check_root(root)
    classes = list(layout["train"])
    if abnormal_class not in classes:
        raise DataError(f"{root}: --abnormal_class={abnormal_class!r} is not a class folder; "
                        f"classes: {', '.join(classes)}")
    train, train_ids = _decode_split(layout["train"], classes, isize, on_bad_image,
                                     on_small_image, resize)
    test, test_ids = _decode_split(layout["test"], classes, isize, on_bad_image, on_small_image,
                                   resize)
    data = leave_one_class_out(
        f"image_folder(abnormal={abnormal_class}, {protocol})",
        train.images, train_ids, test.images, test_ids, classes.index(abnormal_class), protocol,
        train.paths, test.paths,
    )
    return dataclasses.replace(data, skipped=train.skipped + test.skipped,
                               class_names=tuple(classes))
