"""Product data on items: ids unique per catalog, prices with ISO 4217 currencies, availability;
facets from what was imported; results show price, availability and the product page, and
out-of-stock items never rank (filtered inside the ranking SQL, not after it)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from django.db import IntegrityError, transaction
from rest_framework.test import APIClient

from catalog.models import CatalogItem
from catalog.services import facets, feeds, vectors
from retrieval.turn import payloads
from tests.browser import CHROMIUM, chromium, live_server, off_loop, open_stored_search
from tests.factories import CatalogFactory, CatalogItemFactory, png_bytes, shop_admin

pytestmark = pytest.mark.django_db

OUT = CatalogItem.Availability.OUT_OF_STOCK


def test_product_ids_are_unique_per_catalog_and_products_may_share_a_picture() -> None:
    catalog, other = CatalogFactory.create(), CatalogFactory.create()
    same = png_bytes((1, 2, 3))
    CatalogItemFactory.create(catalog=catalog, product_id="P1", image_bytes=same)
    CatalogItemFactory.create(catalog=catalog, product_id="P2", image_bytes=same)  # a variant
    CatalogItemFactory.create(catalog=other, product_id="P1")
    with pytest.raises(IntegrityError), transaction.atomic():
        CatalogItemFactory.create(catalog=catalog, product_id="P1")
    # Plain pictures (no product id) stay keyed by their bytes.
    CatalogItemFactory.create(catalog=catalog, image_bytes=png_bytes((9, 9, 9)))
    with pytest.raises(IntegrityError), transaction.atomic():
        CatalogItemFactory.create(catalog=catalog, image_bytes=png_bytes((9, 9, 9)))


@pytest.mark.parametrize("code", ["EUR", "usd", " gbp "])
def test_iso_4217_currencies_are_accepted(code: str) -> None:
    assert feeds.currency(code) == code.strip().upper()


@pytest.mark.parametrize("code", ["EURO", "XXX", "E", "", "€"])
def test_other_currencies_are_refused(code: str) -> None:
    with pytest.raises(feeds.RowRejected, match="unknown currency"):
        feeds.currency(code)


def test_prices_are_exact_decimals() -> None:
    assert feeds.parse_price("19.99 EUR") == (Decimal("19.99"), "EUR")
    assert feeds.parse_price("0.1", "JPY") == (Decimal("0.10"), "JPY")
    with pytest.raises(feeds.RowRejected, match="unreadable price"):
        feeds.parse_price("free")


def test_facets_are_computed_from_the_available_items() -> None:
    catalog = CatalogFactory.create()
    rows = [
        ({"color": "red", "size": ["S", "M"], "weight": 1.5}, "ACME", "in_stock"),
        ({"color": "red", "size": ["M"], "weight": 3}, "ACME", "preorder"),
        ({"color": "blue", "organic": True}, "Other", "in_stock"),
        ({"color": "green", "weight": 99}, "Gone", OUT),  # out of stock: not offered
    ]
    for i, (attributes, brand, availability) in enumerate(rows):
        CatalogItemFactory.create(
            catalog=catalog,
            product_id=f"p{i}",
            attributes=attributes,
            brand=brand,
            availability=availability,
            price=Decimal(10 * (i + 1)),
            currency="EUR",
        )
    found = {f.name: f.as_dict() for f in facets.catalog_facets(catalog)}
    assert found["color"]["type"] == "text"
    assert found["color"]["values"] == [{"value": "red", "items": 2}, {"value": "blue", "items": 1}]
    assert found["size"]["values"] == [{"value": "M", "items": 2}, {"value": "S", "items": 1}]
    assert (found["weight"]["type"], found["weight"]["min"], found["weight"]["max"]) == (
        "number",
        1.5,
        3.0,
    )
    assert found["organic"]["type"] == "boolean"
    assert found["brand"]["values"] == [
        {"value": "ACME", "items": 2},
        {"value": "Other", "items": 1},
    ]
    assert (found["price_eur"]["min"], found["price_eur"]["max"]) == (10.0, 30.0)
    assert "Gone" not in str(found)

    owner = APIClient()
    owner.force_authenticate(shop_admin(catalog.shop, is_staff=True))
    body = owner.get(f"/api/catalogs/{catalog.slug}/facets/").json()
    assert [f["name"] for f in body["facets"]] == list(found)


def test_result_payloads_show_price_availability_and_open_the_product_page() -> None:
    product = CatalogItemFactory.create(
        product_id="P1",
        title="Red dress",
        product_url="https://shop.example/p1",
        price=Decimal("39.90"),
        currency="EUR",
        availability="backorder",
        brand="ACME",
    )
    shown = payloads.item_payload(product, score=0.5, rank=1)
    assert (shown["url"], shown["price"], shown["currency"], shown["availability"]) == (
        "https://shop.example/p1",
        "39.90",
        "EUR",
        "backorder",
    )
    picture = CatalogItemFactory.create(title="Just a picture")
    plain = payloads.item_payload(picture, score=0.5, rank=2)
    assert plain["url"] == plain["image"] == payloads.image_url(picture.image)
    assert plain["price"] is None and plain["availability"] == "in_stock"


def test_rest_item_listing_shows_product_fields() -> None:
    item = CatalogItemFactory.create(product_id="P9", price=Decimal("5.00"), currency="USD")
    owner = APIClient()
    owner.force_authenticate(shop_admin(item.catalog.shop, is_staff=True))
    (row,) = owner.get(f"/api/catalogs/{item.catalog.slug}/items/").json()["results"]
    assert (row["product_id"], row["price"], row["currency"], row["availability"]) == (
        "P9",
        "5.00",
        "USD",
        "in_stock",
    )


def _catalog_with_vectors(n: int) -> tuple[int, list[CatalogItem], np.ndarray]:
    catalog = CatalogFactory.create()
    items = [CatalogItemFactory.create(catalog=catalog, product_id=f"p{i}") for i in range(n)]
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vectors.store(
        "image", "enc", [(it.pk, catalog.pk, v) for it, v in zip(items, vecs, strict=True)]
    )
    vectors.store(
        "text", "txt", [(it.pk, catalog.pk, v) for it, v in zip(items, vecs, strict=True)]
    )
    return catalog.pk, items, vecs[0]


@pytest.mark.parametrize("exact", [True, False])
def test_out_of_stock_items_never_rank_and_k_results_still_come_back(exact: bool) -> None:
    catalog_id, _items, query = _catalog_with_vectors(40)
    before = vectors.search(
        catalog_id=catalog_id, space="image", model_name="enc", query=query, k=10, exact=exact
    )
    # The best half of the ranking goes out of stock: a post-filter would return 5.
    gone = [hit.item_id for hit in before[:5]]
    CatalogItem.objects.filter(pk__in=gone).update(availability=OUT)
    after = vectors.search(
        catalog_id=catalog_id, space="image", model_name="enc", query=query, k=10, exact=exact
    )
    assert len(after) == 10 and not set(gone) & {h.item_id for h in after}
    assert [h.item_id for h in after[:5]] == [h.item_id for h in before[5:]]


def test_out_of_stock_items_never_rank_with_product_text() -> None:
    catalog_id, items, query = _catalog_with_vectors(20)
    CatalogItem.objects.filter(pk=items[0].pk).update(availability=OUT)
    hits = vectors.search_with_product_text(
        catalog_id=catalog_id,
        model_name="enc",
        query=query,
        text_model="txt",
        text_query=query,
        text_weight=0.5,
        k=20,
    )
    assert len(hits) == 19 and items[0].pk not in {h.item_id for h in hits}


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")
def test_search_page_cards_show_price_availability_and_open_the_product_page(
    transactional_db: None, tmp_path: Path
) -> None:
    def make_products() -> None:
        items = list(CatalogItem.objects.filter(catalog__slug="shapes").order_by("pk"))
        for n, item in enumerate(items):
            item.product_id = f"P{n}"
            item.product_url = f"https://shop.example/p/{n}"
            item.price, item.currency = Decimal("39.90") + n, "EUR"
            item.availability = "preorder" if n == 1 else "in_stock"
            item.brand = "ACME"
            item.save()

    with chromium() as browser, live_server() as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-GB")
        open_stored_search(page, server, wait=False)
        off_loop(make_products)
        page.reload()
        page.wait_for_selector("#results .result-card >> nth=23", timeout=30_000)
        first, second = (
            page.locator("#results .result-card").nth(0),
            page.locator("#results .result-card").nth(1),
        )
        assert first.locator(".result-price").inner_text() == "€39.90"
        assert "In stock" in first.locator(".result-offer").inner_text()
        assert "Pre-order" in second.locator(".result-offer").inner_text()
        assert first.locator("a.result-open").get_attribute("href") == "https://shop.example/p/0"
        page.screenshot(path=str(tmp_path / "product-cards.png"))  # to look at (--basetemp)
