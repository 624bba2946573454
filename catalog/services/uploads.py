"""What one upload (admin form, REST) is: images, a manifest beside images, or a product feed.

* Images and zips alone: the plain picture import (``ingest.import_uploads``), as before.
* A CSV/JSONL manifest without product ids beside images (or a zip of them): the same import,
  each picture given the title, description and attributes of its manifest row (matched by the
  path in the row, inside a zip or by file name). Rows naming a file the upload lacks are
  reported.
* A product feed (Merchant Center TSV/XML, Shopify CSV, or a manifest with product ids): a sync
  (``sync.sync_feed``). Pictures named by path come from the uploaded files; when the feed's
  pictures are URLs and no files came with it, the feed is stored privately and synced by a
  worker (``catalog.sync_feed``), so the web process never fetches from the network.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction

from catalog.models import Catalog, private_storage

from . import feeds, ingest, sources, sync


class UploadRefused(ValueError):
    """The upload as a whole is refused (two feeds, an unreadable feed); nothing was imported."""


@dataclass
class UploadOutcome:
    imported: ingest.ImportReport | None = None
    synced: sync.SyncReport | None = None
    queued_feed: str = ""  # the stored feed a worker will sync

    def summary(self) -> str:
        if self.queued_feed:
            return "the feed was queued: a worker fetches its images and syncs the catalog"
        if self.synced is not None:
            return f"feed synced: {self.synced.summary()}"
        assert self.imported is not None
        return self.imported.summary()

    @property
    def has_problems(self) -> bool:
        if self.synced is not None:
            return bool(self.synced.failed)
        return bool(self.imported and self.imported.rejected)


def _name(upload: Any) -> str:
    return os.path.basename(getattr(upload, "name", "") or "upload")


def _is_feed(upload: Any) -> bool:
    if not feeds.is_feed_name(_name(upload)):
        return False
    upload.seek(0)
    head = upload.read(4)
    upload.seek(0)
    return head[:4] not in sources.ZIP_MAGIC


def _read_feed(upload: Any) -> bytes:
    limit = int(settings.DAR_MAX_FEED_BYTES)
    upload.seek(0)
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise UploadRefused(f"feed larger than {limit:,} bytes (DAR_MAX_FEED_BYTES)")
    return bytes(data)


def _entry_key(path: str) -> str:
    """How a manifest row names an uploaded file: the path inside its zip, or its name."""
    return path.split("!", 1)[1] if "!" in path else path


def handle(
    catalog: Catalog,
    files: Iterable[Any],
    *,
    title: str = "",
    description: str = "",
    attributes: dict[str, Any] | None = None,
) -> UploadOutcome:
    files = list(files)
    feed_files = [f for f in files if _is_feed(f)]
    others = [f for f in files if f not in feed_files]
    if not feed_files:
        return UploadOutcome(
            imported=ingest.import_uploads(
                catalog, others, title=title, description=description, attributes=attributes
            )
        )
    if len(feed_files) > 1:
        raise UploadRefused("one feed or manifest per upload, beside its images")
    feed, name = _read_feed(feed_files[0]), _name(feed_files[0])
    kind = feeds.detect(name, feed)
    with contextlib.ExitStack() as stack:
        candidates = sources.from_uploads(
            others, stack, title=title, description=description, attributes=attributes
        )
        if feeds.has_product_ids(feed, kind):
            return _feed(catalog, feed, name, candidates)
        return UploadOutcome(imported=_manifest(catalog, feed, kind, candidates))


def _feed(
    catalog: Catalog, data: bytes, name: str, candidates: list[sources.Candidate]
) -> UploadOutcome:
    try:
        parsed = feeds.parse(data, name)
    except feeds.FeedError as exc:
        raise UploadRefused(str(exc)) from None
    remote = any(r.image.lower().startswith(("http://", "https://")) for r in parsed.rows)
    if remote and not candidates:
        stored = private_storage().save(sync.stored_feed_name(catalog, name), ContentFile(data))
        transaction.on_commit(lambda: queue_sync(catalog.pk, stored, name))
        return UploadOutcome(queued_feed=stored)
    files: dict[str, Callable[[], bytes]] = {}
    for candidate in candidates:
        if candidate.read is not None and not candidate.rejection:
            key = _entry_key(candidate.path)
            files.setdefault(key, candidate.read)
            files.setdefault(key.rsplit("/", 1)[-1], candidate.read)
    report = sync.sync_feed(catalog, data, name, reader=sync.image_reader(files=files))
    return UploadOutcome(synced=report)


def queue_sync(catalog_id: int, stored: str | None = None, name: str = "") -> None:
    from dar_site.celery import app

    # By name, as the embedding jobs are sent: no import of the worker code here.
    app.send_task("catalog.sync_feed", args=[catalog_id, stored, name])


def _manifest(
    catalog: Catalog, data: bytes, kind: str, candidates: list[sources.Candidate]
) -> ingest.ImportReport:
    manifest_kind = "jsonl" if kind == "manifest_jsonl" else "csv"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UploadRefused(f"the manifest is not UTF-8 text: {exc}") from None
    by_path: dict[str, dict[str, Any]] = {}
    problems: list[sources.Candidate] = []
    for number, row in sources.manifest_rows(io.StringIO(text, newline=""), manifest_kind):
        if isinstance(row, str):
            problems.append(sources.Candidate(f"manifest:{number}", rejection=row))
            continue
        path, row_meta = sources.manifest_meta(row)
        if not path:
            problems.append(
                sources.Candidate(f"manifest:{number}", rejection="manifest row has no path")
            )
            continue
        by_path[path.replace("\\", "/").removeprefix("./")] = row_meta
    matched: set[str] = set()
    for candidate in candidates:
        key = _entry_key(candidate.path)
        found = by_path.get(key) or by_path.get(key.rsplit("/", 1)[-1])
        if found is None:
            continue
        meta = found
        matched.add(key if key in by_path else key.rsplit("/", 1)[-1])
        candidate.title = meta["title"] or candidate.title
        candidate.description = meta["description"] or candidate.description
        candidate.attributes = {**candidate.attributes, **meta["attributes"]}
    for path in by_path:
        if path not in matched:
            problems.append(
                sources.Candidate(
                    f"manifest:{path}", rejection="file not found among the uploaded files"
                )
            )
    return ingest.import_candidates(
        catalog,
        [*problems, *candidates],
        pixel_budget=int(settings.DAR_MAX_UPLOAD_PIXELS),
    )
