"""Vector search in pgvector: HNSW build time, query latency and recall@10 against exact search.

    python -m bench.vector_search                 # 100k x 512-d (a few minutes on 2 cores)
    python -m bench.vector_search --size 1000000  # the 1M goal: recall@10 >= 0.95 at p50 < 5 ms

Vectors are clustered like real embeddings (Gaussian clusters around centres on the sphere),
because uniform random vectors in 512-d have no neighbourhood structure for HNSW to exploit and
understate its recall badly. They are bulk-loaded with COPY into the real catalog tables of a bench
database; the index is built by ``vectors.ensure_index`` and every query goes through
``vectors.search``, the code path the product ranks with. Ground truth is a numpy brute force over
the same float32 vectors, timed beside pgvector's exact (sequential) scan.

The filtered run gives the items a synthetic price (a permutation of the item ids, so a bound
keeps an exact share of them) and ranks with a 1% and a 10% price filter through the same
``vectors.search`` (the filter inside the pgvector query, iterative index scans), against a numpy
ground truth over the matching items only, beside the unfiltered run at the same ef_search.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.common import Summary, bench_database, print_table, setup_django

SPACE = "image"
K = 10
# Synthetic prices: mod(id * PRICE_STEP, PRICE_SPAN) / 100 EUR, a permutation of 0..99.99 over
# any PRICE_SPAN consecutive ids (the step is prime to the span), so "price < 1.00" keeps 1 %.
PRICE_STEP, PRICE_SPAN = 7919, 10_000
SELECTIVITIES = (0.01, 0.10)


@dataclass(frozen=True)
class Config:
    size: int
    dim: int
    clusters: int
    spread: float
    queries: int
    exact_queries: int
    warmup: int
    ef_search: Sequence[int]
    seed: int
    build_mem: str
    build_workers: int
    m: int
    ef_construction: int
    keep: bool

    @property
    def model_name(self) -> str:
        # One model name per data set: each gets its own partial HNSW index, so kept data sets of
        # other sizes never share (or slow down) the index measured here.
        return (
            f"bench:clustered:n{self.size}:d{self.dim}:c{self.clusters}:s{self.spread}:{self.seed}"
        )


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int, spread: float) -> np.ndarray:
    """``n`` unit vectors, each a random centre plus isotropic noise of expected norm ``spread``."""
    dim = centres.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    step = 50_000  # bounded temporaries at 1M
    for start in range(0, n, step):
        stop = min(n, start + step)
        labels = rng.integers(0, len(centres), stop - start)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = centres[labels] + noise * np.float32(spread / np.sqrt(dim))
    return _normalise(out)


def make_data(cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    centres = _normalise(rng.standard_normal((cfg.clusters, cfg.dim), dtype=np.float32))
    data = clustered(rng, centres, cfg.size, cfg.spread)
    # Queries come from the same distribution but are not catalog points (a shopper's query is
    # near products, never one of them).
    queries = clustered(np.random.default_rng(cfg.seed + 1), centres, cfg.queries, cfg.spread)
    warmup = clustered(np.random.default_rng(cfg.seed + 2), centres, cfg.warmup, cfg.spread)
    return data, queries, warmup


def _create_catalog(cfg: Config) -> tuple[int, bool]:
    from catalog.models import ItemEmbedding
    from catalog.services import catalogs

    slug = "bench-" + hashlib.sha256(cfg.model_name.encode()).hexdigest()[:16]
    catalog, created = catalogs.ensure_catalog(
        "bench", slug, shop_name="Bench", name=cfg.model_name
    )
    complete = (
        not created
        and ItemEmbedding.objects.filter(catalog=catalog, model_name=cfg.model_name).count()
        == cfg.size
    )
    if not created and not complete:
        catalogs.delete_catalog(catalog)  # a half-loaded leftover of an interrupted --keep run
        catalog, _ = catalogs.ensure_catalog("bench", slug, shop_name="Bench", name=cfg.model_name)
    return catalog.id, complete


def bulk_load(cfg: Config, catalog_id: int, data: np.ndarray) -> float:
    """COPY items and their vectors into the catalog tables; returns seconds taken."""
    from django.db import connection, transaction
    from pgvector import HalfVector
    from pgvector.psycopg import register_vector

    now = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    connection.ensure_connection()
    raw = connection.connection
    register_vector(raw)
    with transaction.atomic(), raw.cursor() as cur:
        with cur.copy(
            "COPY catalog_catalogitem (catalog_id, image, original, sha256, width, height,"
            " source_name,"
            " title, description, attributes, status, error, created_at, updated_at,"
            " product_id, product_url, currency, availability, brand, category, image_source)"
            " FROM STDIN"
        ) as copy:
            for i in range(cfg.size):
                copy.write_row(
                    (
                        catalog_id,
                        f"bench/{i}.png",
                        "",  # no private original: the bench stores no files
                        f"{i:064x}",
                        0,
                        0,
                        "",
                        "",
                        "",
                        "{}",
                        "embedded",
                        "",
                        now,
                        now,
                        # Product data: no product id, price or link; in stock, so searchable.
                        "",
                        "",
                        "",
                        "in_stock",
                        "",
                        "",
                        "",
                    )
                )
        cur.execute(
            "SELECT id FROM catalog_catalogitem WHERE catalog_id = %s ORDER BY id", [catalog_id]
        )
        ids = [row[0] for row in cur.fetchall()]
        # Binary COPY sends the vectors as the column stores them (halfvec), no text round trip.
        with cur.copy(
            "COPY catalog_itemembedding (item_id, catalog_id, space, model_name, dim, vector,"
            " created_at) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "int8", "text", "text", "int4", "halfvec", "timestamptz"])
            for item_id, vector in zip(ids, data, strict=True):
                row = (item_id, catalog_id, SPACE, cfg.model_name, cfg.dim, HalfVector(vector), now)
                copy.write_row(row)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE catalog_catalogitem")
        cursor.execute("ANALYZE catalog_itemembedding")
    return time.perf_counter() - start


def item_ids(catalog_id: int) -> np.ndarray:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM catalog_catalogitem WHERE catalog_id = %s ORDER BY id", [catalog_id]
        )
        return np.array([row[0] for row in cursor.fetchall()], dtype=np.int64)


def build_index(cfg: Config) -> tuple[float | None, str]:
    """Build the HNSW index through ``ensure_index``; None when a kept index was reused.

    ``--m``/``--ef-construction`` reach ``ensure_index`` as the DAR_HNSW_* settings, so the
    index is the one the product builds with those settings.
    """
    from django.db import connection
    from django.test import override_settings

    from catalog.services import vectors

    name = vectors.index_name(SPACE, cfg.model_name, cfg.dim)
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [name])
        row = cursor.fetchone()
        if row:
            same = f"m='{cfg.m}'" in row[0] and f"ef_construction='{cfg.ef_construction}'" in row[0]
            if same:
                return None, name
            cursor.execute(f"DROP INDEX {name}")  # kept data, other graph parameters
        cursor.execute("SET max_parallel_maintenance_workers = %s", [cfg.build_workers])

    start = time.perf_counter()
    # A graph that does not fit maintenance_work_mem (DAR_HNSW_BUILD_MEMORY) is built on disk,
    # many times slower: the bench sizes it to fit.
    with override_settings(
        DAR_HNSW_M=cfg.m,
        DAR_HNSW_EF_CONSTRUCTION=cfg.ef_construction,
        DAR_HNSW_BUILD_MEMORY=cfg.build_mem,
    ):
        vectors.ensure_index(SPACE, cfg.model_name, cfg.dim)
    elapsed = time.perf_counter() - start
    with connection.cursor() as cursor:
        cursor.execute("RESET max_parallel_maintenance_workers")
    return elapsed, name


def index_options(name: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [name])
        definition = str(cursor.fetchone()[0])
    return (
        definition[definition.find(" WITH (") + 1 : definition.find(" WHERE ")]
        if (" WITH (" in definition)
        else "pgvector defaults"
    )


def server_setting(name: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s)", [name])
        return str(cursor.fetchone()[0])


def relation_mb(name: str) -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s::regclass)", [name])
        return cursor.fetchone()[0] / 2**20


def index_scans(name: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        # Statistics reach the shared counters only when a backend flushes them.
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT coalesce(idx_scan, 0) FROM pg_stat_user_indexes WHERE indexrelname = %s",
            [name],
        )
        row = cursor.fetchone()
        return int(row[0]) if row else 0


def set_prices(catalog_id: int) -> None:
    """Give the bench items their synthetic prices (also on data kept from older runs)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE catalog_catalogitem SET price = mod(id * %s, %s)::numeric / 100,"
            " currency = 'EUR' WHERE catalog_id = %s AND price IS DISTINCT FROM"
            " mod(id * %s, %s)::numeric / 100",
            [PRICE_STEP, PRICE_SPAN, catalog_id, PRICE_STEP, PRICE_SPAN],
        )
        cursor.execute("ANALYZE catalog_catalogitem")


def synthetic_prices(ids: np.ndarray) -> np.ndarray:
    return ((ids * PRICE_STEP) % PRICE_SPAN).astype(np.float64) / 100


def numpy_topk(data: np.ndarray, query: np.ndarray) -> np.ndarray:
    scores = data @ query
    top = np.argpartition(-scores, K)[:K]
    return top[np.argsort(-scores[top])]


def run_queries(
    catalog_id: int,
    cfg: Config,
    queries: np.ndarray,
    *,
    exact: bool,
    ef: int = 0,
    filters: Sequence[object] = (),
) -> tuple[list[float], list[list[int]]]:
    from catalog.services import vectors

    def one(q: np.ndarray) -> list[int]:
        hits = vectors.search(
            catalog_id=catalog_id,
            space=SPACE,
            model_name=cfg.model_name,
            query=q,
            k=K,
            exact=exact,
            ef_search=ef or 100,
            filters=filters,  # type: ignore[arg-type]
        )
        return [h.item_id for h in hits]

    for q in queries[:3]:  # warm the caches and the connection
        one(q)
    times, results = [], []
    for q in queries:
        start = time.perf_counter()
        results.append(one(q))
        times.append((time.perf_counter() - start) * 1000)
    return times, results


def recall(results: list[list[int]], truth: list[set[int]]) -> float:
    return float(np.mean([len(set(r) & t) / K for r, t in zip(results, truth, strict=False)]))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.vector_search", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--size", type=int, default=100_000, help="catalog vectors (100000)")
    parser.add_argument("--dim", type=int, default=512, help="dimension (512, as CLIP ViT-B)")
    parser.add_argument(
        "--clusters",
        type=int,
        default=0,
        help="cluster centres (default: one per 50 vectors, 2000 at 100k, so that a larger catalog "
        "keeps the same neighbourhood structure)",
    )
    parser.add_argument(
        "--spread",
        type=float,
        default=0.6,
        help="expected norm of the within-cluster noise around a unit centre (0.6)",
    )
    parser.add_argument("--queries", type=int, default=200, help="queries per method (200)")
    parser.add_argument(
        "--exact-queries",
        type=int,
        default=30,
        help="queries for pgvector's exact scan, the slow one (30)",
    )
    parser.add_argument(
        "--ef-search",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[40, 60, 100, 200],
        help="comma-separated hnsw.ef_search values (40,60,100,200; the product uses 60)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=100,
        help="untimed HNSW queries (other vectors) first, so the index is in cache (100)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--build-mem", default="", help="maintenance_work_mem for the build (default: sized to fit)"
    )
    parser.add_argument(
        "--build-workers",
        type=int,
        default=1,
        help="max_parallel_maintenance_workers (1: the leader plus one worker on 2 cores)",
    )
    parser.add_argument("--m", type=int, default=16, help="HNSW links per node (16)")
    parser.add_argument(
        "--ef-construction",
        type=int,
        default=128,
        help="HNSW build candidate list (128, the product's DAR_HNSW_EF_CONSTRUCTION default)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the bench database (dar_bench_vectors) and reuse loaded data and index",
    )
    parser.add_argument(
        "--drop", action="store_true", help="drop the kept bench database (dar_bench_vectors)"
    )
    args = parser.parse_args(argv)
    # Heap tuple plus graph links per vector, with headroom; at least PostgreSQL's default.
    build_mem = (
        args.build_mem or f"{max(64, int(args.size * (args.dim * 4 + 400) * 1.5 / 2**20))}MB"
    )
    cfg = Config(
        args.size,
        args.dim,
        args.clusters or max(1, args.size // 50),
        args.spread,
        args.queries,
        min(args.exact_queries, args.queries),
        args.warmup,
        args.ef_search,
        args.seed,
        build_mem,
        args.build_workers,
        args.m,
        args.ef_construction,
        args.keep,
    )
    if cfg.keep or args.drop:
        import os

        os.environ["DAR_TEST_DB_NAME"] = "dar_bench_vectors"
    setup_django()
    if args.drop:
        with bench_database(keep=True, drop=True) as db_name:
            print(f"dropped {db_name}")
        return

    start = time.perf_counter()
    data, queries, warmup = make_data(cfg)
    gen_s = time.perf_counter() - start
    with bench_database(keep=cfg.keep, drop=not cfg.keep) as db_name:
        run(cfg, db_name, data, queries, warmup, gen_s)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(
    cfg: Config,
    db_name: str,
    data: np.ndarray,
    queries: np.ndarray,
    warmup: np.ndarray,
    gen_s: float,
) -> None:
    catalog_id, reused = _create_catalog(cfg)
    if not reused:
        progress(f"loading {cfg.size} vectors with COPY")
    load_s = None if reused else bulk_load(cfg, catalog_id, data)
    progress("building the HNSW index")
    build_s, index = build_index(cfg)
    ids = item_ids(catalog_id)
    progress("querying")

    np_times, truth = [], []
    for q in queries:
        start = time.perf_counter()
        top = numpy_topk(data, q)
        np_times.append((time.perf_counter() - start) * 1000)
        truth.append({int(i) for i in ids[top]})

    rows: list[list[object]] = []
    s = Summary.of(np_times)
    rows.append(["numpy brute force", "-", s.n, s.p50, s.p95, 1.0])
    ex_times, ex_results = run_queries(catalog_id, cfg, queries[: cfg.exact_queries], exact=True)
    s = Summary.of(ex_times)
    rows.append(["pgvector exact scan", "-", s.n, s.p50, s.p95, recall(ex_results, truth)])
    scans_before = index_scans(index)
    # A cold index is read from the OS cache (or disk) page by page; that is a different figure
    # (reported on its own line) from the steady state the table shows.
    cold: list[float] = []
    if len(warmup):
        progress(f"warming up with {len(warmup)} queries")
        cold, _ = run_queries(catalog_id, cfg, warmup, exact=False, ef=max(cfg.ef_search))
    hnsw: list[tuple[int, float, float]] = []
    for ef in cfg.ef_search:
        times, results = run_queries(catalog_id, cfg, queries, exact=False, ef=ef)
        s, r = Summary.of(times), recall(results, truth)
        hnsw.append((ef, s.p50, r))
        rows.append(["pgvector HNSW", ef, s.n, s.p50, s.p95, r])
    used = index_scans(index) - scans_before

    print(
        f"vector search bench: {cfg.size} x {cfg.dim}-d, {cfg.clusters} clusters, "
        f"spread {cfg.spread}, seed {cfg.seed}, database {db_name}"
    )
    print(
        f"  generate {gen_s:.1f} s; COPY load "
        + (f"{load_s:.1f} s ({cfg.size / load_s:,.0f} rows/s)" if load_s else "reused (--keep)")
    )
    print(
        f"  HNSW build (m={cfg.m}, ef_construction={cfg.ef_construction}) "
        + (f"{build_s:.1f} s" if build_s is not None else "reused (--keep)")
        + f" with maintenance_work_mem={cfg.build_mem}, "
        f"max_parallel_maintenance_workers={cfg.build_workers}; index built {index_options(index)}"
    )
    if cold:
        c = Summary.of(cold)
        print(
            f"  warm-up (cold cache, not in the table): {c.n} queries at ef_search "
            f"{max(cfg.ef_search)}: p50 {c.p50:.2f} ms, p95 {c.p95:.2f} ms"
        )
    print(f"  server: shared_buffers {server_setting('shared_buffers')}")
    print(
        f"  sizes: table {relation_mb('catalog_itemembedding'):,.0f} MB, "
        f"index {relation_mb(index):,.0f} MB; HNSW index scans during the HNSW queries: {used}"
    )
    print_table(
        f"top-{K} queries through vectors.search (ms; recall@{K} vs numpy exact)",
        ["method", "ef_search", "queries", "p50 ms", "p95 ms", f"recall@{K}"],
        [[*r[:5], f"{r[5]:.3f}"] for r in rows],
    )
    met = [ef for ef, p50, r in hnsw if r >= 0.95 and p50 < 5.0]
    print(
        f"\ngoal recall@{K} >= 0.95 at p50 < 5 ms: "
        + (f"met (ef_search {', '.join(map(str, met))})" if met else "NOT met")
    )
    if used == 0:
        print("WARNING: the planner never used the HNSW index; the HNSW rows are exact scans")
    unfiltered = {ef: (p50, r) for ef, p50, r in hnsw}
    filtered_run(cfg, catalog_id, index, ids, data, queries, unfiltered)


def filtered_run(
    cfg: Config,
    catalog_id: int,
    index: str,
    ids: np.ndarray,
    data: np.ndarray,
    queries: np.ndarray,
    unfiltered: dict[int, tuple[float, float]],
) -> None:
    """Rank with a price filter keeping 1 % and 10 % of the items, inside the query."""
    from decimal import Decimal

    from django.conf import settings
    from django.test import override_settings

    from catalog.services import vectors
    from catalog.services.item_filters import ItemFilter

    progress("filtered run: synthetic prices")
    set_prices(catalog_id)
    prices = synthetic_prices(ids)
    # The unfiltered run's ef_search (the product's 60 when measured), and the product's for
    # filtered searches (ranking.rank passes DAR_FILTER_EF_SEARCH).
    ef = 60 if 60 in cfg.ef_search else max(cfg.ef_search)
    filter_ef = int(settings.DAR_FILTER_EF_SEARCH)
    rows: list[list[object]] = []

    def measure(method: str, qs: np.ndarray, truth: list[set[int]], **how: object) -> list[object]:
        scans = index_scans(index)
        times, results = run_queries(catalog_id, cfg, qs, **how)  # type: ignore[arg-type]
        s = Summary.of(times)
        full = np.mean([len(r) == K for r in results])
        used = index_scans(index) - scans
        return ["", method, s.n, s.p50, s.p95, f"{recall(results, truth):.3f}", f"{full:.0%}", used]

    for share in SELECTIVITIES:
        bound = Decimal(PRICE_SPAN * share / 100).quantize(Decimal("0.01"))
        keep = prices < float(bound)
        price_filter = ItemFilter("price", high=bound - Decimal("0.01"), currency="EUR")
        kept_ids, kept_data = ids[keep], data[keep]
        truth = [{int(i) for i in kept_ids[numpy_topk(kept_data, q)]} for q in queries]
        with override_settings(DAR_FILTER_EXACT_MAX=0):
            for i, search_ef in enumerate(dict.fromkeys([ef, filter_ef])):
                iterative = measure(
                    f"HNSW, iterative scan, ef {search_ef}",
                    queries,
                    truth,
                    exact=False,
                    ef=search_ef,
                    filters=[price_filter],
                )
                if i == 0:
                    iterative[0] = f"{share:.0%} ({int(keep.sum())} items)"
                rows.append(iterative)
        if vectors.matching_items(catalog_id, [price_filter]) is not None:
            # The product ranks a filter this selective exactly, over its items' ids.
            rows.append(
                measure(
                    f"exact over its ids (<= {settings.DAR_FILTER_EXACT_MAX})",
                    queries,
                    truth,
                    exact=False,
                    ef=filter_ef,
                    filters=[price_filter],
                )
            )
        n = cfg.exact_queries
        rows.append(
            measure("exact scan", queries[:n], truth[:n], exact=True, filters=[price_filter])
        )
    base_p50, base_recall = unfiltered.get(ef, (float("nan"), float("nan")))
    rows.insert(
        0, ["none", f"HNSW, ef {ef}", cfg.queries, base_p50, "-", f"{base_recall:.3f}", "-", "-"]
    )
    print_table(
        f"filtered top-{K} (price filter inside the query; recall@{K} vs numpy exact over the "
        f"matching items; the product: exact over the ids up to DAR_FILTER_EXACT_MAX="
        f"{settings.DAR_FILTER_EXACT_MAX} items, else the scan at ef {filter_ef})",
        [
            "filter keeps",
            "method",
            "queries",
            "p50 ms",
            "p95 ms",
            f"recall@{K}",
            f"{K} results",
            "index scans",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
