"""Embedding jobs: queueing them (web side) and running them (worker side, ``gpu.embed_items``).

A job embeds a batch of item ids (``DAR_EMBED_BATCH``): the picture with the active encoder
(space ``image``) and, for items with a title or description, that product text with the sentence
model (space ``text``). It is idempotent: vectors are upserted per (item, space, model), statuses
are overwritten, deleted items are skipped, so a job rerun after a lost worker changes nothing.
Per-item problems (an unreadable stored file) fail that item only; a model that cannot run fails
the batch with the reason in ``error``. Database errors propagate so the task retries.

A model's HNSW index is built once its first bulk load is over (``index_builds``): a job that finds
no index stores without one, and the job that leaves no item pending builds it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone
from PIL import Image

from catalog.models import Catalog, CatalogItem, ItemEmbedding

from . import embed_queue, index_builds, vectors
from .progress import stale_items

if TYPE_CHECKING:
    from workers.models.protocols import Encoder, TextEmbedder

log = logging.getLogger(__name__)

TASK_NAME = "gpu.embed_items"
REEMBED_MODES = ("stale", "failed", "pending", "all")


# --- Web side: queueing -----------------------------------------------------------------------


def _chunks(ids: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def send_batch(item_ids: list[int]) -> None:
    from dar_site.celery import app

    shop_id = (
        CatalogItem.objects.filter(pk__in=item_ids[:1]).values_list("catalog__shop_id", flat=True)
    ).first()
    if shop_id is None:
        return  # deleted before the commit: nothing to embed
    # Routed to the gpu queue by name (task_routes "gpu.*"); no import of the worker code. Its
    # priority puts it behind search turns and interleaves the shops' jobs (``embed_queue``).
    app.send_task(
        TASK_NAME,
        args=[item_ids],
        kwargs={"shop": shop_id},
        priority=embed_queue.enqueue(shop_id),
    )


def queue_items(item_ids: Iterable[int]) -> int:
    """Send embedding jobs for these items in batches, once the current transaction commits."""
    ids = sorted(set(int(pk) for pk in item_ids))
    batch = int(settings.DAR_EMBED_BATCH)
    for chunk in _chunks(ids, batch):
        transaction.on_commit(functools.partial(send_batch, chunk))
    return len(ids)


def request_reembed(catalog: Catalog, mode: str = "stale") -> int:
    """Re-embed a catalog with the current encoder; the items go back to pending. Modes:

    * ``stale``: every item without a vector from the active encoder that is not already queued
      (embedded by an older encoder, or failed): what makes the catalog fully searchable again;
    * ``failed``: only failed items;
    * ``pending``: send the jobs of pending items again (a job lost with a broker flush);
    * ``all``: everything.

    Returns how many items were queued.
    """
    items = CatalogItem.objects.filter(catalog=catalog)
    if mode == "stale":
        items = stale_items(catalog)
    elif mode in ("failed", "pending"):
        items = items.filter(status=mode)
    elif mode != "all":
        raise ValueError(f"unknown re-embed mode {mode!r} (use {', '.join(REEMBED_MODES)})")
    ids = list(items.order_by("pk").values_list("pk", flat=True))
    if not ids:
        return 0
    with transaction.atomic():
        CatalogItem.objects.filter(pk__in=ids).update(
            status=CatalogItem.Status.PENDING, error="", updated_at=timezone.now()
        )
        return queue_items(ids)


def reembed_items(item_ids: Iterable[int]) -> int:
    ids = list(item_ids)
    with transaction.atomic():
        CatalogItem.objects.filter(pk__in=ids).update(
            status=CatalogItem.Status.PENDING, error="", updated_at=timezone.now()
        )
        return queue_items(ids)


# --- Worker side: running a job --------------------------------------------------------------


@dataclass
class EmbedResult:
    embedded: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)  # deleted before the job ran
    encoder: str = ""
    text_model: str = ""
    # Stored vectors into a (space, model) that has no HNSW index yet (``index_builds``).
    unindexed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "embedded": self.embedded,
            "failed": {str(k): v for k, v in self.failed.items()},
            "missing": self.missing,
            "encoder": self.encoder,
            "text_model": self.text_model,
        }


def _open_stored(item: CatalogItem, side: int) -> Image.Image:
    """The stored rendition, decoded at the smallest JPEG scale (1/2, 1/4, 1/8) that still covers
    ``side``, the encoder's input size, on both sides: the encoder's preprocessing resizes it to
    that anyway, and decoding at an eighth of the pixels costs a fraction of the full decode."""
    with item.image.open("rb") as handle, Image.open(handle) as img:
        img.draft("RGB", (side, side))
        img.load()
        return img.convert("RGB")


def _mark_failed(ids: Iterable[int], reason: str, result: EmbedResult) -> None:
    ids = list(ids)
    for pk in ids:
        result.failed[pk] = reason
    if ids:
        CatalogItem.objects.filter(pk__in=ids).update(
            status=CatalogItem.Status.FAILED, error=reason[:2000], updated_at=timezone.now()
        )


def _store_existing(
    space: str, model_name: str, items: list[CatalogItem], matrix: Any, result: EmbedResult
) -> list[CatalogItem]:
    """Upsert vectors; items deleted meanwhile are dropped (and the upsert retried once).

    Into an existing index the insert goes as usual; a missing one is recorded to be built once
    the load is over, and the vectors go in without it (``index_builds``)."""
    dim = int(np.shape(matrix)[-1])
    if not vectors.index_ready(space, model_name, dim):
        index_builds.defer(space, model_name, dim)
        result.unindexed = True
    rows = [(it.pk, it.catalog_id, matrix[i]) for i, it in enumerate(items)]
    try:
        vectors.store(space, model_name, rows, index=False)
        return items
    except IntegrityError:
        alive = set(
            CatalogItem.objects.filter(pk__in=[it.pk for it in items]).values_list("pk", flat=True)
        )
        keep = [(i, it) for i, it in enumerate(items) if it.pk in alive]
        rows = [(it.pk, it.catalog_id, matrix[i]) for i, it in keep]
        vectors.store(space, model_name, rows, index=False)
        return [it for _, it in keep]


def embed_items(
    item_ids: Sequence[int],
    *,
    encoder: Encoder | None = None,
    text_embedder: TextEmbedder | None = None,
) -> EmbedResult:
    """Embed these items now (called by the ``gpu.embed_items`` task)."""
    result = EmbedResult()
    items = list(CatalogItem.objects.filter(pk__in=list(item_ids)).order_by("pk"))
    found = {it.pk for it in items}
    result.missing = [int(pk) for pk in item_ids if int(pk) not in found]
    if not items:
        return result

    try:
        if encoder is None:
            from workers.models.registry import get_encoder

            encoder = get_encoder()
    except DatabaseError:
        raise
    except Exception as exc:
        log.exception("encoder unavailable")
        _mark_failed(found, f"encoder unavailable: {exc}", result)
        return result
    result.encoder = encoder.name

    images: list[Image.Image] = []
    readable: list[CatalogItem] = []
    for item in items:
        try:
            images.append(_open_stored(item, encoder.image_size))
            readable.append(item)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            _mark_failed([item.pk], f"cannot open the stored image: {exc}", result)
    if not readable:
        return result

    try:
        matrix = encoder.encode_images(images)
    except DatabaseError:
        raise
    except Exception as exc:
        log.exception("image encoding failed")
        _mark_failed([it.pk for it in readable], f"image encoding failed: {exc}", result)
        return result
    finally:
        for img in images:
            img.close()
    readable = _store_existing(ItemEmbedding.Space.IMAGE, encoder.name, readable, matrix, result)

    texts = [it for it in readable if it.product_text]
    try:
        if text_embedder is None:
            from workers.models.registry import get_text_embedder

            text_embedder = get_text_embedder()
        result.text_model = text_embedder.name
        if texts:
            text_matrix = text_embedder.encode([it.product_text for it in texts])
            _store_existing(
                ItemEmbedding.Space.TEXT, text_embedder.name, texts, text_matrix, result
            )
        # An item whose title and description were cleared keeps no outdated text vector.
        untitled = [it.pk for it in readable if not it.product_text]
        if untitled:
            ItemEmbedding.objects.filter(
                item_id__in=untitled,
                space=ItemEmbedding.Space.TEXT,
                model_name=text_embedder.name,
            ).delete()
    except DatabaseError:
        raise
    except Exception as exc:
        # The image vectors are stored (a search can already find these items); marking them
        # failed shows the error, and re-embedding the failed items completes them.
        log.exception("product-text embedding failed")
        _mark_failed([it.pk for it in texts], f"product-text embedding failed: {exc}", result)
        texts_failed = {it.pk for it in texts}
        readable = [it for it in readable if it.pk not in texts_failed]

    result.embedded = [it.pk for it in readable]
    _finish(result)
    return result


def _finish(result: EmbedResult) -> None:
    """Mark the job's items embedded; if it stored into a model with no index yet and leaves no
    item pending (of any catalog: ``index_builds`` says why) while no import adds items, it was
    the load's last job: it builds the index now."""
    if not result.unindexed:
        mark_embedded(result.embedded)
        return
    with transaction.atomic():
        index_builds.take_turn()
        mark_embedded(result.embedded)
        last = index_builds.load_over()
    if last:
        index_builds.build_after_load()


def mark_embedded(item_ids: Sequence[int]) -> None:
    """These items have their vectors now (stored by a job, or by the evaluation's own loader)."""
    CatalogItem.objects.filter(pk__in=list(item_ids)).update(
        status=CatalogItem.Status.EMBEDDED, error="", updated_at=timezone.now()
    )
