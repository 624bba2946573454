"""How a turn ranks the catalog: the pieces both of its stages share (text stage, gpu task).

The query vector gets the session's feedback (Rocchio) and, when weighted, the product-text term;
the catalog is ranked in pgvector (``ranking.rank``); the ranked items become result rows with
their items attached for the event payloads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from django.conf import settings

from catalog.models import CatalogItem, ItemEmbedding
from catalog.services import vectors
from catalog.services.vectors import Hit
from retrieval.models import Turn, TurnResult
from workers.models.protocols import Dialogue

from . import ranking

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


def rank_catalog(
    catalog_id: int,
    model_name: str,
    query: np.ndarray,
    *,
    exclude: list[int],
    product_text: tuple[str, np.ndarray, float] | None = None,
) -> list[Hit]:
    return ranking.rank(
        catalog_id=catalog_id,
        model_name=model_name,
        query=query,
        k=settings.DAR_RESULTS_K,
        product_text=product_text,
        exclude=exclude,
    )


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


def product_text(text: str, weight: float) -> tuple[str, np.ndarray, float] | None:
    """The optional product-text term of ``ranking.rank`` (title/description similarity)."""
    if weight <= 0:
        return None
    from workers.models.registry import get_text_embedder

    embedder = get_text_embedder()
    return (embedder.name, embedder.encode([text])[0], weight)


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
