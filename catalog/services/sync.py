"""Syncing a catalog with a product feed: the one write path for items keyed by product id.

A feed (``feeds.parse``) is applied row by row, in chunks:

* a product id the catalog does not have is **added** (its image fetched or read, validated and
  stored like an upload, then queued for embedding);
* a known one is **updated** when a field differs, else **unchanged**. Its image is fetched again
  only when the feed names another location, and re-embedded only when the bytes differ (sha256):
  a shop that moves its pictures to a CDN costs one fetch per picture, no embedding;
* with ``full=True`` (the feed lists every product) an available item the feed no longer lists is
  **removed**: marked out of stock (not deleted: its clicks, results and vectors stay, and a
  later feed may bring it back);
* a row that cannot be used is **failed** with its row number and reason, and changes nothing:
  its product (if the catalog has it) is neither updated nor removed.

The same feed twice changes nothing the second time (everything unchanged, nothing removed).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from catalog.models import Catalog, CatalogItem

from . import decoding, feeds, fetch, index_builds, validation
from .sources import CandidateRejected, _read_capped
from .storing import store_item_files

log = logging.getLogger(__name__)

# Rows fetched, decoded and written together (bounds the image bytes held at once).
CHUNK_ROWS = 64

ImageReader = Callable[[str], bytes]


@dataclass
class SyncReport:
    kind: str = ""
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)  # {"row", "id", "reason"}
    queued: int = 0  # items sent to embedding (new pictures)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "failed": self.failed,
            "queued": self.queued,
        }

    def summary(self) -> str:
        return (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.removed} removed, {len(self.failed)} failed"
        )


def image_reader(
    *, base: Path | None = None, files: dict[str, Callable[[], bytes]] | None = None
) -> ImageReader:
    """How a feed's image references are read: http(s) URLs through ``fetch`` (every format);
    other references as files beside the feed: uploaded with it (``files``, by name) or, for a
    feed on this server, under its folder (``base``), never outside it."""
    limits = fetch.Limits.from_settings()

    def read(ref: str) -> bytes:
        if ref.lower().startswith(("http://", "https://")):
            try:
                return fetch.fetch(ref, limits=limits)
            except fetch.FetchError as exc:
                raise CandidateRejected(f"image not fetched: {exc}") from None
        if "://" in ref or ref.startswith("//"):
            raise CandidateRejected("only http(s) image URLs are fetched")
        if files is not None:
            name = ref.replace("\\", "/")
            reader = files.get(name) or files.get(name.rsplit("/", 1)[-1])
            if reader is None:
                raise CandidateRejected(f"image {ref!r} is not among the uploaded files")
            return reader()
        if base is None:
            raise CandidateRejected("image paths need the files beside the feed")
        root = base.resolve()
        target = (root / ref).resolve()
        if not target.is_relative_to(root):
            raise CandidateRejected("image path escapes the feed's folder")
        try:
            with target.open("rb") as handle:
                return _read_capped(handle)
        except OSError as exc:
            raise CandidateRejected(f"cannot read image: {exc.strerror or exc}") from None

    return read


@dataclass
class _Work:
    row: feeds.ProductRow
    item: CatalogItem | None
    judged: validation.NormalisedImage | None = None
    data: bytes = b""
    failure: str | None = None


class _Sync:
    def __init__(self, catalog: Catalog, reader: ImageReader, *, embed: bool) -> None:
        self.catalog = catalog
        self.reader = reader
        self.embed = embed
        self.report = SyncReport()
        self.limits = validation.Limits.from_settings()
        self.existing = {
            item.product_id: item for item in catalog.items.exclude(product_id="").order_by("pk")
        }

    def fail(self, row: int, product_id: str, reason: str) -> None:
        self.report.failed.append({"row": row, "id": product_id, "reason": reason})

    def _needs_image(self, work: _Work) -> bool:
        item, ref = work.item, work.row.image
        if item is None:
            return True
        return bool(ref) and (ref != item.image_source or not item.image)

    def _read(self, work: _Work) -> None:
        try:
            data = self.reader(work.row.image)
        except CandidateRejected as exc:
            work.failure = str(exc)
            return
        early = validation.precheck(data, self.limits)
        work.failure, work.data = (early.reason, b"") if early else (None, data)

    def chunk(self, rows: list[feeds.ProductRow]) -> None:
        works = [_Work(row, self.existing.get(row.product_id)) for row in rows]
        need = [w for w in works if self._needs_image(w)]
        for work in need:
            if not work.row.image:
                work.failure = "no image (image_link) for a new product"
        fetching = [w for w in need if w.failure is None]
        with ThreadPoolExecutor(max_workers=int(settings.DAR_FETCH_THREADS)) as pool:
            list(pool.map(self._read, fetching))
        decodable = [w for w in fetching if w.failure is None]
        decoder = decoding.Decoder(
            self.limits, inline=len(decodable) <= 1 or decoding.processes() <= 1
        )
        futures = [(w, decoder.submit(w.data, validation.sha256_of(w.data))) for w in decodable]
        for work, future in futures:
            judged = decoder.result(future)
            if isinstance(judged, validation.Rejection):
                work.failure = judged.reason
            else:
                work.judged = judged
        self._write(works)

    def _write(self, works: list[_Work]) -> None:
        to_embed: list[int] = []
        with transaction.atomic():
            for work in works:
                if work.failure:
                    self.fail(work.row.row, work.row.product_id, work.failure)
                    continue
                try:
                    # A savepoint per row: a row the database refuses fails alone.
                    with transaction.atomic():
                        new_picture = self._apply(work)
                except (OSError, DatabaseError) as exc:
                    log.exception("could not store product %s", work.row.product_id)
                    self.fail(work.row.row, work.row.product_id, f"could not store: {exc}")
                    continue
                if new_picture:
                    to_embed.append(work.item.pk)  # type: ignore[union-attr]
            if self.embed and to_embed:
                from .embedding import queue_items

                self.report.queued += queue_items(to_embed)

    def _apply(self, work: _Work) -> bool:
        """Write one good row; True when its picture is new and needs embedding."""
        row, item, judged = work.row, work.item, work.judged
        values = row.fields()
        if item is None:
            assert judged is not None
            item = CatalogItem(
                catalog=self.catalog,
                product_id=row.product_id,
                source_name=row.image[:500],
                image_source=row.image[:2000],
                **values,
            )
            self._picture(item, judged, work.data)
            item.save()
            self.existing[row.product_id] = work.item = item
            self.report.added += 1
            return True
        changed = [name for name, value in values.items() if getattr(item, name) != value]
        for name in changed:
            setattr(item, name, values[name])
        new_picture = False
        if judged is not None:
            if item.image_source != row.image:
                item.image_source = row.image[:2000]
                changed.append("image_source")
            if judged.sha256 != item.sha256 or not item.image:
                self._picture(item, judged, work.data)
                changed += ["sha256", "width", "height", "image", "original", "status", "error"]
                changed.append("source_name")
                new_picture = True
        if changed:
            item.save(update_fields=[*changed, "updated_at"])
            self.report.updated += 1
        else:
            self.report.unchanged += 1
        return new_picture

    def _picture(
        self, item: CatalogItem, judged: validation.NormalisedImage, original: bytes
    ) -> None:
        item.sha256 = judged.sha256
        item.width, item.height = judged.width, judged.height
        item.source_name = item.image_source[:500]
        item.status, item.error = CatalogItem.Status.PENDING, ""
        store_item_files(item, judged, original)

    def remove_missing(self, listed: set[str]) -> None:
        gone = [
            item.pk
            for pid, item in self.existing.items()
            if pid not in listed and item.availability != CatalogItem.Availability.OUT_OF_STOCK
        ]
        if gone:
            CatalogItem.objects.filter(pk__in=gone).update(
                availability=CatalogItem.Availability.OUT_OF_STOCK, updated_at=timezone.now()
            )
        self.report.removed = len(gone)


def sync_feed(
    catalog: Catalog,
    data: bytes,
    name: str = "",
    *,
    reader: ImageReader | None = None,
    full: bool = True,
    embed: bool = True,
    default_currency: str = "",
) -> SyncReport:
    """Apply a feed to ``catalog`` and report what it did (``feeds.FeedError`` if unreadable,
    or while another sync of the same catalog runs)."""
    parsed = feeds.parse(data, name, default_currency=default_currency)
    # Its jobs start while it still adds products: none of them is the load's last before it ends.
    with _catalog_lock(catalog), index_builds.loading():
        return _apply(catalog, parsed, reader, full=full, embed=embed)


class SyncBusy(feeds.FeedError):
    """Another sync of the catalog holds it; nothing was done (retry later)."""


# First key of the session-level advisory locks taken by syncs (the second is the catalog id).
_LOCK_SPACE = 0x0DA5F33D


@contextlib.contextmanager
def _catalog_lock(catalog: Catalog) -> Iterator[None]:
    """One sync per catalog at a time (a beat run and an upload, two workers): the second is
    refused at once rather than racing the first on the same product ids. Session-level, since a
    sync commits chunk by chunk."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_LOCK_SPACE, catalog.pk])
        (locked,) = cursor.fetchone() or (False,)
    if not locked:
        raise SyncBusy("another sync of this catalog is running; try again when it ends")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_LOCK_SPACE, catalog.pk])


def _apply(
    catalog: Catalog,
    parsed: feeds.Feed,
    reader: ImageReader | None,
    *,
    full: bool,
    embed: bool,
) -> SyncReport:
    run = _Sync(catalog, reader or image_reader(), embed=embed)
    run.report.kind = parsed.kind
    for error in parsed.errors:
        run.fail(error.row, error.product_id, error.reason)
    # Ids of failed rows count as listed: a broken row must not take its product away.
    listed = {e.product_id for e in parsed.errors if e.product_id}
    rows: list[feeds.ProductRow] = []
    first_row: dict[str, int] = {}
    for row in parsed.rows:
        first = first_row.get(row.product_id)
        if first is not None:
            run.fail(row.row, row.product_id, f"product id repeated (first at row {first})")
            continue
        first_row[row.product_id] = row.row
        listed.add(row.product_id)
        rows.append(row)
    for start in range(0, len(rows), CHUNK_ROWS):
        run.chunk(rows[start : start + CHUNK_ROWS])
    if full:
        run.remove_missing(listed)
    run.report.failed.sort(key=lambda f: f["row"])
    Catalog.objects.filter(pk=catalog.pk).update(
        feed_synced_at=timezone.now(), feed_report=run.report.as_dict()
    )
    return run.report


def read_location(location: str) -> tuple[bytes, str, ImageReader]:
    """A catalog's feed location: an http(s) URL (fetched with the same guards as images) or a
    path on this server (its images may be paths beside it)."""
    if location.lower().startswith(("http://", "https://")):
        limits = fetch.Limits.from_settings(max_bytes=int(settings.DAR_MAX_FEED_BYTES))
        try:
            data = fetch.fetch(location, limits=limits, accept="*/*")
        except fetch.FetchError as exc:
            raise feeds.FeedError(f"feed not fetched: {exc}") from None
        return data, location.rsplit("/", 1)[-1].split("?", 1)[0], image_reader()
    path = Path(location)
    try:
        size = path.stat().st_size
        if size > int(settings.DAR_MAX_FEED_BYTES):
            raise feeds.FeedError(f"feed larger than {settings.DAR_MAX_FEED_BYTES:,} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise feeds.FeedError(f"cannot read the feed: {exc.strerror or exc}") from None
    return data, path.name, image_reader(base=path.parent)


def sync_catalog(catalog: Catalog) -> SyncReport:
    """Sync a catalog from its ``feed_location`` (the beat task, the admin's "Sync now")."""
    if not catalog.feed_location:
        raise feeds.FeedError("this catalog has no feed location")
    try:
        data, name, reader = read_location(catalog.feed_location)
        return sync_feed(catalog, data, name, reader=reader)
    except SyncBusy:
        raise
    except feeds.FeedError as exc:
        # Shown on the catalog's admin page; the items stay as they were. feed_synced_at moves
        # on too, so a broken feed is retried at the next interval, not on every beat.
        Catalog.objects.filter(pk=catalog.pk).update(
            feed_synced_at=timezone.now(), feed_report={"error": str(exc)}
        )
        raise


def due_catalogs() -> list[int]:
    """Catalogs whose feed interval has passed since their last sync (or never synced)."""
    now = timezone.now()
    due = []
    for pk, interval, synced in (
        Catalog.objects.exclude(feed_location="")
        .filter(feed_interval_minutes__isnull=False, feed_interval_minutes__gt=0)
        .values_list("pk", "feed_interval_minutes", "feed_synced_at")
    ):
        if synced is None or synced + timedelta(minutes=int(interval or 0)) <= now:
            due.append(int(pk))
    return due


def stored_feed_name(catalog: Catalog, name: str) -> str:
    """Where an uploaded feed waits for its worker (private storage, never served)."""
    stamp = timezone.now().strftime("%Y%m%dT%H%M%S%f")
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[-80:] or "feed"
    return f"feeds/{catalog.pk}/{stamp}-{safe}"


def sync_stored(catalog: Catalog, stored: str, name: str) -> SyncReport:
    """The worker's side of an uploaded feed whose images are URLs (``sync_uploaded``)."""
    from catalog.models import private_storage

    storage = private_storage()
    with storage.open(stored, "rb") as handle:
        data = handle.read()
    try:
        report = sync_feed(catalog, data, name)
    except SyncBusy:
        raise  # kept for the retry
    except feeds.FeedError:
        with contextlib.suppress(OSError):
            storage.delete(stored)
        raise
    with contextlib.suppress(OSError):
        storage.delete(stored)
    return report
