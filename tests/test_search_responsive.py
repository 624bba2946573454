"""The shopper page on a phone, a tablet and a desktop, in headless Chromium.

A stored session (24 final results of images of every shape, previews, a question) is restored by
the page from the server's "state" event, so no model runs: what is tested is the layout. Each
width is checked on its screenshot and the elements' boxes: nothing covers the results, every
result can be scrolled into view uncovered, touch targets are at least 44 px, cards have equal
heights, and axe-core finds no serious or critical violation.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.browser import (
    AXE_BROWSER_MARKS,
    N_RESULTS,
    axe_violations,
    chromium,
    colour,
    live_server,
    open_stored_search,
)

pytestmark = AXE_BROWSER_MARKS

VIEWPORTS = {"phone": (390, 844), "tablet": (768, 1024), "desktop": (1440, 900)}
# Where the screenshots are kept for people to look at (optional).
SHOTS_ENV = "DAR_TEST_SCREENSHOTS"


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"] - 0.5
        and b["x"] < a["x"] + a["width"] - 0.5
        and a["y"] < b["y"] + b["height"] - 0.5
        and b["y"] < a["y"] + a["height"] - 0.5
    )


def _colour_share(shot: Image.Image, box: dict[str, float], colour: tuple[int, int, int]) -> float:
    region = shot.crop(
        (int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"]))
    )
    pixels = np.asarray(region.convert("RGB"), dtype=np.int16)
    close = np.abs(pixels - np.array(colour, dtype=np.int16)).max(axis=-1) <= 10
    return float(close.mean())


@pytest.fixture
def browser() -> Any:
    with chromium() as browser:
        yield browser


@pytest.mark.parametrize("device", list(VIEWPORTS))
def test_search_page_layout_at_each_width(
    device: str, transactional_db: None, browser: Any, tmp_path: Path
) -> None:
    width, height = VIEWPORTS[device]
    page = browser.new_page(
        viewport={"width": width, "height": height}, has_touch=device != "desktop"
    )
    with live_server() as server:
        open_stored_search(page, server)
        # Nothing wider than the screen: no sideways scrolling.
        assert page.evaluate("document.documentElement.scrollWidth") <= width

        cards = page.locator("#results .result-card")
        assert cards.count() == N_RESULTS
        boxes = [cards.nth(i).bounding_box() for i in range(N_RESULTS)]
        assert all(b is not None for b in boxes)
        heights = {round(b["height"]) for b in boxes}
        assert max(heights) - min(heights) <= 1, f"card heights differ: {sorted(heights)}"

        # Each result can be brought on screen and nothing covers it there (the chat included).
        chat = page.locator("section.chat")
        for n in range(N_RESULTS):
            card = cards.nth(n)
            card.scroll_into_view_if_needed()
            box, chat_box = card.bounding_box(), chat.bounding_box()
            assert box is not None and chat_box is not None
            assert box["y"] >= 0 and box["y"] + box["height"] <= height + 2, (
                f"result {n} out of reach"
            )
            assert not _overlap(box, chat_box), f"{device}: the chat covers result {n}"
            centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            hit = page.evaluate(
                "([x, y, id]) => !!document.elementFromPoint(x, y)?.closest("
                "`.result-card[data-item-id='${id}']`)",
                [centre[0], centre[1], card.get_attribute("data-item-id")],
            )
            assert hit, f"{device}: something lies over result {n}"

        # Touch targets: every control on the page is at least 44 x 44 px.
        small = page.evaluate(
            """() => [...document.querySelectorAll(
                'main button, main a, main textarea, header a, header button')]
              .filter(e => e.offsetParent !== null && !e.classList.contains('skip-link'))
              .map(e => [e.id || e.className || e.tagName, e.getBoundingClientRect()])
              .filter(([, r]) => r.width < 44 || r.height < 44)
              .map(([name, r]) => `${name} ${Math.round(r.width)}x${Math.round(r.height)}`)"""
        )
        assert small == [], f"{device}: targets under 44 px: {small}"

        # The composer is on screen when the page opens, and so is the first row of results (at
        # least half its pictures): no scrolling past the chat and the previews to find a product.
        page.evaluate("window.scrollTo(0, 0)")
        composer = page.locator("#message").bounding_box()
        assert composer is not None and composer["y"] + composer["height"] <= height
        picture = page.locator("#results .result-image").first.bounding_box()
        assert picture is not None
        assert picture["y"] + picture["height"] / 2 <= height, (
            f"{device}: the first result starts at {picture['y']:.0f} px, below the first screen"
        )

        # The header keeps to one line (its controls side by side, none wrapped below).
        header = page.locator("header.topbar").bounding_box()
        assert header is not None and header["height"] <= 72, f"{device}: header {header}"

        # Lazy images have loaded once every card was on screen; now the whole page is drawn.
        page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
        shot_path = tmp_path / f"search-{device}.png"
        page.screenshot(path=str(shot_path), full_page=True)
        if target := os.environ.get(SHOTS_ENV):
            shutil.copy(shot_path, Path(target) / shot_path.name)

        # The screenshot shows every result's own picture in its card's image box.
        with Image.open(io.BytesIO(shot_path.read_bytes())) as shot:
            shot.load()
        # (boxes in page coordinates, as the full-page screenshot has them)
        image_boxes = page.evaluate(
            """() => [...document.querySelectorAll('#results .result-image')].map(e => {
              const r = e.getBoundingClientRect();
              return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height};
            })"""
        )
        for n, image_box in enumerate(image_boxes):
            share = _colour_share(shot, image_box, colour(n))
            # A 3:1 picture shown whole covers a third of its square box.
            assert share > 0.25, f"{device}: result {n} is not visible ({share:.0%})"

        page_height = page.evaluate("document.documentElement.scrollHeight")
        print(f"{device} {width}x{height}: page {page_height} px tall for {N_RESULTS} results")

        assert axe_violations(page) == []
