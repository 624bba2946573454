"""Product clicks: the service, the REST endpoint, the websocket frame, the session admin page."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from retrieval.models import ProductClick, SearchSession
from retrieval.services import clicks
from retrieval.services.errors import SearchError
from tests.browser import CHROMIUM, chromium, live_server, off_loop, open_stored_search
from tests.factories import (
    CatalogItemFactory,
    SearchSessionFactory,
    TurnFactory,
    TurnResultFactory,
    UserFactory,
    browser_session_key,
)
from tests.test_websocket_search import open_socket, receive


def _shown(session: Any, n_turns: int = 2) -> tuple[list[Any], Any]:
    """Turns of ``session``, the same item among the results of each; returns (turns, item)."""
    turns = [TurnFactory.create(session=session, index=i) for i in range(n_turns)]
    item = TurnResultFactory.create(turn=turns[0], rank=0).item
    for turn in turns[1:]:
        TurnResultFactory.create(turn=turn, item=item, rank=0, final=False)
    return turns, item


@pytest.mark.django_db
def test_record_click_stores_the_click_on_the_latest_turn_that_showed_the_item() -> None:
    session = SearchSessionFactory.create()
    turns, item = _shown(session, 3)
    TurnFactory.create(session=session, index=3)  # a later turn that did not show it

    event = clicks.record_click(session, str(item.pk))

    click = ProductClick.objects.get()
    assert (click.session_id, click.item_id, click.turn_id) == (session.pk, item.pk, turns[2].pk)
    assert click.source == "page"
    assert event == {"type": "click", "turn": 2, "item": item.pk}
    clicks.record_click(session, item.pk, source="widget")
    assert ProductClick.objects.filter(source="widget").count() == 1


@pytest.mark.django_db
def test_record_click_refuses_bad_items_and_stores_nothing() -> None:
    session = SearchSessionFactory.create()
    _, item = _shown(session)
    never_shown = CatalogItemFactory.create(catalog=session.catalog)
    other_session = SearchSessionFactory.create(catalog=session.catalog)
    _, elsewhere = _shown(other_session)
    for bad in (None, True, "shoe", -3, 0, never_shown.pk, elsewhere.pk, 10**9):
        with pytest.raises(SearchError) as raised:
            clicks.record_click(session, bad)
        assert raised.value.code == "bad_click" and raised.value.http_status == 400, bad
    with pytest.raises(SearchError):
        clicks.record_click(session, item.pk, source="email")
    assert not ProductClick.objects.exists()


def _shopper(catalog_slug: str) -> APIClient:
    client = APIClient(enforce_csrf_checks=True)
    assert client.get(f"/search/{catalog_slug}/").status_code == 200
    client.credentials(HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    return client


@pytest.mark.django_db
def test_rest_click_endpoint_needs_csrf_ownership_and_a_shown_item() -> None:
    catalog_slug = SearchSessionFactory.create().catalog.slug
    client = _shopper(catalog_slug)
    created = client.post("/api/search/sessions/", {"catalog": catalog_slug}, format="json")
    session_id = created.json()["id"]
    session = SearchSession.objects.get(pk=session_id)
    _, item = _shown(session)
    url = reverse("search-clicks", args=[session_id])
    assert url == f"/api/search/sessions/{session_id}/clicks/"

    forged = APIClient(enforce_csrf_checks=True)
    forged.cookies = client.cookies  # same browser, no token: a cross-site POST
    denied = forged.post(url, {"item": item.pk}, format="json")
    assert denied.status_code == 403 and denied.json()["code"] == "csrf_failed"
    stranger = _shopper(catalog_slug)
    assert stranger.post(url, {"item": item.pk}, format="json").status_code == 403
    bad = client.post(url, {"item": "shoe"}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "bad_click"
    assert "item" in bad.json()["message"]
    assert not ProductClick.objects.exists()

    response = client.post(url, {"item": item.pk}, format="json")
    assert response.status_code == 201, response.content
    assert response.json() == {"item": item.pk, "turn": 1}
    assert ProductClick.objects.get().session_id == session.pk
    # An embedded widget says so; anything else is refused.
    assert client.post(url, {"item": item.pk, "source": "widget"}, format="json").status_code == 201
    for source in ("email", ["widget"], None):
        refused = client.post(url, {"item": item.pk, "source": source}, format="json")
        assert refused.status_code == 400 and refused.json()["code"] == "bad_click", source
    sources = ProductClick.objects.order_by("pk").values_list("source", flat=True)
    assert list(sources) == ["page", "widget"]


@pytest.mark.django_db
def test_click_endpoint_is_documented_in_the_schema() -> None:
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json")
    if schema.status_code != 200:
        schema = Client().get("/api/schema/?format=json")
    assert schema.status_code == 200
    text = schema.content.decode()
    assert "/api/search/sessions/{session_id}/clicks/" in text
    assert "ClickOut" in text and "ClickIn" in text


@pytest.mark.django_db(transaction=True)
async def test_websocket_click_frame_records_the_click_and_reports_bad_items(
    redis_client: Any,
) -> None:
    for key in redis_client.scan_iter(f"{settings.REDIS_PREFIX}:ratelimit:*"):
        redis_client.delete(key)
    key = await sync_to_async(browser_session_key)()
    session = await sync_to_async(SearchSessionFactory.create)(session_key=key)
    _, item = await sync_to_async(_shown)(session)
    comm, connected = await open_socket(session.pk, key)
    assert connected
    assert (await receive(comm))["type"] == "state"

    await comm.send_json_to({"type": "click", "item": 10**9})
    error = await receive(comm)
    assert (error["type"], error["code"]) == ("error", "bad_click")
    await comm.send_json_to({"type": "click", "item": item.pk})
    # Frames are handled in order: once the restore is answered, the click is stored.
    await comm.send_json_to({"type": "restore"})
    assert (await receive(comm))["type"] == "state"
    await comm.disconnect()
    rows = ProductClick.objects.values_list("item_id", "turn__index")
    stored = await sync_to_async(lambda: list(rows))()
    assert stored == [(item.pk, 1)]


@pytest.mark.django_db
def test_session_admin_page_shows_the_sessions_clicks() -> None:
    session = SearchSessionFactory.create()
    _, item = _shown(session)
    item.title = "Teal vase"
    item.save()
    clicks.record_click(session, item.pk)
    analyst = UserFactory.create(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(analyst)
    html = client.get(
        reverse("admin:retrieval_searchsession_change", args=[session.pk])
    ).content.decode()
    assert "Products opened" in html
    assert 'title="Teal vase"' in html and "turn 1 · " in html


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")
def test_search_page_records_a_click_on_open_and_still_opens_the_link(
    transactional_db: None,
) -> None:
    with chromium() as browser, live_server() as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        session_id = open_stored_search(page, server)
        page.wait_for_selector("#connection[data-state='open']", timeout=15_000)
        first = page.locator("#results .result-card").first
        item_id = int(first.get_attribute("data-item-id") or 0)
        with page.context.expect_page() as opened:
            first.locator("a.result-open").click()
        assert opened.value.url.startswith(server.url + settings.MEDIA_URL)  # the item's picture

        def stored() -> list[tuple[int, int]]:
            rows = ProductClick.objects.filter(session_id=uuid.UUID(session_id))
            return list(rows.values_list("item_id", "turn__index"))

        for _ in range(50):
            if off_loop(stored):
                break
            page.wait_for_timeout(100)
        assert off_loop(stored) == [(item_id, 0)]
