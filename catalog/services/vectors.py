"""Storing item vectors and ranking items against a query vector in pgvector.

Vectors are L2-normalised, so cosine similarity is the inner product: queries order by pgvector's
``<#>`` (negative inner product). Every query names the encoder, so vectors from another model
never enter a ranking.

Vectors are stored in half precision (``halfvec``) and indexed as ``halfvec(dim)`` (HNSW takes up
to 4000 dimensions that way, against 2000 for 32-bit ``vector``). Scores are always computed at
full precision on the query's side: the stored halves are widened (exactly) to ``vector`` and
met with the float32 query, so a ranking equals numpy's over the stored vectors. The HNSW path
finds its candidates with the index (the query rounded to halves, as the index needs) and orders
those by the same exact score.

Each (space, model, dim) has its own partial HNSW index. Embedding jobs build it once, when the
first bulk load of that model is over (``catalog.services.index_builds``): until then its searches
are exact scans (the same results, slower on large catalogs); once it exists PostgreSQL updates it
on every insert, so it is never incomplete.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from catalog.models import CatalogItem, ItemEmbedding
from dar_site import advisory_locks

from .item_filters import ItemFilter, condition, item_condition

_TABLE = ItemEmbedding._meta.db_table
_ITEMS = CatalogItem._meta.db_table
# Out-of-stock items are never shown. The condition sits in the WHERE of the ranking query
# itself (with the HNSW index, iterative scans keep reading until k available items are found),
# so filtering never returns fewer results than asked. The subquery is uncorrelated: PostgreSQL
# runs it once per query as a hashed set (it is usually small: what a feed took away).
_UNAVAILABLE = (
    f" AND NOT ({{col}} = ANY(ARRAY(SELECT id FROM {_ITEMS} WHERE catalog_id = %s"
    f" AND availability = '{CatalogItem.Availability.OUT_OF_STOCK.value}')))"
)


def unavailable_filter(column: str) -> str:
    """SQL (one %s: the catalog id) leaving out a catalog's out-of-stock items."""
    return _UNAVAILABLE.replace("{col}", column)


@dataclass(frozen=True)
class Hit:
    item_id: int
    score: float


def _literal(vector: Sequence[float] | np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


# pgvector's HNSW limit for halfvec.
MAX_INDEXED_DIM = 4000
# COPY's binary header (signature, flags, header extension length) and trailer.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


def index_name(space: str, model_name: str, dim: int) -> str:
    digest = hashlib.sha256(f"{space}|{model_name}|{dim}|halfvec".encode()).hexdigest()[:16]
    return f"itememb_hnsw_{digest}"


def index_sql(name: str, dim: int, *, concurrently: bool = False) -> str:
    """CREATE INDEX for one (space, model) pair; its WHERE takes (space, model_name) params."""
    return (
        f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}IF NOT EXISTS {name} ON {_TABLE} "
        f"USING hnsw ((vector::halfvec({int(dim)})) halfvec_ip_ops) "
        f"WITH (m = {int(settings.DAR_HNSW_M)}, "
        f"ef_construction = {int(settings.DAR_HNSW_EF_CONSTRUCTION)}) "
        f"WHERE space = %s AND model_name = %s AND dim = {int(dim)}"
    )


def _index_valid(name: str) -> bool | None:
    """None: no such index; False: one being built concurrently, or left invalid by a concurrent
    build that failed or was killed (searches ignore it); True: usable."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [name])
        row = cursor.fetchone()
    return None if row is None else bool(row[0])


def index_ready(space: str, model_name: str, dim: int) -> bool:
    """Whether nothing is left to build for this pair: its index exists and is valid, or its
    vectors are too long to index."""
    return dim > MAX_INDEXED_DIM or bool(_index_valid(index_name(space, model_name, dim)))


def ensure_index(
    space: str, model_name: str, dim: int, *, concurrently: bool = False
) -> str | None:
    """Create the partial HNSW index for one (space, model) pair if it does not exist yet.

    Returns its name, or None when there is none after the call: vectors too long to index
    (searched by exact scans) or, with ``concurrently``, another session building it right now
    (which finishes the job). Builders of one index take turns (an advisory lock); an index left
    invalid by a concurrent build that failed is dropped and built again.

    ``concurrently`` (outside a transaction only; inside one it builds as usual) builds with
    CREATE INDEX CONCURRENTLY: the graph of a whole bulk load can take minutes (15 at 1M vectors,
    docs/benchmarks.md), and a plain build blocks every write to the vector table, of every
    model and catalog, for as long."""
    if dim > MAX_INDEXED_DIM:
        return None
    name = index_name(space, model_name, dim)
    if _index_valid(name):
        return name  # Skip CREATE INDEX: even IF NOT EXISTS takes a lock on the table.
    concurrently = concurrently and not connection.in_atomic_block
    with _build_lock(name, wait=not concurrently) as held:
        if not held:
            return None
        state = _index_valid(name)
        if state:
            return name  # built by the session this one waited for
        if state is False:  # no one else builds it (this session holds the lock): a failed build
            with connection.cursor() as cursor:
                cursor.execute(f"DROP INDEX {'CONCURRENTLY ' if concurrently else ''}{name}")
        if concurrently:
            _build_concurrently(name, space, model_name, dim)
        else:
            _build(name, space, model_name, dim)
    return name


@contextmanager
def _build_lock(name: str, *, wait: bool) -> Iterator[bool]:
    """Hold the advisory lock of one index's build (yields False when ``wait`` is off and another
    session holds it). Inside a transaction it lasts until the commit, which makes the index
    visible to the next builder; outside, it is released when the block ends."""
    lock = advisory_locks.key(f"dar.hnsw-build|{name}")
    if connection.in_atomic_block:
        yield advisory_locks.xact(lock, wait=wait)
        return
    with advisory_locks.session(lock, wait=wait) as held:
        yield held


def _build(name: str, space: str, model_name: str, dim: int) -> None:
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
        cursor.execute(index_sql(name, dim), [space, model_name])


def _build_concurrently(name: str, space: str, model_name: str, dim: int) -> None:
    # No transaction to scope the memory setting to: set for the session, reset after.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('maintenance_work_mem', %s, false)",
            [settings.DAR_HNSW_BUILD_MEMORY],
        )
        try:
            cursor.execute(index_sql(name, dim, concurrently=True), [space, model_name])
        finally:
            with suppress(DatabaseError):
                cursor.execute("RESET maintenance_work_mem")


def _copy_payload(rows: list[tuple[int, int, np.ndarray]]) -> bytes:
    """Rows (item_id, catalog_id, vector) as COPY's binary format, vectors as halfvec."""
    parts = [_COPY_HEADER]
    for item_id, catalog_id, vector in rows:
        halves = np.asarray(vector, dtype=">f2")
        field = struct.pack(">HH", len(halves), 0) + halves.tobytes()
        parts.append(struct.pack(">hiqiqi", 3, 8, item_id, 8, catalog_id, len(field)))
        parts.append(field)
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def store(
    space: str,
    model_name: str,
    rows: Iterable[tuple[int, int, np.ndarray]],
    *,
    index: bool = True,
) -> int:
    """Upsert vectors given as (item_id, catalog_id, vector); idempotent per item/space/model.

    One COPY (binary, half precision) into a temporary table and one INSERT ... ON CONFLICT from
    it, whatever the number of rows. An existing HNSW index is updated by the insert either way;
    ``index=False`` only leaves a missing one to a later ``ensure_index``: building it once after a
    bulk load is several times faster than updating it on every insert (embedding jobs do that,
    ``catalog.services.index_builds``)."""
    batch = [(int(i), int(c), np.asarray(v, dtype=np.float32)) for i, c, v in rows]
    if not batch:
        return 0
    dims = {int(v.shape[-1]) for _, _, v in batch}
    if len(dims) != 1:
        raise ValueError(f"one dimension per call, got {sorted(dims)}")
    dim = dims.pop()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS dar_vector_load"
            " (item_id bigint, catalog_id bigint, vector halfvec) ON COMMIT DELETE ROWS"
        )
        # Empty at a commit, but not inside an enclosing transaction that stored before.
        cursor.execute("TRUNCATE dar_vector_load")
        with cursor.copy("COPY dar_vector_load FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.write(_copy_payload(batch))
        cursor.execute(
            f"INSERT INTO {_TABLE} (item_id, catalog_id, space, model_name, dim, vector,"
            " created_at) SELECT item_id, catalog_id, %s, %s, %s, vector, now()"
            " FROM dar_vector_load ON CONFLICT (item_id, space, model_name) DO UPDATE"
            " SET vector = EXCLUDED.vector, dim = EXCLUDED.dim, catalog_id = EXCLUDED.catalog_id",
            [space, model_name, dim],
        )
    if index:
        ensure_index(space, model_name, dim)
    return len(batch)


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
    filters: Sequence[ItemFilter] = (),
) -> list[Hit]:
    """Top-k items of a catalog by inner product with ``query``, among the items passing
    ``filters`` (``item_filters``; in the same query).

    ``exact`` forces a sequential scan (brute force, the evaluation default); otherwise PostgreSQL
    may use the HNSW index, with iterative scans so the catalog filter cannot starve the result.
    """
    among = matching_items(catalog_id, filters) if filters else None
    if among is not None:
        # A selective filter: ranking its few items exactly beats any index scan (which would
        # read k / selectivity candidates to find k of them).
        return _search(catalog_id, space, model_name, query, k, True, 0, exclude, (), among)
    hits = _search(catalog_id, space, model_name, query, k, exact, ef_search, exclude, filters)
    if filters and not exact and len(hits) < k:
        # A very selective filter can outlast an iterative scan (hnsw.max_scan_tuples): the exact
        # scan then finds every match, so fewer than k comes back only when fewer match.
        hits = _search(catalog_id, space, model_name, query, k, True, ef_search, exclude, filters)
    return hits


def _search(
    catalog_id: int,
    space: str,
    model_name: str,
    query: np.ndarray,
    k: int,
    exact: bool,
    ef_search: int,
    exclude: Sequence[int],
    filters: Sequence[ItemFilter],
    among: Sequence[int] | None = None,
) -> list[Hit]:
    dim = int(query.shape[-1])
    literal = _literal(query)
    score = f"(vector::vector({dim})) <#> %s::vector({dim})"
    where = f"catalog_id = %s AND space = %s AND model_name = %s AND dim = {dim}"
    params: list[Any] = [catalog_id, space, model_name]
    if exclude:
        where += " AND NOT (item_id = ANY(%s))"
        params.append(list(exclude))
    where += unavailable_filter("item_id")
    params.append(catalog_id)
    filtered, filter_params = condition(filters, "item_id")
    where += filtered
    params.extend(filter_params)
    if among is not None:
        where += " AND item_id = ANY(%s)"
        params.append(list(among))
    exact = exact or dim > MAX_INDEXED_DIM
    if exact:
        sql = (
            f"SELECT item_id, -({score}) AS score FROM {_TABLE} WHERE {where}"
            f" ORDER BY {score}, item_id LIMIT %s"
        )
        params = [literal, *params, literal, int(k)]
    else:
        # The index finds the k nearest by the half-precision distance (its own expression);
        # they are then ordered by the exact one.
        sql = (
            f"SELECT item_id, -({score}) AS score FROM (SELECT item_id, vector FROM {_TABLE}"
            f" WHERE {where} ORDER BY (vector::halfvec({dim})) <#> %s::halfvec({dim}) LIMIT %s)"
            f" AS near ORDER BY {score}, item_id"
        )
        params = [literal, *params, literal, int(k), literal]
    if among is not None:
        # The items' own rows, by the (item, space, model) index; the ORDER BY is the exact
        # score, which the HNSW index cannot give.
        local = {}
    elif exact:
        local = {"enable_indexscan": "off", "enable_bitmapscan": "off"}
    else:
        local = {"hnsw.ef_search": str(int(ef_search)), "hnsw.iterative_scan": "strict_order"}
        if filters:
            # The planner prices the index path as if the filter made it read most of the
            # index; iterative scans stop once k pass, and filters selective enough to make a
            # scan cheaper were ranked by id (``matching_items``).
            local["enable_seqscan"] = "off"
    with transaction.atomic(), connection.cursor() as cursor:
        # SET LOCAL for each, in one round trip: set_config(..., is_local => true).
        if local:
            calls = ", ".join("set_config(%s, %s, true)" for _ in local)
            cursor.execute(f"SELECT {calls}", [part for item in local.items() for part in item])
        cursor.execute(sql, params)
        return [Hit(int(item_id), float(score)) for item_id, score in cursor.fetchall()]


def matching_items(catalog_id: int, filters: Sequence[ItemFilter]) -> list[int] | None:
    """The ids of the available items passing ``filters`` when there are at most
    DAR_FILTER_EXACT_MAX of them (then ranked exactly), else None (an iterative index scan)."""
    limit = int(settings.DAR_FILTER_EXACT_MAX)
    if limit <= 0:
        return None
    where, params = item_condition(filters)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT f.id FROM {_ITEMS} f WHERE f.catalog_id = %s AND f.availability <> %s"
            f" AND {where} LIMIT %s",
            [catalog_id, CatalogItem.Availability.OUT_OF_STOCK.value, *params, limit + 1],
        )
        ids = [int(row[0]) for row in cursor.fetchall()]
    return ids if len(ids) <= limit else None


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
    filters: Sequence[ItemFilter] = (),
) -> list[Hit]:
    """Exact ranking by image similarity plus weighted product-text similarity (among the
    items passing ``filters``).

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
    sql += unavailable_filter("i.item_id")
    params.append(catalog_id)
    filtered, filter_params = condition(filters, "i.item_id")
    sql += filtered
    params.extend(filter_params)
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
