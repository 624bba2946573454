"""Product feed tasks (default queue): feed images are fetched here, never in the web process."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from .catalog import RETRY_ON


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
