"""Filters said or clicked: prices and the catalog's own values from the dialogue, applied inside
the ranking query, relaxed with a notice when nothing matches, picked and removed as chips."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from catalog.models import Catalog, CatalogItem
from catalog.services import vectors
from catalog.services.item_filters import ItemFilter
from retrieval.models import SearchSession, Turn
from retrieval.turn import filters, payloads, pipeline, submit, text_stage
from tests.browser import (
    CHROMIUM,
    axe_violations,
    chromium,
    live_server,
    off_loop,
    open_stored_search,
)
from tests.factories import (
    CatalogFactory,
    CatalogItemFactory,
    EventRecorder,
    SearchSessionFactory,
)
from workers.models.said_filters import Vocabulary, extract, price_bounds

D = Decimal


# --- parsing (no database) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high", "currency"),
    [
        ("a red dress under 40 euros", None, "40", "EUR"),
        ("less than $30 please", None, "30", "USD"),
        ("between 20 and 50 EUR", "20", "50", "EUR"),
        ("max 25€", None, "25", "EUR"),
        ("25 € max", None, "25", "EUR"),
        ("19,99 € or less", None, "19.99", "EUR"),
        ("no more than £15", None, "15", "GBP"),
        ("at least 100 dollars", "100", None, "USD"),
        ("from 20 to 50 euros", "20", "50", "EUR"),
        ("from 20 euros", "20", None, "EUR"),
        ("over 30", "30", None, ""),
        ("over 1,000 USD", "1000", None, "USD"),
        ("moins de 40 €", None, "40", "EUR"),
        ("unter 40 Euro", None, "40", "EUR"),
        ("menos de 30 euros", None, "30", "EUR"),
        ("a bag under 60", None, "60", ""),
    ],
)
def test_price_phrasings(text: str, low: str | None, high: str | None, currency: str) -> None:
    bounds = price_bounds(text)
    assert bounds is not None
    assert (bounds.low, bounds.high, bounds.currency) == (
        None if low is None else D(low),
        None if high is None else D(high),
        currency,
    )


@pytest.mark.parametrize(
    "text",
    [
        "a table under 40 cm",
        "a 2 euro coin holder",
        "size 38 shoes",
        "iphone 13 case",
        "a dress from 2019",
        "for 2+ people",
    ],
)
def test_numbers_that_are_not_prices(text: str) -> None:
    assert price_bounds(text) is None


VOCAB = Vocabulary(
    {"brand": ["Acme", "Zoë Couture"], "category": ["Apparel > Dresses"], "color": ["red", "blue"]},
    ["EUR", "USD"],
)


def _heard(*messages: str) -> dict[str, Any]:
    found = extract(list(messages), VOCAB).filters
    return {k: (f.values, f.low, f.high, f.currency) for k, f in found.items()}


def test_corrections_replace_and_remove_what_was_said() -> None:
    first = "a red dress under 40 euros"
    assert _heard(first)["price"] == ((), None, D(40), "EUR")
    # The latest bound wins and keeps the currency said before.
    assert _heard(first, "actually under 60")["price"] == ((), None, D(60), "EUR")
    assert _heard(first, "over 20")["price"] == ((), D(20), D(40), "EUR")
    for cleared in ("any price", "no price limit", "price doesn't matter"):
        heard = _heard(first, cleared)
        assert "price" not in heard and heard["color"] == (("red",), None, None, "")
    # A bare bound takes the catalog's main currency.
    assert _heard("under 30")["price"][3] == "EUR"
    # Values: the latest message naming one replaces the earlier; negations name nothing.
    assert _heard(first, "actually blue")["color"] == (("blue",), None, None, "")
    assert "color" not in _heard("a dress, not red")
    assert "color" not in _heard(first, "any colour")
    # Case, accents, plurals and a category path's last part.
    heard = _heard("ZOE COUTURE dresses in stock")
    assert heard["brand"][0] == ("Zoë Couture",)
    assert heard["category"][0] == ("Apparel > Dresses",)
    assert heard["availability"][0] == ("in_stock",)
    # Whole words only: "redwood" is not red, "acmeish" not Acme.
    assert _heard("a redwood acmeish box") == {}
    # A catalog without prices has no price to filter by.
    unpriced = Vocabulary(VOCAB.values, [])
    assert "price" not in extract(["a red dress under 40 euros"], unpriced).filters


# --- with the catalog ------------------------------------------------------------------------


def _item(catalog: Catalog, title: str, price: str | None, **fields: Any) -> CatalogItem:
    return CatalogItemFactory.create(
        catalog=catalog,
        title=title,
        price=None if price is None else D(price),
        currency=fields.pop("currency", "EUR" if price is not None else ""),
        status=CatalogItem.Status.EMBEDDED,
        **fields,
    )


@pytest.mark.django_db
def test_only_the_catalogs_own_values_become_filters() -> None:
    catalog = CatalogFactory.create()
    _item(catalog, "a", "10", brand="Acme", attributes={"color": "red", "size": 38})
    _item(catalog, "b", "12", brand="Bolt", attributes={"color": ["blue", "green"]})
    _item(
        catalog, "c", "9", brand="Gone", availability="out_of_stock", attributes={"color": "pink"}
    )
    # An attribute with a value per item names items (codes, aliases): no filter.
    for n in range(filters.NAMING_MIN_VALUES + 1):
        _item(catalog, f"n{n}", None, attributes={"alias": f"thing {n}"})
    vocab = filters.vocabulary(catalog.pk)
    assert sorted(vocab.values["brand"]) == ["Acme", "Bolt"]  # not the out-of-stock one's
    assert sorted(vocab.values["color"]) == ["blue", "green", "red"]
    assert "size" not in vocab.values and vocab.currencies == ["EUR"]
    assert "alias" not in vocab.values
    wanted = filters.wanted({}, ["a pink Nike dress in green, by bolt"], vocab)
    assert {f.key: f.values for f in wanted} == {"color": ("green",), "brand": ("Bolt",)}


def _embedded_catalog() -> Catalog:
    """Dresses and shirts, red and blue, priced 10-79 EUR (Acme's the cheapest six), plus cheap
    red dresses priced in USD."""
    from catalog.services.embedding import embed_items

    catalog = CatalogFactory.create()
    items = []
    for n in range(24):
        color = "red" if n % 2 == 0 else "blue"
        kind = "dress" if n % 3 else "shirt"
        brand = "Acme" if n < 6 else "Bolt"
        items.append(
            CatalogItemFactory.create(
                catalog=catalog,
                title=f"{color} {kind} {n}",
                price=D(10 + 3 * n),
                currency="EUR",
                brand=brand,
                attributes={"color": color, "kind": kind},
            )
        )
    for n in range(3):
        items.append(
            CatalogItemFactory.create(
                catalog=catalog,
                title=f"red dress usd {n}",
                price=D(5),
                currency="USD",
                attributes={"color": "red", "kind": "dress"},
            )
        )
    result = embed_items([i.pk for i in items])
    assert len(result.embedded) == len(items), result.as_dict()
    return catalog


def _no_tasks(turn: Turn) -> None:
    """The test runs the turn's stages itself."""


@pytest.mark.django_db(transaction=True)
def test_a_red_dress_under_40_euros_returns_only_those_with_their_price(
    turn_models: None, settings: Any
) -> None:
    settings.DAR_RESULTS_K = 3
    catalog = _embedded_catalog()
    session = SearchSessionFactory.create(catalog=catalog)
    turn = submit.submit_message(session, "a red dress under 40 euros", enqueue=_no_tasks)
    active = {f["key"]: f for f in turn.filters["active"]}
    assert set(active) == {"price", "color", "kind"}
    assert (active["price"]["max"], active["price"]["currency"]) == ("40.00", "EUR")
    with EventRecorder(session.pk) as events:
        text_stage.run_text_stage(turn.pk)
        pipeline.run_turn(turn.pk)
        events.wait_for(lambda evs: any(e["type"] == "turn.done" for e in evs))
    turn.refresh_from_db()
    assert turn.status == Turn.Status.DONE
    matching = {
        i.pk
        for i in CatalogItem.objects.filter(
            catalog=catalog, currency="EUR", price__lte=40, attributes__color="red"
        )
        if i.attributes["kind"] == "dress"
    }
    assert len(matching) > settings.DAR_RESULTS_K  # enough match: k come back
    for final in (False, True):
        shown = [r.item_id for r in turn.results.filter(final=final)]
        assert len(shown) == settings.DAR_RESULTS_K and set(shown) <= matching
    payload = payloads.turn_payload(turn)
    assert all(D(r["price"]) <= 40 and r["currency"] == "EUR" for r in payload["results"])
    assert payload["filters"]["active"] and not payload["filters"]["relaxed"]
    # Both stages ranked with them, and the page heard of them first.
    assert events.of("results")[-1]["items"][0]["price"] is not None


@pytest.mark.django_db(transaction=True)
def test_price_filters_compare_in_their_currency_inside_the_query(settings: Any) -> None:
    catalog = _embedded_catalog()
    from workers.models.registry import get_encoder

    encoder = get_encoder()
    query = encoder.encode_texts(["a red dress"])[0]
    k = 10
    cheap_usd = ItemFilter("price", high=D(8), currency="USD")
    hits = vectors.search(
        catalog_id=catalog.pk,
        space="image",
        model_name=encoder.name,
        query=query,
        k=k,
        filters=[cheap_usd],
    )
    # Only the three USD items, although EUR ones cost 10 (and a post-filter would keep fewer).
    assert {h.item_id for h in hits} == set(
        CatalogItem.objects.filter(catalog=catalog, currency="USD").values_list("pk", flat=True)
    )
    # Exact scan, iterative HNSW scan (the filter inside the query), and by the matching ids.
    for exact, exact_max in ((True, 0), (False, 0), (False, 1000)):
        settings.DAR_FILTER_EXACT_MAX = exact_max
        blue_shirts = vectors.search(
            catalog_id=catalog.pk,
            space="image",
            model_name=encoder.name,
            query=query,
            k=k,
            exact=exact,
            filters=[ItemFilter("color", ("blue",)), ItemFilter("kind", ("shirt",))],
        )
        expected = {
            i.pk
            for i in CatalogItem.objects.filter(catalog=catalog, attributes__color="blue")
            if i.attributes["kind"] == "shirt"
        }
        # Fewer match than k: every one of them, best first.
        assert 0 < len(expected) < k and {h.item_id for h in blue_shirts} == expected
        scores = [h.score for h in blue_shirts]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.django_db(transaction=True)
def test_when_nothing_matches_the_least_certain_filter_is_relaxed_and_said(
    offline_models: Any,
) -> None:
    catalog = _embedded_catalog()
    session = SearchSessionFactory.create(catalog=catalog)
    with EventRecorder(session.pk) as events:
        # Acme only makes items 0-5 (10-35 EUR): no blue Acme shirt under 12 EUR exists.
        turn = submit.submit_message(session, "a blue Acme shirt under 12 euros", enqueue=_no_tasks)
        events.wait_for(lambda evs: any(e["type"] == "notice" for e in evs))
    relaxed = [f["key"] for f in turn.filters["relaxed"]]
    # Word matches go first (attributes, then brand); the explicit price goes last.
    assert relaxed[0] in ("color", "kind") and "price" not in relaxed
    notice = events.of("notice")[0]
    assert notice["code"] == "filters_relaxed" and "showing results without" in notice["message"]
    assert turn.filters["notice"] == notice["message"]
    kept = filters.item_filters(turn.filters)
    assert kept and filters._any_match(
        catalog.pk, [filters.Filter.from_dict(f) for f in turn.filters["active"]]
    )
    accepted = events.of("turn.accepted")[0]
    assert accepted["filters"]["relaxed"] == filters.payload(turn.filters)["relaxed"]


@pytest.mark.django_db(transaction=True)
def test_a_removed_chip_stays_removed_until_said_again(offline_models: Any) -> None:
    catalog = _embedded_catalog()
    session = SearchSessionFactory.create(catalog=catalog)
    first = submit.submit_message(session, "a red dress under 40 euros", enqueue=_no_tasks)
    assert "price" in {f["key"] for f in first.filters["active"]}

    state, again = submit.change_filters(session, {"remove": ["price"]}, enqueue=_no_tasks)
    assert state["removed"] == ["price"] and again is not None
    # The same dialogue searched again, without the price.
    assert (again.index, again.message, again.context) == (1, first.message, first.context)
    assert "price" not in {f["key"] for f in again.filters["active"]}
    assert again.filters["again"] and not first.filters["again"]
    later = submit.submit_message(session, "with long sleeves", enqueue=_no_tasks)
    assert "price" not in {f["key"] for f in later.filters["active"]}
    said = submit.submit_message(session, "under 50 euros", enqueue=_no_tasks)
    price = next(f for f in said.filters["active"] if f["key"] == "price")
    assert price["max"] == "50.00" and price["source"] == "said"

    # Picking a brand holds over later messages until one says otherwise.
    state, picked = submit.change_filters(
        session, {"set": [{"key": "brand", "values": ["acme"]}]}, enqueue=_no_tasks
    )
    assert state["picked"][0]["values"] == ["Acme"] and picked is not None
    brand = next(f for f in picked.filters["active"] if f["key"] == "brand")
    assert brand["source"] == "picked"
    keep = submit.submit_message(session, "red please", enqueue=_no_tasks)
    assert any(f["key"] == "brand" for f in keep.filters["active"])
    dropped = submit.submit_message(session, "any brand", enqueue=_no_tasks)
    assert not any(f["key"] == "brand" for f in dropped.filters["active"])

    # A restatement starts the dialogue again: its own words are all that was said.
    submit.change_filters(session, {"remove": ["color"]}, enqueue=_no_tasks)
    restated = submit.submit_message(
        session, "a red dress under 30 euros", enqueue=_no_tasks, restate=True
    )
    active = {f["key"]: f for f in restated.filters["active"]}
    assert restated.context == ["a red dress under 30 euros"]
    assert active["price"]["max"] == "30.00" and active["color"]["values"] == ["red"]


# --- REST ------------------------------------------------------------------------------------


def _shopper(slug: str) -> APIClient:
    client = APIClient(enforce_csrf_checks=True)
    assert client.get(f"/search/{slug}/").status_code == 200
    client.credentials(HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    return client


@pytest.mark.django_db(transaction=True)
def test_rest_takes_explicit_filters_and_refuses_bad_ones(
    offline_models: Any, monkeypatch: Any, redis_client: Any
) -> None:
    monkeypatch.setattr(submit, "_send_tasks", _no_tasks)
    for key in redis_client.scan_iter(f"{settings.REDIS_PREFIX}:ratelimit:*"):
        redis_client.delete(key)
    catalog = _embedded_catalog()
    client = _shopper(catalog.slug)
    created = client.post("/api/search/sessions/", {"catalog": catalog.slug}, format="json")
    session_id = created.json()["id"]
    assert created.json()["filters"] == {"picked": [], "removed": []}
    base = f"/api/search/sessions/{session_id}"

    bad = [
        ({"set": [{"key": "flavour", "values": ["sweet"]}]}, "flavour"),
        ({"set": [{"key": "brand", "values": ["Nike"]}]}, "Nike"),
        ({"set": [{"key": "color", "values": ["purple"]}]}, "purple"),
        ({"set": [{"key": "price", "max": -5}]}, "negative"),
        ({"set": [{"key": "price", "max": "cheap"}]}, "number"),
        ({"set": [{"key": "price", "max": True}]}, "number"),
        ({"set": [{"key": "price", "min": 50, "max": 10}]}, "above"),
        ({"set": [{"key": "price", "max": 10, "currency": "JPY"}]}, "currency"),
        ({"remove": ["nothing"]}, "nothing"),
        ("brand=Acme", ""),  # not an object: "Send filters as {...}" or "Send a JSON object"
    ]
    for body, said in bad:
        for path, data in (
            (f"{base}/messages/", {"text": "a dress", "filters": body}),
            (f"{base}/filters/", body),
        ):
            answer = client.post(path, data, format="json")
            assert answer.status_code == 400, (path, body, answer.content)
            assert answer.json()["code"] in ("bad_filter", "invalid")
            assert said.lower() in answer.json()["message"].lower(), answer.json()
    assert not Turn.objects.filter(session_id=session_id).exists()
    assert SearchSession.objects.get(pk=session_id).filters == {}

    # Before any message: the filters wait for it.
    early = client.post(f"{base}/filters/", {"set": [{"key": "price", "max": 40}]}, format="json")
    assert early.status_code == 200 and early.json()["turn"] is None
    assert early.json()["filters"]["picked"][0]["max"] == "40.00"

    answer = client.post(
        f"{base}/messages/",
        {"text": "a dress", "filters": {"set": [{"key": "brand", "values": ["BOLT"]}]}},
        format="json",
    )
    assert answer.status_code == 202, answer.content
    active = {f["key"]: f for f in answer.json()["filters"]["active"]}
    assert active["brand"]["values"] == ["Bolt"] and active["brand"]["source"] == "picked"
    assert active["price"]["max"] == "40.00" and active["price"]["currency"] == "EUR"

    removed = client.post(f"{base}/filters/", {"remove": ["brand"]}, format="json")
    assert removed.status_code == 202, removed.content
    assert removed.json()["turn"]["index"] == 1
    assert "brand" not in {f["key"] for f in removed.json()["turn"]["filters"]["active"]}
    session = client.get(f"{base}/").json()
    assert session["filters"]["removed"] == ["brand"]
    assert session["turns"][1]["filters"] == removed.json()["turn"]["filters"]


# --- the page --------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")
def test_the_page_shows_chips_removes_one_and_picks_a_facet(
    transactional_db: None, monkeypatch: Any
) -> None:
    monkeypatch.setattr(submit, "_send_tasks", _no_tasks)  # no workers: the turns stay queued
    said = "a red product under 45 euros"

    def make_products(session_id: uuid.UUID) -> None:
        items = list(CatalogItem.objects.filter(catalog__slug="shapes").order_by("pk"))
        for n, item in enumerate(items):
            item.price, item.currency = D("39.90") + n, "EUR"
            item.brand = "ACME" if n % 2 else "Bolt"
            item.attributes = {"color": "red" if n % 3 else "blue"}
            item.save()
        turn = Turn.objects.get(session_id=session_id, index=0)
        turn.message, turn.context = said, [said]
        turn.filters = filters.for_turn(turn.session.catalog_id, {}, turn.context)
        turn.save()

    def chips(page: Any) -> list[str]:
        return [t.strip() for t in page.locator("#filter-chips .chip-label").all_inner_texts()]

    with chromium() as browser, live_server() as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-GB")
        session_id = uuid.UUID(open_stored_search(page, server, wait=False))
        off_loop(lambda: make_products(session_id))
        page.reload()
        page.wait_for_selector("#filter-chips .chip >> nth=1", timeout=30_000)
        assert sorted(chips(page)) == ["color: red", "under 45.00 EUR"]
        assert not axe_violations(page)

        page.get_by_role("button", name="Remove filter: under 45.00 EUR").click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#filter-chips .chip-label')]"
            ".every((c) => !c.textContent.includes('EUR'))",
            timeout=30_000,
        )
        assert chips(page) == ["color: red"]
        # The chat says the search ran again (the shopper said nothing new).
        page.wait_for_selector("#chat-log .bubble.again", timeout=30_000)
        stored = off_loop(lambda: SearchSession.objects.get(pk=session_id).filters)
        assert list(stored["removed"]) == ["price"]
        again = off_loop(lambda: Turn.objects.get(session_id=session_id, index=1))
        assert again.context == [said] and not any(
            f["key"] == "price" for f in again.filters["active"]
        )

        # The turn stays queued without workers: end it, then pick a brand in the picker.
        off_loop(lambda: Turn.objects.filter(session_id=session_id).update(status="done"))
        page.reload()
        page.wait_for_selector("#filter-chips .chip", timeout=30_000)
        page.locator("#filter-picker summary").click()
        page.select_option("#filter-key", "brand")
        page.select_option("#filter-value", "ACME")
        page.locator("#filter-apply").click()
        page.wait_for_selector("#filter-chips .chip[data-source='picked']", timeout=30_000)
        assert sorted(chips(page)) == ["brand: ACME", "color: red"]
        assert off_loop(lambda: Turn.objects.filter(session_id=session_id).count()) == 3
