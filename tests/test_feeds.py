"""Product feeds: the formats shops export (Merchant Center TSV and g: RSS, Shopify CSV, product
manifests) and the admin upload (a manifest beside images keeps its titles; a feed alone or
beside its images syncs)."""

from __future__ import annotations

import io
import zipfile
from decimal import Decimal
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.urls import reverse

from catalog.models import CatalogItem, private_storage
from catalog.services import feeds, sync, uploads
from tests.factories import CatalogFactory, image_bytes, shop_admin
from tests.feeds_data import catalog_products, tsv
from tests.image_server import image_server

RSS = b"""<?xml version="1.0"?>
<rss xmlns:g="http://base.google.com/ns/1.0" version="2.0">
<channel><title>Shop</title>
<item>
  <g:id>A1</g:id><title>Red dress</title><description>&lt;b&gt;Silk&lt;/b&gt; dress</description>
  <link>https://shop.example/a1</link><g:image_link>https://cdn.example/a1.jpg</g:image_link>
  <g:price>39.90 EUR</g:price><g:availability>in stock</g:availability>
  <g:brand>ACME</g:brand><g:product_type>Dresses</g:product_type><g:color>red</g:color>
</item>
<item>
  <g:id>A2</g:id><title>Blue coat</title><link>https://shop.example/a2</link>
  <g:image_link>https://cdn.example/a2.jpg</g:image_link><g:price>120 GBP</g:price>
  <g:availability>preorder</g:availability>
</item>
<item><g:id>A3</g:id><title>Bad</title><g:price>10 EURO</g:price></item>
</channel></rss>"""

SHOPIFY = (
    "Handle,Title,Body (HTML),Vendor,Type,Tags,Option1 Name,Option1 Value,Variant SKU,"
    "Variant Price,Variant Inventory Tracker,Variant Inventory Qty,Image Src,Status\n"
    'tee,Basic tee,<p>Soft <em>cotton</em></p>,ACME,Shirts,"summer, basics",Size,S,TEE-S,'
    "19.00,shopify,3,https://cdn.example/tee.jpg,active\n"
    "tee,,,,,,,M,TEE-M,17.50,shopify,0,,\n"
    "tee,,,,,,,,,,,,https://cdn.example/tee-back.jpg,\n"
    "cap,Cap,,ACME,Hats,,Title,Default Title,CAP,9.00,shopify,0,https://cdn.example/cap.jpg,"
    "active\n"
)


def test_merchant_tsv_rows_and_row_errors() -> None:
    data = (
        b"id\ttitle\tlink\timage_link\tprice\tavailability\tbrand\tgoogle_product_category\tcolor\n"
        b"1\tShirt\thttps://s.example/1\thttps://c.example/1.jpg\t12.00 EUR\tin_stock\tX\t212"
        b"\tred\n"
        b"2\tShirt\thttps://s.example/2\thttps://c.example/2.jpg\t12 XYZ\tin_stock\tX\t212\tred\n"
        b"3\tShirt\tjavascript:alert(1)\thttps://c.example/3.jpg\t1 EUR\tin_stock\tX\t212\tred\n"
        b"4\tShirt\thttps://s.example/4\thttps://c.example/4.jpg\t1,5 EUR\tsoon\tX\t212\tred\n"
        b"\tNo id\thttps://s.example/5\thttps://c.example/5.jpg\t1 EUR\tin_stock\tX\t212\tred\n"
        b"6\tShirt\thttps://s.example/6\thttps://c.example/6.jpg\t1 234,50 SEK\tout of stock\t"
        b"X\t212\tred\n"
    )
    feed = feeds.parse(data, "feed.tsv")
    assert feed.kind == "merchant_tsv"
    first, last = feed.rows
    assert (first.product_id, first.price, first.currency, first.category) == (
        "1",
        Decimal("12.00"),
        "EUR",
        "212",
    )
    assert first.attributes == {"color": "red"} and first.product_url == "https://s.example/1"
    assert (last.price, last.currency, last.availability) == (
        Decimal("1234.50"),
        "SEK",
        "out_of_stock",
    )
    errors = {e.row: e.reason for e in feed.errors}
    assert errors[3].startswith("unknown currency 'XYZ'")
    assert errors[4].startswith("link is not an http(s) URL")
    assert errors[5].startswith("unknown availability 'soon'")
    assert errors[6] == "no product id (column 'id')"


def test_merchant_rss_with_the_g_namespace() -> None:
    feed = feeds.parse(RSS, "feed.xml")
    assert feed.kind == "merchant_xml"
    red, blue = feed.rows
    assert (red.product_id, red.title, red.description) == ("A1", "Red dress", "Silk dress")
    assert (red.price, red.currency, red.brand, red.category) == (
        Decimal("39.90"),
        "EUR",
        "ACME",
        "Dresses",
    )
    assert red.image == "https://cdn.example/a1.jpg" and red.attributes == {"color": "red"}
    assert (blue.price, blue.currency, blue.availability) == (Decimal("120.00"), "GBP", "preorder")
    assert [(e.row, e.product_id) for e in feed.errors] == [(3, "A3")]


@pytest.mark.parametrize(
    "payload",
    [
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<rss><channel><item><title>&x;</title></item></channel></rss>",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        b"<rss><channel><item><title>&b;</title></item></channel></rss>",
    ],
)
def test_xml_entities_are_never_expanded(payload: bytes) -> None:
    with pytest.raises(feeds.FeedError, match="XML refused"):
        feeds.parse(payload, "feed.xml")


def test_broken_xml_is_a_feed_error() -> None:
    with pytest.raises(feeds.FeedError, match="broken XML"):
        feeds.parse(b"<rss><channel><item>", "feed.xml")


def test_shopify_rows_sharing_a_handle_are_one_product() -> None:
    feed = feeds.parse(SHOPIFY.encode(), "products_export.csv", default_currency="usd")
    assert feed.kind == "shopify_csv" and not feed.errors
    tee, cap = feed.rows
    assert (tee.product_id, tee.title, tee.description, tee.brand, tee.category) == (
        "tee",
        "Basic tee",
        "Soft cotton",
        "ACME",
        "Shirts",
    )
    assert (tee.price, tee.currency, tee.availability) == (Decimal("17.50"), "USD", "in_stock")
    assert tee.image == "https://cdn.example/tee.jpg"
    assert tee.attributes["size"] == ["S", "M"] and tee.attributes["tags"] == ["summer", "basics"]
    assert [v["sku"] for v in tee.attributes["variants"]] == ["TEE-S", "TEE-M"]
    assert cap.availability == "out_of_stock"  # tracked, none left
    assert "size" not in cap.attributes  # "Default Title" is no option


def test_shopify_without_a_currency_fails_its_priced_products() -> None:
    feed = feeds.parse(SHOPIFY.encode(), "products_export.csv")
    assert [e.reason for e in feed.errors] == ["Shopify exports no currency: give the feed one"] * 2


def test_a_manifest_with_product_ids_is_a_feed() -> None:
    data = b'{"id": "p1", "image": "a.png", "price": 5, "currency": "eur", "size": "L"}\n'
    kind = feeds.detect("m.jsonl", data)
    assert feeds.has_product_ids(data, kind)
    (row,) = feeds.parse(data, "m.jsonl").rows
    assert (row.price, row.currency, row.image, row.attributes) == (
        Decimal("5.00"),
        "EUR",
        "a.png",
        {"size": "L"},
    )
    assert not feeds.has_product_ids(b"path,title\na.png,A\n", "manifest_csv")


# --- The admin upload ---------------------------------------------------------------------


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _post(client: Client, catalog: Any, files: list[SimpleUploadedFile]) -> Any:
    url = reverse("admin:catalog_catalog_upload", args=[catalog.pk])
    return client.post(url, {"images": files, "title": "", "attributes": ""})


@pytest.fixture
def owner_client(db: None) -> tuple[Client, Any]:
    catalog = CatalogFactory.create()
    client = Client()
    client.force_login(shop_admin(catalog.shop, is_staff=True))
    return client, catalog


def test_admin_upload_keeps_titles_from_a_manifest_beside_images(
    owner_client: tuple[Client, Any],
) -> None:
    client, catalog = owner_client
    pack = _zip(
        {
            "shots/red.png": image_bytes("RGB", (9, 9), (250, 0, 0)),
            "shots/blue.png": image_bytes("RGB", (9, 9), (0, 0, 250)),
        }
    )
    manifest = b"path,title,description,color\nshots/red.png,Red dress,Silk,red\n"
    manifest += b"blue.png,Blue dress,,blue\nmissing.png,Ghost,,\n"
    response = _post(
        client,
        catalog,
        [
            SimpleUploadedFile("pack.zip", pack),
            SimpleUploadedFile("green.png", image_bytes("RGB", (9, 9), (0, 250, 0))),
            SimpleUploadedFile("titles.csv", manifest),
        ],
    )
    assert response.status_code == 200
    report = response.context["report"]
    assert len(report.imported) == 3
    assert report.rejected == [
        {"path": "manifest:missing.png", "reason": "file not found among the uploaded files"}
    ]
    titles = dict(CatalogItem.objects.filter(catalog=catalog).values_list("source_name", "title"))
    assert titles == {
        "pack.zip!shots/red.png": "Red dress",
        "pack.zip!shots/blue.png": "Blue dress",
        "green.png": "",
    }
    red = CatalogItem.objects.get(catalog=catalog, title="Red dress")
    assert red.description == "Silk" and red.attributes == {"color": "red"}


def test_admin_upload_of_a_feed_beside_its_images_syncs(
    owner_client: tuple[Client, Any],
) -> None:
    client, catalog = owner_client
    feed = (
        b"id\ttitle\tlink\timage_link\tprice\tavailability\n"
        b"d1\tRed dress\thttps://s.example/d1\tred.png\t35.00 EUR\tin_stock\n"
        b"d2\tBlue dress\thttps://s.example/d2\tblue.png\t45.00 EUR\tbackorder\n"
        b"d3\tNo picture\thttps://s.example/d3\tnone.png\t5.00 EUR\tin_stock\n"
    )
    contents = {
        "red.png": image_bytes("RGB", (9, 9), (250, 0, 0)),
        "blue.png": image_bytes("RGB", (9, 9), (0, 0, 250)),
        "feed.tsv": feed,
    }
    files = [SimpleUploadedFile(name, data) for name, data in contents.items()]
    response = _post(client, catalog, files)
    assert response.status_code == 200
    assert response.context["sync_report"]["added"] == 2
    html = response.content.decode()
    assert "2</strong> added" in html and "not among the uploaded files" in html
    item = CatalogItem.objects.get(catalog=catalog, product_id="d2")
    assert (item.title, item.price, item.availability) == (
        "Blue dress",
        Decimal("45.00"),
        "backorder",
    )
    # Uploaded again: nothing changes.
    files = [SimpleUploadedFile(name, data) for name, data in contents.items()]
    again = _post(client, catalog, files).context["sync_report"]
    assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, 2)


def test_admin_upload_of_a_feed_with_image_urls_goes_to_a_worker(
    owner_client: tuple[Client, Any],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    client, catalog = owner_client
    sent: list[list[Any]] = []
    monkeypatch.setattr(uploads, "queue_sync", lambda *args: sent.append(list(args)))
    with image_server() as server, override_settings(DAR_FETCH_ALLOWED_HOSTS=["127.0.0.1"]):
        data = tsv(catalog_products(server, 3))
        with django_capture_on_commit_callbacks(execute=True):
            response = _post(client, catalog, [SimpleUploadedFile("feed.tsv", data)])
        assert "queued" in response.content.decode()
        assert not server.hits  # the web process fetched nothing
        ((catalog_id, stored, name),) = sent
        assert (catalog_id, name) == (catalog.pk, "feed.tsv")
        # What the worker does with it (catalog.sync_feed):
        report = sync.sync_stored(catalog, stored, name)
    assert report.added == 3 and not private_storage().exists(stored)


def test_two_feeds_in_one_upload_are_refused(owner_client: tuple[Client, Any]) -> None:
    client, catalog = owner_client
    response = _post(
        client,
        catalog,
        [SimpleUploadedFile("a.tsv", b"id\ttitle\n1\tA\n"), SimpleUploadedFile("b.xml", RSS)],
    )
    assert "Upload refused: one feed or manifest per upload" in response.content.decode()
    assert not CatalogItem.objects.filter(catalog=catalog).exists()


def test_an_unreadable_feed_is_refused_with_its_reason(owner_client: tuple[Client, Any]) -> None:
    client, catalog = owner_client
    response = _post(client, catalog, [SimpleUploadedFile("feed.xml", b"<rss><channel>")])
    assert "Upload refused: broken XML" in response.content.decode()


@pytest.mark.parametrize(
    ("location", "accepted"),
    [("https://shop.example/feed.tsv", True), ("/etc/passwd", False), ("file:///x", False)],
)
def test_a_shop_admin_gives_a_feed_url_never_a_server_path(
    owner_client: tuple[Client, Any], location: str, accepted: bool
) -> None:
    client, catalog = owner_client
    response = client.post(
        reverse("admin:catalog_catalog_change", args=[catalog.pk]),
        {
            "shop": catalog.shop.pk,
            "name": catalog.name,
            "slug": catalog.slug,
            "description": "",
            "is_public": "on",
            "feed_location": location,
            "feed_interval_minutes": "60",
        },
    )
    catalog.refresh_from_db()
    if accepted:
        assert response.status_code == 302
        assert (catalog.feed_location, catalog.feed_interval_minutes) == (location, 60)
    else:
        assert response.status_code == 200 and "superusers only" in response.content.decode()
        assert catalog.feed_location == ""


def test_sync_feed_command_reads_a_feed_file_and_its_images_beside_it(
    tmp_path: Any, db: None
) -> None:
    from django.core.management import CommandError, call_command

    catalog = CatalogFactory.create()
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(image_bytes("RGB", (9, 9), (1, 200, 3)))
    feed = tmp_path / "feed.tsv"
    feed.write_bytes(
        b"id\ttitle\timage_link\tprice\na\tA\timg/a.png\t3.00 EUR\nb\tB\t../outside.png\t4.00 EUR\n"
    )
    out, err = io.StringIO(), io.StringIO()
    report = tmp_path / "report.json"
    call_command(
        "sync_feed",
        "--catalog",
        catalog.slug,
        str(feed),
        "--no-embed",
        "--report",
        str(report),
        stdout=out,
        stderr=err,
    )
    assert "1 added, 0 updated, 0 unchanged, 0 removed, 1 failed" in out.getvalue()
    assert "row 3 b: image path escapes the feed's folder" in err.getvalue()
    assert '"added": 1' in report.read_text()
    with pytest.raises(CommandError, match="this catalog has none"):
        call_command("sync_feed", "--catalog", catalog.slug)


def test_rest_upload_of_a_feed_beside_its_images(owner_client: tuple[Client, Any]) -> None:
    from rest_framework.test import APIClient

    _, catalog = owner_client
    api = APIClient()
    api.force_authenticate(catalog.shop.admins.get())
    url = f"/api/catalogs/{catalog.slug}/items/"
    feed = b"id\ttitle\timage_link\tprice\nx1\tX\tx.png\t2.50 CHF\n"
    files = [
        SimpleUploadedFile("x.png", image_bytes("RGB", (9, 9), (9, 99, 199))),
        SimpleUploadedFile("feed.tsv", feed),
    ]
    response = api.post(url, {"files": files}, format="multipart")
    assert response.status_code == 201, response.content
    assert (response.json()["added"], response.json()["failed"]) == (1, [])
    broken = api.post(
        url, {"files": [SimpleUploadedFile("feed.xml", b"<rss>")]}, format="multipart"
    )
    assert broken.status_code == 400 and broken.json()["detail"].startswith("broken XML")
