"""Image files -> uint8 arrays of one size, decoded with Pillow in parallel threads.

No TensorFlow: Pillow decodes and resizes (both release the GIL, so a thread pool uses every
core). Every file is decoded to RGB (grayscale, palette, 1-bit, 16-bit (high byte, as
``tf.image.convert_image_dtype``), LA and RGBA images are converted; alpha is dropped) and
brought to ``isize`` x ``isize`` by ``resize``:

- ``crop`` (default): shorter side resized to ``isize`` (bilinear, antialiased), centre
  ``isize`` x ``isize`` cropped: the originals' ``Resize(isize) + CenterCrop(isize)``;
- ``squash``: resized to ``isize`` x ``isize``, aspect ratio not kept;
- ``pad``: longer side resized to ``isize``, centred on a black (mask: 0) square.

Files of exactly ``isize`` x ``isize`` are kept bit for bit. Masks (``channels=1``,
``nearest=True``) are decoded to one channel and resized with nearest neighbours by the same
rule, so a mask stays aligned with its image.

Bad files never disappear silently. Before decoding, a dangling or looping symbolic link, a
folder, a zero-byte file or a file whose extension is not an image's is bad; while decoding, a
file Pillow cannot read is bad. With ``on_bad_image="error"`` the first bad file raises
DataError naming its path; with ``"skip"`` each is logged as a warning, dropped and returned in
``Decoded.skipped``. An image that would be upsampled (shorter side below ``isize``; with
``pad``, longer side) raises DataError unless ``on_small_image="upsample"``, which upsamples it
and logs one warning with their number and the first path.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import logging
import os
import re
from typing import Optional

import numpy as np

from sagan_jax.data.base import DataError

log = logging.getLogger("sagan_jax")

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
BAD_IMAGE_CHOICES = ("error", "skip")
SMALL_IMAGE_CHOICES = ("error", "upsample")
RESIZE_CHOICES = ("crop", "squash", "pad")
SKIP_HINT = " (or pass --on_bad_image=skip to skip bad images)"
_MAX_WARNINGS = 20
_WORKERS = min(32, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class Decoded:
    images: np.ndarray     # uint8 (N, isize, isize, channels), in the order of ``paths``
    paths: tuple           # the files kept
    skipped: tuple = ()    # (path, reason) of every bad file skipped
    sizes: tuple = ()      # (h, w) of each kept file before resizing
    window: tuple = ()     # (top, left, bottom, right): the part of each kept file that the
                           # result shows, in the file's pixels (the whole file unless cropped)
    defects: tuple = ()    # masks (channels=1): per kept file, (any pixel > 127 in the file,
                           # any such pixel inside its window)


def natural_key(name: str):
    """Sort key that puts 'img2' before 'img10'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_files(folder: str) -> list:
    """Paths of the visible entries in ``folder``, naturally sorted (dotfiles ignored)."""
    names = [n for n in os.listdir(folder) if not n.startswith(".")]
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTS


def link_problem(path: str) -> Optional[str]:
    """Why ``path``, a symbolic link, leads nowhere (dangling, or a loop), else None."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except OSError as e:
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        if e.errno == errno.ELOOP:
            return (f"{path}: symbolic link loop (-> {target}); expected a link to an existing "
                    "image file")
        return (f"{path}: dangling symbolic link (-> {target}, which does not exist); expected "
                "a link to an existing image file")
    return None


def precheck(path: str):
    """The reason ``path`` is bad before decoding (a broken link, a folder, not an image,
    empty), or None."""
    reason = link_problem(path)
    if reason is not None:
        return reason
    if os.path.isdir(path):
        return f"{path}: is a folder; expected an image file ({', '.join(IMAGE_EXTS)}) here"
    if not is_image_name(path):
        return f"{path}: not an image file; expected one of {', '.join(IMAGE_EXTS)}"
    try:
        size = os.path.getsize(path)
    except OSError as e:
        return f"{path}: cannot read file ({e.strerror}); expected a readable image file"
    if size == 0:
        return f"{path}: empty file (0 bytes); expected a PNG, JPEG or BMP image"
    return None


def is_small(h: int, w: int, isize: int, resize: str = "crop") -> bool:
    """Whether bringing an h x w image to isize upsamples it."""
    return (max(h, w) if resize == "pad" else min(h, w)) < isize


def _geometry(h: int, w: int, isize: int, resize: str):
    """(resized (nh, nw), placement): for crop, the (top, left) cut from the resized image;
    for pad, the (top, left) where it is pasted on the isize square; for squash, None."""
    if resize == "squash":
        return (isize, isize), None
    if resize == "pad":
        scale = isize / max(h, w)
        nh = min(isize, max(1, int(round(h * scale))))
        nw = min(isize, max(1, int(round(w * scale))))
        return (nh, nw), ((isize - nh) // 2, (isize - nw) // 2)
    scale = isize / min(h, w)
    nh = max(isize, int(round(h * scale)))
    nw = max(isize, int(round(w * scale)))
    return (nh, nw), ((nh - isize) // 2, (nw - isize) // 2)


def source_window(h: int, w: int, isize: int, resize: str = "crop"):
    """(top, left, bottom, right) of an h x w file that the isize result shows (its pixels
    whose centres fall inside the crop; the whole file for squash and pad)."""
    if resize != "crop" or (h, w) == (isize, isize):
        return (0, 0, h, w)
    (nh, nw), (top, left) = _geometry(h, w, isize, resize)
    sy, sx = h / nh, w / nw
    return (int(np.ceil(top * sy - 0.5)), int(np.ceil(left * sx - 0.5)),
            int(np.ceil((top + isize) * sy - 0.5)), int(np.ceil((left + isize) * sx - 0.5)))


def fit(arr: np.ndarray, isize: int, resize: str = "crop", nearest: bool = False) -> np.ndarray:
    """uint8 (H, W, C) -> uint8 (isize, isize, C) by ``resize`` (see the module doc)."""
    from PIL import Image

    h, w, c = arr.shape
    if (h, w) == (isize, isize):
        return arr
    (nh, nw), place = _geometry(h, w, isize, resize)
    method = Image.NEAREST if nearest else Image.BILINEAR
    if c == 1:
        out = np.asarray(Image.fromarray(arr[..., 0]).resize((nw, nh), method))[..., None]
    else:
        out = np.asarray(Image.fromarray(arr).resize((nw, nh), method))
    if resize == "crop":
        top, left = place
        return np.ascontiguousarray(out[top:top + isize, left:left + isize])
    if resize == "pad":
        top, left = place
        canvas = np.zeros((isize, isize, c), np.uint8)
        canvas[top:top + nh, left:left + nw] = out
        return canvas
    return out


def _to_array(im, channels: int) -> np.ndarray:
    """A loaded PIL image -> uint8 (H, W, channels)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im).astype(np.int64)
        if im.mode != "I" or a.max() > 255:  # 16-bit: the high byte; "I" already 8-bit: as is
            a = a >> 8
        a = np.clip(a, 0, 255).astype(np.uint8)
        a = a.reshape(a.shape[:2])
        return a[..., None] if channels == 1 else np.repeat(a[..., None], 3, axis=-1)
    if im.mode == "F":
        a = np.clip(np.round(np.asarray(im)), 0, 255).astype(np.uint8)
        return a[..., None] if channels == 1 else np.repeat(a[..., None], 3, axis=-1)
    if channels == 1:
        return np.asarray(im.convert("L"))[..., None]
    if im.mode in ("RGBA", "RGBa", "RGBX"):
        return np.ascontiguousarray(np.asarray(im.convert("RGBA"))[..., :3])  # alpha dropped
    if im.mode in ("LA", "La"):
        return np.repeat(np.asarray(im.convert("LA"))[..., :1], 3, axis=-1)
    if im.mode == "P":
        im = im.convert("RGBA")  # palette transparency as alpha, then dropped
        return np.ascontiguousarray(np.asarray(im)[..., :3])
    return np.asarray(im.convert("RGB"))


def read_image(path: str, channels: int = 3) -> np.ndarray:
    """One file -> uint8 (H, W, channels) at its own size; raises on any failure."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. palette transparency notes: handled above
        with Image.open(path) as im:
            im.load()
            return _to_array(im, channels)


def _decode_one(path: str, isize: int, channels: int, nearest: bool, resize: str):
    """(image, (h, w), defects or None) or the reason the file is bad."""
    try:
        arr = read_image(path, channels)
    except Exception as e:  # noqa: BLE001 - any failure makes the file bad
        msg = " ".join(str(e).split()) or type(e).__name__
        return f"{path}: cannot decode image ({msg}); expected a readable PNG, JPEG or BMP file"
    h, w = arr.shape[:2]
    defects = None
    if channels == 1:
        top, left, bottom, right = source_window(h, w, isize, resize)
        on = arr[..., 0] > 127
        defects = (bool(on.any()), bool(on[top:bottom, left:right].any()))
    return fit(arr, isize, resize, nearest), (h, w), defects


def _bad(path: str, reason: str, on_bad_image: str, skipped: list):
    """Raise for a bad file, or warn and record it as skipped."""
    if on_bad_image == "error":
        raise DataError(reason + SKIP_HINT)
    if len(skipped) < _MAX_WARNINGS:
        log.warning("skipping bad image: %s", reason)
    skipped.append((path, reason))


def decode_images(paths, isize: int, *, on_bad_image: str = "error",
                  on_small_image: str = "error", channels: int = 3,
                  nearest: bool = False, resize: str = "crop") -> Decoded:
    """Decode ``paths`` (in order) to uint8 (N, isize, isize, channels); see the module doc."""
    if resize not in RESIZE_CHOICES:
        raise ValueError(f"resize={resize!r}; choose one of {', '.join(RESIZE_CHOICES)}")
    paths = list(paths)
    skipped: list = []
    todo = []
    for path in paths:
        reason = precheck(path)
        if reason is None:
            todo.append(path)
        else:
            _bad(path, reason, on_bad_image, skipped)
    if len(todo) > 1 and _WORKERS > 1:
        with concurrent.futures.ThreadPoolExecutor(_WORKERS) as pool:
            results = list(pool.map(
                lambda p: _decode_one(p, isize, channels, nearest, resize), todo))
    else:
        results = [_decode_one(p, isize, channels, nearest, resize) for p in todo]
    kept_imgs, kept_paths, sizes, defects, small = [], [], [], [], []
    for path, got in zip(todo, results):
        if isinstance(got, str):
            _bad(path, got, on_bad_image, skipped)
            continue
        img, (h, w), defect = got
        if is_small(h, w, isize, resize):
            small.append((path, h, w))
        kept_imgs.append(img)
        kept_paths.append(path)
        sizes.append((int(h), int(w)))
        if defect is not None:
            defects.append(defect)
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
    window = tuple(source_window(h, w, isize, resize) for h, w in sizes)
    return Decoded(images, tuple(kept_paths), tuple(skipped), tuple(sizes), window,
                   tuple(defects))


def resize_array(images: np.ndarray, isize: int, resize: str = "crop") -> np.ndarray:
    """uint8 NHWC in memory -> uint8 (N, isize, isize, C) with the same rule as files."""
    if images.shape[1:3] == (isize, isize) or len(images) == 0:
        return images
    with concurrent.futures.ThreadPoolExecutor(_WORKERS) as pool:
        return np.stack(list(pool.map(lambda im: fit(im, isize, resize), images, chunksize=256)))
