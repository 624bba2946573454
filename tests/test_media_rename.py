"""Files stored under their plain sha256 (before keyed media names) are moved by rename_media."""

from __future__ import annotations

import hashlib
from io import StringIO

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.test import Client

from catalog.models import Catalog, CatalogItem, item_upload_path
from catalog.services import media_names
from tests.factories import CatalogFactory, png_bytes

pytestmark = pytest.mark.django_db


def _legacy_item(catalog: Catalog, color: tuple[int, int, int]) -> CatalogItem:
    """An item as imports wrote it before media tokens: both files named by the sha256."""
    data = png_bytes(color)
    sha = hashlib.sha256(data).hexdigest()
    item = CatalogItem(catalog=catalog, sha256=sha, width=32, height=32, title="old")
    name = f"catalogs/{item.catalog_id}/{sha[:2]}/{sha}.png"
    item.image.name = item.image.storage.save(name, ContentFile(data))
    original = f"originals/{item.catalog_id}/{sha[:2]}/{sha}.png"
    item.original.name = item.original.storage.save(original, ContentFile(data))
    item.save()
    return item


def test_legacy_files_move_to_keyed_names_and_are_still_served() -> None:
    catalog = CatalogFactory.create(is_public=False)
    old = _legacy_item(catalog, (200, 10, 10))
    old_image, old_original = str(old.image.name), str(old.original.name)
    keyed = CatalogFactory.create()  # another catalog, nothing legacy in it

    report = media_names.rename_legacy()

    item = CatalogItem.objects.get(pk=old.pk)
    assert report.items == 1 and report.renamed == 2 and not report.missing
    assert item.sha256 not in str(item.image.name) + str(item.original.name)
    assert not item.image.storage.exists(old_image)
    assert not item.original.storage.exists(old_original)
    with item.image.open("rb") as handle:
        assert handle.read() == png_bytes((200, 10, 10))
    response = Client().get(item.image.url)
    assert response.status_code == 200
    assert media_names.legacy_items(keyed).count() == 0


def test_a_second_run_and_an_interrupted_one_change_nothing_more() -> None:
    catalog = CatalogFactory.create()
    item = _legacy_item(catalog, (1, 2, 3))
    media_names.rename_legacy(catalog)
    renamed = CatalogItem.objects.get(pk=item.pk)

    again = media_names.rename_legacy(catalog)
    assert again.items == 0 and again.renamed == 0 and again.unchanged == 1
    assert CatalogItem.objects.get(pk=item.pk).image.name == renamed.image.name

    # Killed after the copy, before the row update: the next run adopts the identical copy.
    other = _legacy_item(catalog, (9, 9, 9))
    target = item_upload_path(other, "file.png")
    with other.image.open("rb") as handle:
        other.image.storage.save(target, ContentFile(handle.read()))
    media_names.rename_legacy(catalog)
    assert CatalogItem.objects.get(pk=other.pk).image.name == target


def test_missing_files_are_reported_and_the_rest_still_moves() -> None:
    catalog = CatalogFactory.create()
    gone = _legacy_item(catalog, (5, 5, 5))
    gone.image.storage.delete(str(gone.image.name))
    kept = _legacy_item(catalog, (6, 6, 6))

    report = media_names.rename_legacy(catalog)

    assert any(f"item {gone.pk}:" in line for line in report.missing)
    kept.refresh_from_db()
    assert kept.sha256 not in str(kept.image.name)


def test_the_command_counts_first_with_dry_run() -> None:
    catalog = CatalogFactory.create(slug="old-shop")
    _legacy_item(catalog, (7, 7, 7))
    out = StringIO()
    call_command("rename_media", "--catalog", "old-shop", "--dry-run", stdout=out)
    assert "1 item(s) have sha256-named files" in out.getvalue()
    assert media_names.legacy_items(catalog).count() == 1
    call_command("rename_media", stdout=out)
    assert "2 file(s) of 1 item(s) renamed" in out.getvalue()
    assert media_names.legacy_items(catalog).count() == 0
