"""Judging bytes: every kind of good image normalised, every kind of bad input a clear rejection."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from django.test import override_settings
from PIL import Image

from catalog.services.validation import NormalisedImage, Rejection, judge
from tests.factories import image_bytes


def accepted(data: bytes, name: str = "x") -> NormalisedImage:
    result = judge(data, name)
    assert isinstance(result, NormalisedImage), result
    return result


def rejected(data: bytes, name: str = "x") -> str:
    result = judge(data, name)
    assert isinstance(result, Rejection), f"accepted {name}"
    return result.reason


def decoded(result: NormalisedImage) -> Image.Image:
    img = Image.open(io.BytesIO(result.data))
    img.load()
    return img


def px(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = img.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (valid CRC) over a tiny real image."""
    data = bytearray(image_bytes("RGB", (8, 8)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


# --- Accepted and normalised ----------------------------------------------------------------


def test_plain_png_is_kept_lossless_and_hashed_on_the_original_bytes() -> None:
    data = image_bytes("RGB", (40, 30), (10, 200, 30))
    result = accepted(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (result.width, result.height, result.extension) == (40, 30, "png")
    img = decoded(result)
    assert img.format == "PNG" and img.mode == "RGB"
    assert px(img, (5, 5)) == (10, 200, 30)


def test_exif_rotated_jpeg_is_turned_upright_and_stored_as_jpeg() -> None:
    # A landscape picture, left half red, tagged "rotate 90 CW to display" (orientation 6).
    img = Image.new("RGB", (60, 40), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 30, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    result = accepted(buffer.getvalue(), "photo.jpg")
    assert (result.width, result.height) == (40, 60)  # portrait once displayed as intended
    assert result.extension == "jpg"
    out = decoded(result)
    assert out.format == "JPEG"
    assert not out.getexif().get(0x0112)  # no orientation left to apply twice
    red_top = px(out, (20, 10))
    assert red_top[0] > 200 and red_top[2] < 60  # the red half is now on top


def test_cmyk_jpeg_becomes_rgb() -> None:
    result = accepted(image_bytes("CMYK", (20, 20), (0, 255, 255, 0), "JPEG"))
    out = decoded(result)
    assert out.mode == "RGB"
    r, g, b = px(out, (10, 10))
    assert r > 200 and g < 60 and b < 60


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    ramp = (np.arange(64, dtype=np.uint16) * 1040).reshape(1, 64).repeat(8, axis=0)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode.startswith("I")
    out = np.asarray(decoded(accepted(buffer.getvalue())).convert("L"))
    # Pillow's own convert("L") would clip almost everything to 255.
    assert out[0, 0] == 0 and out[0, -1] > 240
    assert 100 < int(out[0, 32]) < 160


def test_palette_image_with_transparency_is_flattened_on_white() -> None:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (5, 0, 10, 10))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", transparency=0)
    out = decoded(accepted(buffer.getvalue()))
    assert out.mode == "RGB"
    assert px(out, (1, 1)) == (255, 255, 255)  # transparent -> white, not black
    assert px(out, (8, 1)) == (255, 0, 0)


def test_rgba_and_la_are_flattened_on_white() -> None:
    out = decoded(accepted(image_bytes("RGBA", (10, 10), (0, 0, 0, 0))))
    assert px(out, (3, 3)) == (255, 255, 255)
    half = decoded(accepted(image_bytes("RGBA", (10, 10), (0, 0, 0, 128))))
    assert 120 < px(half, (3, 3))[0] < 135
    la = decoded(accepted(image_bytes("LA", (10, 10), (0, 0))))
    assert px(la, (3, 3)) == (255, 255, 255)


def test_animated_gif_keeps_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((0, 255, 0), (255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    assert getattr(Image.open(io.BytesIO(buffer.getvalue())), "n_frames", 1) == 3
    result = accepted(buffer.getvalue(), "anim.gif")
    assert result.extension == "png"
    r, g, b = px(decoded(result), (8, 8))
    assert g > 200 and r < 50 and b < 50


def test_other_formats_are_accepted() -> None:
    for fmt, mode in (
        ("WEBP", "RGB"),
        ("BMP", "RGB"),
        ("TIFF", "RGB"),
        ("PNG", "L"),
        ("PNG", "1"),
        ("TIFF", "CMYK"),
    ):
        color = 0 if mode in ("L", "1") else (0,) * len(mode)
        result = accepted(image_bytes(mode, (12, 9), color, fmt), f"x.{fmt.lower()}")
        assert decoded(result).mode == "RGB" and (result.width, result.height) == (12, 9)


def test_a_real_photograph_round_trips() -> None:
    from skimage import data as samples

    buffer = io.BytesIO()
    Image.fromarray(samples.astronaut()).save(buffer, format="JPEG", quality=90)
    result = accepted(buffer.getvalue(), "astronaut.jpg")
    assert (result.width, result.height) == (512, 512)
    assert np.abs(np.asarray(decoded(result), dtype=int) - samples.astronaut()).mean() < 8


def test_the_content_decides_not_the_name() -> None:
    # A PNG called .jpg is a PNG; stored losslessly.
    assert accepted(image_bytes(), "looks-like.jpg").extension == "png"


# --- Rejected, with a reason ----------------------------------------------------------------


def test_empty_file() -> None:
    assert rejected(b"", "empty.png") == "empty file"


def test_non_image_with_image_extension() -> None:
    assert "not a recognised image" in rejected(b"hello, I am text" * 20, "fake.jpg")
    assert "not a recognised image" in rejected(bytes(range(256)) * 8, "noise.png")


def test_svg_and_html_are_refused_by_content() -> None:
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>'
    assert "SVG" in rejected(svg, "icon.png")
    assert "SVG" in rejected(b"\xef\xbb\xbf  <svg viewBox='0 0 1 1'></svg>", "bom.svg")
    assert "HTML" in rejected(b"<!DOCTYPE html><html><body>hi</body></html>", "page.jpg")
    assert "PDF" in rejected(b"%PDF-1.7\n...", "doc.png")


def test_truncated_images() -> None:
    jpeg = image_bytes("RGB", (64, 64), (1, 2, 3), "JPEG")
    assert "truncated" in rejected(jpeg[: len(jpeg) // 2], "half.jpg")
    png = image_bytes("RGB", (64, 64), (1, 2, 3))
    assert "corrupt or truncated" in rejected(png[:-30], "cut.png")


def test_corrupt_png_checksum() -> None:
    png = bytearray(image_bytes("RGB", (16, 16)))
    png[45] ^= 0xFF  # inside the IDAT chunk's data: CRC mismatch
    assert "corrupt" in rejected(bytes(png), "flipped.png")


@override_settings(DAR_MAX_IMAGE_PIXELS=1_000_000)
def test_decompression_bomb_is_a_rejection_not_a_warning() -> None:
    # Just above the limit: Pillow itself would only *warn* here.
    reason = rejected(png_with_header(1001, 1000), "bomb.png")
    assert "decompression bomb" in reason and "1,000,000" in reason
    # Far above it (Pillow's hard error zone).
    assert "decompression bomb" in rejected(png_with_header(30000, 30000), "huge.png")


def test_bomb_under_default_settings() -> None:
    # 100k x 100k declared in a few hundred bytes.
    assert "decompression bomb" in rejected(png_with_header(100_000, 100_000), "bomb.png")


@override_settings(DAR_MAX_IMAGE_BYTES=2048)
def test_oversized_file() -> None:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    assert "file too large" in rejected(buffer.getvalue(), "big.png")


def test_zip_given_as_an_image() -> None:
    assert "archive" in rejected(b"PK\x03\x04" + b"\x00" * 100, "photo.jpg")


@pytest.mark.parametrize("fmt", ["EPS", "PSD", "ICO", "PCX"])
def test_formats_outside_the_allowlist(fmt: str) -> None:
    try:
        data = image_bytes("RGB", (8, 8), (1, 2, 3), fmt)
    except (OSError, KeyError, ValueError):
        pytest.skip(f"Pillow cannot write {fmt} here")
    assert isinstance(judge(data, f"x.{fmt.lower()}"), Rejection)
