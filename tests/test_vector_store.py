"""pgvector storage and search: model isolation, exact vs HNSW, idempotent upserts."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection
from django.test import override_settings

from catalog.models import ItemEmbedding
from catalog.services import vectors
from tests.factories import CatalogFactory, CatalogItemFactory

pytestmark = pytest.mark.django_db


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pgvector_is_installed() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        (version,) = cursor.fetchone()
    assert tuple(int(p) for p in version.split(".")[:2]) >= (0, 8)


def test_search_matches_numpy_and_ignores_other_models_and_catalogs() -> None:
    rng = np.random.default_rng(0)
    catalog, other = CatalogFactory.create(), CatalogFactory.create()
    items = [CatalogItemFactory.create(catalog=catalog) for _ in range(30)]
    stranger = CatalogItemFactory.create(catalog=other)
    vecs = _unit(rng, 30, 16)
    vectors.store(
        "image", "enc-a", [(i.id, catalog.id, v) for i, v in zip(items, vecs, strict=True)]
    )
    query = _unit(rng, 1, 16)[0]
    # The same items under another model, and another catalog's item equal to the query:
    # neither may appear in enc-a's ranking of this catalog.
    vectors.store("image", "enc-b", [(items[0].id, catalog.id, query)])
    vectors.store("image", "enc-a", [(stranger.id, other.id, query)])

    # Stored in half precision: the ranking is numpy's over the rounded vectors, with the query
    # at full precision.
    vecs = vecs.astype(np.float16).astype(np.float32)
    expected = [items[i].id for i in np.argsort(-(vecs @ query), kind="stable")[:10]]
    for exact in (True, False):
        hits = vectors.search(
            catalog_id=catalog.id, space="image", model_name="enc-a", query=query, k=10, exact=exact
        )
        assert [h.item_id for h in hits] == expected
        assert hits[0].score == pytest.approx(float(np.max(vecs @ query)), abs=1e-5)


def test_store_is_idempotent_and_creates_the_hnsw_index() -> None:
    catalog = CatalogFactory.create()
    item = CatalogItemFactory.create(catalog=catalog)
    v = np.ones(8, dtype=np.float32) / np.sqrt(8)
    vectors.store("image", "enc", [(item.id, catalog.id, v)])
    vectors.store("image", "enc", [(item.id, catalog.id, -v)])
    row = ItemEmbedding.objects.get(item=item)
    assert row.dim == 8 and row.model_name == "enc"
    assert np.allclose(row.vector, -v, atol=1e-3)  # half precision
    name = vectors.index_name("image", "enc", 8)
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [name])
        (indexdef,) = cursor.fetchone()
    assert "hnsw" in indexdef and "halfvec_ip_ops" in indexdef


def test_index_uses_the_configured_graph_parameters() -> None:
    catalog = CatalogFactory.create()
    item = CatalogItemFactory.create(catalog=catalog)
    with override_settings(DAR_HNSW_M=24, DAR_HNSW_EF_CONSTRUCTION=80):
        vectors.store("image", "enc-graph", [(item.id, catalog.id, np.ones(4, np.float32) / 2)])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s",
            [vectors.index_name("image", "enc-graph", 4)],
        )
        (indexdef,) = cursor.fetchone()
    assert "m='24'" in indexdef and "ef_construction='80'" in indexdef
