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


def test_sixteen_bit_gray_keeps_its_high_byte(tmp_path):
    """16-bit PNGs become 8 bits as tf.image.convert_image_dtype does (value >> 8), not clipped."""
    a = (np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    img = decode_images([str(tmp_path / "g16.png")], 32).images[0]
    assert np.array_equal(img, np.repeat((a >> 8).astype(np.uint8)[..., None], 3, axis=-1))


def broken_links(tmp_path):
    dangling, loop = tmp_path / "gone.png", tmp_path / "loop.png"
    dangling.symlink_to(tmp_path / "no_such_file.png")
    loop.symlink_to(loop)
    return {
        "dangling": (str(dangling), f"{dangling}: dangling symbolic link (-> "
                     f"{tmp_path / 'no_such_file.png'}, which does not exist); expected a link to "
                     "an existing image file"),
        "loop": (str(loop), f"{loop}: symbolic link loop (-> {loop}); expected a link to an "
                 "existing image file"),
    }


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_broken_symlink_is_one_line_error(tmp_path, kind):
    path, reason = broken_links(tmp_path)[kind]
    with pytest.raises(DataError) as e:
        decode_images([write(tmp_path / "ok.png"), path], 32)
    assert str(e.value) == reason + SKIP_HINT


def test_broken_symlinks_are_skipped_and_reported(tmp_path):
    links = broken_links(tmp_path)
    good = write(tmp_path / "ok.png")
    dec = decode_images([links["dangling"][0], good, links["loop"][0]], 32, on_bad_image="skip")
    assert dec.paths == (good,)
    assert dec.skipped == (links["dangling"], links["loop"])


def test_working_symlink_is_read(tmp_path):
    good = write(tmp_path / "ok.png")
    (tmp_path / "link.png").symlink_to(good)
    dec = decode_images([str(tmp_path / "link.png")], 32)
    assert np.array_equal(dec.images, decode_images([good], 32).images)


def bars(h=200, w=300):
    """An h x w RGB image with a white vertical bar in its leftmost tenth, and its 0/255 mask."""
    img = np.full((h, w, 3), 60, np.uint8)
    img[:, : w // 10] = 255
    return img, (img[..., 0] == 255).astype(np.uint8) * 255


@pytest.mark.parametrize("resize", ["crop", "squash", "pad"])
def test_resize_modes_geometry_and_mask_alignment(tmp_path, resize):
    img, mask = bars()
    Image.fromarray(img).save(tmp_path / "i.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    dec = decode_images([str(tmp_path / "i.png")], 64, resize=resize)
    mdec = decode_images([str(tmp_path / "m.png")], 64, resize=resize, channels=1, nearest=True)
    out, m = dec.images[0].astype(int), mdec.images[0, ..., 0]
    assert dec.sizes == ((200, 300),) and out.shape == (64, 64, 3)
    if resize == "crop":  # the centre 200 x 200: the bar (columns 0-29) is cut away
        assert dec.window == ((0, 50, 200, 250),)
        assert m.max() == 0 and out.max() < 100 and mdec.defects == ((True, False),)
    else:
        assert dec.window == ((0, 0, 200, 300),) and mdec.defects == ((True, True),)
        bar = m == 255
        assert 0 < bar.sum() and np.all(out[..., 0][bar] > 200)  # mask and image line up
    if resize == "squash":  # full height, bar 64 / 10 wide
        assert bar[:, :6].all() and not bar[:, 7:].any()
    if resize == "pad":  # 64 x 43 centred: black bands of 10 and 11 rows
        assert (out[:10] == 0).all() and (out[-11:] == 0).all() and (out[10:-11] > 0).all()
        assert not bar[:10].any() and bar[10:-11, :6].all()


def test_resize_pad_small_is_the_longer_side(tmp_path):
    p = write(tmp_path / "wide.png", h=20, w=70)
    assert decode_images([p], 64, resize="pad").images.shape == (1, 64, 64, 3)  # no upsampling
    with pytest.raises(DataError, match="image is 70x20, smaller than --isize=64"):
        decode_images([p], 64, resize="crop")
