"""End to end in headless Chromium: the search page, a real ASGI server, a real Celery worker.

The server (uvicorn, in a thread of this process) serves ``dar_site.asgi.application`` against the
test database; the ``celery_worker`` fixture runs the turns with the offline models.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from catalog.services.embedding import embed_items
from retrieval.models import Feedback, SearchSession
from tests.browser import CHROMIUM, LiveServer, chromium, free_port, off_loop
from tests.factories import CatalogFactory, CatalogItemFactory, limit_llm_tokens

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]

# Bright, distinct product colours: the screenshot check looks for them in the results grid.
PALETTE = {
    "red tile": (220, 40, 40),
    "green tile": (40, 180, 70),
    "blue tile": (40, 80, 220),
    "yellow tile": (240, 210, 40),
    "purple tile": (150, 60, 190),
    "orange tile": (245, 140, 30),
}


@pytest.fixture
def catalog(celery_worker: Any, monkeypatch: Any, settings: Any) -> Any:
    limit_llm_tokens(monkeypatch)
    settings.DAR_TURN_TIME_LIMIT = 900
    settings.DAR_ASK_QUESTIONS = True
    catalog = CatalogFactory.create(name="Colour tiles", slug="tiles")
    items = [
        CatalogItemFactory.create(catalog=catalog, title=title, color=color)
        for title, color in PALETTE.items()
    ]
    assert len(embed_items([i.pk for i in items]).embedded) == len(items)
    return catalog


@pytest.fixture
def browser_page() -> Iterator[Any]:
    with chromium() as browser:
        yield browser.new_page(viewport={"width": 1400, "height": 1000})


def _colour_pixels(region: Image.Image, colour: tuple[int, int, int], tolerance: int = 8) -> int:
    pixels = np.asarray(region.convert("RGB"), dtype=np.int16)
    close = np.abs(pixels - np.array(colour, dtype=np.int16)).max(axis=-1) <= tolerance
    return int(close.sum())


def test_search_page_streams_a_turn_and_survives_a_server_restart(
    catalog: Any, browser_page: Any, tmp_path: Path
) -> None:
    page = browser_page
    port = free_port()
    server = LiveServer(port).start()
    try:
        page.goto(f"http://127.0.0.1:{port}/search/{catalog.slug}/")
        assert page.locator("#stand-in-notice").is_visible()
        # No session before the first message: the page is ready, not "not connected".
        connection = page.locator("#connection")
        assert connection.get_attribute("data-state") == "idle"
        assert connection.inner_text().strip() == "Ready"
        page.fill("#message", "a bright red square tile")
        page.press("#message", "Enter")

        page.wait_for_selector("#results[data-final='true'] .result-card", timeout=300_000)
        page.wait_for_selector("#progress[data-stage='done']", timeout=300_000)
        assert page.locator(".bubble.user").first.inner_text() == "a bright red square tile"
        assert page.locator("#refined").inner_text().strip() not in ("", "Nothing yet.")
        assert page.locator("#previews img.preview").count() >= 1
        cards = page.locator("#results .result-card")
        assert cards.count() == len(PALETTE)
        titles = [cards.nth(i).locator(".result-title").inner_text() for i in range(cards.count())]
        assert sorted(titles) == sorted(PALETTE)
        loaded = page.evaluate(
            "[...document.querySelectorAll('#results img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        assert loaded

        # The screenshot shows the catalog's own colours in the results grid.
        shot = tmp_path / "search.png"
        page.screenshot(path=str(shot), full_page=True)
        box = page.locator("#results").bounding_box()
        assert box is not None
        with Image.open(io.BytesIO(shot.read_bytes())) as image:
            region = image.crop(
                (
                    int(box["x"]),
                    int(box["y"]),
                    int(box["x"] + box["width"]),
                    int(box["y"] + box["height"]),
                )
            )
            region.load()
        assert len(region.getcolors(maxcolors=1 << 20) or []) > 20  # not a blank area
        for title, colour in PALETTE.items():
            assert _colour_pixels(region, colour) > 500, f"{title} not visible in the grid"

        # Like the first result: the server stores it and echoes it back to the page.
        first = cards.nth(0)
        first.locator(".feedback-button[data-value='1']").click()
        page.wait_for_selector(
            "#results .result-card:first-child"
            " .feedback-button[data-value='1'][aria-pressed='true']"
        )
        session_id = page.evaluate("new URLSearchParams(location.search).get('session')")
        liked = off_loop(
            lambda: Feedback.objects.get(session=SearchSession.objects.get(pk=session_id))
        )
        assert (liked.item_id, liked.value) == (int(first.get_attribute("data-item-id")), 1)

        # Drop the connection: the page retries with backoff and restores from the database.
        server.stop()
        page.wait_for_selector("#connection[data-state='retry']", timeout=30_000)
        server = LiveServer(port).start()
        page.wait_for_selector("#connection[data-state='open']", timeout=60_000)
        page.wait_for_selector("#results[data-final='true'] .result-card", timeout=30_000)
        assert page.locator("#results .result-card").count() == len(PALETTE)
        assert page.locator(".bubble.user").count() == 1

        # A reload restores the same session (id kept in the URL and localStorage).
        page.goto(f"http://127.0.0.1:{port}/search/{catalog.slug}/")
        page.wait_for_selector("#results[data-final='true'] .result-card", timeout=30_000)
        assert page.evaluate("new URLSearchParams(location.search).get('session')") == session_id
        assert (
            page.locator(
                ".result-card .feedback-button[data-value='1'][aria-pressed='true']"
            ).count()
            == 1
        )

        # A follow-up: until its own description arrives, the first one is marked as updating
        # (watched from the page itself, so a quick refinement cannot slip past the check).
        page.evaluate(
            """() => {
              window.sawUpdating = false;
              const panel = document.getElementById('refined-section');
              new MutationObserver(() => {
                if (panel.dataset.updating === 'true') window.sawUpdating = true;
              }).observe(panel, {attributes: true});
            }"""
        )
        page.fill("#message", "a green one instead")
        page.press("#message", "Enter")
        page.wait_for_selector(".bubble.user >> nth=1", timeout=30_000)
        page.wait_for_selector("#progress[data-stage='done']", timeout=300_000)
        assert page.evaluate("window.sawUpdating")
        assert page.locator("#refined-section").get_attribute("data-updating") == "false"
        assert page.locator("#refined").get_attribute("aria-busy") == "false"
        assert page.locator("#refined").inner_text().strip() not in ("", "Nothing yet.")
        print(f"screenshot: {shot}")
    finally:
        server.stop()
