"""The served rendition's format: JPEG for photographs (JPEG sources, and lossless files holding a
photograph), lossless PNG for drawings, screenshots and logos; either way re-encoded from decoded
pixels, so nothing that rode along in the upload is served."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin

from catalog.services.validation import PHOTO_COLOURS, NormalisedImage, judge


def photo(size: tuple[int, int] = (320, 240), seed: int = 0) -> Image.Image:
    """Shading and sensor noise: far more distinct colours than any drawing."""
    rng = np.random.default_rng(seed)
    w, h = size
    ramp = np.linspace(60, 200, w)[None, :, None] + rng.normal(0, 8, (h, w, 3))
    return Image.fromarray(np.clip(ramp, 0, 255).astype(np.uint8))


def drawing(size: tuple[int, int] = (320, 240)) -> Image.Image:
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for i in range(12):
        draw.rectangle((i * 20, i * 10, i * 20 + 90, i * 10 + 60), fill=(i * 20, 90, 200 - i * 9))
    draw.text((8, 8), "Sale -30%", fill="black")
    return img


def encoded(img: Image.Image, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def accepted(data: bytes) -> NormalisedImage:
    result = judge(data, "x")
    assert isinstance(result, NormalisedImage), result
    return result


def served(result: NormalisedImage) -> Image.Image:
    img = Image.open(io.BytesIO(result.data))
    img.load()
    return img


def test_a_photograph_saved_as_png_is_served_as_jpeg() -> None:
    source = photo()
    assert source.getcolors(PHOTO_COLOURS) is None  # the test image is a "photo"
    result = accepted(encoded(source, "PNG"))
    assert result.extension == "jpg" and result.source_format == "PNG"
    img = served(result)
    assert img.format == "JPEG" and img.size == source.size
    # Visually the same picture.
    diff = np.abs(np.asarray(img, dtype=int) - np.asarray(source, dtype=int)).mean()
    assert diff < 6


def test_drawings_and_flat_images_stay_lossless_png() -> None:
    for source in (drawing(), Image.new("RGB", (50, 40), (10, 200, 30))):
        result = accepted(encoded(source, "PNG"))
        assert result.extension == "png"
        img = served(result)
        assert img.format == "PNG"
        assert np.array_equal(np.asarray(img), np.asarray(source))  # lossless, pixel for pixel


def test_a_lossless_webp_photograph_is_served_as_jpeg() -> None:
    result = accepted(encoded(photo(seed=1), "WEBP", lossless=True))
    assert result.extension == "jpg" and served(result).format == "JPEG"


def test_what_rides_along_in_a_png_photo_is_not_served() -> None:
    # A polyglot-style upload: text chunks with markup and EXIF, and HTML after IEND.
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "<script>alert(1)</script>")
    exif = Image.Exif()
    exif[0x010E] = "<svg onload=alert(1)>"  # ImageDescription
    data = encoded(photo(seed=2), "PNG", pnginfo=info, exif=exif.tobytes())
    data += b"<html><script>alert(2)</script></html>"
    result = accepted(data)
    assert result.extension == "jpg"
    for marker in (b"<script", b"<svg", b"<html", b"alert("):
        assert marker not in result.data
    img = served(result)
    assert not img.info.get("exif") and not img.getexif()
