"""Move item files still named by their plain sha256 to their keyed (unguessable) names.

    python manage.py rename_media [--catalog SLUG] [--dry-run]

Items imported before media names were keyed with SECRET_KEY have paths that anyone holding the
image can compute. Run once after upgrading (it is safe to rerun and to interrupt).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from catalog.services import media_names

from ._common import get_catalog


class Command(BaseCommand):
    help = "Rename item files stored under their sha256 to keyed names."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--catalog", help="catalog slug (default: every catalog)")
        parser.add_argument("--dry-run", action="store_true", help="only count what would move")

    def handle(self, *args: Any, **options: Any) -> None:
        catalog = get_catalog(options["catalog"]) if options["catalog"] else None
        report = media_names.rename_legacy(catalog, dry_run=options["dry_run"])
        if options["dry_run"]:
            self.stdout.write(f"{report.items} item(s) have sha256-named files (nothing moved)")
            return
        self.stdout.write(report.summary())
        for line in report.missing:
            self.stderr.write(f"missing: {line}")
