"""Load the demo catalog (shop "demo", catalog "demo") from the OpenMoji emoji.

    python manage.py load_demo_catalog [--limit N] [--no-embed] [--wait]

Idempotent: emoji already in the catalog are skipped before rendering, and anything else that
was imported already is a duplicate.
"""

from __future__ import annotations

from argparse import BooleanOptionalAction
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from catalog.models import CatalogItem
from catalog.services import catalogs, demo, ingest

from ._common import format_counts, wait_for_embeddings


class Command(BaseCommand):
    help = "Create the demo shop and catalog from OpenMoji colour emoji."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--limit",
            type=int,
            default=demo.DEFAULT_LIMIT,
            help=f"how many emoji (default {demo.DEFAULT_LIMIT}; 0 = all of them)",
        )
        parser.add_argument("--size", type=int, default=demo.DEFAULT_SIZE, help="pixels")
        parser.add_argument("--embed", action=BooleanOptionalAction, default=True)
        parser.add_argument("--wait", action="store_true", help="wait for the embeddings")
        parser.add_argument("--timeout", type=float, default=3600.0)
        parser.add_argument("--admin", help="username to make an admin of the demo shop")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["limit"] < 0:
            raise CommandError("--limit must be 0 (all) or more")
        catalog, _ = catalogs.ensure_catalog(
            demo.DEMO_SHOP_SLUG,
            demo.DEMO_CATALOG_SLUG,
            shop_name=demo.DEMO_SHOP_NAME,
            name=demo.DEMO_CATALOG_NAME,
            description="OpenMoji colour emoji (CC BY-SA 4.0), rendered for the demo.",
        )
        if options["admin"]:
            user = get_user_model().objects.filter(username=options["admin"]).first()
            if user is None:
                raise CommandError(f"no user {options['admin']!r}")
            shop = catalogs.ensure_shop(demo.DEMO_SHOP_SLUG, demo.DEMO_SHOP_NAME)
            catalogs.add_shop_admin(shop, user)

        chosen = demo.select(demo.openmoji_entries(), options["limit"])
        have = set(
            CatalogItem.objects.filter(
                catalog=catalog, source_name__in=[e.source_name for e in chosen]
            ).values_list("source_name", flat=True)
        )
        todo = [e for e in chosen if e.source_name not in have]
        self.stdout.write(
            f"{catalog.slug}: {len(chosen)} emoji selected, {len(have)} already loaded, "
            f"{len(todo)} to render."
        )
        show = not options["no_progress"]
        bar = tqdm(total=len(todo), desc="Rendering", unit="emoji", disable=not show)

        def advance(*_: Any) -> None:
            bar.update()

        try:
            report = ingest.import_candidates(
                catalog,
                demo.candidates(todo, options["size"]),
                embed=options["embed"],
                on_progress=advance,
            )
        finally:
            bar.close()
        self.stdout.write(f"{catalog.slug}: {report.summary()}")
        for row in report.rejected[:10]:
            self.stdout.write(f"  rejected {row['path']}: {row['reason']}")
        if options["embed"]:
            from catalog.services import embedding

            # Items left pending by an interrupted earlier run get their jobs again.
            pending = CatalogItem.objects.filter(
                catalog=catalog, status=CatalogItem.Status.PENDING
            ).exclude(pk__in=[row["id"] for row in report.imported])
            queued = report.queued + embedding.queue_items(pending.values_list("pk", flat=True))
            self.stdout.write(f"Queued {queued} item(s) for embedding.")
            if options["wait"]:
                final = wait_for_embeddings(
                    self, catalog, timeout=options["timeout"], show_progress=show
                )
                self.stdout.write(format_counts(final))
