"""How a turn ranks the catalog: the pieces both of its stages share (text stage, gpu task).

The query vector gets the session's feedback (Rocchio) and, when weighted, the product-text term;
the catalog is ranked in pgvector (``ranking.rank``); the ranked items become result rows with
their items attached for the event payloads.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from django.conf import settings

from catalog.models import CatalogItem, ItemEmbedding
from catalog.services import vectors
from catalog.services.item_filters import ItemFilter
from catalog.services.vectors import Hit
from retrieval.models import Turn, TurnResult
from workers.models.protocols import Dialogue

from . import filters, ranking

# What a result payload shows of an item (payloads.item_payload).
ITEM_FIELDS = (
    "id",
    "title",
    "source_name",
    "image",
    "product_url",
    "price",
    "currency",
    "availability",
    "brand",
)


def dialogue_for(turn: Turn) -> Dialogue:
    """First message as the caption, later messages as rounds (the stored turn context)."""
    context = [str(m) for m in turn.context] or [turn.message]
    return Dialogue(caption=context[0], rounds=context[1:])


def query_text(dialogue: Dialogue) -> str:
    """The text-first query: the dialogue after its corrections and negations (the latest
    message wins, ``workers.models.conversation``); the plain dialogue text when nothing is
    left of it."""
    from workers.models.conversation import understand

    return understand(dialogue).query_text() or dialogue.as_text()


@functools.cache
def _encoder_is_stand_in() -> bool:
    from workers.models.config import ModelSettings, model_plan

    return model_plan(ModelSettings.from_env()).profile == "offline"


def image_weight() -> float:
    """``DAR_WEIGHT_IMAGE``, with ``auto`` resolved: the offline profile's encoder has random
    weights, so its similarities carry no information next to product text."""
    weight = settings.DAR_WEIGHT_IMAGE
    if weight is None:
        return 0.0 if _encoder_is_stand_in() else 1.0
    return float(weight)


def rank_catalog(
    catalog_id: int,
    model_name: str,
    query: np.ndarray,
    *,
    exclude: list[int],
    product_text: tuple[str, np.ndarray, float] | None = None,
    item_filters: Sequence[ItemFilter] = (),
) -> list[Hit]:
    if product_text is not None and product_text[2] > 0:
        # Linear: scaling the query scales every image similarity.
        query = np.asarray(query, dtype=np.float32) * np.float32(image_weight())
    return ranking.rank(
        catalog_id=catalog_id,
        model_name=model_name,
        query=query,
        k=settings.DAR_RESULTS_K,
        product_text=product_text,
        exclude=exclude,
        filters=item_filters,
    )


def filters_of(turn: Turn) -> list[ItemFilter]:
    """The filters the turn ranks with, decided when its message was stored (``filters``)."""
    return filters.item_filters(turn.filters)


def with_feedback(
    model_name: str, query: np.ndarray, liked: list[int], disliked: list[int]
) -> np.ndarray:
    if not liked and not disliked:
        return query
    found = vectors.vectors_for(
        space=ItemEmbedding.Space.IMAGE, model_name=model_name, item_ids=liked + disliked
    )
    return ranking.rocchio(
        query,
        [found[i] for i in liked if i in found],
        [found[i] for i in disliked if i in found],
    )


def product_text(
    text: str, weight: float, *, also: str = "", also_weight: float = 0.0
) -> tuple[str, np.ndarray, float] | None:
    """The optional product-text term of ``ranking.rank`` (title/description similarity); with
    ``also``, that text's embedding mixed in at ``also_weight`` (the final query keeps the
    dialogue's own words beside the refinement)."""
    if weight <= 0:
        return None
    from workers.models.registry import get_text_embedder

    embedder = get_text_embedder()
    if also and also_weight > 0 and also != text:
        vecs = embedder.encode([text, also])
        return (embedder.name, mix(vecs[0], vecs[1], also_weight), weight)
    return (embedder.name, embedder.encode([text])[0], weight)


def mix(first: np.ndarray, second: np.ndarray, second_weight: float) -> np.ndarray:
    """``first + w * second``, back to unit length (both are unit vectors)."""
    out = np.asarray(first, dtype=np.float32) + np.float32(second_weight) * second
    norm = float(np.linalg.norm(out))
    return (out / norm if norm else out).astype(np.float32)


def items_of(hits: Sequence[Hit]) -> dict[int, CatalogItem]:
    """What the result payloads show of the ranked items, in one query."""
    ids = [h.item_id for h in hits]
    return CatalogItem.objects.only(*ITEM_FIELDS).in_bulk(ids) if ids else {}


def result_rows(
    turn: Turn, hits: Sequence[Hit], items: dict[int, CatalogItem], *, final: bool
) -> list[TurnResult]:
    """Result rows ready to insert, with their items attached for the event payload. An item
    deleted since it was ranked is left out (the ranks stay gapless)."""
    kept = [h for h in hits if h.item_id in items]
    return [
        TurnResult(turn=turn, item=items[h.item_id], final=final, rank=r, score=h.score)
        for r, h in enumerate(kept, start=1)
    ]
