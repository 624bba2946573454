"""Admin: shop admins see and change only their own shops' catalogs; bulk upload; progress."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from catalog.models import Catalog, CatalogItem
from catalog.services import embedding, vectors
from tests.factories import (
    CatalogFactory,
    CatalogItemFactory,
    ShopFactory,
    UserFactory,
    image_bytes,
    shop_admin,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> dict[str, Any]:
    shop, other_shop = ShopFactory.create(name="Mine"), ShopFactory.create(name="Theirs")
    catalog = CatalogFactory.create(shop=shop, name="My catalog")
    theirs = CatalogFactory.create(shop=other_shop, name="Their catalog")
    return {
        "owner": shop_admin(shop),
        "stranger": shop_admin(other_shop),
        "catalog": catalog,
        "theirs": theirs,
        "mine_item": CatalogItemFactory.create(catalog=catalog, title="my item"),
        "their_item": CatalogItemFactory.create(catalog=theirs, title="their item"),
    }


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_changelists_show_only_own_shops(world: dict[str, Any]) -> None:
    client = logged_in(world["owner"])
    page = client.get(reverse("admin:catalog_catalog_changelist")).content.decode()
    assert "My catalog" in page and "Their catalog" not in page
    items = client.get(reverse("admin:catalog_catalogitem_changelist")).content.decode()
    assert "my item" in items and "their item" not in items
    shops = client.get(reverse("admin:catalog_shop_changelist")).content.decode()
    assert "Mine" in shops and "Theirs" not in shops


def test_other_shops_objects_are_out_of_reach(world: dict[str, Any]) -> None:
    client = logged_in(world["stranger"])
    theirs_to_them = world["catalog"]  # the owner's catalog, seen by the stranger
    change = client.get(reverse("admin:catalog_catalog_change", args=[theirs_to_them.pk]))
    assert change.status_code == 302  # Django's "does not exist" redirect, no details
    upload = client.get(reverse("admin:catalog_catalog_upload", args=[theirs_to_them.pk]))
    assert upload.status_code == 404
    item = client.get(reverse("admin:catalog_catalogitem_change", args=[world["mine_item"].pk]))
    assert item.status_code == 302
    deleted = client.post(
        reverse("admin:catalog_catalog_delete", args=[theirs_to_them.pk]), {"post": "yes"}
    )
    assert deleted.status_code == 302
    assert Catalog.objects.filter(pk=theirs_to_them.pk).exists()
    # Creating a catalog in someone else's shop is not offered and not accepted.
    add = client.post(
        reverse("admin:catalog_catalog_add"),
        {"shop": theirs_to_them.shop.pk, "name": "Sneaky", "slug": "sneaky", "is_public": "on"},
    )
    assert add.status_code == 200 and not Catalog.objects.filter(slug="sneaky").exists()


def test_anonymous_and_non_admin_users_are_kept_out(world: dict[str, Any]) -> None:
    url = reverse("admin:catalog_catalog_upload", args=[world["catalog"].pk])
    assert Client().get(url).status_code == 302  # to the login page
    nobody = UserFactory.create()  # staff, but administers no shop
    client = logged_in(nobody)
    assert client.get(reverse("admin:catalog_catalog_changelist")).status_code == 403
    assert client.get(url).status_code == 404


def test_superuser_sees_everything(world: dict[str, Any]) -> None:
    root = UserFactory.create(is_superuser=True)
    page = logged_in(root).get(reverse("admin:catalog_catalog_changelist")).content.decode()
    assert "My catalog" in page and "Their catalog" in page


def test_bulk_upload_files_and_zip(world: dict[str, Any]) -> None:
    catalog = world["catalog"]
    client = logged_in(world["owner"])
    url = reverse("admin:catalog_catalog_upload", args=[catalog.pk])
    form = client.get(url)
    assert form.status_code == 200 and b"multiple" in form.content
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/blue.png", image_bytes("RGB", (9, 9), (0, 0, 250)))
        zf.writestr("/abs/evil.png", image_bytes("RGB", (9, 9), (3, 3, 3)))
    files = [
        SimpleUploadedFile("green.png", image_bytes("RGB", (9, 9), (0, 250, 0))),
        SimpleUploadedFile("green-again.png", image_bytes("RGB", (9, 9), (0, 250, 0))),
        SimpleUploadedFile("page.jpg", b"<html><body>no</body></html>"),
        SimpleUploadedFile("pack.zip", archive.getvalue()),
    ]
    response = client.post(url, {"images": files, "title": "", "attributes": '{"a": 1}'})
    assert response.status_code == 200
    report = response.context["report"]
    assert [r["path"] for r in report.imported] == ["green.png", "pack.zip!a/blue.png"]
    assert [r["path"] for r in report.duplicates] == ["green-again.png"]
    assert {r["path"] for r in report.rejected} == {"page.jpg", "pack.zip!/abs/evil.png"}
    html = response.content.decode()
    assert "2</strong> imported" in html and "HTML document" in html
    assert CatalogItem.objects.filter(catalog=catalog, attributes={"a": 1}).count() == 2


def test_change_form_links_to_upload_and_shows_progress(world: dict[str, Any]) -> None:
    client = logged_in(world["owner"])
    page = client.get(reverse("admin:catalog_catalog_change", args=[world["catalog"].pk]))
    html = page.content.decode()
    assert reverse("admin:catalog_catalog_upload", args=[world["catalog"].pk]) in html
    assert "1 items: 1 pending, 0 embedded, 0 failed, 0 stale" in html


def test_changelist_counts_follow_the_active_encoder(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = world["catalog"]
    monkeypatch.setattr("catalog.services.encoder.configured_encoder_name", lambda: "enc-2")
    new, old = (
        CatalogItemFactory.create(catalog=catalog),
        CatalogItemFactory.create(catalog=catalog),
    )
    CatalogItem.objects.filter(pk__in=[new.pk, old.pk]).update(status="embedded")
    vectors.store("image", "enc-2", [(new.pk, catalog.pk, np.ones(4) / 2)])
    vectors.store("image", "enc-1", [(old.pk, catalog.pk, np.ones(4) / 2)])
    client = logged_in(world["owner"])
    changelist = client.get(reverse("admin:catalog_catalog_changelist"))
    (row,) = changelist.context["cl"].result_list
    assert (row.n_total, row.n_pending, row.n_embedded, row.n_stale, row.n_failed) == (
        3,
        1,
        1,
        1,
        0,
    )


def test_reembed_action(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    catalog = world["catalog"]
    CatalogItem.objects.filter(catalog=catalog).update(status="failed", error="x")
    sent: list[list[int]] = []
    monkeypatch.setattr(embedding, "send_batch", sent.append)
    client = logged_in(world["owner"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:catalog_catalog_changelist"),
            {
                "action": "reembed_stale",
                "_selected_action": [catalog.pk, world["theirs"].pk],
            },
            follow=True,
        )
    assert "Queued 1 item(s)" in response.content.decode()
    assert sent == [[world["mine_item"].pk]]  # the other shop's catalog was not selectable
    assert CatalogItem.objects.get(pk=world["mine_item"].pk).status == "pending"


def test_editing_an_items_text_requeues_it(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    item = world["mine_item"]
    sent: list[list[int]] = []
    monkeypatch.setattr(embedding, "send_batch", sent.append)
    client = logged_in(world["owner"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:catalog_catalogitem_change", args=[item.pk]),
            {"title": "new title", "description": "", "attributes": "{}", **_IN_STOCK},
        )
    assert response.status_code == 302, response.content
    assert sent == [[item.pk]]
    assert client.get(reverse("admin:catalog_catalogitem_add")).status_code == 403


_IN_STOCK = {"availability": CatalogItem.Availability.IN_STOCK}


def test_a_shop_without_a_feed_edits_product_data_in_the_admin(world: dict[str, Any]) -> None:
    item = world["mine_item"]
    client = logged_in(world["owner"])
    url = reverse("admin:catalog_catalogitem_change", args=[item.pk])
    base = {"title": item.title, "description": "", "attributes": "{}", **_IN_STOCK}

    refused = client.post(url, {**base, "price": "12.50", "currency": "EUX"})
    assert refused.status_code == 200 and b"ISO 4217" in refused.content
    assert client.post(url, {**base, "price": "12.50"}).status_code == 200  # no currency
    assert client.post(url, {**base, "price": "-1", "currency": "EUR"}).status_code == 200
    item.refresh_from_db()
    assert item.price is None  # nothing stored by the refused posts

    fields = {"price": "12.50", "currency": "eur", "product_url": "https://shop.example/p/1"}
    saved = client.post(url, {**base, **fields, "availability": "preorder"})
    assert saved.status_code == 302, saved.content
    item.refresh_from_db()
    assert (str(item.price), item.currency, item.product_url, item.availability) == (
        "12.50",
        "EUR",
        "https://shop.example/p/1",
        "preorder",
    )

    # Once the catalog has a feed, the feed owns product data: the form shows it, read-only.
    Catalog.objects.filter(pk=item.catalog_id).update(feed_location="https://shop.example/f.tsv")
    page = client.get(url).content.decode()
    assert 'name="price"' not in page and "12.50" in page
    client.post(url, {**base, "price": "1.00", "currency": "EUR"})
    item.refresh_from_db()
    assert str(item.price) == "12.50"
