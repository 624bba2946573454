"""REST API for clients without websockets: sessions, messages, turns, feedback; CSRF and access."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from retrieval.models import Feedback, SearchSession, Turn
from retrieval.services import access
from tests.factories import (
    CatalogFactory,
    CatalogItemFactory,
    UserFactory,
    embedded_catalog,
    limit_llm_tokens,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_rate_limits(redis_client: Any) -> None:
    for key in redis_client.scan_iter(f"{settings.REDIS_PREFIX}:ratelimit:*"):
        redis_client.delete(key)


def shopper(catalog_slug: str) -> APIClient:
    """A browser-like client: it loaded the search page, so it has a session and a CSRF cookie."""
    client = APIClient(enforce_csrf_checks=True)
    assert client.get(f"/search/{catalog_slug}/").status_code == 200
    client.credentials(HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    return client


def start_session(client: APIClient, catalog_slug: str) -> str:
    response = client.post("/api/search/sessions/", {"catalog": catalog_slug}, format="json")
    assert response.status_code == 201, response.content
    return str(response.json()["id"])


def test_anonymous_shopper_needs_csrf_and_owns_the_session() -> None:
    catalog = CatalogFactory.create()
    client = shopper(catalog.slug)
    session_id = start_session(client, catalog.slug)
    session = SearchSession.objects.get(pk=session_id)
    assert session.user is None and access.owns(session, None, client.session.session_key)

    no_token = APIClient(enforce_csrf_checks=True)
    no_token.cookies = client.cookies  # the same browser, but a forged cross-site request
    response = no_token.post(
        f"/api/search/sessions/{session_id}/messages/", {"text": "a hat"}, format="json"
    )
    assert response.status_code == 403 and not Turn.objects.exists()

    stranger = shopper(catalog.slug)
    for method, path in [
        ("get", f"/api/search/sessions/{session_id}/"),
        ("post", f"/api/search/sessions/{session_id}/messages/"),
        ("get", f"/api/search/sessions/{session_id}/turns/0/"),
    ]:
        response = getattr(stranger, method)(path, {"text": "a hat"}, format="json")
        assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    response = client.get("/api/search/sessions/00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 404


def test_messages_are_validated_and_rate_limited(settings: Any) -> None:
    catalog = CatalogFactory.create()
    client = shopper(catalog.slug)
    session_id = start_session(client, catalog.slug)
    url = f"/api/search/sessions/{session_id}/messages/"
    settings.DAR_MAX_MESSAGE_CHARS = 30
    for body, code in [
        ({"text": ""}, "empty_message"),
        ({}, "empty_message"),
        ({"text": "y" * 31}, "message_too_long"),
    ]:
        response = client.post(url, body, format="json")
        assert (response.status_code, response.json()["code"]) == (400, code)
    assert client.post(url, [1, 2], format="json").json()["code"] == "invalid"

    settings.DAR_RATE_LIMIT_TURNS = 1
    accepted = client.post(url, {"text": "a wide straw hat"}, format="json")
    assert accepted.status_code == 202
    assert accepted.json()["index"] == 0 and accepted.json()["status"] == "queued"
    limited = client.post(url, {"text": "in beige"}, format="json")
    assert (limited.status_code, limited.json()["code"]) == (429, "rate_limited")
    assert Turn.objects.filter(session__pk=session_id).count() == 1
    missing = client.get(f"/api/search/sessions/{session_id}/turns/5/")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


def test_private_catalogs_are_for_their_shop_admins_only() -> None:
    catalog = CatalogFactory.create(is_public=False)
    anonymous = APIClient()
    response = anonymous.post("/api/search/sessions/", {"catalog": catalog.slug}, format="json")
    assert response.status_code == 404

    admin = UserFactory.create(is_staff=False)
    catalog.shop.admins.add(admin)
    # HTTP Basic clients carry no cookie, so no CSRF token is needed.
    basic = APIClient(enforce_csrf_checks=True)
    basic.credentials(HTTP_AUTHORIZATION=_basic(admin.username, "pw-for-tests-123"))
    response = basic.post("/api/search/sessions/", {"catalog": catalog.slug}, format="json")
    assert response.status_code == 201
    assert SearchSession.objects.get(pk=response.json()["id"]).user == admin


def _basic(username: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def test_feedback_endpoint() -> None:
    catalog = CatalogFactory.create()
    item, foreign = CatalogItemFactory.create(catalog=catalog), CatalogItemFactory.create()
    client = shopper(catalog.slug)
    session_id = start_session(client, catalog.slug)
    url = f"/api/search/sessions/{session_id}/feedback/"
    response = client.post(url, {"item": item.pk, "value": 1}, format="json")
    assert response.status_code == 200 and response.json() == {"item": item.pk, "value": 1}
    assert Feedback.objects.get(session__pk=session_id).value == 1
    for body in ({"item": foreign.pk, "value": 1}, {"item": item.pk, "value": 3}, {}):
        response = client.post(url, body, format="json")
        assert (response.status_code, response.json()["code"]) == (400, "bad_feedback")
    state = client.get(f"/api/search/sessions/{session_id}/").json()
    assert state["feedback"] == {str(item.pk): 1}


@pytest.mark.slow
def test_a_turn_over_rest_from_message_to_results(
    celery_worker: Any, monkeypatch: Any, settings: Any
) -> None:
    limit_llm_tokens(monkeypatch)
    settings.DAR_TURN_TIME_LIMIT = 900
    settings.DAR_ASK_QUESTIONS = False
    catalog = embedded_catalog(5)
    client = shopper(catalog.slug)
    session_id = start_session(client, catalog.slug)
    response = client.post(
        f"/api/search/sessions/{session_id}/messages/", {"text": "a striped tee"}, format="json"
    )
    assert response.status_code == 202
    index = response.json()["index"]

    deadline = time.monotonic() + 300
    while True:
        turn = client.get(f"/api/search/sessions/{session_id}/turns/{index}/").json()
        if turn["status"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert turn["status"] == "done", turn
    assert turn["final"] is True and len(turn["results"]) == 5
    assert turn["refined_query"] and isinstance(turn["fallback"], bool)
    assert len(turn["previews"]) == settings.DAR_PREVIEWS_PER_TURN
    preview = client.get(turn["previews"][0]["url"])
    assert preview.status_code == 200
    assert {"text", "refine", "generate", "rank", "total"} <= set(turn["timings"])
    assert [r["rank"] for r in turn["results"]] == [1, 2, 3, 4, 5]
