"""Importing a batch of candidates into a catalog: the one write path for new items.

Every entry point (admin upload, REST API, ``import_catalog``, ``load_demo_catalog``) hands a list
of ``sources.Candidate``s to ``import_candidates`` and gets an ``ImportReport`` back.

Safe to interrupt and re-run:

* Files are content-addressed (``item_upload_path``: catalog id + sha256 of the original bytes),
  and an existing file at that path is reused, never saved under a new name, so a file written by
  an import killed before its database row leaves no orphan: the re-run adopts it.
* The database enforces one item per (catalog, sha256); a re-run reports those as duplicates.
* Embedding jobs are queued after commit for the new items *and* for duplicates still pending, so
  items whose job was lost with an interrupted run are picked up again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction

from catalog.models import Catalog, CatalogItem, item_upload_path

from . import validation
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


def _store_file(item: CatalogItem, image: validation.NormalisedImage) -> None:
    """Put the normalised bytes at the item's content-addressed path (reusing what is there)."""
    field_file = item.image
    name = item_upload_path(item, f"image.{image.extension}")
    storage = field_file.storage
    if storage.exists(name):
        # Left by an interrupted run (no row points at it: we only get here for new bytes).
        # Adopt it if it is complete; a file cut short by a kill mid-write is replaced.
        with contextlib.suppress(OSError), storage.open(name, "rb") as handle:
            if handle.read() == image.data:
                field_file.name = name
                return
        storage.delete(name)
    field_file.name = storage.save(name, ContentFile(image.data))


def _add_one(
    catalog: Catalog, candidate: Candidate, image: validation.NormalisedImage
) -> tuple[CatalogItem, bool]:
    """Create the item, or return the existing one with the same bytes (created=False)."""
    existing = CatalogItem.objects.filter(catalog=catalog, sha256=image.sha256).first()
    if existing is not None:
        return existing, False
    item = CatalogItem(
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
    _store_file(item, image)
    try:
        with transaction.atomic():
            item.save()
    except IntegrityError:
        # A concurrent import of the same bytes won the race. Its row points at this very file
        # (same path), so the file stays.
        other = CatalogItem.objects.filter(catalog=catalog, sha256=image.sha256).first()
        if other is None:
            raise
        return other, False
    return item, True


def import_candidates(
    catalog: Catalog,
    candidates: Iterable[Candidate],
    *,
    embed: bool = True,
    on_progress: Callable[[Candidate, str], None] | None = None,
) -> ImportReport:
    """Import every good candidate, report every duplicate and rejection; never stops early.

    ``on_progress(candidate, outcome)`` is called once per candidate with outcome ``imported``,
    ``duplicate`` or ``rejected`` (progress bars).
    """
    report = ImportReport()
    to_embed: list[int] = []
    for candidate in candidates:
        outcome = _import_one(catalog, candidate, report, to_embed)
        if on_progress:
            on_progress(candidate, outcome)
    if embed and to_embed:
        from .embedding import queue_items

        report.queued = queue_items(to_embed)
    return report


def _import_one(
    catalog: Catalog, candidate: Candidate, report: ImportReport, to_embed: list[int]
) -> str:
    def reject(reason: str) -> str:
        report.rejected.append({"path": candidate.path, "reason": reason})
        return "rejected"

    if candidate.rejection:
        return reject(candidate.rejection)
    if candidate.read is None:
        return reject("nothing to read")
    try:
        data = candidate.read()
    except CandidateRejected as exc:
        return reject(str(exc))
    except OSError as exc:
        return reject(f"cannot read: {exc}")
    judged = validation.judge(data, candidate.path)
    del data
    if isinstance(judged, validation.Rejection):
        return reject(judged.reason)
    try:
        item, created = _add_one(catalog, candidate, judged)
    except OSError as exc:
        log.exception("could not store %s", candidate.path)
        return reject(f"could not store the image: {exc}")
    if created:
        report.imported.append({"path": candidate.path, "id": item.pk, "sha256": item.sha256})
        to_embed.append(item.pk)
        return "imported"
    report.duplicates.append(
        {"path": candidate.path, "id": item.pk, "sha256": item.sha256, "of": item.source_name}
    )
    if item.status == CatalogItem.Status.PENDING:
        to_embed.append(item.pk)  # its job may have been lost with an interrupted import
    return "duplicate"


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
        return import_candidates(catalog, candidates, embed=embed)
