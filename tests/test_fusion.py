"""DAR fusion as one pgvector query equals explicit score-level fusion over the whole catalog.

DAR scores an item as ``w_t * sim(text, item) + w_v * mean_j sim(gen_j, item)`` (plus optional
product-text and Rocchio feedback terms). ``ranking.rank`` runs that as a single inner-product
query with the vector from ``fuse``/``rocchio``; here numpy computes every item's fused score from
the vectors stored in PostgreSQL and the two rankings must agree, item for item.
"""

from __future__ import annotations

import numpy as np
import pytest
from django.test import override_settings

from catalog.models import ItemEmbedding
from catalog.services import vectors
from retrieval.turn import ranking
from tests.factories import CatalogFactory, CatalogItemFactory

pytestmark = pytest.mark.django_db

MODEL, TEXT_MODEL, DIM, TEXT_DIM, N = "enc-fusion", "txt-fusion", 32, 24, 60


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def catalog_vectors() -> dict[str, object]:
    rng = np.random.default_rng(7)
    catalog = CatalogFactory.create()
    items = CatalogItemFactory.create_batch(N, catalog=catalog)
    vectors.store(
        "image",
        MODEL,
        [(i.id, catalog.id, v) for i, v in zip(items, _unit(rng, N, DIM), strict=True)],
    )
    # Only two thirds of the items have product text; the others must score 0 on that term.
    with_text = items[: 2 * N // 3]
    vectors.store(
        "text",
        TEXT_MODEL,
        [
            (i.id, catalog.id, v)
            for i, v in zip(with_text, _unit(rng, len(with_text), TEXT_DIM), strict=True)
        ],
    )
    ids = [i.id for i in items]
    # Read back what the database holds: the numpy side must score the very same vectors.
    image = vectors.vectors_for(space=ItemEmbedding.Space.IMAGE, model_name=MODEL, item_ids=ids)
    text = vectors.vectors_for(space=ItemEmbedding.Space.TEXT, model_name=TEXT_MODEL, item_ids=ids)
    return {"catalog": catalog, "ids": ids, "image": image, "text": text, "rng": rng}


def _explicit_ranking(ids: list[int], scores: np.ndarray, exclude: set[int]) -> list[int]:
    order = sorted(
        (i for i in range(len(ids)) if ids[i] not in exclude), key=lambda i: (-scores[i], ids[i])
    )
    return [ids[i] for i in order]


def _assert_same_ranking(hits: list[vectors.Hit], expected: list[int], scores: dict) -> None:
    assert [h.item_id for h in hits] == expected
    for hit in hits:
        assert hit.score == pytest.approx(scores[hit.item_id], abs=1e-4)


@pytest.mark.parametrize("turn_index", [0, 1, 2, 4])
@pytest.mark.parametrize("n_generated", [1, 3])
@pytest.mark.parametrize("exact", [True, False])
def test_single_query_equals_score_level_fusion(
    catalog_vectors: dict, turn_index: int, n_generated: int, exact: bool
) -> None:
    ids, image, rng = catalog_vectors["ids"], catalog_vectors["image"], catalog_vectors["rng"]
    matrix = np.stack([image[i] for i in ids])
    text_q = _unit(rng, 1, DIM)[0]
    generated = _unit(rng, n_generated, DIM)
    weights = ranking.paper_weights(turn_index)

    # Score-level fusion: one similarity per (query, item), combined afterwards.
    sim_text = matrix @ text_q
    sim_gen = np.stack([matrix @ g for g in generated]).mean(axis=0)
    explicit = weights.text * sim_text + weights.generated * sim_gen

    hits = ranking.rank(
        catalog_id=catalog_vectors["catalog"].id,
        model_name=MODEL,
        query=ranking.fuse(text_q, generated, weights),
        k=N,
        exact=exact,
    )
    expected = _explicit_ranking(ids, explicit, set())
    _assert_same_ranking(hits, expected, dict(zip(ids, explicit.tolist(), strict=True)))


def test_paper_weights_switch_after_the_early_turns() -> None:
    early, late = ranking.paper_weights(0), ranking.paper_weights(2)
    assert (early.text, early.generated) == pytest.approx((0.8, 0.2))
    assert ranking.paper_weights(1) == early
    assert (late.text, late.generated) == pytest.approx((0.5, 0.5))
    with override_settings(DAR_EARLY_TURNS=1, DAR_WEIGHT_PRODUCT_TEXT=0.25):
        assert ranking.paper_weights(1).text == pytest.approx(0.5)
        assert ranking.paper_weights(1).product_text == pytest.approx(0.25)


def test_feedback_and_product_text_stay_one_query(catalog_vectors: dict) -> None:
    ids, image, text = catalog_vectors["ids"], catalog_vectors["image"], catalog_vectors["text"]
    rng = catalog_vectors["rng"]
    matrix = np.stack([image[i] for i in ids])
    text_q, generated = _unit(rng, 1, DIM)[0], _unit(rng, 2, DIM)
    product_q = _unit(rng, 1, TEXT_DIM)[0]
    weights = ranking.Weights(text=0.5, generated=0.5, product_text=0.3)
    liked, disliked = ids[3:5], ids[10:11]
    like_w, dislike_w = 0.3, 0.15

    explicit = weights.text * (matrix @ text_q) + weights.generated * np.mean(
        [matrix @ g for g in generated], axis=0
    )
    # Rocchio at score level: the mean similarity to liked items pulls, to disliked ones pushes.
    explicit += like_w * np.mean([matrix @ image[i] for i in liked], axis=0)
    explicit -= dislike_w * np.mean([matrix @ image[i] for i in disliked], axis=0)
    product = np.array([float(text[i] @ product_q) if i in text else 0.0 for i in ids])
    explicit += weights.product_text * product

    query = ranking.rocchio(
        ranking.fuse(text_q, generated, weights),
        [image[i] for i in liked],
        [image[i] for i in disliked],
        like_weight=like_w,
        dislike_weight=dislike_w,
    )
    exclude = {*disliked, ids[20]}
    hits = ranking.rank(
        catalog_id=catalog_vectors["catalog"].id,
        model_name=MODEL,
        query=query,
        k=N,
        product_text=(TEXT_MODEL, product_q, weights.product_text),
        exclude=sorted(exclude),
    )
    expected = _explicit_ranking(ids, explicit, exclude)
    _assert_same_ranking(hits, expected, dict(zip(ids, explicit.tolist(), strict=True)))
    # Without the product-text term the same query ranks by image similarity alone.
    no_text = ranking.rank(
        catalog_id=catalog_vectors["catalog"].id, model_name=MODEL, query=query, k=N, exact=True
    )
    image_only = explicit - weights.product_text * product
    _assert_same_ranking(
        no_text,
        _explicit_ranking(ids, image_only, set()),
        dict(zip(ids, image_only.tolist(), strict=True)),
    )
