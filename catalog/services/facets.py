"""A catalog's facets: the attribute names, their types and the values seen, from its items.

Computed when asked, in one grouped query over the items' ``attributes`` (jsonb), not stored:
a stored copy would have to be kept right by every write path (feed syncs, uploads, the admin's
edits, deletions) and would drift; the query reads one catalog's rows (catalog-sized, indexed by
catalog) and a caller that asks often (the filters) can cache it per sync. Only items that are
not out of stock count, so a facet never offers a value no shopper can find.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import connection

from catalog.models import Catalog, CatalogItem

# Values listed per facet (the most frequent first); the count of distinct values is exact.
MAX_VALUES = 50
_ITEMS = CatalogItem._meta.db_table


@dataclass
class Facet:
    name: str
    type: str  # "text", "number", "boolean" (a list attribute counts each element)
    items: int  # items having it
    distinct: int
    values: list[tuple[Any, int]] = field(default_factory=list)  # (value, items)
    min: float | None = None  # numbers only
    max: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "items": self.items,
            "distinct": self.distinct,
            "values": [{"value": v, "items": n} for v, n in self.values],
        }
        if self.type == "number":
            out |= {"min": self.min, "max": self.max}
        return out


_SQL = f"""
WITH kv AS (
    SELECT i.id, a.key, CASE WHEN jsonb_typeof(a.value) = 'array' THEN e.value ELSE a.value END
        AS value
    FROM {_ITEMS} i
    CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(i.attributes) = 'object'
        THEN i.attributes ELSE '{{}}'::jsonb END) AS a
    LEFT JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(a.value) = 'array'
        THEN a.value ELSE '[]'::jsonb END) AS e ON true
    WHERE i.catalog_id = %s AND i.availability <> 'out_of_stock'
), typed AS (
    SELECT id, key, jsonb_typeof(value) AS kind, value #>> '{{}}' AS text FROM kv
    WHERE value IS NOT NULL AND jsonb_typeof(value) IN ('string', 'number', 'boolean')
)
SELECT key, kind, text, count(DISTINCT id) FROM typed GROUP BY key, kind, text
"""


def _builtin(catalog: Catalog, max_values: int) -> list[Facet]:
    """brand, category and availability as text facets; price as a number facet per currency."""
    out = []
    items = CatalogItem.objects.filter(catalog=catalog).exclude(
        availability=CatalogItem.Availability.OUT_OF_STOCK
    )
    for name in ("brand", "category", "availability"):
        counts: dict[str, int] = {}
        for value in items.exclude(**{name: ""}).values_list(name, flat=True):
            counts[value] = counts.get(value, 0) + 1
        if counts:
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            out.append(Facet(name, "text", sum(counts.values()), len(counts), ranked[:max_values]))
    prices: dict[str, list[Decimal]] = {}
    for price, code in items.exclude(price=None).values_list("price", "currency"):
        if price is not None:
            prices.setdefault(code, []).append(price)
    for code, values in sorted(prices.items()):
        name = f"price_{code.lower()}" if code else "price"
        out.append(
            Facet(
                name,
                "number",
                len(values),
                len(set(values)),
                [],
                float(min(values)),
                float(max(values)),
            )
        )
    return out


def catalog_facets(catalog: Catalog, max_values: int = MAX_VALUES) -> list[Facet]:
    """The catalog's facets: built-in product fields first, then attributes by name, each with
    up to ``max_values`` values (the filters ask for more: they must know every value)."""
    with connection.cursor() as cursor:
        cursor.execute(_SQL, [catalog.pk])
        rows = cursor.fetchall()
    grouped: dict[str, dict[str, list[tuple[str, int]]]] = {}
    for key, kind, text, count in rows:
        grouped.setdefault(key, {}).setdefault(kind, []).append((text, int(count)))
    facets = _builtin(catalog, max_values)
    for name in sorted(grouped):
        kinds = grouped[name]
        # The type most of its values have; a facet of mixed numbers and words is text.
        kind = "text" if len(kinds) > 1 else next(iter(kinds))
        values = [v for vs in kinds.values() for v in vs]
        have = sum(n for _, n in values)  # an item with a list counts once per element
        facet = Facet(name, {"string": "text"}.get(kind, kind), have, len(values))
        if facet.type == "number":
            numbers = [float(v) for v, _ in values]
            facet.min, facet.max = min(numbers), max(numbers)
        ranked = sorted(values, key=lambda vn: (-vn[1], vn[0]))[:max_values]
        facet.values = [(_typed(v, facet.type), n) for v, n in ranked]
        facets.append(facet)
    return facets


def _typed(text: str, kind: str) -> Any:
    if kind == "number":
        number = float(text)
        return int(number) if number.is_integer() else number
    if kind == "boolean":
        return text == "true"
    return text
