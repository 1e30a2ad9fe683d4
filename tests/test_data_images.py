"""Decoding image files: modes, sizes and every kind of bad file (sagan_jax.data.images)."""
import logging

import numpy as np
import pytest
from PIL import Image

from sagan_jax.data.base import DataError
from sagan_jax.data.images import SKIP_HINT, decode_images

RNG = np.random.default_rng(0)


def write(path, h=40, w=48, mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    img = img.convert(mode) if mode != "RGB" else img
    img.save(path, format=fmt)
    return str(path)


def test_modes_and_sizes_become_rgb_isize(tmp_path):
    paths = [write(tmp_path / "gray.png", mode="L"), write(tmp_path / "rgba.png", mode="RGBA"),
             write(tmp_path / "pal.png", mode="P"), write(tmp_path / "gray.bmp", mode="L"),
             write(tmp_path / "tall.jpg", h=70, w=33), write(tmp_path / "x.jpeg", h=32, w=32)]
    dec = decode_images(paths, 32)
    assert dec.images.shape == (6, 32, 32, 3) and dec.images.dtype == np.uint8
    assert dec.paths == tuple(paths) and dec.skipped == ()
    gray = dec.images[0].astype(int)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])


def test_exact_size_is_kept_bit_for_bit(tmp_path):
    arr = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    assert np.array_equal(decode_images([str(tmp_path / "a.png")], 32).images[0], arr)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(DataError) as e:
        decode_images([str(p)], 32)
    assert str(e.value) == f"{p}: empty file (0 bytes); expected a PNG, JPEG or BMP image" + SKIP_HINT


def test_non_image_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    with pytest.raises(DataError) as e:
        decode_images([str(p)], 32)
    assert str(e.value) == f"{p}: not an image file; expected one of .png, .jpg, .jpeg, .bmp" + SKIP_HINT


@pytest.mark.parametrize("content", [b"this is not a png", "truncated"])
def test_corrupt_image_names_its_path(tmp_path, content):
    p = tmp_path / "bad.png"
    if content == "truncated":
        good = (write(tmp_path / "good.png"))
        data = open(good, "rb").read()
        content = data[: len(data) // 2]
    p.write_bytes(content)
    with pytest.raises(DataError) as e:
        decode_images([str(p)], 32)
    msg = str(e.value)
    assert msg.startswith(f"{p}: cannot decode image (")
    assert msg.endswith("); expected a readable PNG, JPEG or BMP file" + SKIP_HINT)
    assert "\n" not in msg


def test_skip_bad_images_warns_and_counts(tmp_path, caplog):
    good = [write(tmp_path / f"{i}.png") for i in range(3)]
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"junk")
    (tmp_path / "readme.md").write_text("x")
    paths = [good[0], str(tmp_path / "empty.jpg"), good[1], str(tmp_path / "junk.png"),
             str(tmp_path / "readme.md"), good[2]]
    with caplog.at_level(logging.WARNING, logger="sagan_jax"):
        dec = decode_images(paths, 32, on_bad_image="skip")
    assert dec.paths == tuple(good) and len(dec.images) == 3
    assert [p for p, _ in dec.skipped] == [str(tmp_path / "empty.jpg"), str(tmp_path / "readme.md"),
                                          str(tmp_path / "junk.png")]
    assert sum("skipping bad image" in r.message for r in caplog.records) == 3


def test_all_files_bad_in_skip_mode(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    dec = decode_images([str(tmp_path / "a.png")], 32, on_bad_image="skip")
    assert dec.images.shape == (0, 32, 32, 3) and len(dec.skipped) == 1


def test_small_image_error_and_upsample(tmp_path, caplog):
    p = write(tmp_path / "small.png", h=20, w=24)
    with pytest.raises(DataError) as e:
        decode_images([p], 32)
    assert str(e.value) == (f"{p}: image is 24x20, smaller than --isize=32; expected at least 32x32 "
                            "(lower --isize or pass --on_small_image=upsample)")
    with caplog.at_level(logging.WARNING, logger="sagan_jax"):
        dec = decode_images([p], 32, on_small_image="upsample")
    assert dec.images.shape == (1, 32, 32, 3)
    assert any("upsampled 1 images smaller than 32x32" in r.message for r in caplog.records)


def test_masks_are_one_channel_nearest(tmp_path):
    m = np.zeros((64, 64), np.uint8)
    m[:32] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    dec = decode_images([str(tmp_path / "m.png")], 32, channels=1, nearest=True)
    assert dec.images.shape == (1, 32, 32, 1)
    assert set(np.unique(dec.images)) == {0, 255} and (dec.images == 255).sum() == 16 * 32
