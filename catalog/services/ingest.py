"""Importing a batch of candidates into a catalog: the one write path for new items.

Every entry point (admin upload, REST API, ``import_catalog``, ``load_demo_catalog``) hands a list
of ``sources.Candidate``s to ``import_candidates`` and gets an ``ImportReport`` back.

The bytes are hashed and de-duplicated before anything is decoded (one query per chunk of
candidates); new ones are decoded once, in the decoding processes (``decoding``), while this
thread reads the next ones. Each group of ``DAR_EMBED_BATCH`` decoded images has its files written
(``storing``: the rendition to serve, the original kept privately) from threads while the next
group is read, then is inserted in one statement and its embedding job queued at once, so the
embedding workers run beside the rest of the import.

Safe to interrupt and re-run:

* Files are content-addressed (``item_upload_path``: catalog id + a keyed hash of the original
  bytes), and an existing file at that path is reused, never saved under a new name, so a file
  written by an import killed before its database row leaves no orphan: the re-run adopts it.
* The database enforces one item per (catalog, sha256); a re-run reports those as duplicates.
* Embedding jobs are queued after commit for the new items *and* for duplicates still pending, so
  items whose job was lost with an interrupted run are picked up again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from catalog.models import Catalog, CatalogItem

from . import decoding, index_builds, storing, validation
from .sources import Candidate, CandidateRejected

log = logging.getLogger(__name__)


@dataclass
class ImportReport:
    imported: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    queued: int = 0  # items sent to the embedding queue

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
        }

    def summary(self) -> str:
        return (
            f"{len(self.imported)} imported, {len(self.duplicates)} duplicates, "
            f"{len(self.rejected)} rejected"
        )

    def merge(self, other: ImportReport) -> None:
        self.imported += other.imported
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.queued += other.queued


def _new_item(
    catalog: Catalog, candidate: Candidate, image: validation.NormalisedImage
) -> CatalogItem:
    return CatalogItem(
        catalog=catalog,
        sha256=image.sha256,
        width=image.width,
        height=image.height,
        source_name=candidate.path[:500],
        title=candidate.title[:500],
        description=candidate.description,
        attributes=candidate.attributes,
        status=CatalogItem.Status.PENDING,
    )


def _add_one(catalog: Catalog, item: CatalogItem) -> tuple[CatalogItem, bool]:
    """Save one item, or return the row a concurrent import of the same bytes saved first."""
    try:
        with transaction.atomic():
            item.save()
    except IntegrityError:
        # That import's row points at these very files (same paths), so the files stay.
        other = CatalogItem.objects.filter(
            catalog=catalog, sha256=item.sha256, product_id=""
        ).first()
        if other is None:
            raise
        return other, False
    return item, True


@dataclass
class _Pending:
    """A candidate whose bytes are new to the catalog: decoding, then stored."""

    candidate: Candidate
    data: bytes
    sha256: str
    future: Future[validation.NormalisedImage | validation.Rejection]
    copies: list[Candidate] = field(default_factory=list)  # same bytes later in this import


@dataclass
class _Group:
    pending: list[_Pending] = field(default_factory=list)
    size: int = 0  # bytes held


@dataclass
class _Writing:
    """A decoded group whose files are being written (by ``storing``'s threads)."""

    decoded: list[tuple[_Pending, CatalogItem]] = field(default_factory=list)
    writes: list[Future[OSError | None]] = field(default_factory=list)


class _Import:
    """One import run: reads and de-duplicates in this thread, decodes in the pool, writes each
    decoded group's files from threads while the next group is read, then inserts its rows and
    queues its embedding (so the embedding workers start on the first groups while later ones
    are still decoding)."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        embed: bool,
        on_progress: Callable[[Candidate, str], None] | None,
        pixel_budget: int | None,
        inline: bool,
    ) -> None:
        self.catalog = catalog
        self.embed = embed
        self.on_progress = on_progress
        self.report = ImportReport()
        self.limits = validation.Limits.from_settings()
        self.decoder = decoding.Decoder(self.limits, inline=inline)
        self.group_items = int(settings.DAR_EMBED_BATCH)
        self.pixels_left = pixel_budget
        # sha256 -> what this run made of those bytes: decoding, the item, or a rejection reason.
        self.first: dict[str, _Pending | CatalogItem | str] = {}
        self.reading = _Group()
        self.decoding: _Group | None = None
        self.writing: _Writing | None = None

    def _done(self, candidate: Candidate, outcome: str) -> None:
        if self.on_progress:
            self.on_progress(candidate, outcome)

    def _reject(self, candidate: Candidate, reason: str) -> None:
        self.report.rejected.append({"path": candidate.path, "reason": reason})
        self._done(candidate, "rejected")

    # --- reading: nothing decoded yet --------------------------------------------------------

    def add_all(self, candidates: Iterable[Candidate]) -> None:
        """Read and hash candidates a few at a time, so one query looks up the catalog's copies
        of a whole chunk (a query per image cost more than its hash)."""
        chunk: list[tuple[Candidate, bytes, str]] = []
        size = 0
        for candidate in candidates:
            data = self._read(candidate)
            if data is None:
                continue
            chunk.append((candidate, data, validation.sha256_of(data)))
            size += len(data)
            if len(chunk) >= _LOOKUP_CHUNK or size >= _GROUP_BYTES:
                self._admit_chunk(chunk)
                chunk, size = [], 0
        self._admit_chunk(chunk)

    def _admit_chunk(self, chunk: list[tuple[Candidate, bytes, str]]) -> None:
        unseen = {sha for _, _, sha in chunk if sha not in self.first}
        stored = {}
        if unseen:
            stored = {
                item.sha256: item
                for item in CatalogItem.objects.filter(
                    catalog=self.catalog, sha256__in=unseen, product_id=""
                ).only("pk", "sha256", "source_name", "status")
            }
        for candidate, data, sha in chunk:
            self._admit(candidate, data, sha, stored.get(sha))

    def _admit(
        self, candidate: Candidate, data: bytes, sha: str, existing: CatalogItem | None
    ) -> None:
        # Duplicates are found on the bytes, before any decoding (ten copies of one huge image
        # cost one decode, or none if the catalog has it already).
        seen = self.first.get(sha)
        if isinstance(seen, _Pending):
            seen.copies.append(candidate)
            return
        if isinstance(seen, CatalogItem):
            self._duplicate(candidate, seen)
            return
        if seen is not None:
            self._reject(candidate, seen)
            return
        if existing is not None:
            self.first[sha] = existing
            self._duplicate(candidate, existing)
            return
        reason = self._spend_pixels(data)
        if reason:
            self._reject(candidate, reason)
            return
        pending = _Pending(candidate, data, sha, self.decoder.submit(data, sha))
        self.first[sha] = pending
        self.reading.pending.append(pending)
        self.reading.size += len(data)
        if len(self.reading.pending) >= self.group_items or self.reading.size >= _GROUP_BYTES:
            self._rotate()

    def _read(self, candidate: Candidate) -> bytes | None:
        if candidate.rejection:
            self._reject(candidate, candidate.rejection)
            return None
        if candidate.read is None:
            self._reject(candidate, "nothing to read")
            return None
        try:
            data = candidate.read()
        except CandidateRejected as exc:
            self._reject(candidate, str(exc))
            return None
        except OSError as exc:
            self._reject(candidate, f"cannot read: {exc}")
            return None
        early = validation.precheck(data, self.limits)
        if early:
            self._reject(candidate, early.reason)
            return None
        return data

    def _spend_pixels(self, data: bytes) -> str | None:
        """Charge an image's pixels (from its header) to the upload's decode budget."""
        if self.pixels_left is None:
            return None
        pixels = validation.header_pixels(data)
        if pixels is None:
            return None  # not an image the decoder will accept: it says why
        if pixels > self.pixels_left:
            return (
                f"decode budget of this upload spent: {pixels:,} more pixels exceed the "
                f"{int(settings.DAR_MAX_UPLOAD_PIXELS):,} one upload may decode "
                "(DAR_MAX_UPLOAD_PIXELS); upload the rest separately"
            )
        self.pixels_left -= pixels
        return None

    def _rotate(self) -> None:
        """The group just read starts decoding; the one decoded before it starts writing its
        files, and the one before that, written meanwhile, is inserted and queued."""
        self.decoder.flush()  # the group just read is all in the pool before this thread waits
        if self.writing is not None:
            self._save_group(self.writing)
            self.writing = None
        if self.decoding is not None:
            self.writing = self._write_group(self.decoding)
        self.decoding, self.reading = self.reading, _Group()

    def finish(self) -> ImportReport:
        for _ in range(3):
            self._rotate()
        return self.report

    # --- storing: decoded groups -------------------------------------------------------------

    def _write_group(self, group: _Group) -> _Writing:
        writing = _Writing()
        jobs = []
        for pending in group.pending:
            judged = self.decoder.result(pending.future)
            data, pending.data = pending.data, b""  # the bytes are not needed once stored
            if isinstance(judged, validation.Rejection):
                self._refuse(pending, judged.reason)
                continue
            item = _new_item(self.catalog, pending.candidate, judged)
            writing.decoded.append((pending, item))
            jobs.append((item, judged, data))
        group.pending.clear()
        writing.writes = storing.submit_many(jobs)
        return writing

    def _save_group(self, writing: _Writing) -> None:
        # Files first, then the rows: an interrupted run leaves files a re-run adopts, never rows
        # pointing at missing files.
        accepted: list[tuple[_Pending, CatalogItem]] = []
        for (pending, item), write in zip(writing.decoded, writing.writes, strict=True):
            error = write.result()
            if error is not None:
                log.error("could not store %s", pending.candidate.path, exc_info=error)
                self._refuse(pending, f"could not store the image: {error}")
                continue
            accepted.append((pending, item))
        to_embed = []
        for pending, item, created in self._save(accepted):
            if created:
                self.report.imported.append(
                    {"path": pending.candidate.path, "id": item.pk, "sha256": item.sha256}
                )
                to_embed.append(item.pk)
                self._done(pending.candidate, "imported")
            else:
                self._duplicate(pending.candidate, item)
            self.first[pending.sha256] = item
            for copy in pending.copies:
                self._duplicate(copy, item)
        self._queue(to_embed)

    def _refuse(self, pending: _Pending, reason: str) -> None:
        self.first[pending.sha256] = reason
        for candidate in [pending.candidate, *pending.copies]:
            self._reject(candidate, reason)

    def _save(
        self, accepted: list[tuple[_Pending, CatalogItem]]
    ) -> list[tuple[_Pending, CatalogItem, bool]]:
        """One INSERT for the group; row by row only if a concurrent import got in first."""
        if not accepted:
            return []
        try:
            with transaction.atomic():
                CatalogItem.objects.bulk_create([item for _, item in accepted])
            return [(pending, item, True) for pending, item in accepted]
        except IntegrityError:
            out = []
            for pending, item in accepted:
                item.pk = None
                saved, created = _add_one(self.catalog, item)
                out.append((pending, saved, created))
            return out

    def _duplicate(self, candidate: Candidate, item: CatalogItem) -> None:
        self.report.duplicates.append(
            {"path": candidate.path, "id": item.pk, "sha256": item.sha256, "of": item.source_name}
        )
        if item.status == CatalogItem.Status.PENDING:
            self._queue([item.pk])  # its job may have been lost with an interrupted import
        self._done(candidate, "duplicate")

    def _queue(self, ids: list[int]) -> None:
        if self.embed and ids:
            from .embedding import queue_items

            self.report.queued += queue_items(ids)


# A group holds its images' bytes until they are stored: at most this much (three groups are
# held at once: reading, decoding, writing).
_GROUP_BYTES = 64 * 1024 * 1024
# Candidates read ahead for one duplicate lookup (also bounded by _GROUP_BYTES).
_LOOKUP_CHUNK = 32


def import_candidates(
    catalog: Catalog,
    candidates: Iterable[Candidate],
    *,
    embed: bool = True,
    on_progress: Callable[[Candidate, str], None] | None = None,
    pixel_budget: int | None = None,
) -> ImportReport:
    """Import every good candidate, report every duplicate and rejection; never stops early.

    ``on_progress(candidate, outcome)`` is called once per candidate with outcome ``imported``,
    ``duplicate`` or ``rejected`` (progress bars). ``pixel_budget`` bounds the pixels this import
    may decode (uploads from the web: ``DAR_MAX_UPLOAD_PIXELS``).
    """
    candidates = list(candidates)
    readable = sum(1 for c in candidates if c.read is not None and not c.rejection)
    run = _Import(
        catalog,
        embed=embed,
        on_progress=on_progress,
        pixel_budget=pixel_budget,
        inline=readable <= 1 or decoding.processes() <= 1,
    )
    # Its jobs start while it still adds items: none of them is the load's last before it ends.
    with index_builds.loading():
        run.add_all(candidates)
        return run.finish()


def import_paths(
    catalog: Catalog,
    paths: Iterable[str],
    *,
    embed: bool = True,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[Candidate, str], None] | None = None,
) -> ImportReport:
    """Folders, zips and manifests from the local file system (``import_catalog``)."""
    from .sources import collect

    with contextlib.ExitStack() as stack:
        candidates = collect(paths, stack)
        if on_start:
            on_start(len(candidates))
        return import_candidates(catalog, candidates, embed=embed, on_progress=on_progress)


def import_uploads(
    catalog: Catalog,
    files: Iterable[Any],
    *,
    title: str = "",
    description: str = "",
    attributes: dict[str, Any] | None = None,
    embed: bool = True,
) -> ImportReport:
    """Uploaded files (admin form, REST API); zips among them are expanded."""
    from .sources import from_uploads

    with contextlib.ExitStack() as stack:
        candidates = from_uploads(
            files, stack, title=title, description=description, attributes=attributes
        )
        return import_candidates(
            catalog, candidates, embed=embed, pixel_budget=int(settings.DAR_MAX_UPLOAD_PIXELS)
        )
