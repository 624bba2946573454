"""Catalog tasks, kept next to the services they call (found by ``autodiscover_tasks``).

Thin: each task calls one service function that owns the work.

* ``gpu.embed_items`` (gpu queue, by its name): embed a batch of items with the loaded models.
* ``catalog.sync_feed`` (default queue): sync a catalog from its feed; feed images are fetched
  here, never in the web process.
* ``catalog.sync_due_feeds`` (celery beat): queue a sync for every catalog whose feed is due.
* ``catalog.build_deferred_indexes`` (celery beat): build a model's HNSW index that a bulk load's
  last job did not build (``index_builds.build_stalled``).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError

# Transient database trouble (a restart, a dropped connection) is retried with exponential
# backoff; acks_late (global) reruns the job if the worker itself dies. Reruns are harmless: the
# job upserts vectors and overwrites statuses.
RETRY_ON = (OperationalError, InterfaceError)


@shared_task(
    name="gpu.embed_items",
    autoretry_for=RETRY_ON,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
)
def embed_items(item_ids: list[int], shop: int | None = None) -> dict[str, Any]:
    from django.db import close_old_connections

    from catalog.services import embed_queue
    from catalog.services.embedding import embed_items as run

    # Counted as waiting until a worker takes it; a retry is not counted again.
    if not embed_items.request.retries:
        embed_queue.started(shop)
    # A connection broken by a database restart must not be reused by the retry.
    close_old_connections()
    return run(item_ids).as_dict()


@shared_task(
    bind=True, name="catalog.sync_feed", autoretry_for=RETRY_ON, retry_backoff=2, max_retries=10
)
def sync_feed(
    self: Any, catalog_id: int, stored: str | None = None, name: str = ""
) -> dict[str, Any]:
    """Sync a catalog from its feed location, or from an uploaded feed kept in ``stored``."""
    from catalog.models import Catalog
    from catalog.services import feeds, sync

    catalog = Catalog.objects.get(pk=catalog_id)
    try:
        if stored:
            return sync.sync_stored(catalog, stored, name).as_dict()
        return sync.sync_catalog(catalog).as_dict()
    except sync.SyncBusy as exc:  # another sync of this catalog runs: this one waits its turn
        raise self.retry(exc=exc, countdown=60) from None
    except feeds.FeedError as exc:  # the feed's fault, not the worker's: reported, not retried
        return {"error": str(exc)}


@shared_task(name="catalog.sync_due_feeds")
def sync_due_feeds() -> list[int]:
    """Celery beat: queue a sync for every catalog whose feed interval has passed."""
    from catalog.services import sync

    due = sync.due_catalogs()
    for catalog_id in due:
        sync_feed.delay(catalog_id)
    return due


@shared_task(name="catalog.build_deferred_indexes")
def build_deferred_indexes() -> list[str]:
    """Celery beat: build the deferred HNSW indexes whose load is over or has stalled."""
    from catalog.services import index_builds

    return index_builds.build_stalled()
