"""Re-embed requests: one in flight per catalog, a limit per shop (no flooding the gpu queue)."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient

from catalog.models import CatalogItem
from catalog.services import embedding
from tests.factories import CatalogFactory, CatalogItemFactory, ShopFactory, shop_admin

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_counters(redis_client: Any) -> None:
    for key in redis_client.scan_iter(f"{settings.REDIS_PREFIX}:reembed:*"):
        redis_client.delete(key)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    batches: list[list[int]] = []
    monkeypatch.setattr(embedding, "send_batch", batches.append)
    return batches


def _owner_of(catalog: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(shop_admin(catalog.shop))
    return client


def _embedded_catalog(n: int, **fields: Any) -> Any:
    catalog = CatalogFactory.create(**fields)
    for _ in range(n):
        CatalogItemFactory.create(catalog=catalog)
    CatalogItem.objects.filter(catalog=catalog).update(status=CatalogItem.Status.EMBEDDED)
    return catalog


def test_thirty_requests_queue_one_reembed(
    sent: list[list[int]], django_capture_on_commit_callbacks: Any
) -> None:
    catalog = _embedded_catalog(3)
    owner = _owner_of(catalog)
    statuses = []
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(30):
            response = owner.post(
                f"/api/catalogs/{catalog.slug}/reembed/", {"mode": "all"}, format="json"
            )
            statuses.append(response.status_code)
    assert statuses[0] == 202 and set(statuses[1:]) == {409}
    assert sum(len(batch) for batch in sent) == 3  # each item queued once
    refused = owner.post(f"/api/catalogs/{catalog.slug}/reembed/", {"mode": "stale"}).json()
    assert refused["code"] == "reembed_in_progress" and refused["progress"]["pending"] == 3


def test_a_finished_reembed_lets_the_next_one_in(
    sent: list[list[int]], django_capture_on_commit_callbacks: Any
) -> None:
    catalog = _embedded_catalog(2)
    owner = _owner_of(catalog)
    url = f"/api/catalogs/{catalog.slug}/reembed/"
    with django_capture_on_commit_callbacks(execute=True):
        assert owner.post(url, {"mode": "all"}).status_code == 202
    # The worker embedded everything: nothing is pending, so a new request is admitted.
    CatalogItem.objects.filter(catalog=catalog).update(status=CatalogItem.Status.EMBEDDED)
    with django_capture_on_commit_callbacks(execute=True):
        assert owner.post(url, {"mode": "all"}).status_code == 202
    assert len(sent) == 2


@override_settings(DAR_REEMBED_PER_SHOP=3)
def test_requests_per_shop_are_limited_and_other_shops_are_not(sent: list[list[int]]) -> None:
    shop = ShopFactory.create()
    catalogs = [_embedded_catalog(1, shop=shop) for _ in range(4)]
    owner = _owner_of(catalogs[0])
    codes = [
        owner.post(f"/api/catalogs/{c.slug}/reembed/", {"mode": "stale"}).status_code
        for c in catalogs
    ]
    assert codes == [202, 202, 202, 429]
    other = _embedded_catalog(1)
    assert _owner_of(other).post(f"/api/catalogs/{other.slug}/reembed/").status_code == 202
