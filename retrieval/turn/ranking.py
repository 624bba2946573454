"""How a turn ranks the catalog: DAR's score fusion and everything both stages add to it.

DAR fuses at score level: ``w_t * sim(text, item) + w_v * mean_j sim(gen_j, item)``. Inner
products are linear, so that equals one inner product with ``w_t * q + w_v * mean_j g_j``; we run
it as a single pgvector query (tests/test_fusion.py checks the equivalence over a whole catalog).
On the way the query gets the session's feedback (Rocchio, ``with_feedback``) and, when weighted,
a product-text term (``product_text``: the item titles' similarity by a sentence model); the
shopper's filters go inside the same query (``filters``).

Both of a turn's stages (``text_stage``, ``pipeline``) and the offline evaluation rank through
``rank``; ``catalog.services.vectors`` builds the SQL. The ranked items become result rows
(``result_rows``) with their items attached for the event payloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from django.conf import settings

from catalog.models import CatalogItem, ItemEmbedding
from catalog.services import vectors
from catalog.services.item_filters import ItemFilter
from catalog.services.vectors import Hit
from retrieval.models import Turn, TurnResult
from workers.models.protocols import Dialogue

from . import filters as turn_filters

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


@dataclass(frozen=True)
class Weights:
    text: float
    generated: float
    product_text: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def paper_weights(turn_index: int) -> Weights:
    """0.8/0.2 on the first turns, 0.5/0.5 after (DAR, section 4); configurable in settings."""
    if turn_index < settings.DAR_EARLY_TURNS:
        text, generated = settings.DAR_WEIGHT_TEXT_EARLY, settings.DAR_WEIGHT_GEN_EARLY
    else:
        text, generated = settings.DAR_WEIGHT_TEXT_LATE, settings.DAR_WEIGHT_GEN_LATE
    return Weights(text, generated, settings.DAR_WEIGHT_PRODUCT_TEXT)


def fuse(text_vec: np.ndarray, gen_vecs: np.ndarray | None, weights: Weights) -> np.ndarray:
    """The single query vector whose inner products equal the fused scores."""
    query = weights.text * np.asarray(text_vec, dtype=np.float32)
    if gen_vecs is not None and len(gen_vecs) and weights.generated:
        query = query + weights.generated * np.asarray(gen_vecs, dtype=np.float32).mean(axis=0)
    return query.astype(np.float32)


def rocchio(
    query: np.ndarray,
    liked: Sequence[np.ndarray],
    disliked: Sequence[np.ndarray],
    *,
    like_weight: float | None = None,
    dislike_weight: float | None = None,
) -> np.ndarray:
    """Move the query toward liked items and away from disliked ones (still linear, one query)."""
    like_weight = settings.DAR_FEEDBACK_LIKE if like_weight is None else like_weight
    dislike_weight = settings.DAR_FEEDBACK_DISLIKE if dislike_weight is None else dislike_weight
    out = np.asarray(query, dtype=np.float32).copy()
    if len(liked):
        out += like_weight * np.mean(np.stack(liked), axis=0)
    if len(disliked):
        out -= dislike_weight * np.mean(np.stack(disliked), axis=0)
    return out


def rank(
    *,
    catalog_id: int,
    model_name: str,
    query: np.ndarray,
    k: int | None = None,
    exact: bool = False,
    product_text: tuple[str, np.ndarray, float] | None = None,
    exclude: Sequence[int] = (),
    filters: Sequence[ItemFilter] = (),
) -> list[Hit]:
    """The catalog's ``k`` (default DAR_RESULTS_K) best items for a fused query vector, among
    those passing ``filters`` (the shopper's price, brand, attributes...: inside the same pgvector
    query, never afterwards).

    ``product_text`` = (sentence-model name, query embedding, weight) adds the similarity of the
    query to each item's title/description; items without product text contribute 0 there, and
    the image similarities are then scaled by ``image_weight``.
    """
    k = settings.DAR_RESULTS_K if k is None else k
    if product_text is not None and product_text[2] > 0:
        # Linear: scaling the query scales every image similarity.
        query = np.asarray(query, dtype=np.float32) * np.float32(image_weight())
        return vectors.search_with_product_text(
            catalog_id=catalog_id,
            model_name=model_name,
            query=query,
            text_model=product_text[0],
            text_query=product_text[1],
            text_weight=product_text[2],
            k=k,
            exclude=exclude,
            filters=filters,
        )
    return vectors.search(
        catalog_id=catalog_id,
        space=ItemEmbedding.Space.IMAGE,
        model_name=model_name,
        query=query,
        k=k,
        exact=exact,
        # A filter skips most of what the index reads: a wider search keeps recall.
        ef_search=settings.DAR_FILTER_EF_SEARCH if filters else settings.DAR_HNSW_EF_SEARCH,
        exclude=exclude,
        filters=filters,
    )


def positions(
    *, catalog_id: int, model_name: str, queries: np.ndarray, targets: Sequence[int]
) -> list[int | None]:
    """Where each target lands in ``rank(query, exact=True)`` over the whole catalog (0-based),
    computed in the database without fetching the ranking: the offline evaluation's ranks.
    Same space and model selection as ``rank`` (image space, no product text)."""
    return vectors.positions(
        catalog_id=catalog_id,
        space=ItemEmbedding.Space.IMAGE,
        model_name=model_name,
        queries=queries,
        targets=targets,
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


def image_weight() -> float:
    """``DAR_WEIGHT_IMAGE``, with ``auto`` resolved: the offline profile's encoder has random
    weights, so its similarities carry no information next to product text."""
    weight = settings.DAR_WEIGHT_IMAGE
    if weight is None:
        from workers.models.config import is_stand_in

        return 0.0 if is_stand_in() else 1.0
    return float(weight)


def filters_of(turn: Turn) -> list[ItemFilter]:
    """The filters the turn ranks with, decided when its message was stored (``filters``)."""
    return turn_filters.item_filters(turn.filters)


def with_feedback(
    model_name: str, query: np.ndarray, liked: list[int], disliked: list[int]
) -> np.ndarray:
    if not liked and not disliked:
        return query
    found = vectors.vectors_for(
        space=ItemEmbedding.Space.IMAGE, model_name=model_name, item_ids=liked + disliked
    )
    return rocchio(
        query,
        [found[i] for i in liked if i in found],
        [found[i] for i in disliked if i in found],
    )


def product_text(
    text: str, weight: float, *, also: str = "", also_weight: float = 0.0
) -> tuple[str, np.ndarray, float] | None:
    """The optional product-text term of ``rank`` (title/description similarity); with
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
