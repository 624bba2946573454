"""Judging uploaded bytes: a normalised image, or a clear reason for rejecting them.

Pure functions over bytes (no database, no storage). The file name is only used in messages: the
content decides. Pillow opens the bytes with an allowlist of raster formats, so markup (SVG, HTML),
documents and exotic formats with risky decoders (EPS runs Ghostscript) are never parsed.

Decisions:

* The sha256 is computed on the ORIGINAL bytes, as received: re-uploading the same file is a
  duplicate whatever the normaliser does, and the hash can be checked against the shop's own files.
* The stored image is the normalised one (orientation applied, RGB, transparency flattened on
  white, first frame). JPEG sources are stored as high-quality JPEG (quality 95, no chroma
  subsampling): PNG would multiply the size of photographs for no visible gain. Every other source
  (PNG, GIF, WebP, BMP, TIFF, AVIF; drawings, screenshots, emoji) is stored as lossless PNG.
  Re-encoding also drops EXIF (camera serials, GPS positions) from what the site serves.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

# Raster formats we decode (JPEG includes multi-picture MPO). Nothing else reaches a decoder.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")
_LOSSY_SOURCES = {"JPEG", "MPO"}
JPEG_QUALITY = 95
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class NormalisedImage:
    """An accepted image: the bytes to store and what we know about them."""

    data: bytes  # the normalised, re-encoded image (what is stored and embedded)
    extension: str  # "jpg" or "png", matching ``data``
    sha256: str  # of the ORIGINAL bytes (duplicate detection)
    width: int
    height: int
    source_format: str  # what Pillow identified the original as, e.g. "JPEG"
    source_mode: str  # the original's mode, e.g. "CMYK", "I;16", "P"


@dataclass(frozen=True)
class Rejection:
    reason: str


_configured_limit: int | None = None


def configure_pillow() -> None:
    """Make Pillow's own decompression-bomb guard a hard error at our pixel limit.

    Pillow only *warns* between ``MAX_IMAGE_PIXELS`` and twice that; a warning would let a bomb
    through. Called from ``CatalogConfig.ready`` and before each judgement; it only touches the
    process-wide Pillow and warnings state when the limit changed (settings overridden in tests).
    """
    global _configured_limit
    limit = int(settings.DAR_MAX_IMAGE_PIXELS)
    if limit == _configured_limit and limit == Image.MAX_IMAGE_PIXELS:
        return
    Image.MAX_IMAGE_PIXELS = limit
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    _configured_limit = limit


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sniff(data: bytes) -> str | None:
    """A rejection reason for content that is clearly not a raster image, judged by its bytes."""
    head = data[:512].lstrip(b"\xef\xbb\xbf\xff\xfe\xfe\xff\x00 \t\r\n").lower()
    if head.startswith(b"<"):
        if b"<svg" in data[:4096].lower():
            return "SVG (vector markup) is not accepted; upload a raster image (PNG, JPEG, WebP)"
        if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
            return "HTML document, not an image"
        return "XML/markup document, not an image"
    if head.startswith(b"%pdf"):
        return "PDF document, not an image"
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "archive (zip) inside an archive or upload field; upload images or one zip"
    return None


def _pixel_limit_reason(width: int, height: int) -> str | None:
    limit = int(settings.DAR_MAX_IMAGE_PIXELS)
    if width * height > limit:
        return (
            f"decompression bomb guard: {width}x{height} = {width * height:,} pixels exceeds the "
            f"limit of {limit:,} pixels (DAR_MAX_IMAGE_PIXELS)"
        )
    return None


def judge(data: bytes, name: str = "") -> NormalisedImage | Rejection:
    """Accept and normalise ``data``, or say why not. Never raises on bad input."""
    if not data:
        return Rejection("empty file")
    limit = int(settings.DAR_MAX_IMAGE_BYTES)
    if len(data) > limit:
        return Rejection(
            f"file too large: {len(data):,} bytes exceeds the limit of {limit:,} bytes "
            "(DAR_MAX_IMAGE_BYTES)"
        )
    reason = sniff(data)
    if reason:
        return Rejection(reason)
    configure_pillow()
    try:
        return _decode(data)
    except _Reject as exc:
        return Rejection(str(exc))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fired while parsing the header (it is set to our limit).
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else "the image"
        return Rejection(
            f"decompression bomb guard: {pixels} exceeds the limit of "
            f"{int(settings.DAR_MAX_IMAGE_PIXELS):,} pixels (DAR_MAX_IMAGE_PIXELS)"
        )
    except UnidentifiedImageError:
        return Rejection(
            "not a recognised image (content is not JPEG, PNG, GIF, WebP, BMP, TIFF or AVIF, "
            "whatever the file name says)"
        )
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        # Pillow reports truncation and corruption through these; keep its message.
        return Rejection(f"corrupt or truncated image: {exc}")
    except MemoryError:
        return Rejection("image too large to decode")


class _Reject(Exception):
    pass


def _decode(data: bytes) -> NormalisedImage:
    # verify() walks the structure (chunk CRCs, markers) without decoding; it needs its own handle.
    with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as probe:
        source_format = probe.format or "unknown"
        reason = _pixel_limit_reason(*probe.size)
        if reason:
            raise _Reject(reason)
        if probe.width < 1 or probe.height < 1:
            raise _Reject("image has no pixels")
        probe.verify()
    with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
        source_mode = img.mode
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated GIF/WebP/APNG: the first frame stands for the item
        img.load()  # full decode: truncated data fails here (LOAD_TRUNCATED_IMAGES stays off)
        oriented = ImageOps.exif_transpose(img) or img
        try:
            rgb = to_rgb(oriented)
        except ValueError as exc:
            raise _Reject(f"unsupported colour mode {source_mode}: {exc}") from None
    reason = _pixel_limit_reason(*rgb.size)
    if reason:
        raise _Reject(reason)
    out = io.BytesIO()
    if source_format in _LOSSY_SOURCES:
        rgb.save(out, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=True)
        extension = "jpg"
    else:
        rgb.save(out, format="PNG")
        extension = "png"
    return NormalisedImage(
        data=out.getvalue(),
        extension=extension,
        sha256=sha256_of(data),
        width=rgb.width,
        height=rgb.height,
        source_format=source_format,
        source_mode=source_mode,
    )


def _flatten(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, BACKGROUND)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale to 8 bits by scaling, not clipping.

    Pillow's ``convert("L")`` clips I;16 values at 255, which turns most 16-bit pictures white.
    """
    arr = np.asarray(img)
    if img.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64))
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    elif img.mode.startswith("I;16") or int(arr.max(initial=0)) > 255:
        # 16-bit range (I;16*, or "I" holding 16-bit samples as PNG/TIFF decoders produce).
        scaled = np.clip(arr.astype(np.int64), 0, 65535) / 257.0
    else:
        scaled = arr.astype(np.float64)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is flattened on white."""
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode.startswith("I") or mode == "F":
        return _high_bit_depth_to_l(img).convert("RGB")
    if mode == "P" or mode == "PA":
        has_alpha = "transparency" in img.info or mode == "PA"
        if has_alpha:
            return _flatten(img.convert("RGBA"))
        return img.convert("RGB")
    if mode in ("RGBA", "LA", "La", "RGBa"):
        return _flatten(img.convert("RGBA"))
    if mode in ("L", "1") and "transparency" in img.info:
        return _flatten(img.convert("RGBA"))
    if mode in ("L", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        # CMYK: Pillow's conversion is the naive one, not colour-managed; good enough for
        # retrieval (CLIP sees hue and shape) and it needs no ICC machinery.
        return img.convert("RGB")
    return img.convert("RGBA").convert("RGB")
