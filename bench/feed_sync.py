"""Product feed sync: the issue's "done means" at full size, printing the counts and the time.

    python -m bench.feed_sync                # 1,000 products; v2: 50 prices, 10 pictures,
                                             # 20 removed, 5 broken rows
    python -m bench.feed_sync --products 5000

A Merchant Center TSV feed of N products whose image_link URLs point at a real HTTP server on
127.0.0.1 (allowed through DAR_FETCH_ALLOWED_HOSTS) is imported into an empty catalog with
``sync.sync_feed``; then a second version of it is synced, and the same second version again
(which must change nothing). Embedding jobs are counted, not run (this measures the sync).
"""

from __future__ import annotations

import argparse
import time

from bench.common import bench_database, print_table, setup_django


def run(args: argparse.Namespace) -> None:
    from django.db import transaction
    from django.test import override_settings

    from catalog.services import decoding, embedding, sync
    from tests.factories import CatalogFactory
    from tests.feeds_data import catalog_products, second_version, tsv
    from tests.image_server import image_server

    sent: list[int] = []
    embedding.send_batch = lambda ids: sent.extend(ids)  # type: ignore[assignment]
    rows = []
    with image_server() as server, override_settings(DAR_FETCH_ALLOWED_HOSTS=["127.0.0.1"]):
        catalog = CatalogFactory.create()
        products = catalog_products(server, args.products)
        v2 = second_version(
            server,
            products,
            prices=args.prices,
            images=args.images,
            removed=args.removed,
            broken=args.broken,
        )
        for label, feed in (
            ("v1 import", tsv(products)),
            ("v2 sync", tsv(v2.products, v2.broken)),
            ("v2 again", tsv(v2.products, v2.broken)),
        ):
            sent.clear()
            fetched = sum(server.hits.values())
            started = time.perf_counter()
            with transaction.atomic():  # on_commit jobs run at the end, as in a worker
                report = sync.sync_feed(catalog, feed, "products.tsv")
            seconds = time.perf_counter() - started
            rows.append(
                [
                    label,
                    report.added,
                    report.updated,
                    report.unchanged,
                    report.removed,
                    len(report.failed),
                    len(sent),
                    sum(server.hits.values()) - fetched,
                    f"{seconds:.2f}",
                    f"{len(feed.splitlines()) - 1} rows",
                ]
            )
        decoding.shutdown()
    print_table(
        f"feed sync, {args.products} products (second version: {args.prices} prices, "
        f"{args.images} pictures, {args.removed} removed, {args.broken} broken rows)",
        [
            "run",
            "added",
            "updated",
            "unchanged",
            "removed",
            "failed",
            "embed jobs",
            "fetches",
            "seconds",
            "feed",
        ],
        rows,
    )
    expected_v2 = (
        0,
        args.prices + args.images,
        args.products - args.prices - args.images - args.removed - args.broken,
        args.removed,
        args.broken,
    )
    got_v2 = tuple(rows[1][1:6])
    print(f"v2 counts {'as expected' if got_v2 == expected_v2 else 'WRONG'}: {got_v2}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--prices", type=int, default=50)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--removed", type=int, default=20)
    parser.add_argument("--broken", type=int, default=5)
    args = parser.parse_args()
    setup_django()
    with bench_database():
        run(args)


if __name__ == "__main__":
    main()
