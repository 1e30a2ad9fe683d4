"""Overlay pictures: what a person inspecting parts looks at.

Per image: the image with its anomaly map blended in (inferno colours, black = 0, the top
colour = the map's fixed colour scale, as the map PNGs), the decision and raw score in the top
left corner (red: abnormal, green: normal), and the true defect mask's outline in cyan when a
mask is known. Shown at least DISPLAY pixels wide (upscaled from isize, so the text stays
legible). Written by --mode=score and --mode=eval into an ``overlays/`` folder beside their CSV,
at most ``--max_pictures`` of them (the first ones in input order); how many were not drawn,
and the first of them, is logged, never silently left out.
"""
from __future__ import annotations

import logging
import os
import shutil

import numpy as np
from PIL import Image, ImageDraw

log = logging.getLogger("sagan_jax")
DISPLAY = 256   # minimum width of an overlay picture, pixels
ALPHA = 0.5     # weight of the map's colours over the image
OUTLINE = (0, 255, 255)


def _colours(amap: np.ndarray, vmax: float) -> np.ndarray:
    from matplotlib import colormaps

    scaled = np.clip(np.asarray(amap, np.float64) / max(float(vmax), 1e-30), 0.0, 1.0)
    return (colormaps["inferno"](scaled)[..., :3] * 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary mask (inside pixels with a 4-neighbour outside), 2 px."""
    m = np.pad(mask.astype(bool), 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    edge = np.pad(mask.astype(bool) & ~inner, 1)
    return (edge[1:-1, 1:-1] | edge[:-2, 1:-1] | edge[2:, 1:-1] | edge[1:-1, :-2]
            | edge[1:-1, 2:])


def render(image_u8, amap, vmax: float, abnormal: bool, score: float, mask=None) -> np.ndarray:
    """One overlay picture, uint8 (S, S, 3) with S = max(DISPLAY, isize)."""
    image_u8 = np.asarray(image_u8, np.uint8)
    if image_u8.ndim == 2 or image_u8.shape[-1] == 1:
        image_u8 = np.repeat(image_u8.reshape(image_u8.shape[:2] + (1,)), 3, axis=-1)
    h, w = image_u8.shape[:2]
    scale = max(1, -(-DISPLAY // max(h, w)))
    size = (w * scale, h * scale)
    img = np.asarray(Image.fromarray(image_u8).resize(size, Image.BILINEAR), np.float64)
    col = np.asarray(Image.fromarray(_colours(amap, vmax)).resize(size, Image.BILINEAR),
                     np.float64)
    out = ((1 - ALPHA) * img + ALPHA * col).round().astype(np.uint8)
    if mask is not None and np.any(mask):
        big = np.asarray(Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255)
                         .resize(size, Image.NEAREST)) > 0
        out[_outline(big)] = OUTLINE
    pic = Image.fromarray(out)
    draw = ImageDraw.Draw(pic)
    text = f"{'ABNORMAL' if abnormal else 'normal'}  {score:.4g}"
    box = draw.textbbox((4, 4), text)
    draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 64, 64) if abnormal else (64, 255, 64))
    return np.asarray(pic)


def overlay_name(path, index: int) -> str:
    """File name of a test image's overlay in --mode=eval: its index, then its file name."""
    base = os.path.basename(path) if path else "image"
    return f"{index:05d}_{base}.png"


def replace_folder(new: str, old: str) -> None:
    """Put folder ``new`` in place of ``old`` (which may not exist): two renames, so ``old``
    is always either the previous complete folder or the new one, never a mix."""
    trash = None
    if os.path.isdir(old):
        trash = f"{old}.old{os.getpid()}"
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(old, trash)
    os.rename(new, old)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def write_overlays(folder: str, images, maps, scores, abnormal, vmax: float, names,
                   masks=None, max_pictures: int = 200) -> dict:
    """Overlay pictures of the first ``max_pictures`` images into ``folder``, which they
    replace whole (no picture of an earlier call remains beside them); {"folder", "written",
    "not_drawn"}, or None with 0 pictures (then the folder goes). The images not drawn are
    counted in the log."""
    n = len(images)
    k = min(n, max(int(max_pictures), 0))
    if k == 0:  # none asked for: no folder, and none left from an earlier call
        shutil.rmtree(folder, ignore_errors=True)
        log.info("no overlay pictures (--max_pictures=%d)", max_pictures)
        return None
    fresh = f"{folder}.tmp{os.getpid()}"
    shutil.rmtree(fresh, ignore_errors=True)
    os.makedirs(fresh)
    try:
        for i in range(k):
            pic = render(images[i], maps[i], vmax, bool(abnormal[i]), float(scores[i]),
                         None if masks is None else masks[i])
            Image.fromarray(pic).save(os.path.join(fresh, names[i]))
        replace_folder(fresh, folder)
    finally:  # an error or Ctrl-C leaves no half-written folder behind
        shutil.rmtree(fresh, ignore_errors=True)
    if k < n:
        log.warning("overlays: %d of %d images drawn into %s (--max_pictures=%d); %d not "
                    "drawn, the first of them %s; raise --max_pictures to draw more", k, n,
                    folder, max_pictures, n - k, names[k])
    else:
        log.info("overlays: %d images drawn into %s", k, folder)
    return {"folder": folder, "written": k, "not_drawn": n - k}


def map_vmax(cfg, calib, maps) -> float:
    """The colour scale of ``cfg.anomaly_map`` maps: the checkpoint's (as the map PNGs), else
    the maps' own 0.999 quantile."""
    stored = ((calib or {}).get("map_scale") or {}).get(cfg.anomaly_map)
    if stored is not None and np.isfinite(stored) and stored > 0:
        return float(stored)
    q = float(np.quantile(maps, 0.999)) if np.size(maps) else 0.0
    return q if np.isfinite(q) and q > 0 else 1.0
