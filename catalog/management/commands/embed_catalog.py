"""Queue embedding jobs for a catalog: stale items (default), failed, pending, or all.

    python manage.py embed_catalog --catalog SLUG [--stale | --failed | --pending | --all] [--wait]

"Stale" means no image vector from the active encoder (and not already queued): after changing
the encoder, this makes the catalog searchable again.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.services import embedding, progress

from ._common import format_counts, get_catalog, wait_for_embeddings


class Command(BaseCommand):
    help = "Re-embed a catalog's items with the current encoder."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--catalog", required=True, help="catalog slug")
        which = parser.add_mutually_exclusive_group()
        # Plain flags (not one "mode" dest) so call_command(..., stale=True) works too.
        which.add_argument(
            "--stale",
            action="store_true",
            help="items without a vector from the active encoder, not already queued "
            "(older encoder, or failed); the default",
        )
        which.add_argument("--failed", action="store_true", help="items whose job failed")
        which.add_argument(
            "--pending", action="store_true", help="re-send the jobs of pending items"
        )
        which.add_argument("--all", action="store_true", help="every item")
        parser.add_argument("--wait", action="store_true", help="wait until nothing is pending")
        parser.add_argument("--timeout", type=float, default=3600.0)
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        catalog = get_catalog(options["catalog"])
        chosen = [m for m in embedding.REEMBED_MODES if options[m]]
        if len(chosen) > 1:
            raise CommandError("choose one of --stale, --failed, --pending, --all")
        mode = chosen[0] if chosen else "stale"
        queued = embedding.request_reembed(catalog, mode)
        self.stdout.write(f"{catalog.slug}: queued {queued} item(s) for embedding ({mode}).")
        if options["wait"] and queued:
            final = wait_for_embeddings(
                self, catalog, timeout=options["timeout"], show_progress=not options["no_progress"]
            )
        else:
            final = progress.counts(catalog)
        self.stdout.write(format_counts(final))
