"""Sync a catalog with a product feed (Merchant Center TSV/XML, Shopify CSV, product manifest).

    python manage.py sync_feed --catalog SLUG [LOCATION] [--partial] [--currency EUR]
        [--report report.json]

LOCATION is an http(s) URL or a file (its image paths are read beside it); without one, the
catalog's own feed location is used. Image URLs are fetched with the fetcher's guards
(DAR_FETCH_ALLOWED_HOSTS for a host on a private address). ``--partial``: the feed lists only
some products, so none is marked out of stock for missing from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.services import feeds, sync

from ._common import get_catalog


class Command(BaseCommand):
    help = "Sync a catalog with a product feed: add, update, mark removed products, per-row report."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--catalog", required=True, help="catalog slug")
        parser.add_argument("location", nargs="?", default="", help="feed URL or file")
        parser.add_argument("--partial", action="store_true", help="remove nothing missing")
        parser.add_argument("--currency", default="", help="for feeds without one (Shopify)")
        parser.add_argument("--no-embed", action="store_true", help="do not queue embeddings")
        parser.add_argument("--report", help="write the JSON report here")

    def handle(self, *args: Any, **options: Any) -> None:
        catalog = get_catalog(options["catalog"])
        location = options["location"] or catalog.feed_location
        if not location:
            raise CommandError("give a feed location (this catalog has none)")
        try:
            data, name, reader = sync.read_location(location)
            report = sync.sync_feed(
                catalog,
                data,
                name,
                reader=reader,
                full=not options["partial"],
                embed=not options["no_embed"],
                default_currency=options["currency"],
            )
        except (feeds.FeedError, feeds.RowRejected) as exc:
            raise CommandError(str(exc)) from None
        for failure in report.failed:
            self.stderr.write(f"row {failure['row']} {failure['id']}: {failure['reason']}")
        if options["report"]:
            Path(options["report"]).write_text(json.dumps(report.as_dict(), indent=2))
        self.stdout.write(f"{report.summary()}; {report.queued} queued for embedding")
