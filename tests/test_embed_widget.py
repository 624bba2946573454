"""The embeddable search widget: publishable keys, allowed origins, CORS, session tokens, the
catalog admin, and the widget itself in Chromium on a page served from a second origin."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from django.urls import reverse

from catalog.models import Catalog
from catalog.services import embed
from dar_site.asgi import application
from retrieval.models import SearchSession, Turn
from tests.browser import (
    AXE_BROWSER_MARKS,
    axe_violations,
    chromium,
    free_port,
    live_server,
    off_loop,
)
from tests.factories import (
    CatalogFactory,
    CatalogItemFactory,
    ShopFactory,
    UserFactory,
    browser_session_key,
    limit_llm_tokens,
)

SHOP = "http://shop.test:9000"
OTHER = "http://other.test:9000"
SESSIONS = "/api/search/sessions/"


@pytest.fixture(autouse=True)
def _fresh_rate_limits(redis_client: Any) -> None:
    for key in redis_client.scan_iter(f"{settings.REDIS_PREFIX}:ratelimit:*"):
        redis_client.delete(key)


def widget_client() -> Client:
    # CSRF checks on: the widget must not need a token (it has no cookie of ours).
    return Client(enforce_csrf_checks=True)


def start(client: Client, key: str, origin: str | None = SHOP) -> Any:
    headers: dict[str, str] = {"X-Dar-Key": key}
    if origin:
        headers["Origin"] = origin
    return client.post(SESSIONS, {}, content_type="application/json", headers=headers)


@pytest.fixture
def catalog(db: Any) -> Catalog:
    return CatalogFactory.create(embed_origins=[SHOP])


# --- keys and origins -----------------------------------------------------------------------------


def test_every_catalog_has_its_own_key_and_rotating_it_refuses_the_old_one(
    catalog: Catalog,
) -> None:
    other = CatalogFactory.create()
    assert catalog.publishable_key.startswith("pk_")
    assert catalog.publishable_key != other.publishable_key
    old = catalog.publishable_key
    new = embed.rotate_key(catalog)
    assert new != old
    refused = start(widget_client(), old)
    assert refused.status_code == 403
    assert refused.json()["code"] == "bad_key"
    assert "rotated" in refused.json()["message"]
    assert start(widget_client(), new).status_code == 201


def test_a_widget_session_needs_no_cookie_or_csrf_and_answers_its_token(catalog: Catalog) -> None:
    client = widget_client()
    answer = start(client, catalog.publishable_key)
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["catalog"]["slug"] == catalog.slug
    assert len(body["token"]) >= 40
    assert body["max_chars"] == settings.DAR_MAX_MESSAGE_CHARS
    assert "sessionid" not in answer.cookies
    session = SearchSession.objects.get(pk=body["id"])
    assert session.user is None
    # Only the token's keyed hash is stored.
    assert body["token"] not in session.session_key_hash


@pytest.mark.parametrize(
    ("origin", "code"),
    [
        (None, "origin_not_allowed"),  # no page, no widget
        ("http://shop.test:9001", "origin_not_allowed"),  # another port
        ("https://shop.test:9000", "origin_not_allowed"),  # another scheme
        ("http://www.shop.test:9000", "origin_not_allowed"),  # another host
        (OTHER, "origin_not_allowed"),  # allowed, but by another catalog
    ],
)
def test_wrong_key_and_origin_pairs_are_refused_clearly(
    catalog: Catalog, origin: str | None, code: str
) -> None:
    CatalogFactory.create(embed_origins=[OTHER])
    refused = start(widget_client(), catalog.publishable_key, origin)
    assert refused.status_code == 403
    assert refused.json()["code"] == code
    assert refused.json()["message"]
    assert not SearchSession.objects.exists()


@pytest.mark.parametrize("key", ["pk_not-a-key", "nonsense", "", "pk_" + "x" * 80])
def test_unknown_keys_are_refused(catalog: Catalog, key: str) -> None:
    refused = start(widget_client(), key)
    assert refused.status_code == 403
    assert refused.json()["code"] == "bad_key"


def test_a_private_catalog_cannot_be_searched_from_a_widget(catalog: Catalog) -> None:
    Catalog.objects.filter(pk=catalog.pk).update(is_public=False)
    refused = start(widget_client(), catalog.publishable_key)
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"


@pytest.mark.parametrize("body", ["nonsense", "[1, 2]", '"text"'])
def test_a_bad_body_gets_a_clear_error_and_starts_nothing(catalog: Catalog, body: str) -> None:
    headers = {"X-Dar-Key": catalog.publishable_key, "Origin": SHOP}
    answer = widget_client().post(SESSIONS, body, content_type="application/json", headers=headers)
    assert answer.status_code == 400
    # Unparsable JSON is DRF's ParseError ("detail"), a non-object ours ("message").
    said = answer.json()
    assert said.get("message") or said.get("detail")
    assert not SearchSession.objects.exists()


def test_the_token_owns_the_session_and_cookies_count_for_nothing(catalog: Catalog) -> None:
    client = widget_client()
    body = start(client, catalog.publishable_key).json()
    url = reverse("search-session", args=[body["id"]])
    headers = {"X-Dar-Key": catalog.publishable_key, "Origin": SHOP}
    own = client.get(url, headers={**headers, "X-Dar-Session-Token": body["token"]})
    assert own.status_code == 200
    assert own.json()["id"] == body["id"]
    for token in (
        None,
        "wrong-token",
        start(widget_client(), catalog.publishable_key).json()["token"],
    ):
        extra = {"X-Dar-Session-Token": token} if token else {}
        assert client.get(url, headers={**headers, **extra}).status_code == 403

    # A page session's cookie does not open it as a widget session either, nor the reverse.
    cookie_key = browser_session_key()
    page = SearchSession.objects.create(catalog=catalog, session_key_hash="")
    from retrieval.services.owner_keys import hash_session_key

    SearchSession.objects.filter(pk=page.pk).update(session_key_hash=hash_session_key(cookie_key))
    cookie_client = widget_client()
    cookie_client.cookies["sessionid"] = cookie_key
    page_url = reverse("search-session", args=[page.pk])
    assert cookie_client.get(page_url).status_code == 200
    assert cookie_client.get(page_url, headers=headers).status_code == 403
    assert cookie_client.get(url).status_code == 403


def test_a_widget_message_starts_a_turn(catalog: Catalog) -> None:
    client = widget_client()
    body = start(client, catalog.publishable_key).json()
    headers = {
        "X-Dar-Key": catalog.publishable_key,
        "Origin": SHOP,
        "X-Dar-Session-Token": body["token"],
    }
    url = reverse("search-messages", args=[body["id"]])
    sent = client.post(
        url, {"text": "a red lamp"}, content_type="application/json", headers=headers
    )
    assert sent.status_code == 202, sent.content
    assert Turn.objects.get(session_id=body["id"]).message == "a red lamp"


def test_widget_sessions_are_rate_limited_per_address(catalog: Catalog, settings: Any) -> None:
    settings.DAR_RATE_LIMIT_WIDGET_SESSIONS = 2
    client = widget_client()
    assert [start(client, catalog.publishable_key).status_code for _ in range(3)] == [201, 201, 429]
    assert SearchSession.objects.count() == 2


# --- CORS -----------------------------------------------------------------------------------------


def preflight(origin: str, path: str = SESSIONS) -> Any:
    return Client().options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-dar-key",
        },
    )


def test_a_preflight_from_an_allowed_origin_is_answered(catalog: Catalog) -> None:
    answer = preflight(SHOP)
    assert answer.status_code == 204
    assert answer["Access-Control-Allow-Origin"] == SHOP
    assert "POST" in answer["Access-Control-Allow-Methods"]
    allowed = answer["Access-Control-Allow-Headers"].lower()
    assert "x-dar-key" in allowed and "x-dar-session-token" in allowed
    assert "Access-Control-Allow-Credentials" not in answer
    assert "Origin" in answer["Vary"]


@pytest.mark.parametrize("origin", ["http://shop.test:9001", "https://shop.test:9000", "null"])
def test_a_preflight_from_any_other_origin_gets_no_cors_headers(
    catalog: Catalog, origin: str
) -> None:
    answer = preflight(origin)
    assert answer.status_code == 403
    assert "Access-Control-Allow-Origin" not in answer


def test_answers_carry_cors_headers_for_allowed_origins_only(catalog: Catalog) -> None:
    ok = start(widget_client(), catalog.publishable_key)
    assert ok["Access-Control-Allow-Origin"] == SHOP
    # A refusal is readable by an allowed origin, so the widget can say why.
    CatalogFactory.create(embed_origins=[OTHER])
    refused = start(widget_client(), catalog.publishable_key, OTHER)
    assert refused.status_code == 403
    assert refused["Access-Control-Allow-Origin"] == OTHER
    stranger = start(widget_client(), catalog.publishable_key, "http://evil.test")
    assert stranger.status_code == 403
    assert "Access-Control-Allow-Origin" not in stranger
    # Other endpoints and our own page's requests are untouched.
    assert "Access-Control-Allow-Origin" not in Client().get("/api/", headers={"Origin": SHOP})


# --- the websocket --------------------------------------------------------------------------------


async def widget_socket(session_id: object, origin: str = SHOP) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(
        application, f"/ws/search/{session_id}/", headers=[(b"origin", origin.encode())]
    )
    connected, _ = await comm.connect(timeout=10)
    assert connected
    return comm


@pytest.mark.django_db(transaction=True)
async def test_a_widget_socket_needs_key_origin_and_token_in_its_first_frame() -> None:
    catalog = await sync_to_async(CatalogFactory.create)(embed_origins=[SHOP])
    await sync_to_async(CatalogFactory.create)(embed_origins=[OTHER])
    body = await sync_to_async(lambda: start(widget_client(), catalog.publishable_key).json())()
    key, token = catalog.publishable_key, body["token"]

    refusals = [
        ({"type": "message", "text": "hi"}, SHOP, "forbidden"),
        ({"type": "auth", "key": "pk_wrong", "token": token}, SHOP, "bad_key"),
        ({"type": "auth", "key": key, "token": "wrong"}, SHOP, "forbidden"),
        ({"type": "auth", "key": key, "token": token}, OTHER, "origin_not_allowed"),
    ]
    for frame, origin, code in refusals:
        comm = await widget_socket(body["id"], origin)
        await comm.send_json_to(frame)
        event = await comm.receive_json_from(timeout=10)
        assert (event["type"], event["code"]) == ("error", code)
        assert (await comm.receive_output(timeout=10))["code"] == 4403

    comm = await widget_socket(body["id"])
    await comm.send_json_to({"type": "auth", "key": key, "token": token})
    state = await comm.receive_json_from(timeout=10)
    assert state["type"] == "state"
    assert state["session"]["id"] == body["id"]
    await comm.send_json_to({"type": "restore"})
    assert (await comm.receive_json_from(timeout=10))["type"] == "state"
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_silent_widget_socket_is_closed(monkeypatch: Any) -> None:
    monkeypatch.setattr("retrieval.consumers.WIDGET_AUTH_TIMEOUT", 0.2)
    catalog = await sync_to_async(CatalogFactory.create)(embed_origins=[SHOP])
    body = await sync_to_async(lambda: start(widget_client(), catalog.publishable_key).json())()
    comm = await widget_socket(body["id"])
    assert (await comm.receive_json_from(timeout=10))["code"] == "forbidden"
    assert (await comm.receive_output(timeout=10))["code"] == 4403


# --- the catalog admin ----------------------------------------------------------------------------


@pytest.fixture
def shop_admin(catalog: Catalog) -> Client:
    user = UserFactory.create()
    catalog.shop.admins.add(user)
    client = Client()
    client.force_login(user)
    return client


def test_the_admin_shows_key_and_snippet_and_saves_origins_one_per_line(
    catalog: Catalog, shop_admin: Client
) -> None:
    url = reverse("admin:catalog_catalog_change", args=[catalog.pk])
    page = shop_admin.get(url).content.decode()
    assert catalog.publishable_key in page
    assert f'data-key="{catalog.publishable_key}"' in page.replace("&quot;", '"')
    assert "/static/retrieval/embed.js" in page
    assert "http://shop.test:9000" in page

    form = {
        "shop": catalog.shop.pk,
        "name": catalog.name,
        "slug": catalog.slug,
        "description": "",
        "is_public": "on",
        "embed_origins": "https://Shop.Example\r\nhttps://shop.example:443\r\nhttp://127.0.0.1:8001",
    }
    saved = shop_admin.post(url, form)
    assert saved.status_code == 302, saved.content.decode()[:2000]
    catalog.refresh_from_db()
    assert catalog.embed_origins == ["https://shop.example", "http://127.0.0.1:8001"]

    bad = shop_admin.post(url, {**form, "embed_origins": "shop.example/products"})
    assert bad.status_code == 200
    assert "starts with https://" in bad.content.decode()
    catalog.refresh_from_db()
    assert catalog.embed_origins == ["https://shop.example", "http://127.0.0.1:8001"]


def test_the_admin_rotates_the_key_after_confirming(catalog: Catalog, shop_admin: Client) -> None:
    old = catalog.publishable_key
    url = reverse("admin:catalog_catalog_rotate_key", args=[catalog.pk])
    confirm = shop_admin.get(url)
    assert confirm.status_code == 200
    assert "stop working" in confirm.content.decode()
    catalog.refresh_from_db()
    assert catalog.publishable_key == old  # a GET changes nothing
    done = shop_admin.post(url)
    assert done.status_code == 302
    catalog.refresh_from_db()
    assert catalog.publishable_key != old

    stranger = UserFactory.create()
    ShopFactory.create().admins.add(stranger)
    other = Client()
    other.force_login(stranger)
    assert other.post(url).status_code == 404
    assert Catalog.objects.get(pk=catalog.pk).publishable_key == catalog.publishable_key


# --- in Chromium, on a page of a second origin ----------------------------------------------------

SCREENSHOTS = Path(settings.RUN_DIR) / "screenshots" / "embed"


@contextmanager
def shop_site(page: dict[str, str]) -> Iterator[str]:
    """A plain HTTP server on another port (so another origin) serving ``page["html"]``, like a
    shop's site; the page may be filled in once the origin is known."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page["html"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def shop_page(script_url: str, key: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tile Shop</title>
<style>
  body {{ font-family: sans-serif; margin: 0; }}
  header, main {{ padding: 1rem; }}
  dar-search {{ --dar-accent: rgb(0, 110, 60); max-width: 1100px; }}
</style></head>
<body><header><h1>Tile Shop</h1></header>
<main><p>Tell us what you need.</p>
<script src="{script_url}" data-key="{key}" data-heading="Search our tiles" async></script>
</main></body></html>"""


def _widget_catalog(origin: str) -> Catalog:
    from catalog.services.embedding import embed_items

    catalog = CatalogFactory.create(name="Tiles", slug="tiles", embed_origins=[origin])
    colours = {"red tile": (220, 40, 40), "green tile": (40, 180, 70), "blue tile": (40, 80, 220)}
    items = [
        CatalogItemFactory.create(catalog=catalog, title=t, color=c) for t, c in colours.items()
    ]
    assert len(embed_items([i.pk for i in items]).embedded) == len(items)
    return catalog


def browser_test(test: Any) -> Any:
    for mark in [*AXE_BROWSER_MARKS, pytest.mark.django_db(transaction=True)]:
        test = mark(test)
    return test


@browser_test
def test_the_widget_searches_from_a_second_origin_and_is_refused_elsewhere(
    celery_worker: Any, monkeypatch: Any, settings: Any
) -> None:
    limit_llm_tokens(monkeypatch)
    settings.DAR_TURN_TIME_LIMIT = 900
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with live_server() as server, chromium() as browser:
        script = f"{server.url}/static/retrieval/embed.js"
        html: dict[str, str] = {}
        with shop_site(html) as origin:
            catalog = off_loop(lambda: _widget_catalog(origin))
            html["html"] = shop_page(script, catalog.publishable_key)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(origin + "/")
            widget = page.locator("dar-search")
            widget.locator("textarea").fill("a red tile")
            widget.locator("textarea").press("Enter")
            page.wait_for_selector(
                "dar-search >> .dar-results[data-final='true'] .dar-card", timeout=300_000
            )
            page.wait_for_function(
                "() => document.querySelector('dar-search').shadowRoot"
                ".querySelector('.dar').dataset.busy === 'false'",
                timeout=300_000,
            )
            cards = widget.locator(".dar-card")
            assert cards.count() == 3
            titles = sorted(cards.nth(i).locator(".dar-title").inner_text() for i in range(3))
            assert titles == ["blue tile", "green tile", "red tile"]
            first = cards.nth(0)
            link = first.locator("a.dar-link")
            image = first.locator("img.dar-image")
            # Items have no product URL yet: the link goes to the item's picture on our server.
            assert link.get_attribute("href") == image.get_attribute("src")
            assert link.get_attribute("href").startswith(server.url + "/media/")
            assert page.evaluate(
                "() => [...document.querySelector('dar-search').shadowRoot"
                ".querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            assert widget.locator(".dar-user").first.inner_text() == "a red tile"
            # Themed by the shop's own CSS variable, through the shadow DOM.
            colour = widget.locator(".dar-send").evaluate(
                "b => getComputedStyle(b).backgroundColor"
            )
            assert colour == "rgb(0, 110, 60)"
            # No cookie of ours was needed or set.
            assert not [c for c in page.context.cookies(server.url) if c["name"] == "sessionid"]
            session = off_loop(lambda: SearchSession.objects.get(catalog__slug="tiles"))
            assert off_loop(lambda: session.turns.get().status) == "done"
            # Opening a result is recorded for the shop's analysts, as on our own page.
            with page.context.expect_page() as opened:
                link.click()
            opened.value.close()
            clicks: list[str] = []
            for _ in range(100):  # the frame is stored asynchronously: poll, up to 10 s
                clicks = off_loop(lambda: list(session.clicks.values_list("source", flat=True)))
                if clicks:
                    break
                page.wait_for_timeout(100)
            assert clicks == ["widget"]

            violations = axe_violations(page)
            assert not violations, violations
            page.screenshot(path=str(SCREENSHOTS / "desktop.png"), full_page=True)
            sizes = _touch_targets(page)
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=str(SCREENSHOTS / "phone.png"), full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            sizes += _touch_targets(page)
            assert min(sizes) >= 44, sizes

        # The same page served from an origin the catalog does not list: refused, nothing stored.
        with shop_site(html) as stranger:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(stranger + "/")
            widget = page.locator("dar-search")
            widget.locator("textarea").fill("a blue tile")
            widget.locator("textarea").press("Enter")
            error = widget.locator(".dar-error[role='alert']")
            error.wait_for(state="visible", timeout=30_000)
            assert "not available" in error.inner_text()
            assert widget.locator(".dar-card").count() == 0
            assert off_loop(lambda: SearchSession.objects.count()) == 1


def _touch_targets(page: Any) -> list[float]:
    return list(
        page.evaluate(
            "() => [...document.querySelector('dar-search').shadowRoot"
            ".querySelectorAll('button, textarea')].filter(b => b.offsetParent)"
            ".map(b => Math.min(b.getBoundingClientRect().width, b.getBoundingClientRect().height))"
        )
    )


# --- the migration --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_existing_catalogs_each_their_own_key() -> None:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    def migrate(targets: list[tuple[str, str]] | None = None) -> None:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(targets or executor.loader.graph.leaf_nodes())

    first, second = CatalogFactory.create_batch(2)
    migrate([("catalog", "0003_vectors_halfvec")])
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM catalog_catalog")
            assert cursor.fetchone()[0] == 2
    finally:
        migrate()
    keys = set(Catalog.objects.values_list("publishable_key", flat=True))
    assert len(keys) == 2
    assert all(key.startswith("pk_") and len(key) > 30 for key in keys)
    assert {first.pk, second.pk} == set(Catalog.objects.values_list("pk", flat=True))
    assert Catalog.objects.get(pk=first.pk).embed_origins == []
