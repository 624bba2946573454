"""Judging uploaded bytes: a web-size rendition to serve, or a clear reason for rejecting them.

Pure functions over bytes (no database, no storage, no settings once ``Limits`` are given), so
they run in the ingest's worker processes (``decoding``). The file name is only used in messages:
the content decides. Pillow opens the bytes with an allowlist of raster formats, so markup (SVG,
HTML), documents and exotic formats with risky decoders (EPS runs Ghostscript) are never parsed.

Decisions:

* The sha256 is computed on the ORIGINAL bytes, as received, and before anything is decoded: a
  re-uploaded file is a duplicate whatever the normaliser does, and the ingest skips decoding it.
* Each upload is decoded ONCE, at the size the rendition needs (JPEG's DCT-domain downscaling,
  Pillow's ``draft``, for photos larger than twice the web size), then oriented, converted to RGB
  (transparency flattened on white, first frame), scaled to ``DAR_WEB_IMAGE_SIZE`` on its longer
  side and re-encoded. Only that rendition is ever served: re-encoding from decoded pixels drops
  whatever rode along in the file (EXIF with GPS positions, markup of a polyglot, trailing data).
  The original bytes are kept privately (``ingest``), never served.
* JPEG sources give a JPEG rendition (quality 90, no ``optimize``: twice as fast for a file a few
  percent larger). So does a photograph saved losslessly (a PNG, WebP, TIFF... rendition with more
  than ``PHOTO_COLOURS`` distinct colours): as a PNG it costs 25-35 ms to encode and 4 ms to decode
  again for embedding, and is served ten times larger (600 KB against 65 KB at 640x480), for a
  difference nobody sees in a photo. Every other source (drawings, screenshots, logos, emoji: few
  colours, where JPEG's ringing shows) gets a lossless PNG at zlib's fastest level with its
  run-length strategy (``Z_RLE``, what libpng advises for speed): on a flat drawing 3x faster than
  the default strategy at the same size.
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
JPEG_QUALITY = 90
PNG_COMPRESS_LEVEL = 1
PNG_COMPRESS_TYPE = 3  # zlib's Z_RLE
# A lossless source with more distinct colours than this is a photograph: its rendition is a JPEG.
# Drawings and screenshots stay far below (a resized 1024x768 drawing: about 2,600); a 640x480
# photo has tens of thousands, and counting stops at the limit (about 1 ms).
PHOTO_COLOURS = 16384
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class Limits:
    """What one judgement may cost, from settings (picklable: sent to the decoding processes)."""

    max_bytes: int
    max_pixels: int
    web_size: int  # longer side of the served rendition

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            max_bytes=int(settings.DAR_MAX_IMAGE_BYTES),
            max_pixels=int(settings.DAR_MAX_IMAGE_PIXELS),
            web_size=int(settings.DAR_WEB_IMAGE_SIZE),
        )


@dataclass(frozen=True)
class NormalisedImage:
    """An accepted image: the rendition to store and serve, and what we know about it."""

    data: bytes  # the web-size rendition, re-encoded from decoded pixels (served and embedded)
    extension: str  # "jpg" or "png", matching ``data``
    sha256: str  # of the ORIGINAL bytes (duplicate detection)
    width: int  # of the rendition
    height: int
    source_format: str  # what Pillow identified the original as, e.g. "JPEG"
    source_mode: str  # the original's mode, e.g. "CMYK", "I;16", "P"
    source_width: int = 0  # the original's size, once oriented
    source_height: int = 0


@dataclass(frozen=True)
class Rejection:
    reason: str


_configured_limit: int | None = None


def apply_pixel_limit(limit: int) -> None:
    """Make Pillow's own decompression-bomb guard a hard error at our pixel limit.

    Pillow only *warns* between ``MAX_IMAGE_PIXELS`` and twice that; a warning would let a bomb
    through. It only touches the process-wide Pillow and warnings state when the limit changed
    (settings overridden in tests).
    """
    global _configured_limit
    if limit == _configured_limit and limit == Image.MAX_IMAGE_PIXELS:
        return
    Image.MAX_IMAGE_PIXELS = limit
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    _configured_limit = limit


def configure_pillow() -> None:
    """``apply_pixel_limit`` at DAR_MAX_IMAGE_PIXELS (``CatalogConfig.ready``)."""
    apply_pixel_limit(int(settings.DAR_MAX_IMAGE_PIXELS))


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


def precheck(data: bytes, limits: Limits) -> Rejection | None:
    """What can be said without decoding: empty, too large, not a raster image."""
    if not data:
        return Rejection("empty file")
    if len(data) > limits.max_bytes:
        return Rejection(
            f"file too large: {len(data):,} bytes exceeds the limit of {limits.max_bytes:,} bytes "
            "(DAR_MAX_IMAGE_BYTES)"
        )
    reason = sniff(data)
    return Rejection(reason) if reason else None


def header_pixels(data: bytes) -> int | None:
    """Width x height from the header alone (no decoding), or None if Pillow cannot tell."""
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
            return int(img.width) * int(img.height)
    except Exception:  # the decoder judges it properly (with a reason) later
        return None


def _pixel_limit_reason(width: int, height: int, limit: int) -> str | None:
    if width * height > limit:
        return (
            f"decompression bomb guard: {width}x{height} = {width * height:,} pixels exceeds the "
            f"limit of {limit:,} pixels (DAR_MAX_IMAGE_PIXELS)"
        )
    return None


def judge(
    data: bytes, name: str = "", limits: Limits | None = None, sha256: str | None = None
) -> NormalisedImage | Rejection:
    """Accept ``data`` and render it for the web, or say why not. Never raises on bad input."""
    limits = limits or Limits.from_settings()
    early = precheck(data, limits)
    if early:
        return early
    return decode(data, limits, sha256 or sha256_of(data))


def decode(data: bytes, limits: Limits, sha256: str) -> NormalisedImage | Rejection:
    """The one decode of prechecked bytes (runs in the ingest's decoding processes)."""
    apply_pixel_limit(limits.max_pixels)
    try:
        return _render(data, limits, sha256)
    except _Reject as exc:
        return Rejection(str(exc))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fired while parsing the header (it is set to our limit).
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else "the image"
        return Rejection(
            f"decompression bomb guard: {pixels} exceeds the limit of "
            f"{limits.max_pixels:,} pixels (DAR_MAX_IMAGE_PIXELS)"
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


def _fit(width: int, height: int, longest: int) -> tuple[int, int]:
    """``width`` x ``height`` scaled down to ``longest`` on its longer side."""
    scale = min(1.0, longest / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _render(data: bytes, limits: Limits, sha256: str) -> NormalisedImage:
    with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
        source_format = img.format or "unknown"
        source_mode = img.mode
        reason = _pixel_limit_reason(*img.size, limits.max_pixels)
        if reason:
            raise _Reject(reason)
        if img.width < 1 or img.height < 1:
            raise _Reject("image has no pixels")
        if source_format not in _LOSSY_SOURCES:
            # verify() walks the structure (chunk CRCs) without decoding; it needs its own handle.
            # JPEG's has nothing to check that the decode does not.
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as probe:
                probe.verify()
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated GIF/WebP/APNG: the first frame stands for the item
        header_size = img.size
        target = _fit(img.width, img.height, limits.web_size)
        if source_format in _LOSSY_SOURCES:
            # Decode at 1/2, 1/4 or 1/8 scale when that still covers the rendition (it is
            # rotated by EXIF later, so the request must cover both orientations).
            side = min(target)
            img.draft("RGB", (side, side))
        img.load()  # the decode: truncated data fails here (LOAD_TRUNCATED_IMAGES stays off)
        oriented = ImageOps.exif_transpose(img) or img
        turned = oriented.size != img.size
        source_size = (header_size[1], header_size[0]) if turned else header_size
        try:
            rgb = to_rgb(oriented)
        except ValueError as exc:
            raise _Reject(f"unsupported colour mode {source_mode}: {exc}") from None
    if max(rgb.size) > limits.web_size:
        rgb = rgb.resize(_fit(*rgb.size, limits.web_size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    if source_format in _LOSSY_SOURCES or _is_photo(rgb):
        rgb.save(out, format="JPEG", quality=JPEG_QUALITY)
        extension = "jpg"
    else:
        rgb.save(
            out,
            format="PNG",
            compress_level=PNG_COMPRESS_LEVEL,
            compress_type=PNG_COMPRESS_TYPE,
        )
        extension = "png"
    return NormalisedImage(
        data=out.getvalue(),
        extension=extension,
        sha256=sha256,
        width=rgb.width,
        height=rgb.height,
        source_format=source_format,
        source_mode=source_mode,
        source_width=source_size[0],
        source_height=source_size[1],
    )


def _is_photo(rgb: Image.Image) -> bool:
    """More than ``PHOTO_COLOURS`` colours (``getcolors`` gives up, returning None, past it)."""
    return rgb.getcolors(PHOTO_COLOURS) is None


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
