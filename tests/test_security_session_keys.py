"""Anonymous shoppers' session keys are credentials: never stored, exported or filterable."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from tests.factories import CatalogFactory, SearchSessionFactory, UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/retrieval/searchsession/"


def _anonymous_session(slug: str) -> tuple[str, str]:
    client = APIClient()
    response = client.post("/api/search/sessions/", {"catalog": slug}, format="json")
    assert response.status_code == 201, response.content
    return str(response.json()["id"]), client.cookies["sessionid"].value


def _row_text(session_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT row_to_json(s)::text FROM retrieval_searchsession s WHERE id = %s",
            [session_id],
        )
        return str(cursor.fetchone()[0])


def _superuser_client() -> Client:
    client = Client()
    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))
    return client


def test_the_raw_session_key_is_not_stored_but_still_proves_ownership() -> None:
    catalog = CatalogFactory.create()
    session_id, cookie = _anonymous_session(catalog.slug)
    assert cookie not in _row_text(session_id)

    owner = APIClient()
    owner.cookies["sessionid"] = cookie
    assert owner.get(f"/api/search/sessions/{session_id}/").status_code == 200
    stranger = APIClient()
    stranger.cookies["sessionid"] = cookie[:-1] + ("a" if cookie[-1] != "a" else "b")
    assert stranger.get(f"/api/search/sessions/{session_id}/").status_code == 403


@pytest.mark.parametrize(
    "lookup",
    [
        "session_key_hash__regex=^a",
        "session_key_hash__startswith=a",
        "session_key__regex=^a",
        "user__password__startswith=md5",
    ],
)
def test_the_admin_refuses_lookups_on_credentials(lookup: str) -> None:
    SearchSessionFactory.create()
    response = _superuser_client().get(f"{CHANGELIST}?{lookup}")
    # Refused outright (DisallowedModelAdminLookup), never answered as a filtered list.
    assert response.status_code == 400


def test_feedback_and_turn_lists_refuse_lookups_through_the_session() -> None:
    client = _superuser_client()
    for path in ("/admin/retrieval/turn/", "/admin/retrieval/feedback/"):
        assert client.get(f"{path}?session__session_key_hash__regex=^a").status_code == 400


def test_exports_carry_no_key_nor_hash() -> None:
    session = SearchSessionFactory.create(session_key="the-cookie-value")
    client = _superuser_client()
    for action in ("export_sessions_json", "export_turns_json", "export_sessions_csv"):
        response = client.post(CHANGELIST, {"action": action, "_selected_action": [session.pk]})
        body = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
        assert "the-cookie-value" not in body
        assert session.session_key_hash not in body and "session_key" not in body


@pytest.mark.django_db(transaction=True)
def test_the_migration_hashes_existing_keys() -> None:
    from django.db.migrations.executor import MigrationExecutor

    from retrieval.services.owner_keys import hash_session_key

    before = [("retrieval", "0003_analysts_group")]
    after = [("retrieval", "0004_session_key_hash")]
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    executor.migrate(before)
    try:
        old_apps = executor.loader.project_state(before).apps
        catalog = CatalogFactory.create()
        OldSession = old_apps.get_model("retrieval", "SearchSession")
        legacy = OldSession.objects.create(catalog_id=catalog.pk, session_key="raw-cookie")
        signed_in = OldSession.objects.create(catalog_id=catalog.pk, session_key="")
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id::text, session_key_hash FROM retrieval_searchsession ORDER BY created_at"
            )
            stored = dict(cursor.fetchall())
        assert stored == {str(legacy.pk): hash_session_key("raw-cookie"), str(signed_in.pk): ""}
        assert "raw-cookie" not in _row_text(str(legacy.pk))
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(leaves)
