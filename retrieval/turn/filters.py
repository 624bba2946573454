"""A turn's filters: what the shopper said (``workers.models.said_filters``) and clicked, checked
against the catalog's own facets, relaxed when nothing matches them all.

Decided once per turn, when the message is stored (``submit``), and kept on the turn
(``Turn.filters``): both of its stages rank with the same filters (``ranking``), the events
and the REST payloads show them, and the evaluation, which runs the same turn services, ranks
with them too.

Said and clicked: a filter the shopper clicks ("picked") holds until a later message says
otherwise (a message's own words win over a click made before it); a chip the shopper removes
stays removed until a later message says it again. Both are kept on the session
(``SearchSession.filters``) with ``at``, the number of messages before the click.

Relaxing: when no available item passes every filter, the least certain one goes first (a word
that happened to match an attribute value, then category, brand, availability, and an explicit
price last; what was clicked goes after everything said), and the turn says so (``notice``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Max

from catalog.models import Catalog, CatalogItem
from catalog.services.facets import Facet, catalog_facets
from catalog.services.item_filters import ItemFilter, item_condition
from retrieval.services.errors import SearchError
from workers.models import said_filters
from workers.models.said_filters import AVAILABILITY, PRICE, Vocabulary, fold

SAID, PICKED = "said", "picked"
# Availability values a shopper may ask for (out-of-stock items are never shown).
AVAILABLE = ("in_stock", "preorder", "backorder")
AVAILABILITY_LABELS = {"in_stock": "in stock", "preorder": "pre-order", "backorder": "backorder"}
# How sure we are that the shopper meant it: the least sure is relaxed first.
_CERTAINTY = {"category": 1, "brand": 2, AVAILABILITY: 3, PRICE: 4}
# Every value of every facet is needed to recognise and check them (the facets list 50).
VOCABULARY_VALUES = 5000
VOCABULARY_SECONDS = 60
# An attribute with more distinct values than this and than half its items is a name (see
# ``_names_items``).
NAMING_MIN_VALUES = 20
MAX_FILTERS = 20
MAX_VALUES = 50
MAX_PRICE = Decimal("9999999999.99")  # CatalogItem.price: 12 digits, 2 decimals


@dataclass(frozen=True)
class Filter:
    key: str
    values: tuple[str, ...] = ()
    low: Decimal | None = None
    high: Decimal | None = None
    currency: str = ""
    source: str = SAID
    at: int = 0

    @property
    def certainty(self) -> int:
        return _CERTAINTY.get(self.key, 0) + (10 if self.source == PICKED else 0)

    def item_filter(self) -> ItemFilter:
        return ItemFilter(self.key, self.values, self.low, self.high, self.currency)

    def label(self) -> str:
        if self.key == PRICE:
            unit = f" {self.currency}" if self.currency else ""
            if self.low is not None and self.high is not None:
                return f"{self.low:.2f} to {self.high:.2f}{unit}"
            if self.high is not None:
                return f"under {self.high:.2f}{unit}"
            return f"over {self.low:.2f}{unit}"
        if self.key == AVAILABILITY:
            return " or ".join(AVAILABILITY_LABELS.get(v, v) for v in self.values)
        return f"{self.key.replace('_', ' ')}: {' or '.join(self.values)}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "values": list(self.values),
            "min": None if self.low is None else f"{self.low:.2f}",
            "max": None if self.high is None else f"{self.high:.2f}",
            "currency": self.currency,
            "source": self.source,
            "label": self.label(),
        }

    def stored(self) -> dict[str, Any]:
        return {**self.as_dict(), "at": self.at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Filter:
        def number(value: Any) -> Decimal | None:
            return None if value is None else Decimal(str(value))

        return cls(
            key=str(data["key"]),
            values=tuple(str(v) for v in data.get("values") or ()),
            low=number(data.get("min")),
            high=number(data.get("max")),
            currency=str(data.get("currency") or ""),
            source=str(data.get("source") or SAID),
            at=int(data.get("at") or 0),
        )


# --- the catalog's vocabulary --------------------------------------------------------------------


def vocabulary(catalog_id: int) -> Vocabulary:
    """Text facets (brand, category, text attributes) with every value, and the currencies by
    use; cached briefly, keyed by the catalog's item count and latest change."""
    version = CatalogItem.objects.filter(catalog_id=catalog_id).aggregate(
        n=Count("id"), changed=Max("updated_at")
    )
    changed = version["changed"].timestamp() if version["changed"] else 0
    key = f"filters:vocabulary:{catalog_id}:{version['n']}:{changed}"
    found = cache.get(key)
    if isinstance(found, Vocabulary):
        return found
    values: dict[str, list[str]] = {}
    prices: list[tuple[int, str]] = []
    for facet in catalog_facets(Catalog(pk=catalog_id), max_values=VOCABULARY_VALUES):
        if facet.type == "number" and (facet.name == PRICE or facet.name.startswith("price_")):
            # facets.py names price facets price_<currency> (plain "price": no currency given).
            prices.append((facet.items, facet.name.removeprefix(PRICE).removeprefix("_").upper()))
        elif facet.type == "text" and facet.name != AVAILABILITY and not _names_items(facet):
            values[facet.name] = [str(v) for v, _ in facet.values]
    currencies = [code for _, code in sorted(prices, key=lambda p: (-p[0], p[1]))]
    found = Vocabulary(values, currencies)
    cache.set(key, found, VOCABULARY_SECONDS)
    return found


def _names_items(facet: Facet) -> bool:
    """An attribute with about one value per item (codes, aliases, names) names items rather
    than grouping them: its values are no filters (the search itself finds a named item)."""
    if facet.name in ("brand", "category"):
        return False
    return facet.distinct > max(NAMING_MIN_VALUES, facet.items // 2)


# --- what the shopper clicks: checked, or a clear 400 -------------------------------------------


@dataclass(frozen=True)
class Change:
    """Filters set (each replaces any filter of its key) and keys removed."""

    set: list[Filter] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.set or self.remove)


def _bad(message: str) -> SearchError:
    return SearchError("bad_filter", message)


def _keys(vocab: Vocabulary) -> list[str]:
    return [PRICE, AVAILABILITY, *vocab.values]


def _price(raw: Any, name: str) -> Decimal | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise _bad(f'The price filter\'s {name} must be a number, e.g. 40 or "39.90".')
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise _bad(f"The price filter's {name} must be a number, not {str(raw)[:40]!r}.") from None
    if not value.is_finite() or (isinstance(raw, float) and not math.isfinite(raw)):
        raise _bad(f"The price filter's {name} must be a finite number.")
    if value < 0:
        raise _bad(f"The price filter's {name} cannot be negative ({value}).")
    if value > MAX_PRICE:
        raise _bad(f"The price filter's {name} is too large.")
    return value.quantize(Decimal("0.01"))


def _checked(raw: Any, vocab: Vocabulary, at: int) -> Filter:
    if not isinstance(raw, dict):
        raise _bad('Each filter is an object such as {"key": "brand", "values": ["Acme"]}.')
    key = raw.get("key")
    if not isinstance(key, str) or key not in _keys(vocab):
        shown = str(key)[:60] if key is not None else "(none)"
        raise _bad(
            f"{shown!r} is not a filter of this catalog; use one of: {', '.join(_keys(vocab))}."
        )
    if key == PRICE:
        low, high = _price(raw.get("min"), "min"), _price(raw.get("max"), "max")
        if low is None and high is None:
            raise _bad('A price filter needs "min", "max" or both.')
        if low is not None and high is not None and low > high:
            raise _bad(f"The price filter's min ({low}) is above its max ({high}).")
        currency = raw.get("currency") or (vocab.currencies[0] if vocab.currencies else "")
        if not isinstance(currency, str) or currency.upper() not in vocab.currencies:
            known = ", ".join(c for c in vocab.currencies if c) or "none"
            raise _bad(f"{str(currency)[:10]!r} is not a currency of this catalog ({known}).")
        return Filter(PRICE, (), low, high, currency.upper(), PICKED, at)
    values = raw.get("values")
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not values or len(values) > MAX_VALUES:
        raise _bad(f'The {key} filter needs "values": a list of 1 to {MAX_VALUES} of its values.')
    allowed = list(AVAILABLE) if key == AVAILABILITY else vocab.values[key]
    by_fold = {fold(v): v for v in allowed}
    chosen = []
    for value in values:
        match = by_fold.get(fold(value)) if isinstance(value, str) else None
        if match is None:
            raise _bad(f"{str(value)[:60]!r} is not a {key} of this catalog.")
        chosen.append(match)
    return Filter(key, tuple(dict.fromkeys(chosen)), source=PICKED, at=at)


def parse_change(catalog_id: int, raw: Any, at: int) -> Change:
    """``{"set": [filter, ...], "remove": [key, ...]}`` checked against the catalog's facets;
    ``SearchError("bad_filter")`` (400) says what is wrong. ``at``: messages before the change."""
    if raw is None:
        return Change()
    if not isinstance(raw, dict) or set(raw) - {"set", "remove"}:
        raise _bad('Send filters as {"set": [{"key": ..., ...}], "remove": ["key", ...]}.')
    wanted, removed = raw.get("set") or [], raw.get("remove") or []
    if not isinstance(wanted, list) or not isinstance(removed, list):
        raise _bad('"set" and "remove" are lists.')
    if len(wanted) + len(removed) > MAX_FILTERS:
        raise _bad(f"At most {MAX_FILTERS} filters at a time.")
    vocab = vocabulary(catalog_id)
    chosen = [_checked(f, vocab, at) for f in wanted]
    for key in removed:
        if not isinstance(key, str) or key not in _keys(vocab):
            raise _bad(f"{str(key)[:60]!r} is not a filter of this catalog.")
    return Change(chosen, list(dict.fromkeys(removed)))


def changed_state(state: dict[str, Any], change: Change, at: int) -> dict[str, Any]:
    """The session's filter state after a change made after ``at`` messages."""
    picked = [Filter.from_dict(f) for f in state.get("picked") or []]
    removed = dict(state.get("removed") or {})
    gone = {f.key for f in change.set} | set(change.remove)
    picked = [f for f in picked if f.key not in gone] + list(change.set)
    for key in change.remove:
        removed[key] = at
    for f in change.set:
        removed.pop(f.key, None)
    return {"picked": [f.stored() for f in picked], "removed": removed}


def restarted(state: dict[str, Any]) -> dict[str, Any]:
    """The state when the dialogue starts again (a restatement): picks count from its start and
    removed chips come back if it says them."""
    picked = [{**f, "at": 0} for f in state.get("picked") or []]
    return {"picked": picked, "removed": {}}


def state_payload(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "picked": [Filter.from_dict(f).as_dict() for f in state.get("picked") or []],
        "removed": sorted(state.get("removed") or {}),
    }


# --- a turn's filters ----------------------------------------------------------------------------


def _from_said(said: said_filters.Said) -> Filter:
    return Filter(said.key, said.values, said.low, said.high, said.currency, SAID, said.at)


def wanted(state: dict[str, Any], context: Sequence[str], vocab: Vocabulary) -> list[Filter]:
    """What the dialogue and the clicks ask for, before any relaxing."""
    heard = said_filters.extract(list(context), vocab)
    removed = state.get("removed") or {}
    chosen: dict[str, Filter] = {}
    for key, said in heard.filters.items():
        if said.at >= int(removed.get(key, -1)):
            chosen[key] = _from_said(said)
    for f in (Filter.from_dict(f) for f in state.get("picked") or []):
        if heard.cleared.get(f.key, -1) >= f.at:
            continue  # "any brand" said after the click
        said_now = chosen.get(f.key)
        if said_now is None or said_now.at < f.at:
            chosen[f.key] = f
    return sorted(chosen.values(), key=lambda f: (-f.certainty, f.key))


def _any_match(catalog_id: int, filters: Sequence[Filter]) -> bool:
    where, params = item_condition([f.item_filter() for f in filters])
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT EXISTS (SELECT 1 FROM {CatalogItem._meta.db_table} f"
            " WHERE f.catalog_id = %s AND f.status = %s AND f.availability <> %s"
            + (f" AND {where}" if where else "")
            + ")",
            [
                catalog_id,
                CatalogItem.Status.EMBEDDED,
                CatalogItem.Availability.OUT_OF_STOCK,
                *params,
            ],
        )
        return bool(cursor.fetchone()[0])


def for_turn(
    catalog_id: int, state: dict[str, Any], context: Sequence[str], *, again: bool = False
) -> dict[str, Any]:
    """A turn's ``filters``: ``active`` (ranked with), ``relaxed``, the ``notice``, and
    ``again``: the turn searches the latest message again because the filters changed."""
    active = wanted(state, context, vocabulary(catalog_id))
    relaxed: list[Filter] = []
    # Nothing to relax towards in a catalog with no available item at all.
    if active and not _any_match(catalog_id, active) and _any_match(catalog_id, []):
        relaxed.append(active.pop())  # the least certain is last
        while active and not _any_match(catalog_id, active):
            relaxed.append(active.pop())
    notice = ""
    if relaxed:
        notice = (
            f"Nothing matches {_listed(active + relaxed)}; "
            f"showing results without {_listed(relaxed)}."
        )
    return {
        "active": [f.as_dict() | {"at": f.at} for f in active],
        "relaxed": [f.as_dict() for f in relaxed],
        "notice": notice,
        "again": again,
    }


def _listed(filters: Sequence[Filter]) -> str:
    labels = [f"“{f.label()}”" for f in filters]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def item_filters(turn_filters: dict[str, Any]) -> list[ItemFilter]:
    """What ``ranking.rank`` filters a turn's candidates by."""
    return [Filter.from_dict(f).item_filter() for f in (turn_filters or {}).get("active") or []]


def payload(turn_filters: dict[str, Any]) -> dict[str, Any]:
    """A turn's filters as the events and the REST API show them."""
    data = turn_filters or {}
    return {
        "active": [_shown(f) for f in data.get("active") or []],
        "relaxed": [_shown(f) for f in data.get("relaxed") or []],
        "notice": str(data.get("notice") or ""),
        "again": bool(data.get("again")),
    }


def _shown(stored: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stored.items() if k != "at"}  # "at" is bookkeeping
