"""REST API: three personas (the shop's admin, another shop's admin, anonymous)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from catalog.models import Catalog, CatalogItem
from catalog.services import embedding, vectors
from retrieval.services import ratelimit
from tests.factories import CatalogFactory, CatalogItemFactory, ShopFactory, image_bytes, shop_admin

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> dict[str, Any]:
    shop, other_shop = ShopFactory.create(), ShopFactory.create()
    owner, stranger = shop_admin(shop), shop_admin(other_shop)
    catalog = CatalogFactory.create(shop=shop, slug="owned")
    theirs = CatalogFactory.create(shop=other_shop, slug="theirs")
    return {
        "shop": shop,
        "other_shop": other_shop,
        "owner": owner,
        "stranger": stranger,
        "catalog": catalog,
        "theirs": theirs,
    }


def client_for(user: Any = None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def upload(name: str, data: bytes, content_type: str = "application/octet-stream") -> Any:
    return SimpleUploadedFile(name, data, content_type=content_type)


def test_catalog_list_and_detail_are_scoped(world: dict[str, Any]) -> None:
    owner = client_for(world["owner"])
    listed = owner.get("/api/catalogs/").json()
    assert [c["slug"] for c in listed["results"]] == ["owned"]
    assert owner.get("/api/catalogs/owned/").status_code == 200
    assert owner.get("/api/catalogs/theirs/").status_code == 404
    assert owner.delete("/api/catalogs/theirs/").status_code == 404
    assert Catalog.objects.filter(slug="theirs").exists()


def test_anonymous_gets_nothing(world: dict[str, Any]) -> None:
    anon = client_for()
    for method, url in [
        ("get", "/api/catalogs/"),
        ("get", "/api/catalogs/owned/"),
        ("get", "/api/catalogs/owned/items/"),
        ("post", "/api/catalogs/owned/items/"),
        ("get", "/api/catalogs/owned/progress/"),
        ("post", "/api/catalogs/owned/reembed/"),
    ]:
        assert getattr(anon, method)(url).status_code in (401, 403), url


def test_create_catalog_only_in_own_shop(world: dict[str, Any]) -> None:
    owner = client_for(world["owner"])
    made = owner.post(
        "/api/catalogs/",
        {"shop": world["shop"].slug, "name": "Shoes", "slug": "shoes"},
        format="json",
    )
    assert made.status_code == 201, made.json()
    assert Catalog.objects.get(slug="shoes").shop == world["shop"]
    refused = owner.post(
        "/api/catalogs/",
        {"shop": world["other_shop"].slug, "name": "X", "slug": "x"},
        format="json",
    )
    assert refused.status_code == 400 and "shop" in refused.json()
    assert not Catalog.objects.filter(slug="x").exists()


def test_upload_many_files_and_a_zip(world: dict[str, Any]) -> None:
    owner = client_for(world["owner"])
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("z/green.png", image_bytes("RGB", (10, 10), (0, 200, 0)))
        zf.writestr("../../etc/evil.png", image_bytes("RGB", (10, 10), (1, 1, 1)))
    files = [
        upload("red.png", image_bytes("RGB", (10, 10), (200, 0, 0))),
        upload("also-red.png", image_bytes("RGB", (10, 10), (200, 0, 0))),
        upload("photo.jpg", image_bytes("CMYK", (10, 10), (0, 0, 0, 0), "JPEG")),
        upload("fake.png", b"not an image at all"),
        upload("pack.zip", archive.getvalue(), "application/zip"),
    ]
    response = owner.post(
        "/api/catalogs/owned/items/",
        {
            "files": files,
            "title": "Summer collection",
            "description": "Bright colours",
            "attributes": json.dumps({"season": "summer"}),
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert {r["path"] for r in body["imported"]} == {"red.png", "photo.jpg", "pack.zip!z/green.png"}
    assert [r["path"] for r in body["duplicates"]] == ["also-red.png"]
    rejected = {r["path"]: r["reason"] for r in body["rejected"]}
    assert "not a recognised image" in rejected["fake.png"]
    assert "escapes" in rejected["pack.zip!../../etc/evil.png"]
    assert body["progress"]["pending"] == 3
    item = CatalogItem.objects.get(pk=body["imported"][0]["id"])
    assert item.title == "Summer collection" and item.attributes == {"season": "summer"}

    again = owner.post(
        "/api/catalogs/owned/items/",
        {"files": [upload("red.png", image_bytes("RGB", (10, 10), (200, 0, 0)))]},
        format="multipart",
    )
    assert again.status_code == 200 and len(again.json()["duplicates"]) == 1


def test_upload_validation_errors(world: dict[str, Any]) -> None:
    owner = client_for(world["owner"])
    assert owner.post("/api/catalogs/owned/items/", {}, format="multipart").status_code == 400
    bad_attrs = owner.post(
        "/api/catalogs/owned/items/",
        {"files": [upload("a.png", image_bytes())], "attributes": "[1, 2]"},
        format="multipart",
    )
    assert bad_attrs.status_code == 400 and "attributes" in bad_attrs.json()
    assert not CatalogItem.objects.exists()


def test_another_shops_admin_cannot_touch_the_catalog(world: dict[str, Any]) -> None:
    item = CatalogItemFactory.create(catalog=world["catalog"])
    stranger = client_for(world["stranger"])
    base = "/api/catalogs/owned"
    assert stranger.get(f"{base}/items/").status_code == 404
    assert stranger.get(f"{base}/items/{item.pk}/").status_code == 404
    assert stranger.delete(f"{base}/items/{item.pk}/").status_code == 404
    assert stranger.get(f"{base}/progress/").status_code == 404
    assert stranger.post(f"{base}/reembed/", {"mode": "all"}, format="json").status_code == 404
    posted = stranger.post(
        f"{base}/items/", {"files": [upload("a.png", image_bytes())]}, format="multipart"
    )
    assert posted.status_code == 404
    # Nor through their own catalog's URL.
    assert stranger.get(f"/api/catalogs/theirs/items/{item.pk}/").status_code == 404
    assert CatalogItem.objects.filter(catalog=world["catalog"]).count() == 1


def test_list_filter_and_delete_items(
    world: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    catalog = world["catalog"]
    pending = CatalogItemFactory.create(catalog=catalog)
    done = CatalogItemFactory.create(catalog=catalog, status="embedded")
    CatalogItemFactory.create(catalog=catalog, status="failed", error="boom")
    owner = client_for(world["owner"])
    listed = owner.get("/api/catalogs/owned/items/").json()
    assert listed["count"] == 3
    only = owner.get("/api/catalogs/owned/items/?status=embedded").json()["results"]
    assert [i["id"] for i in only] == [done.pk] and only[0]["status"] == "embedded"
    failed = owner.get("/api/catalogs/owned/items/?status=failed").json()["results"]
    assert failed[0]["error"] == "boom"
    assert owner.get("/api/catalogs/owned/items/?status=bogus").status_code == 400

    path = Path(settings.MEDIA_ROOT) / str(pending.image.name)
    assert path.exists()
    with django_capture_on_commit_callbacks(execute=True):
        assert owner.delete(f"/api/catalogs/owned/items/{pending.pk}/").status_code == 204
    assert not CatalogItem.objects.filter(pk=pending.pk).exists()
    assert not path.exists()  # no orphan file left behind


def test_progress_and_reembed(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    catalog = world["catalog"]
    monkeypatch.setattr("catalog.services.encoder.configured_encoder_name", lambda: "enc-new")
    current, old = (
        CatalogItemFactory.create(catalog=catalog),
        CatalogItemFactory.create(catalog=catalog),
    )
    CatalogItemFactory.create(catalog=catalog)  # pending
    CatalogItem.objects.filter(pk__in=[current.pk, old.pk]).update(status="embedded")
    vectors.store("image", "enc-new", [(current.pk, catalog.pk, np.ones(4) / 2)])
    vectors.store("image", "enc-old", [(old.pk, catalog.pk, np.ones(4) / 2)])

    owner = client_for(world["owner"])
    counts = owner.get("/api/catalogs/owned/progress/").json()
    assert counts == {
        "total": 3,
        "pending": 1,
        "embedded": 1,
        "failed": 0,
        "stale": 1,
        "encoder": "enc-new",
    }
    sent: list[list[int]] = []
    monkeypatch.setattr(embedding, "send_batch", sent.append)
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.post("/api/catalogs/owned/reembed/", {"mode": "stale"}, format="json")
    assert response.status_code == 202
    # Stale = no vector from the active encoder and not already queued: only the old one.
    assert response.json()["queued"] == 1 and sent == [[old.pk]]
    assert response.json()["progress"]["pending"] == 2
    sent.clear()
    # While that re-embed's items are pending, a second request is refused (tests/test_reembed_
    # admission.py has the rules); once its jobs would have been redelivered, "pending" resends.
    response = owner.post("/api/catalogs/owned/reembed/", {"mode": "pending"}, format="json")
    assert response.status_code == 409 and not sent
    ratelimit.client().delete(f"{settings.REDIS_PREFIX}:reembed:queued:{catalog.pk}")
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.post("/api/catalogs/owned/reembed/", {"mode": "pending"}, format="json")
    assert response.json()["queued"] == 2 and len(sent[0]) == 2
    assert (
        owner.post("/api/catalogs/owned/reembed/", {"mode": "x"}, format="json").status_code == 400
    )


def test_openapi_schema_and_docs_without_cdn(world: dict[str, Any]) -> None:
    owner = client_for(world["owner"])
    schema = owner.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/api/catalogs/",
        "/api/catalogs/{slug}/",
        "/api/catalogs/{slug}/progress/",
        "/api/catalogs/{slug}/reembed/",
        "/api/catalogs/{catalog_slug}/items/",
        "/api/catalogs/{catalog_slug}/items/{id}/",
    ):
        assert path in paths, path
    upload_op = paths["/api/catalogs/{catalog_slug}/items/"]["post"]
    assert "multipart/form-data" in upload_op["requestBody"]["content"]
    docs = owner.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html and "cdn." not in html and "jsdelivr" not in html
    assert "drf_spectacular_sidecar" in html
