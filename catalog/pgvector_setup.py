"""Migration helpers: enable pgvector (or explain clearly why it cannot be); move the vectors'
partial HNSW indexes from 32-bit ``vector`` to ``halfvec`` and back."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def enable_pgvector(apps: Any, schema_editor: Any) -> None:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        row = cursor.fetchone()
        if row is None:
            raise ImproperlyConfigured(
                "The PostgreSQL server at DATABASE_URL does not have the pgvector extension "
                "installed. Install pgvector (https://github.com/pgvector/pgvector) on that "
                "server, or unset DATABASE_URL to use the embedded PostgreSQL, which includes it."
            )
        cursor.execute("CREATE EXTENSION IF NOT EXISTS vector")


def _hnsw_indexes(cursor: Any) -> list[str]:
    cursor.execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'catalog_itemembedding'"
        " AND indexname LIKE 'itememb_hnsw_%%'"
    )
    return [row[0] for row in cursor.fetchall()]


def _rebuild_indexes(schema_editor: Any, build: Any) -> None:
    """Drop every partial HNSW index, then ``build(cursor, space, model_name, dim)`` per pair."""
    with schema_editor.connection.cursor() as cursor:
        for name in _hnsw_indexes(cursor):
            cursor.execute(f"DROP INDEX IF EXISTS {name}")
        cursor.execute("SELECT DISTINCT space, model_name, dim FROM catalog_itemembedding")
        pairs = cursor.fetchall()
        cursor.execute(
            "SELECT set_config('maintenance_work_mem', %s, false)",
            [str(getattr(settings, "DAR_HNSW_BUILD_MEMORY", "1GB"))],
        )
        for space, model_name, dim in pairs:
            build(cursor, space, model_name, int(dim))


def drop_hnsw_indexes(apps: Any, schema_editor: Any) -> None:
    """Before the vector column changes type: its expression indexes name the old type."""
    with schema_editor.connection.cursor() as cursor:
        for name in _hnsw_indexes(cursor):
            cursor.execute(f"DROP INDEX IF EXISTS {name}")


def build_halfvec_indexes(apps: Any, schema_editor: Any) -> None:
    """The partial HNSW indexes over ``vector::halfvec(dim)``, one per (space, model, dim)."""
    from catalog.services import vectors

    def build(cursor: Any, space: str, model_name: str, dim: int) -> None:
        if dim <= vectors.MAX_INDEXED_DIM:
            cursor.execute(
                vectors.index_sql(vectors.index_name(space, model_name, dim), dim),
                [space, model_name],
            )

    _rebuild_indexes(schema_editor, build)


def build_vector_indexes(apps: Any, schema_editor: Any) -> None:
    """Going back: the 32-bit indexes of before (names as the previous code made them)."""
    import hashlib

    def build(cursor: Any, space: str, model_name: str, dim: int) -> None:
        if dim > 2000:
            return
        digest = hashlib.sha256(f"{space}|{model_name}|{dim}".encode()).hexdigest()[:16]
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS itememb_hnsw_{digest} ON catalog_itemembedding "
            f"USING hnsw ((vector::vector({dim})) vector_ip_ops) "
            f"WITH (m = {int(settings.DAR_HNSW_M)}, "
            f"ef_construction = {int(settings.DAR_HNSW_EF_CONSTRUCTION)}) "
            f"WHERE space = %s AND model_name = %s AND dim = {dim}",
            [space, model_name],
        )

    _rebuild_indexes(schema_editor, build)
