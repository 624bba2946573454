"""DAR score fusion and ranking: the one code path shared by live search and evaluation.

DAR fuses at score level: ``w_t * sim(text, item) + w_v * mean_j sim(gen_j, item)``. Inner
products are linear, so that equals one inner product with ``w_t * q + w_v * mean_j g_j``; we run
it as a single pgvector query (tests/test_fusion.py checks the equivalence over a whole catalog).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from django.conf import settings

from catalog.models import ItemEmbedding
from catalog.services import vectors
from catalog.services.item_filters import ItemFilter
from catalog.services.vectors import Hit


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
    k: int,
    exact: bool = False,
    product_text: tuple[str, np.ndarray, float] | None = None,
    exclude: Sequence[int] = (),
    filters: Sequence[ItemFilter] = (),
) -> list[Hit]:
    """Rank a catalog's items for a fused query vector, among those passing ``filters`` (the
    shopper's price, brand, attributes...: inside the same pgvector query, never afterwards).

    ``product_text`` = (sentence-model name, query embedding, weight) adds the similarity of the
    query to each item's title/description; items without product text contribute 0 there.
    """
    if product_text is not None and product_text[2] > 0:
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
