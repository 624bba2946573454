"""The demo catalog: OpenMoji emoji rendered to PNG on white, titled with their emoji names."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image

from catalog.models import Catalog, CatalogItem
from catalog.services import demo

pytestmark = pytest.mark.django_db


def test_names_are_cleaned() -> None:
    assert demo.clean_name(":red_apple:") == "red apple"
    assert demo.emoji_name("\U0001f34e")[0] == "red apple"
    assert demo.emoji_name("#\ufe0f\u20e3")[0] == "keycap #"
    assert demo.emoji_name("\U0001f1e6")[0] == "regional indicator symbol letter a"
    assert demo.emoji_name("\ue000") == ("", {})  # OpenMoji extra: no name, left out


def test_the_package_has_svgs_and_the_colour_font_we_render_with() -> None:
    svgs = list((demo.openmoji_dir() / "svg").glob("*.svg"))
    assert len(svgs) == 4495
    assert not list(demo.openmoji_dir().rglob("*.png"))  # why we render: no PNGs shipped
    assert demo.font_path().is_file()
    entries = demo.openmoji_entries()
    assert len(entries) > 4000 and len({e.code for e in entries}) == len(entries)


def test_selection_is_even_and_puts_skin_tones_last() -> None:
    entries = demo.openmoji_entries()
    chosen = demo.select(entries, 600)
    assert len(chosen) == 600 and not any(e.has_skin_tone for e in chosen)
    assert demo.select(entries, 600) == chosen  # deterministic, so re-runs are idempotent
    assert len(demo.select(entries, 0)) == len(entries)


def test_render_is_an_opaque_png_on_white() -> None:
    data = demo.render("\U0001f34e", 160)
    img = Image.open(io.BytesIO(data))
    assert (img.format, img.mode, img.size) == ("PNG", "RGB", (160, 160))
    pixels = np.asarray(img)
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # transparent corners flattened on white
    reds = (pixels[..., 0] > 180) & (pixels[..., 1] < 120) & (pixels[..., 2] < 120)
    assert reds.mean() > 0.1  # an apple is mostly red
    assert demo.render("\U0001f34e", 160) == data  # deterministic bytes -> duplicate detection
    # A ZWJ sequence is shaped into one glyph, not three side by side.
    family = demo.render("\U0001f468\u200d\U0001f469\u200d\U0001f467")
    ink_rows = (np.asarray(Image.open(io.BytesIO(family)).convert("L")) < 250).any(axis=1)
    assert ink_rows.mean() > 0.6  # three glyphs in a row would fill a short strip


def test_load_demo_catalog_is_idempotent(tmp_path: Path) -> None:
    out = io.StringIO()
    call_command("load_demo_catalog", "--limit", "12", "--no-embed", "--no-progress", stdout=out)
    catalog = Catalog.objects.get(slug="demo")
    assert catalog.shop.slug == "demo"
    items = list(CatalogItem.objects.filter(catalog=catalog))
    assert len(items) == 12, out.getvalue()
    item = items[0]
    assert item.title and ":" not in item.title and "_" not in item.title
    assert item.description.endswith("emoji (OpenMoji)")
    assert item.attributes["codepoints"] and item.attributes["license"] == "CC BY-SA 4.0"
    assert (item.width, item.height) == (160, 160) and str(item.image.name).endswith(".png")

    again = io.StringIO()
    call_command("load_demo_catalog", "--limit", "12", "--no-embed", "--no-progress", stdout=again)
    assert "12 already loaded, 0 to render" in again.getvalue()
    assert CatalogItem.objects.filter(catalog=catalog).count() == 12
    call_command(
        "load_demo_catalog", "--limit", "20", "--no-embed", "--no-progress", stdout=io.StringIO()
    )
    assert CatalogItem.objects.filter(catalog=catalog).count() >= 20
