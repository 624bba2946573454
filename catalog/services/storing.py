"""Writing an item's two files: the web rendition (served) and the original (private).

Files are content-addressed (``item_upload_path``: catalog id + a keyed hash of the original
bytes), and an existing file at that path is reused, never saved under a new name, so a file
written by an import killed before its database row leaves no orphan: the re-run adopts it.

An import writes a group's files from a few threads (``submit_many``) while it reads the next
group: a write mostly waits (the file system's metadata, an object store's round trip) with the
interpreter lock released, so the importing thread and the other writes go on meanwhile.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import Future

from django.core.files.base import ContentFile
from django.core.files.storage import Storage

from catalog.models import CatalogItem, item_upload_path, original_upload_path
from retrieval.services import threadpools

from . import validation

# Writes in flight at once. Enough to hide one write's latency behind the others; more only adds
# contention on the directory (local files) or connections (object stores).
STORE_THREADS = 4


def _store(storage: Storage, name: str, data: bytes) -> str:
    """Put ``data`` at its content-addressed ``name`` (reusing what an interrupted run left)."""
    if storage.exists(name):
        # Left by an interrupted run (no row points at it: we only get here for new bytes).
        # Adopt it if it is complete; a file cut short by a kill mid-write is replaced.
        with contextlib.suppress(OSError), storage.open(name, "rb") as handle:
            if handle.read() == data:
                return name
        storage.delete(name)
    return storage.save(name, ContentFile(data))


def store_item_files(item: CatalogItem, image: validation.NormalisedImage, original: bytes) -> None:
    """Write the rendition and the original; sets ``item.image`` and ``item.original``."""
    item.image.name = _store(
        item.image.storage, item_upload_path(item, f"image.{image.extension}"), image.data
    )
    ext = "jpg" if image.source_format in ("JPEG", "MPO") else image.source_format.lower()
    item.original.name = _store(
        item.original.storage, original_upload_path(item, f"original.{ext}"), original
    )


def submit_many(
    jobs: Sequence[tuple[CatalogItem, validation.NormalisedImage, bytes]],
) -> list[Future[OSError | None]]:
    """Start ``store_item_files`` for each job in the threads; each future gives None or the
    ``OSError`` that job met (anything else it raises, e.g. an interrupt, is raised by
    ``result()``). Only storage runs in the threads: no database access, so no connection."""
    # The process's pool "store" (per process: a forked worker builds its own).
    pool = threadpools.pool("store", STORE_THREADS)
    return [pool.submit(_attempt, *job) for job in jobs]


def _attempt(
    item: CatalogItem, image: validation.NormalisedImage, original: bytes
) -> OSError | None:
    try:
        store_item_files(item, image, original)
    except OSError as exc:
        return exc
    return None
