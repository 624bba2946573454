"""The REST API's front door and documentation: ``/api/``, ``/api/csrf/``, the OpenAPI schema of
the search endpoints, and a fresh cookie client's first POST (CSRF) as the README shows it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from retrieval.api_schema import FeedbackOut, SessionOut, TurnOut
from tests.factories import CatalogFactory, CatalogItemFactory, TurnResultFactory

pytestmark = pytest.mark.django_db

SEARCH_PATHS = {
    "/api/search/sessions/": ["post"],
    "/api/search/sessions/{session_id}/": ["get"],
    "/api/search/sessions/{session_id}/messages/": ["post"],
    "/api/search/sessions/{session_id}/turns/{index}/": ["get"],
    "/api/search/sessions/{session_id}/feedback/": ["post"],
    "/api/search/sessions/{session_id}/filters/": ["post"],
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return dict(SchemaGenerator().get_schema(request=None, public=True))


def test_every_search_endpoint_has_a_summary_a_real_response_and_its_errors(
    schema: dict[str, Any],
) -> None:
    for path, methods in SEARCH_PATHS.items():
        for method in methods:
            operation = schema["paths"][path][method]
            assert operation.get("summary"), f"{method} {path} has no summary"
            ok = next(code for code in operation["responses"] if code.startswith("2"))
            body = operation["responses"][ok]["content"]["application/json"]["schema"]
            assert "$ref" in body, f"{method} {path}: {body}"  # not a free-form object
            errors = [code for code in operation["responses"] if code[0] in "45"]
            assert "403" in errors and "404" in errors
            for code in errors:
                ref = operation["responses"][code]["content"]["application/json"]["schema"]
                assert ref["$ref"].endswith("/ErrorOut")
    turn = schema["components"]["schemas"]["TurnOut"]["properties"]
    assert turn["results"]["items"]["$ref"].endswith("/ItemOut")
    assert "csrf" in schema["paths"]["/api/search/sessions/"]["post"]["description"].lower()


def _keys(serializer: Any) -> set[str]:
    return set(serializer().fields)


def test_the_documented_shapes_are_the_answers(schema: dict[str, Any]) -> None:
    catalog = CatalogFactory.create()
    item = CatalogItemFactory.create(catalog=catalog)
    client = APIClient()
    token = client.get("/api/csrf/").json()["csrfToken"]
    client.credentials(HTTP_X_CSRFTOKEN=token)
    session = client.post("/api/search/sessions/", {"catalog": catalog.slug}, format="json")
    assert session.status_code == 201, session.content
    assert set(session.json()) == _keys(SessionOut)

    session_id = session.json()["id"]
    turn = client.post(
        f"/api/search/sessions/{session_id}/messages/", {"text": "a red hat"}, format="json"
    )
    assert turn.status_code == 202, turn.content
    assert set(turn.json()) == _keys(TurnOut)
    TurnResultFactory.create(turn_id=_turn_pk(session_id), item=item)
    shown = client.get(f"/api/search/sessions/{session_id}/turns/0/").json()
    assert set(shown) == _keys(TurnOut)
    item_fields = set(schema["components"]["schemas"]["ItemOut"]["properties"])
    assert set(shown["results"][0]) == item_fields

    liked = client.post(
        f"/api/search/sessions/{session_id}/feedback/",
        {"item": item.pk, "value": 1},
        format="json",
    )
    assert liked.status_code == 200, liked.content
    assert set(liked.json()) == _keys(FeedbackOut)

    missing = client.get("/api/search/sessions/00000000-0000-0000-0000-000000000000/")
    assert missing.status_code == 404 and set(missing.json()) == {"code", "message"}


def _turn_pk(session_id: str) -> int:
    from retrieval.models import Turn

    return int(Turn.objects.get(session_id=uuid.UUID(str(session_id)), index=0).pk)


def test_a_fresh_clients_first_post_says_how_to_get_a_csrf_token() -> None:
    catalog = CatalogFactory.create()
    client = APIClient(enforce_csrf_checks=True)
    refused = client.post("/api/search/sessions/", {"catalog": catalog.slug}, format="json")
    assert refused.status_code == 403
    assert refused.json()["code"] == "csrf_failed"
    assert "CSRF cookie not set" in refused.json()["message"]
    assert "/api/csrf/" in refused.json()["message"]

    answer = client.get("/api/csrf/")
    assert answer.status_code == 200 and answer.json()["header"] == "X-CSRFToken"
    assert "csrftoken" in answer.cookies
    client.credentials(HTTP_X_CSRFTOKEN=answer.json()["csrfToken"])
    created = client.post("/api/search/sessions/", {"catalog": catalog.slug}, format="json")
    assert created.status_code == 201, created.content


def test_the_api_root_lists_the_entry_points() -> None:
    answer = APIClient().get("/api/")
    assert answer.status_code == 200
    links = answer.json()["links"]
    assert links["csrf"].endswith("/api/csrf/")
    assert links["search_sessions"].endswith("/api/search/sessions/")
    assert links["schema"].endswith("/api/schema/")
    assert APIClient().get(links["docs"]).status_code == 200
