"""Image files -> uint8 arrays of one size, decoded in parallel with tf.data.

Every file is decoded to RGB (grayscale, palette, 16-bit and RGBA images are converted; alpha is
dropped), its shorter side resized to ``isize`` (bilinear, antialiased) and the centre
``isize`` x ``isize`` cropped, as the originals' ``Resize(isize) + CenterCrop(isize)``. Files of
exactly ``isize`` x ``isize`` are kept bit for bit. Masks are decoded to one channel and resized
with nearest neighbours.

Bad files never disappear silently. Before decoding, a zero-byte file or a file whose extension
is not an image's is bad; while decoding, a file neither tf nor PIL can read is bad. With
``on_bad_image="error"`` the first bad file raises DataError naming its path; with ``"skip"``
each is logged as a warning, dropped and returned in ``Decoded.skipped``. Images smaller than
``isize`` raise DataError unless ``on_small_image="upsample"``, which upsamples them and logs one
warning with their number and the first path.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # TF only decodes data; keep its logs quiet

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from sagan_jax.data.base import DataError  # noqa: E402

tf.config.set_visible_devices([], "GPU")  # tf.data only; the accelerator belongs to JAX.

log = logging.getLogger("sagan_jax")

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
BAD_IMAGE_CHOICES = ("error", "skip")
SMALL_IMAGE_CHOICES = ("error", "upsample")
SKIP_HINT = " (or pass --on_bad_image=skip to skip bad images)"
_MAX_WARNINGS = 20


@dataclasses.dataclass(frozen=True)
class Decoded:
    images: np.ndarray     # uint8 (N, isize, isize, channels), in the order of ``paths``
    paths: tuple           # the files kept
    skipped: tuple = ()    # (path, reason) of every bad file skipped


def natural_key(name: str):
    """Sort key that puts 'img2' before 'img10'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_files(folder: str) -> list:
    """Paths of the visible regular files in ``folder``, naturally sorted (dotfiles ignored)."""
    names = [n for n in os.listdir(folder) if not n.startswith(".")]
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTS


def precheck(path: str):
    """The reason ``path`` is bad before decoding (a folder, not an image, empty), or None."""
    if os.path.isdir(path):
        return f"{path}: is a folder; expected an image file ({', '.join(IMAGE_EXTS)}) here"
    if not is_image_name(path):
        return f"{path}: not an image file; expected one of {', '.join(IMAGE_EXTS)}"
    if os.path.getsize(path) == 0:
        return f"{path}: empty file (0 bytes); expected a PNG, JPEG or BMP image"
    return None


def _target_hw(h, w, isize: int):
    """Size after resizing the shorter side to isize (the longer side rounded, >= isize)."""
    short = tf.cast(tf.minimum(h, w), tf.float32)
    scale = isize / short
    nh = tf.maximum(isize, tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32))
    nw = tf.maximum(isize, tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32))
    return nh, nw


def resize_crop(img, isize: int, nearest: bool = False):
    """uint8 HWC -> uint8 (isize, isize, C): shorter side to isize, centre crop."""
    h, w = tf.shape(img)[0], tf.shape(img)[1]

    def resized():
        nh, nw = _target_hw(h, w, isize)
        if nearest:
            out = tf.image.resize(img, (nh, nw), method="nearest")
        else:
            out = tf.image.resize(img, (nh, nw), method="bilinear", antialias=True)
            out = tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)
        top, left = (nh - isize) // 2, (nw - isize) // 2
        return tf.cast(out[top:top + isize, left:left + isize], tf.uint8)

    same = tf.logical_and(tf.equal(h, isize), tf.equal(w, isize))
    out = tf.cond(same, lambda: img, resized)
    return tf.ensure_shape(out, (isize, isize, img.shape[-1]))


def resize_array(images: np.ndarray, isize: int) -> np.ndarray:
    """uint8 NHWC in memory -> uint8 (N, isize, isize, C) with the same rule as files."""
    if images.shape[1:3] == (isize, isize) or len(images) == 0:
        return images
    ds = tf.data.Dataset.from_tensor_slices(images).map(
        lambda im: resize_crop(im, isize), num_parallel_calls=tf.data.AUTOTUNE
    )
    return np.concatenate(list(ds.batch(1024).as_numpy_iterator()))


def _decode_tf(paths, isize: int, channels: int, nearest: bool):
    """{index: (image, (h, w))} of the files tf.data decodes; failures are simply absent."""
    def load(i, path):
        img = tf.io.decode_image(tf.io.read_file(path), channels=channels,
                                 expand_animations=False, dtype=tf.uint8)
        return i, resize_crop(img, isize, nearest), tf.shape(img)[:2]

    if not paths:
        return {}
    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), np.asarray(paths, dtype=object)))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().batch(256)
    out = {}
    for idx, imgs, hws in ds.as_numpy_iterator():
        for i, im, hw in zip(idx, imgs, hws):
            out[int(i)] = (im, (int(hw[0]), int(hw[1])))
    return out


def _decode_pil(path: str, isize: int, channels: int, nearest: bool):
    """Second chance for a file tf could not decode; returns (image, (h, w)) or a reason."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB" if channels == 3 else "L"))
    except Exception as e:  # noqa: BLE001 - any failure makes the file bad
        msg = " ".join(str(e).split()) or type(e).__name__
        return f"{path}: cannot decode image ({msg}); expected a readable PNG, JPEG or BMP file"
    arr = arr.reshape(arr.shape[:2] + (channels,))
    return resize_crop(tf.constant(arr), isize, nearest).numpy(), arr.shape[:2]


def _bad(path: str, reason: str, on_bad_image: str, skipped: list):
    """Raise for a bad file, or warn and record it as skipped."""
    if on_bad_image == "error":
        raise DataError(reason + SKIP_HINT)
    if len(skipped) < _MAX_WARNINGS:
        log.warning("skipping bad image: %s", reason)
    skipped.append((path, reason))


def decode_images(paths, isize: int, *, on_bad_image: str = "error",
                  on_small_image: str = "error", channels: int = 3,
                  nearest: bool = False) -> Decoded:
    """Decode ``paths`` (in order) to uint8 (N, isize, isize, channels); see the module doc."""
    paths = list(paths)
    skipped: list = []
    todo = []
    for path in paths:
        reason = precheck(path)
        if reason is None:
            todo.append(path)
        else:
            _bad(path, reason, on_bad_image, skipped)
    found = _decode_tf(todo, isize, channels, nearest)
    kept_imgs, kept_paths, small = [], [], []
    for i, path in enumerate(todo):
        got = found.get(i)
        if got is None:
            got = _decode_pil(path, isize, channels, nearest)
            if isinstance(got, str):
                _bad(path, got, on_bad_image, skipped)
                continue
        img, (h, w) = got
        if min(h, w) < isize:
            small.append((path, h, w))
        kept_imgs.append(img)
        kept_paths.append(path)
    if small:
        path, h, w = small[0]
        if on_small_image == "error":
            raise DataError(
                f"{path}: image is {w}x{h}, smaller than --isize={isize}; expected at least "
                f"{isize}x{isize} (lower --isize or pass --on_small_image=upsample)"
            )
        log.warning("upsampled %d images smaller than %dx%d to isize (first: %s, %dx%d)",
                    len(small), isize, isize, path, w, h)
    if len(skipped) > _MAX_WARNINGS:
        log.warning("... and %d more bad images skipped", len(skipped) - _MAX_WARNINGS)
    images = (np.stack(kept_imgs) if kept_imgs
              else np.zeros((0, isize, isize, channels), np.uint8))
    return Decoded(images, tuple(kept_paths), tuple(skipped))
