"""Syncing a catalog with a Merchant Center feed: the issue's "done means", at test size (100
products; 5 new prices, 2 new pictures, 3 removed, 2 broken rows), images from a real local HTTP
server, the real PostgreSQL; bench/feed_sync.py runs the full 1,000."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.test import override_settings

from catalog.models import Catalog, CatalogItem
from catalog.services import embedding, sync
from tests.factories import CatalogFactory
from tests.feeds_data import catalog_products, second_version, tsv
from tests.image_server import ImageServer, image_server

pytestmark = pytest.mark.django_db


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with image_server() as running, override_settings(DAR_FETCH_ALLOWED_HOSTS=["127.0.0.1"]):
        yield running


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Embedding jobs sent (no worker runs here)."""
    sent: list[list[int]] = []
    monkeypatch.setattr(embedding, "send_batch", lambda ids: sent.append(list(ids)))
    return sent


def snapshot(catalog: Catalog) -> dict[str, tuple[Any, ...]]:
    return {
        i.product_id: (i.title, i.price, i.availability, i.sha256, i.image.name, i.image_source)
        for i in CatalogItem.objects.filter(catalog=catalog)
    }


def test_a_feed_imports_then_a_second_version_syncs_with_the_right_counts(
    server: ImageServer, queued: list[list[int]], django_capture_on_commit_callbacks: Any
) -> None:
    catalog = CatalogFactory.create()
    products = catalog_products(server, 100)
    with django_capture_on_commit_callbacks(execute=True):
        first = sync.sync_feed(catalog, tsv(products), "products.tsv")
    assert (first.added, first.updated, first.unchanged, first.removed) == (100, 0, 0, 0)
    assert first.failed == [] and first.kind == "merchant_tsv"
    assert sorted(i for batch in queued for i in batch) == sorted(
        CatalogItem.objects.filter(catalog=catalog).values_list("pk", flat=True)
    )
    item = CatalogItem.objects.get(catalog=catalog, product_id="SKU00007")
    assert item.price == Decimal("17.00") and item.currency == "EUR"
    assert item.product_url == "https://shop.example/p/SKU00007"
    assert item.availability == "in_stock" and item.brand == "ACME"
    assert item.category == "Apparel > Dresses"
    assert item.attributes == {"color": "green", "size": "M", "material": "cotton"}
    before = snapshot(catalog)

    v2 = second_version(server, products, prices=5, images=2, removed=3, broken=2)
    queued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        second = sync.sync_feed(catalog, tsv(v2.products, v2.broken), "products.tsv")
    assert (second.added, second.updated, second.removed) == (0, 5 + 2, 3)
    assert second.unchanged == 100 - 5 - 2 - 3 - 2
    assert [(f["id"], f["row"]) for f in second.failed] == [
        (pid, 2 + [p.id for p in v2.products].index(pid)) for pid in v2.broken
    ]
    assert all("unreadable price 'twelve euros'" in f["reason"] for f in second.failed)

    after = snapshot(catalog)
    reimaged = set(v2.reimaged)
    # Only the new pictures are embedded again.
    assert {CatalogItem.objects.get(pk=pk).product_id for b in queued for pk in b} == reimaged
    for pid, (title, price, availability, sha, name, source) in after.items():
        old = before[pid]
        if pid in v2.priced:
            assert price == old[1] + Decimal("1.50") and sha == old[3]
        elif pid in reimaged:
            assert sha != old[3] and name != old[4] and source != old[5] and price == old[1]
        elif pid in v2.removed:
            assert availability == "out_of_stock" and (title, price, sha) == old[:2] + old[3:4]
        else:  # unchanged and broken rows: untouched
            assert (title, price, availability, sha, name, source) == old
    assert Catalog.objects.get(pk=catalog.pk).feed_report["removed"] == 3

    # The same feed again changes nothing, fetches nothing, embeds nothing.
    hits = dict(server.hits)
    queued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        third = sync.sync_feed(catalog, tsv(v2.products, v2.broken), "products.tsv")
    assert (third.added, third.updated, third.removed) == (0, 0, 0)
    assert third.unchanged == 100 - 3 - 2 and len(third.failed) == 2
    assert snapshot(catalog) == after and queued == [] and server.hits == hits


def test_a_removed_product_that_returns_is_available_again(server: ImageServer) -> None:
    catalog = CatalogFactory.create()
    products = catalog_products(server, 3)
    sync.sync_feed(catalog, tsv(products), "f.tsv", embed=False)
    sync.sync_feed(catalog, tsv(products[:2]), "f.tsv", embed=False)
    assert CatalogItem.objects.get(product_id="SKU00002").availability == "out_of_stock"
    report = sync.sync_feed(catalog, tsv(products), "f.tsv", embed=False)
    assert (report.updated, report.unchanged, report.removed) == (1, 2, 0)
    assert CatalogItem.objects.get(product_id="SKU00002").availability == "in_stock"


def test_a_partial_feed_removes_nothing(server: ImageServer) -> None:
    catalog = CatalogFactory.create()
    products = catalog_products(server, 4)
    sync.sync_feed(catalog, tsv(products), "f.tsv", embed=False)
    report = sync.sync_feed(catalog, tsv(products[:1]), "f.tsv", full=False, embed=False)
    assert report.removed == 0
    assert not CatalogItem.objects.filter(availability="out_of_stock").exists()


def test_unfetchable_images_fail_their_rows_only(server: ImageServer) -> None:
    catalog = CatalogFactory.create()
    products = catalog_products(server, 4)
    products[1].image = server.url("/missing.png")
    products[2].image = server.add("/not-an-image.png", b"<html>nope</html>", "text/html")
    products[3].image = "http://10.0.0.7/a.png"
    report = sync.sync_feed(catalog, tsv(products), "f.tsv", embed=False)
    assert report.added == 1
    reasons = {f["id"]: f["reason"] for f in report.failed}
    assert "HTTP 404" in reasons["SKU00001"]
    assert "HTML document" in reasons["SKU00002"]
    assert "private, loopback or link-local" in reasons["SKU00003"]
    assert [f["row"] for f in report.failed] == [3, 4, 5]


def test_repeated_product_ids_fail_the_later_rows(server: ImageServer) -> None:
    catalog = CatalogFactory.create()
    products = catalog_products(server, 2)
    report = sync.sync_feed(catalog, tsv([*products, products[0]]), "f.tsv", embed=False)
    assert report.added == 2
    assert report.failed == [
        {"row": 4, "id": "SKU00000", "reason": "product id repeated (first at row 2)"}
    ]


def test_a_catalog_with_a_feed_location_is_synced_when_due(
    server: ImageServer, tmp_path: Any
) -> None:
    from catalog.tasks import sync_feed

    feed_url = server.add("/feed.tsv", tsv(catalog_products(server, 3)), "text/tab-separated")
    due = CatalogFactory.create(feed_location=feed_url, feed_interval_minutes=60)
    CatalogFactory.create()  # no feed
    assert sync.due_catalogs() == [due.pk]
    result = sync_feed.apply(args=[due.pk]).get()
    assert result["added"] == 3
    assert sync.due_catalogs() == []  # synced just now
    assert CatalogItem.objects.filter(catalog=due).count() == 3


def test_a_second_sync_of_the_same_catalog_is_refused_while_one_runs(
    server: ImageServer,
) -> None:
    import threading

    from django.db import connection

    from catalog.services import feeds

    catalog = CatalogFactory.create()
    holding, release = threading.Event(), threading.Event()

    def other_sync() -> None:  # another worker, another database session
        with sync._catalog_lock(catalog):
            holding.set()
            release.wait(30)
        connection.close()

    thread = threading.Thread(target=other_sync)
    thread.start()
    try:
        assert holding.wait(30)
        with pytest.raises(feeds.FeedError, match="another sync of this catalog is running"):
            sync.sync_feed(catalog, tsv(catalog_products(server, 1)), "f.tsv", embed=False)
    finally:
        release.set()
        thread.join()
    assert (
        sync.sync_feed(catalog, tsv(catalog_products(server, 1)), "f.tsv", embed=False).added == 1
    )


def test_a_feed_location_that_fails_is_reported_on_the_catalog(server: ImageServer) -> None:
    from catalog.tasks import sync_feed

    catalog = CatalogFactory.create(feed_location=server.url("/gone.tsv"), feed_interval_minutes=5)
    assert sync_feed.apply(args=[catalog.pk]).get() == {
        "error": "feed not fetched: HTTP 404 Not Found"
    }
    catalog.refresh_from_db()
    assert catalog.feed_report == {"error": "feed not fetched: HTTP 404 Not Found"}
    assert catalog.feed_synced_at is not None and sync.due_catalogs() == []
