"""Helpers of the browser tests: a live ASGI server, Chromium through Playwright, axe-core.

The server (uvicorn, in a thread of the test process) serves ``dar_site.asgi.application`` against
the test database, so tests that use it need ``transactional_db``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

CHROMIUM = Path("/usr/bin/chromium")
AXE = Path(__file__).resolve().parent.parent / "tools" / "browser" / "node_modules" / "axe-core"
AXE_SCRIPT = AXE / "axe.min.js"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
T = TypeVar("T")


class LiveServer:
    """uvicorn serving the full ASGI app (HTTP, static, media and websockets) on loopback."""

    def __init__(self, port: int, app: Any = None) -> None:
        import uvicorn

        if app is None:
            from dar_site.asgi import application as app

        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ws="websockets-sansio",
            lifespan="off",
            log_level="warning",
        )
        self.port = port
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the ASGI server did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_server(app: Any = None) -> Iterator[LiveServer]:
    server = LiveServer(free_port(), app).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian Chromium driven by Playwright (yields the Browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def off_loop(query: Callable[[], T]) -> T:
    """Run an ORM query in another thread: Playwright's sync API keeps an event loop in this one,
    and Django refuses database access from a thread with a running loop."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    def run() -> T:
        try:
            return query()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """axe-core's violations of these impacts on the page, one readable line each."""
    # Evaluated through the DevTools protocol: a <script> tag with axe inline would be blocked by
    # the pages' Content-Security-Policy (no inline scripts), and rightly so.
    page.evaluate(AXE_SCRIPT.read_text())
    found = page.evaluate("async () => (await axe.run(document)).violations")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(n["target"]) for n in v["nodes"][:5])
        for v in found
        if v["impact"] in impacts
    ]


# --- a stored search session (the page restores it from the server's "state" event) -------------

# Wide, tall and square product pictures: cards must still line up.
SHAPES = [(120, 40), (40, 120), (64, 64), (200, 90)]
N_RESULTS = 24


def colour(n: int) -> tuple[int, int, int]:
    # Saturated, well separated colours; none close to the page's greys.
    hues = [
        (230, 40, 40),
        (40, 170, 60),
        (40, 70, 230),
        (240, 200, 30),
        (160, 50, 200),
        (250, 130, 20),
    ]
    base = hues[n % len(hues)]
    shade = (n // len(hues)) * 9
    return (max(base[0] - shade, 0), max(base[1] - shade, 0), max(base[2] - shade, 0))


def _catalog() -> None:
    from catalog.models import CatalogItem
    from tests.factories import CatalogFactory, CatalogItemFactory, image_bytes

    catalog = CatalogFactory.create(name="Shapes and colours", slug="shapes")
    for n in range(N_RESULTS):
        CatalogItemFactory.create(
            catalog=catalog,
            title=f"Product number {n} with a rather long descriptive title",
            color=colour(n),
            image_bytes=image_bytes(size=SHAPES[n % len(SHAPES)], color=colour(n)),
            status=CatalogItem.Status.EMBEDDED,
        )


def _stored_search(session_key: str, user: Any, status: str) -> str:
    from retrieval.models import Turn, TurnResult
    from retrieval.services import sessions
    from tests.factories import PreviewFactory

    catalog = sessions.catalog_for("shapes", user)
    items = list(catalog.items.order_by("pk"))
    session = sessions.create_session(catalog, user, session_key)
    turn = Turn.objects.create(
        session=session,
        index=0,
        message="a bright product",
        context=["a bright product"],
        status=Turn.Status(status),
        refined_query="a bright, colourful product photographed on white",
        prompts=["a bright product photo", "a colourful product"],
        question="Do you prefer a particular colour?" if status == "done" else "",
        timings={"text": 105.0, "refine": 2300.0, "total": 4100.0},
    )
    PreviewFactory.create_batch(2, turn=turn)
    TurnResult.objects.bulk_create(
        TurnResult(turn=turn, item=item, final=True, rank=rank + 1, score=0.9 - rank / 100)
        for rank, item in enumerate(items)
    )
    return str(session.pk)


def open_stored_search(
    page: Any, server: Any, status: str = "done", user: Any = None, wait: bool = True
) -> str:
    """Open the search page of a stored session: one turn (``status``) with 24 final results of
    pictures of every shape and colour, two previews and a question. ``user`` (a User) owns it,
    else the browser's anonymous session cookie does."""
    from django.contrib.auth.models import AnonymousUser

    from tests.factories import browser_session_key

    off_loop(_catalog)
    # The browser's cookie session (signed in, or anonymous: the page itself only gets one when
    # it first posts); the stored search belongs to it.
    key = off_loop(lambda: browser_session_key(user))
    page.context.add_cookies([{"name": "sessionid", "value": key, "url": server.url}])
    owner = user or AnonymousUser()
    session_id = off_loop(lambda: _stored_search(key, owner, status))
    page.goto(f"{server.url}/search/shapes/?session={session_id}")
    if wait:
        page.wait_for_selector(f"#results .result-card >> nth={N_RESULTS - 1}", timeout=30_000)
    return session_id


# Marks of a browser test that also runs axe-core: skipped, saying why, without either tool.
AXE_BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(
        not AXE_SCRIPT.exists(),
        reason=f"no axe-core at {AXE_SCRIPT}: run scripts/ensure_chromium.sh (npm install)",
    ),
]
