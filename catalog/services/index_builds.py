"""HNSW indexes built once after a bulk load, instead of updated on every insert.

Two moments load many vectors of a model at once: a shop's first catalog on a new instance and,
above all, an encoder switch (every catalog is re-embedded with a model that has no index yet).
Inserting each vector into the graph costs PostgreSQL about 1.6 ms of CPU per image (two vectors);
building the graph once, at the end, costs a fraction of that. Until the index exists, searches of
that model are exact scans (``vectors.search``: the same results); once it exists, inserts update
it, so it is never incomplete.

* ``defer``: an embedding job that finds no index for a (space, model, dim) records the pair in
  ``DeferredIndex`` before storing its vectors without one (``vectors.store(..., index=False)``).
* The job then marks its items embedded and asks whether the load is over (``load_over``: no
  item pending, no import or feed sync adding items), taking turns with the other jobs
  (``take_turn``); the job that finds it over builds what is deferred (``build_after_load``).
* ``loading``: around an import or a feed sync. Their jobs start while they still add items, and
  embedding can catch up with them: without it the job that found nothing pending in between
  would build the index on the first groups, and the rest of the import would insert into it.
  At its end it queues the periodic task's check, for the job that finished before it did.
* ``build_stalled`` (celery beat, ``catalog.build_deferred_indexes``): the safety net for a build
  that the last job did not do (its items failed or were deleted; jobs lost with a broker flush
  left items pending for good; a build that failed).

"Pending" is every pending item of every catalog. A job embeds with the models its worker has
loaded, whatever it did before, so any pending item will store into the same (space, model)
indexes as the job that asks; the status does not say which model an item waits for, and a
configuration changed in the middle of a load is the one case where waiting is needless (the
periodic task then builds the index once nothing is stored into it any more).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from catalog.models import CatalogItem, DeferredIndex
from dar_site import advisory_locks

from . import vectors

log = logging.getLogger(__name__)

# Serialises "mark embedded, then count what is pending" between jobs (``take_turn``).
TURN_LOCK = advisory_locks.key("dar.embedding.last-job")
# Held (shared, for the session) by every import and feed sync while it runs (``loading``).
LOAD_LOCK = advisory_locks.key("dar.embedding.items-arriving")
# How fresh ``DeferredIndex.stored_at`` is kept (DAR_DEFERRED_INDEX_IDLE is at least a minute).
STORED_AT_STEP = timedelta(minutes=1)
_PENDING = (
    f"SELECT EXISTS (SELECT 1 FROM {CatalogItem._meta.db_table}"
    # The literal matches the partial index ``catalogitem_pending`` (one probe, empty when idle).
    f" WHERE status = '{CatalogItem.Status.PENDING.value}')"
)


def defer(space: str, model_name: str, dim: int) -> None:
    """Record that vectors of this pair are about to be stored without an index (called before
    storing them, so a build can never be forgotten), and when (``stored_at``, to the minute).

    A read for most jobs of a load: the row is written (one statement, committed at once, so
    concurrent jobs never queue behind its row lock) only when missing or a minute old."""
    now = timezone.now()
    pair = {"space": space, "model_name": model_name, "dim": dim}
    last = DeferredIndex.objects.filter(**pair).values_list("stored_at", flat=True).first()
    if last is not None and now - last < STORED_AT_STEP:
        return
    DeferredIndex.objects.bulk_create(
        [DeferredIndex(**pair, stored_at=now)],
        update_conflicts=True,
        unique_fields=["space", "model_name", "dim"],
        update_fields=["stored_at"],
    )


def anything_pending() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(_PENDING)
        row = cursor.fetchone()
    return bool(row and row[0])


def take_turn() -> None:
    """Called in the transaction that marks a job's items embedded, before the update: jobs take
    turns until their commit (a transaction-level advisory lock). Without it, two jobs finishing
    together could each count the other's items as still pending (neither update committed yet)
    and neither would build; with it, the second counts after the first committed."""
    if not connection.in_atomic_block:
        raise RuntimeError("take_turn holds its lock until a commit: call it in a transaction")
    advisory_locks.xact(TURN_LOCK)


def load_over() -> bool:
    """No item is pending and no import or feed sync is adding items (after ``take_turn``, in its
    transaction: the exclusive try-lock, when it succeeds, lasts until that commit)."""
    if anything_pending():
        return False
    return advisory_locks.xact(LOAD_LOCK, wait=False)


@contextmanager
def loading() -> Iterator[None]:
    """Around an import or a feed sync (items arriving): no job counts as a load's last while it
    runs. At its end, if an index waits, the periodic task's check is queued: the import's last
    job may have finished before the import did (then the check builds the index)."""
    with advisory_locks.session(LOAD_LOCK, shared=True):
        yield
    if DeferredIndex.objects.exists():
        transaction.on_commit(_queue_check)


def _queue_check() -> None:
    from dar_site.celery import app

    app.send_task("catalog.build_deferred_indexes")


def build_deferred(rows: Iterable[DeferredIndex] | None = None) -> list[str]:
    """Build the deferred indexes (all of them by default) and forget those that exist after.

    Built concurrently, so the jobs of a new import go on storing meanwhile (into the index being
    built: PostgreSQL adds their rows). An index another session is building is left to it.
    Returns the names of the indexes that exist now."""
    built = []
    for row in DeferredIndex.objects.all() if rows is None else rows:
        name = vectors.ensure_index(row.space, row.model_name, row.dim, concurrently=True)
        if name is None and row.dim <= vectors.MAX_INDEXED_DIM:
            continue  # another session is building it; its build or the next check forgets it
        # A job that stored meanwhile may have recorded the pair again: its rows are in the
        # index all the same (a concurrent build takes in what is inserted while it runs).
        DeferredIndex.objects.filter(pk=row.pk).delete()
        if name:
            built.append(name)
    return built


def build_after_load() -> list[str]:
    """What the job that left nothing pending runs: build the deferred indexes. A failure is
    logged, not raised: the items are embedded, and the periodic task tries the build again."""
    try:
        return build_deferred()
    except DatabaseError:
        log.exception("building the deferred HNSW indexes failed (celery beat retries)")
        return []


def build_stalled() -> list[str]:
    """Celery beat (and the end of an import): build each deferred index whose load is over or
    has stalled.

    The rule: build when the load is over (``load_over``; the last job did not build: its items
    failed or were deleted, it finished before its import did, or its build failed), or when no
    job stored into it for DAR_DEFERRED_INDEX_IDLE seconds (items left pending for good by jobs
    lost with a broker flush, or workers down: a load that resumes later inserts into the index,
    which is slower but complete). Nothing to do costs one query on the (empty) ``DeferredIndex``
    table; a load in progress adds a probe of the pending items' partial index and two advisory
    locks. It takes its turn with the jobs, so a job committing its items as it checks is seen."""
    rows = list(DeferredIndex.objects.all())
    if not rows:
        return []
    with transaction.atomic():
        take_turn()
        over = load_over()
    if not over:
        quiet_since = timezone.now() - timedelta(seconds=settings.DAR_DEFERRED_INDEX_IDLE)
        rows = [row for row in rows if row.stored_at < quiet_since]
    return build_deferred(rows) if rows else []
