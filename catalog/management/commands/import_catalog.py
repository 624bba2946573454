"""Import images into a catalog from folders, zip files and CSV/JSONL manifests.

    python manage.py import_catalog --catalog SLUG PATH [PATH ...] [--report FILE]

Folders are walked recursively (zips inside are unpacked); a ``.csv``/``.jsonl`` path is a
manifest: a ``path`` column (relative to the manifest's folder; URLs are refused), ``title``,
``description``, and every other column into ``attributes``. Bad files are reported, never
fatal; re-running an interrupted import finishes it without duplicates.
"""

from __future__ import annotations

import json
from argparse import BooleanOptionalAction
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from catalog.models import Catalog
from catalog.services import catalogs, ingest

from ._common import format_counts, get_catalog, wait_for_embeddings


class Command(BaseCommand):
    help = "Import images (folders, zips, CSV/JSONL manifests) into a catalog."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", help="folders, zip files, .csv/.jsonl manifests")
        parser.add_argument("--catalog", required=True, help="catalog slug")
        parser.add_argument("--report", help="write the JSON import report to this file")
        parser.add_argument(
            "--create", action="store_true", help="create the catalog (and --shop) if missing"
        )
        parser.add_argument("--shop", help="shop slug for a new catalog (created if missing)")
        parser.add_argument("--name", help="name of a new catalog (default: the slug)")
        parser.add_argument(
            "--embed",
            action=BooleanOptionalAction,
            default=True,
            help="queue embedding jobs for the new items (default: on)",
        )
        parser.add_argument(
            "--wait", action="store_true", help="wait until the catalog has no pending item"
        )
        parser.add_argument("--timeout", type=float, default=3600.0, help="--wait limit, seconds")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")

    def handle(self, *args: Any, **options: Any) -> None:
        catalog = self._catalog(options)
        show = not options["no_progress"]
        bars: list[tqdm[Any]] = []  # made once the sources are listed and the total is known
        tally = {"imported": 0, "duplicate": 0, "rejected": 0}

        def on_start(total: int) -> None:
            bars.append(tqdm(total=total, desc="Importing", unit="file", disable=not show))

        def on_progress(_candidate: Any, outcome: str) -> None:
            tally[outcome] += 1
            bars[0].set_postfix(tally, refresh=False)
            bars[0].update()

        try:
            report = ingest.import_paths(
                catalog,
                options["paths"],
                embed=options["embed"],
                on_start=on_start,
                on_progress=on_progress,
            )
        finally:
            for bar in bars:
                bar.close()

        if options["report"]:
            Path(options["report"]).write_text(
                json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n",
                encoding="utf-8",
            )
        self.stdout.write(f"{catalog.slug}: {report.summary()}")
        for row in report.rejected[:20]:
            self.stdout.write(f"  rejected {row['path']}: {row['reason']}")
        if len(report.rejected) > 20:
            self.stdout.write(f"  ... and {len(report.rejected) - 20} more (see --report)")
        if options["embed"]:
            self.stdout.write(f"Queued {report.queued} item(s) for embedding.")
            if options["wait"]:
                final = wait_for_embeddings(
                    self, catalog, timeout=options["timeout"], show_progress=show
                )
                self.stdout.write(format_counts(final))

    def _catalog(self, options: dict[str, Any]) -> Catalog:
        slug = options["catalog"]
        if not options["create"] or Catalog.objects.filter(slug=slug).exists():
            return get_catalog(slug)
        if not options["shop"]:
            raise CommandError("--create needs --shop SLUG for the new catalog")
        catalog, created = catalogs.ensure_catalog(
            options["shop"], slug, name=options["name"] or slug
        )
        if created:
            self.stdout.write(f"Created catalog {slug!r} in shop {catalog.shop.slug!r}.")
        return catalog
