"""Storing item vectors and ranking items against a query vector in pgvector.

Vectors are L2-normalised, so cosine similarity is the inner product: queries order by pgvector's
``<#>`` (negative inner product). Every query names the encoder, so vectors from another model
never enter a ranking.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from catalog.models import ItemEmbedding

_TABLE = ItemEmbedding._meta.db_table


@dataclass(frozen=True)
class Hit:
    item_id: int
    score: float


def _literal(vector: Sequence[float] | np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


def index_name(space: str, model_name: str, dim: int) -> str:
    digest = hashlib.sha256(f"{space}|{model_name}|{dim}".encode()).hexdigest()[:16]
    return f"itememb_hnsw_{digest}"


def ensure_index(space: str, model_name: str, dim: int) -> str:
    """Create the partial HNSW index for one (space, model) pair if it does not exist yet."""
    name = index_name(space, model_name, dim)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", [name])
        if cursor.fetchone():
            return name  # Skip CREATE INDEX: even IF NOT EXISTS takes a lock on the table.
    with transaction.atomic(), connection.cursor() as cursor:
        # Deferred foreign-key checks queued in this transaction would block CREATE INDEX.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        # pgvector builds the graph in memory and slows down several-fold once it spills out of
        # maintenance_work_mem (64 MB by default: about 40k 512-d vectors). For this build only.
        cursor.execute(
            "SELECT set_config('maintenance_work_mem', %s, true)",
            [settings.DAR_HNSW_BUILD_MEMORY],
        )
        # Graph parameters apply when an index is built; changing them needs a rebuild (drop it).
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON {_TABLE} "
            f"USING hnsw ((vector::vector({int(dim)})) vector_ip_ops) "
            f"WITH (m = {int(settings.DAR_HNSW_M)}, "
            f"ef_construction = {int(settings.DAR_HNSW_EF_CONSTRUCTION)}) "
            f"WHERE space = %s AND model_name = %s AND dim = {int(dim)}",
            [space, model_name],
        )
    return name


def store(
    space: str,
    model_name: str,
    rows: Iterable[tuple[int, int, np.ndarray]],
    *,
    index: bool = True,
) -> int:
    """Upsert vectors given as (item_id, catalog_id, vector); idempotent per item/space/model.

    ``index=False`` leaves the HNSW index to a later ``ensure_index``: building it once after a
    bulk load is several times faster than updating it on every insert."""
    objs = []
    dim = 0
    for item_id, catalog_id, vector in rows:
        dim = int(vector.shape[-1])
        objs.append(
            ItemEmbedding(
                item_id=item_id,
                catalog_id=catalog_id,
                space=space,
                model_name=model_name,
                dim=dim,
                vector=np.asarray(vector, dtype=np.float32),
            )
        )
    if not objs:
        return 0
    with transaction.atomic():
        ItemEmbedding.objects.bulk_create(
            objs,
            update_conflicts=True,
            unique_fields=["item", "space", "model_name"],
            update_fields=["vector", "dim", "catalog"],
        )
    if index:
        ensure_index(space, model_name, dim)
    return len(objs)


def search(
    *,
    catalog_id: int,
    space: str,
    model_name: str,
    query: np.ndarray,
    k: int,
    exact: bool = False,
    ef_search: int = 100,
    exclude: Sequence[int] = (),
) -> list[Hit]:
    """Top-k items of a catalog by inner product with ``query``.

    ``exact`` forces a sequential scan (brute force, the evaluation default); otherwise PostgreSQL
    may use the HNSW index, with iterative scans so the catalog filter cannot starve the result.
    """
    dim = int(query.shape[-1])
    literal = _literal(query)
    sql = (
        f"SELECT item_id, -((vector::vector({dim})) <#> %s::vector({dim})) AS score "
        f"FROM {_TABLE} WHERE catalog_id = %s AND space = %s AND model_name = %s AND dim = {dim}"
    )
    params: list[Any] = [literal, catalog_id, space, model_name]
    if exclude:
        sql += " AND NOT (item_id = ANY(%s))"
        params.append(list(exclude))
    sql += f" ORDER BY (vector::vector({dim})) <#> %s::vector({dim}), item_id LIMIT %s"
    params += [literal, int(k)]
    if exact:
        local = {"enable_indexscan": "off", "enable_bitmapscan": "off"}
    else:
        local = {"hnsw.ef_search": str(int(ef_search)), "hnsw.iterative_scan": "strict_order"}
    with transaction.atomic(), connection.cursor() as cursor:
        # SET LOCAL for each, in one round trip: set_config(..., is_local => true).
        calls = ", ".join("set_config(%s, %s, true)" for _ in local)
        cursor.execute(f"SELECT {calls}", [part for item in local.items() for part in item])
        cursor.execute(sql, params)
        return [Hit(int(item_id), float(score)) for item_id, score in cursor.fetchall()]


def scores_for(
    *, space: str, model_name: str, query: np.ndarray, item_ids: Sequence[int]
) -> dict[int, float]:
    """Exact inner products of ``query`` with the given items' vectors in one space."""
    if not item_ids:
        return {}
    dim = int(query.shape[-1])
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT item_id, -((vector::vector({dim})) <#> %s::vector({dim})) FROM {_TABLE} "
            f"WHERE space = %s AND model_name = %s AND dim = {dim} AND item_id = ANY(%s)",
            [_literal(query), space, model_name, list(item_ids)],
        )
        return {int(item_id): float(score) for item_id, score in cursor.fetchall()}


def vectors_for(*, space: str, model_name: str, item_ids: Sequence[int]) -> dict[int, np.ndarray]:
    rows = ItemEmbedding.objects.filter(
        space=space, model_name=model_name, item_id__in=list(item_ids)
    ).values_list("item_id", "vector")
    return {int(item_id): np.asarray(vector, dtype=np.float32) for item_id, vector in rows}


def search_with_product_text(
    *,
    catalog_id: int,
    model_name: str,
    query: np.ndarray,
    text_model: str,
    text_query: np.ndarray,
    text_weight: float,
    k: int,
    exclude: Sequence[int] = (),
) -> list[Hit]:
    """Exact ranking by image similarity plus weighted product-text similarity.

    The two spaces come from different models, so this cannot be one vector: it joins each image
    vector with its item's text vector and scans the catalog (catalog-sized, not corpus-sized).
    """
    dim, tdim = int(query.shape[-1]), int(text_query.shape[-1])
    sql = (
        f"SELECT i.item_id, -((i.vector::vector({dim})) <#> %s::vector({dim}))"
        f" + %s * COALESCE(-((t.vector::vector({tdim})) <#> %s::vector({tdim})), 0) AS score"
        f" FROM {_TABLE} i LEFT JOIN {_TABLE} t ON t.item_id = i.item_id AND t.space = 'text'"
        f" AND t.model_name = %s AND t.dim = {tdim}"
        f" WHERE i.catalog_id = %s AND i.space = 'image' AND i.model_name = %s AND i.dim = {dim}"
    )
    params: list[Any] = [
        _literal(query),
        float(text_weight),
        _literal(text_query),
        text_model,
        catalog_id,
        model_name,
    ]
    if exclude:
        sql += " AND NOT (i.item_id = ANY(%s))"
        params.append(list(exclude))
    sql += " ORDER BY score DESC, i.item_id LIMIT %s"
    params.append(int(k))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [Hit(int(item_id), float(score)) for item_id, score in cursor.fetchall()]


def positions(
    *,
    catalog_id: int,
    space: str,
    model_name: str,
    queries: np.ndarray,
    targets: Sequence[int],
) -> list[int | None]:
    """The exact 0-based position of ``targets[i]`` in ``search(query=queries[i], exact=True)``
    over the whole catalog, without fetching that ranking (used by the offline evaluation).

    It counts the items ``search`` would put first: a smaller ``<#>`` distance, or an equal one and
    a smaller item id (its tie-break), as one row comparison. The query goes through the same
    ``_literal`` and the same SQL expression, so the distances compared are bit-identical to the
    ones ``search`` orders by.
    None where the target has no vector in this space and model.
    """
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if len(queries) != len(targets):
        raise ValueError("one target per query")
    if not len(targets):
        return []
    dim = int(queries.shape[-1])
    expr = f"(e.vector::vector({dim})) <#> t.v"
    sql = (
        # MATERIALIZED: evaluated once, not inlined (which would parse the query text and
        # recompute the target's distance for every row counted).
        f"WITH q AS MATERIALIZED (SELECT u.ord, u.qv::vector({dim}) AS v, u.tid"
        " FROM unnest(%s::text[], %s::bigint[]) WITH ORDINALITY AS u(qv, tid, ord)),"
        f" t AS MATERIALIZED (SELECT q.ord, q.v, q.tid, (x.vector::vector({dim})) <#> q.v AS td"
        " FROM q"
        f" JOIN {_TABLE} x ON x.item_id = q.tid AND x.catalog_id = %s AND x.space = %s"
        f" AND x.model_name = %s AND x.dim = {dim})"
        f" SELECT t.ord, (SELECT count(*) FROM {_TABLE} e WHERE e.catalog_id = %s"
        f" AND e.space = %s AND e.model_name = %s AND e.dim = {dim}"
        f" AND ({expr}, e.item_id) < (t.td, t.tid)) FROM t"
    )
    params: list[Any] = [
        [_literal(q) for q in queries],
        [int(t) for t in targets],
        catalog_id,
        space,
        model_name,
        catalog_id,
        space,
        model_name,
    ]
    found: dict[int, int] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for ordinal, count in cursor.fetchall():
            found[int(ordinal) - 1] = int(count)
    return [found.get(i) for i in range(len(targets))]
