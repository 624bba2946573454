"""Embedding progress of a catalog, counted against the active encoder.

An item is

* ``pending``: waiting for (or in) an embedding job;
* ``failed``: its job failed; ``error`` says why;
* ``embedded``: it has an image vector made by the *active* encoder;
* ``stale``: its job succeeded once, but not with the active encoder (the encoder changed since):
  it is invisible to searches, which only use the active encoder's vectors, until re-embedded.

The active encoder's name comes from ``catalog.services.encoder.active_encoder_name`` (derived
from settings without loading a model). When it is unknown, nothing counts as stale.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from catalog.models import Catalog, CatalogItem, ItemEmbedding

from .encoder import active_encoder_name

STATES = ("pending", "embedded", "failed", "stale")


def has_current_vector(encoder_name: str | None) -> Exists | None:
    if not encoder_name:
        return None
    return Exists(
        ItemEmbedding.objects.filter(
            item=OuterRef("pk"), space=ItemEmbedding.Space.IMAGE, model_name=encoder_name
        )
    )


def _aggregate(items: QuerySet[CatalogItem], encoder_name: str | None, group: bool) -> Any:
    current = has_current_vector(encoder_name)
    embedded_q = Q(status=CatalogItem.Status.EMBEDDED)
    if current is not None:
        items = items.annotate(current=current)
        embedded = Count("pk", filter=embedded_q & Q(current=True))
        stale = Count("pk", filter=embedded_q & Q(current=False))
    else:
        embedded = Count("pk", filter=embedded_q)
        stale = Count("pk", filter=Q(pk__in=[]))
    aggregates = {
        "total": Count("pk"),
        "pending": Count("pk", filter=Q(status=CatalogItem.Status.PENDING)),
        "failed": Count("pk", filter=Q(status=CatalogItem.Status.FAILED)),
        "embedded": embedded,
        "stale": stale,
    }
    if group:
        return items.values("catalog_id").annotate(**aggregates).order_by()
    return items.aggregate(**aggregates)


def counts(catalog: Catalog | int, encoder_name: str | None = None) -> dict[str, Any]:
    """{total, pending, embedded, failed, stale, encoder} for one catalog."""
    name = encoder_name or active_encoder_name()
    catalog_id = catalog if isinstance(catalog, int) else catalog.pk
    result = _aggregate(CatalogItem.objects.filter(catalog_id=catalog_id), name, group=False)
    return {key: int(result[key] or 0) for key in ("total", *STATES)} | {"encoder": name}


def counts_by_catalog(
    catalog_ids: Iterable[int], encoder_name: str | None = None
) -> dict[int, dict[str, Any]]:
    """The same counts for many catalogs in one query (admin change list)."""
    name = encoder_name or active_encoder_name()
    ids = list(catalog_ids)
    empty = dict.fromkeys(("total", *STATES), 0) | {"encoder": name}
    out = {pk: dict(empty) for pk in ids}
    rows = _aggregate(CatalogItem.objects.filter(catalog_id__in=ids), name, group=True)
    for row in rows:
        out[row["catalog_id"]] = {k: int(row[k]) for k in ("total", *STATES)} | {"encoder": name}
    return out


def stale_items(catalog: Catalog, encoder_name: str | None = None) -> QuerySet[CatalogItem]:
    """Items not searchable with the active encoder (no image vector under its name) and not
    already queued: embedded by an older encoder, or failed. Pending items have a job on the way
    (re-send those with ``request_reembed(catalog, "pending")`` if a job was lost)."""
    items = CatalogItem.objects.filter(catalog=catalog).exclude(status=CatalogItem.Status.PENDING)
    current = has_current_vector(encoder_name or active_encoder_name())
    if current is None:
        return items
    return items.annotate(current=current).filter(current=False)


def wait_until_done(
    catalog: Catalog,
    *,
    timeout: float,
    interval: float = 1.0,
    on_tick: Any = None,
) -> dict[str, Any]:
    """Poll until no item of the catalog is pending (or ``timeout`` seconds pass)."""
    deadline = time.monotonic() + timeout
    while True:
        current = counts(catalog)
        if on_tick:
            on_tick(current)
        if current["pending"] == 0 or time.monotonic() >= deadline:
            return current
        time.sleep(interval)
