"""Every image input form and layout, odd files built in the test, and bad input."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_images
from PIL import Image

from xai_bridge import ImageInputError, load_image, load_images


@pytest.fixture
def hwc() -> np.ndarray:
    return random_images((6, 7, 3), seed=1)


def test_uint8_layouts_give_the_same_nhwc(hwc: np.ndarray) -> None:
    chw = np.transpose(hwc, (2, 0, 1))
    nhwc = np.stack([hwc, hwc[::-1]])
    nchw = np.transpose(nhwc, (0, 3, 1, 2))
    assert np.array_equal(load_images(hwc), hwc[None])
    assert np.array_equal(load_images(chw), hwc[None])
    assert np.array_equal(load_images(nhwc), nhwc)
    assert np.array_equal(load_images(nchw), nhwc)
    assert np.array_equal(load_images([hwc, hwc[::-1]]), nhwc)


def test_gray_layouts_are_repeated_to_rgb(hwc: np.ndarray) -> None:
    gray = hwc[..., 0]
    out = load_images(gray)
    assert out.shape == (1, 6, 7, 3)
    assert np.array_equal(out[0, :, :, 2], gray)
    batch = load_images(np.stack([gray, gray, gray, gray, gray]))  # 5 x 6 x 7: NHW
    assert batch.shape == (5, 6, 7, 3)
    assert np.array_equal(load_images(gray[..., None]), out)


def test_torch_tensors_and_float_ranges(hwc: np.ndarray) -> None:
    t = torch.from_numpy(np.transpose(hwc, (2, 0, 1)).copy()).float() / 255.0
    before = t.clone()
    out = load_images(t)
    assert np.array_equal(out[0], hwc)
    assert torch.equal(t, before)  # not mutated
    sym = hwc.astype(np.float32) / 127.5 - 1.0
    assert np.array_equal(load_images(sym, value_range=(-1, 1))[0], hwc)
    assert np.array_equal(load_images(hwc.astype(np.float64))[0], hwc)  # floats above 1: [0, 255]


def test_16bit_array_scaled(hwc: np.ndarray) -> None:
    arr16 = hwc.astype(np.uint16) * 257
    assert np.array_equal(load_images(arr16)[0], hwc)


def test_inputs_are_never_mutated(hwc: np.ndarray) -> None:
    arr = hwc.copy()
    out = load_images(arr)
    out[...] = 0
    assert np.array_equal(arr, hwc)


def test_ambiguous_layout_asks_for_layout() -> None:
    cube = np.zeros((3, 3, 3), np.uint8)
    with pytest.raises(ImageInputError, match="layout="):
        load_images(cube)
    assert load_images(cube, layout="HWC").shape == (1, 3, 3, 3)
    with pytest.raises(ImageInputError, match="layout="):
        load_images(np.zeros((2, 3, 4, 3), np.uint8))  # could be NCHW or NHWC


def test_negative_floats_ask_for_value_range() -> None:
    with pytest.raises(ImageInputError, match="value_range"):
        load_images(np.full((5, 5, 3), -0.5, np.float32))


def test_bad_arrays() -> None:
    with pytest.raises(ImageInputError, match="empty"):
        load_images(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ImageInputError, match="channels"):
        load_images(np.zeros((4, 4, 5), np.uint8), layout="HWC")
    with pytest.raises(ImageInputError, match="NaN"):
        load_images(np.full((5, 5, 3), np.nan, np.float32))
    with pytest.raises(ImageInputError, match="unsupported type"):
        load_images(42)
    with pytest.raises(ImageInputError, match="empty list"):
        load_images([])


def test_mixed_sizes_need_size(hwc: np.ndarray) -> None:
    with pytest.raises(ImageInputError, match="size="):
        load_images([hwc, hwc[:5]])
    assert load_images([hwc, hwc[:5]], size=(5, 5)).shape == (2, 5, 5, 3)


def test_pil_modes(tmp_path: Path, hwc: np.ndarray) -> None:
    rgb = Image.fromarray(hwc)
    assert np.array_equal(load_image(rgb), hwc)
    assert np.array_equal(load_image(rgb.convert("L"))[..., 0], np.asarray(rgb.convert("L")))
    pal = rgb.convert("P")
    assert np.array_equal(load_image(pal), np.asarray(pal.convert("RGB")))


def test_rgba_png_composited_on_background(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom transparent
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = load_image(path)
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[3, 0].tolist() == [255, 255, 255]
    assert load_image(path, background=(0, 0, 0))[3, 0].tolist() == [0, 0, 0]


def test_16bit_png(tmp_path: Path) -> None:
    ramp = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369  # 0 .. 65535
    path = tmp_path / "gray16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    assert out[0, 0, 0] == 0 and out[3, 3, 0] == 255
    assert np.array_equal(out[..., 0], np.rint(ramp / 257.0).astype(np.uint8))


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=100)  # pure red in CMYK
    out = load_image(path)
    assert out.shape == (8, 8, 3)
    r, g, b = out[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=100)
    out = load_image(path)
    assert out.shape == (20, 10, 3)  # displayed upright: portrait
    assert out[2, 5].mean() > 200 and out[17, 5].mean() < 50  # white on top after rotating CW


def test_truncated_and_non_image_files_name_the_file(tmp_path: Path, hwc: np.ndarray) -> None:
    full = tmp_path / "full.png"
    Image.fromarray(np.repeat(np.repeat(hwc, 20, 0), 20, 1)).save(full)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(full.read_bytes()[:200])
    with pytest.raises(ImageInputError, match="truncated.png.*truncated or corrupt"):
        load_images(truncated)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageInputError, match="notes.jpg.*not an image"):
        load_images(str(text))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageInputError, match="empty.png.*empty"):
        load_images(empty)
    with pytest.raises(ImageInputError, match="missing.png.*does not exist"):
        load_images(tmp_path / "missing.png")


def test_a_non_image_file_is_one_line_after_ultralytics_patched_pillow(tmp_path: Path) -> None:
    """ultralytics replaces ``PIL.Image.open`` on import; reading a text file must not reach its HEIF installer."""
    pytest.importorskip("ultralytics")
    import ultralytics.utils.patches  # noqa: F401  (the import applies the patch)

    assert Image.open.__module__ == "ultralytics.utils.patches"
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageInputError, match="notes.jpg.*not an image"):
        load_images(text)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(100_000, 100_000))  # 10^10 pixels claimed in ~100 bytes
    with pytest.raises(ImageInputError, match="bomb.png.*bomb"):
        load_images(bomb)
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(small)
    with pytest.raises(ImageInputError, match="max_pixels=5000"):
        load_images(small, max_pixels=5000)


def test_folder_of_files_and_paths_mixed(tmp_path: Path, hwc: np.ndarray) -> None:
    p = tmp_path / "a.png"
    Image.fromarray(hwc).save(p)
    out = load_images([p, str(p), hwc, Image.fromarray(hwc)])
    assert out.shape == (4, 6, 7, 3)
    assert all(np.array_equal(o, hwc) for o in out)
