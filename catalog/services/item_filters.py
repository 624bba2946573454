"""Filters over a catalog's items, as SQL that runs inside the ranking query itself.

A filter is a price range in one currency, a set of availability values, or a set of values of a
text facet (brand, category, or an attribute). ``condition`` gives the SQL (a correlated
``EXISTS`` on the item's primary key) that ``vectors.search`` puts in the WHERE of the pgvector
query: with the HNSW index, iterative scans keep reading candidates until k of them pass, so a
filter never returns fewer results than asked while enough items match. Prices compare in the
filter's currency: an item priced in another currency does not match a price filter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from catalog.models import CatalogItem

_ITEMS = CatalogItem._meta.db_table
PRICE = "price"
# Product fields that are columns; any other key is an attribute (a key of ``attributes``).
COLUMNS = ("availability", "brand", "category")


@dataclass(frozen=True)
class ItemFilter:
    key: str
    values: tuple[str, ...] = ()
    low: Decimal | None = None
    high: Decimal | None = None
    currency: str = ""

    @property
    def is_price(self) -> bool:
        return self.key == PRICE


def _one(f: ItemFilter) -> tuple[str, list[Any]]:
    if f.is_price:
        sql = "f.price IS NOT NULL AND f.currency = %s"
        params: list[Any] = [f.currency]
        if f.low is not None:
            sql += " AND f.price >= %s"
            params.append(f.low)
        if f.high is not None:
            sql += " AND f.price <= %s"
            params.append(f.high)
        return sql, params
    if f.key in COLUMNS:
        return f"f.{f.key} = ANY(%s)", [list(f.values)]
    # A string attribute or a list of strings: ``?|`` matches either.
    return "(f.attributes -> %s) ?| %s::text[]", [f.key, list(f.values)]


def item_condition(filters: Sequence[ItemFilter]) -> tuple[str, list[Any]]:
    """The filters' conditions on an items row aliased ``f`` (ANDed), with their params."""
    parts: list[str] = []
    params: list[Any] = []
    for f in filters:
        sql, more = _one(f)
        parts.append(f"({sql})")
        params.extend(more)
    return " AND ".join(parts), params


def condition(filters: Sequence[ItemFilter], column: str) -> tuple[str, list[Any]]:
    """`` AND EXISTS (...)``: the item whose id is in ``column`` passes every filter; empty SQL
    for no filters. Correlated on the primary key, so each candidate costs one index lookup."""
    if not filters:
        return "", []
    where, params = item_condition(filters)
    return f" AND EXISTS (SELECT 1 FROM {_ITEMS} f WHERE f.id = {column} AND {where})", params
