"""A shop admin's review tasks in the admin, with nothing but shop membership (``Shop.admins``):
their own shops' search sessions, turns and dashboard, never another shop's; the catalog page's
link to its search page and live embedding progress; titles edited in bulk."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from catalog.models import CatalogItem
from tests.factories import (
    CatalogFactory,
    CatalogItemFactory,
    SearchSessionFactory,
    TurnFactory,
    shop_admin,
)

pytestmark = pytest.mark.django_db


def _context(response: Any) -> dict[str, Any]:
    """The admin TemplateResponse's context (typed as optional by the stubs)."""
    assert response.context_data is not None
    return dict(response.context_data)


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_shop_admin_reviews_their_own_shops_sessions_only() -> None:
    mine, theirs = CatalogFactory.create(), CatalogFactory.create()
    own = TurnFactory.create(session=SearchSessionFactory.create(catalog=mine), message="my hat")
    other = TurnFactory.create(
        session=SearchSessionFactory.create(catalog=theirs), message="their shoe"
    )
    user = shop_admin(mine.shop)
    assert not user.user_permissions.exists() and not user.groups.exists()
    client = _client(user)

    index = client.get(reverse("admin:index"))
    assert index.status_code == 200
    assert reverse("admin:retrieval_searchsession_changelist") in index.content.decode()

    sessions = client.get(reverse("admin:retrieval_searchsession_changelist"))
    assert sessions.status_code == 200
    assert {s.pk for s in _context(sessions)["cl"].result_list} == {own.session_id}
    assert (
        client.get(
            reverse("admin:retrieval_searchsession_change", args=[own.session_id])
        ).status_code
        == 200
    )
    assert (
        client.get(
            reverse("admin:retrieval_searchsession_change", args=[other.session_id])
        ).status_code
        == 302
    )  # "does not exist"
    turns = client.get(reverse("admin:retrieval_turn_changelist"))
    assert [t.pk for t in _context(turns)["cl"].result_list] == [own.pk]
    dashboard = client.get(reverse("admin:retrieval_searchsession_dashboard"))
    assert dashboard.status_code == 200
    assert (
        client.get(
            reverse("admin:retrieval_searchsession_dashboard"), {"catalog": theirs.pk}
        ).status_code
        == 403
    )
    # Reading is all: these records are never edited or deleted by a shop admin.
    assert (
        client.post(
            reverse("admin:retrieval_searchsession_delete", args=[own.session_id]), {"post": "yes"}
        ).status_code
        == 403
    )


def test_a_staff_user_of_no_shop_sees_no_sessions() -> None:
    from tests.factories import UserFactory

    client = _client(UserFactory.create(is_staff=True))
    assert client.get(reverse("admin:retrieval_searchsession_changelist")).status_code == 403


def test_the_catalog_page_links_its_search_page_and_polls_its_progress() -> None:
    catalog = CatalogFactory.create()
    CatalogItemFactory.create(catalog=catalog)
    client = _client(shop_admin(catalog.shop))
    page = client.get(reverse("admin:catalog_catalog_change", args=[catalog.pk])).content.decode()
    search_url = reverse("search-page", args=[catalog.slug])
    assert f'href="{search_url}"' in page
    assert "admin/catalog/progress.js" in page
    progress_url = reverse("api-catalog-progress", args=[catalog.slug])
    assert f'id="embedding-progress" data-url="{progress_url}"' in page
    # What the script polls answers this admin's session with the counts it renders.
    counts = client.get(progress_url, HTTP_ACCEPT="application/json").json()
    assert {"total", "pending", "embedded", "failed", "stale", "encoder"} <= set(counts)
    listing = client.get(reverse("admin:catalog_catalog_changelist")).content.decode()
    assert f'href="{search_url}"' in listing


def test_titles_are_edited_in_bulk_from_the_item_list() -> None:
    catalog = CatalogFactory.create()
    items = CatalogItemFactory.create_batch(2, catalog=catalog)
    client = _client(shop_admin(catalog.shop))
    url = reverse("admin:catalog_catalogitem_changelist")
    ordered = _context(client.get(url))["cl"].result_list
    data = {
        "form-TOTAL_FORMS": str(len(ordered)),
        "form-INITIAL_FORMS": str(len(ordered)),
        "_save": "Save",
    }
    for n, item in enumerate(ordered):
        data[f"form-{n}-id"] = str(item.pk)
        data[f"form-{n}-title"] = f"renamed {item.pk}"
    answer = client.post(url, data)
    assert answer.status_code == 302, answer.content[:2000]
    for item in items:
        assert CatalogItem.objects.get(pk=item.pk).title == f"renamed {item.pk}"
