"""Migration 0003: 32-bit vectors become halfvec in place (no re-embedding), indexes rebuilt."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from catalog.services import vectors
from tests.factories import CatalogFactory, CatalogItemFactory

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE, AFTER = ("catalog", "0002_item_original"), ("catalog", "0003_vectors_halfvec")


def _migrate(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


def _migrate_back_to_latest() -> None:
    # Later migrations (catalog 0004...) must be re-applied too: the tests after this one need them.
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def _column_type() -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'catalog_itemembedding'::regclass AND attname = 'vector'"
        )
        return str(cursor.fetchone()[0])


def _indexdefs() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'catalog_itemembedding'"
            " AND indexname LIKE 'itememb_hnsw_%%'"
        )
        return [row[0] for row in cursor.fetchall()]


def test_vectors_move_to_halfvec_without_reembedding_and_back() -> None:
    catalog = CatalogFactory.create()
    items = CatalogItemFactory.create_batch(3, catalog=catalog)
    rng = np.random.default_rng(3)
    stored = rng.normal(size=(3, 12)).astype(np.float32)
    _migrate(BEFORE)
    try:
        assert _column_type() == "vector"
        with connection.cursor() as cursor:
            for item, vector in zip(items, stored, strict=True):
                cursor.execute(
                    "INSERT INTO catalog_itemembedding (item_id, catalog_id, space, model_name,"
                    " dim, vector, created_at) VALUES (%s, %s, 'image', 'old-enc', 12, %s::vector,"
                    " now())",
                    [item.pk, catalog.pk, "[" + ",".join(str(float(x)) for x in vector) + "]"],
                )
            # The index the previous code built for that model.
            cursor.execute(
                "CREATE INDEX itememb_hnsw_old ON catalog_itemembedding USING hnsw"
                " ((vector::vector(12)) vector_ip_ops) WHERE space = 'image'"
                " AND model_name = 'old-enc' AND dim = 12"
            )
    finally:
        _migrate_back_to_latest()

    assert _column_type() == "halfvec"
    (indexdef,) = _indexdefs()
    assert "halfvec_ip_ops" in indexdef and "halfvec(12)" in indexdef
    assert vectors.index_name("image", "old-enc", 12) in indexdef
    kept = vectors.vectors_for(space="image", model_name="old-enc", item_ids=[i.pk for i in items])
    for item, vector in zip(items, stored, strict=True):
        assert np.allclose(kept[item.pk], vector, atol=2e-3)  # half precision of the same vector
    _migrate_back_to_latest()
    hits = vectors.search(
        catalog_id=catalog.pk, space="image", model_name="old-enc", query=stored[1], k=1
    )
    assert hits[0].item_id == items[1].pk

    # Reversible: back to 32-bit vectors and their index, values kept.
    _migrate(BEFORE)
    try:
        assert _column_type() == "vector"
        assert all("vector_ip_ops" in d for d in _indexdefs()) and len(_indexdefs()) == 1
    finally:
        _migrate_back_to_latest()
