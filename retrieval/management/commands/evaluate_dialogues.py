"""``manage.py evaluate_dialogues``: shopping dialogues through whole turns on a live catalog.

    manage.py evaluate_dialogues --catalog demo \
        --dialogs ../shared/data/shopping_dialogues_dev.json \
        [--compare none,configured] [--max-dialogs N] --out eval-out/dialogues.json

See ``retrieval/evaluation/dialogues.py`` for what is measured.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.models import Catalog
from retrieval.evaluation import dialogues


class Command(BaseCommand):
    help = (
        "Send each dialogue's messages through the live turn pipeline (fresh session each) and "
        "report Hits@1/@10 and MRR of the target, text-first and final, per turn."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--catalog", required=True, help="slug of the catalog to search")
        parser.add_argument("--dialogs", type=Path, required=True, help="dialogue JSON file")
        parser.add_argument(
            "--compare",
            default="configured",
            help="comma-separated refiner variants: none (no LLM), configured (the profile's "
            "LLM; also 'offline'/'standard'), openai (DAR_OPENAI_*). Default: configured",
        )
        parser.add_argument("--max-dialogs", type=int, help="only the first N dialogues")
        parser.add_argument("--out", type=Path, help="write the JSON report here")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        catalog = Catalog.objects.filter(slug=options["catalog"]).first()
        if catalog is None:
            raise CommandError(f"no catalog with slug {options['catalog']!r}")
        variants = [v.strip() for v in options["compare"].split(",") if v.strip()]
        unknown = [v for v in variants if v not in dialogues.VARIANTS]
        if not variants or unknown:
            raise CommandError(
                f"--compare: unknown variant(s) {unknown or variants}; "
                f"choose from {', '.join(dialogues.VARIANTS)}"
            )
        if options["max_dialogs"] is not None and options["max_dialogs"] < 1:
            raise CommandError("--max-dialogs must be at least 1")
        try:
            cases = dialogues.load_cases(options["dialogs"])
            cases = cases[: options["max_dialogs"]] if options["max_dialogs"] else cases
            dialogues.resolve_targets(catalog, cases)
        except dialogues.DialogueFileError as err:
            raise CommandError(str(err)) from None

        bar = tqdm(
            total=len(cases) * len(variants),
            desc="Dialogues",
            unit="dialogue",
            disable=options["no_progress"],
        )

        def tick(name: str, n: int, outcome: dialogues.DialogueOutcome) -> None:
            last = outcome.turns[-1]
            bar.set_postfix(variant=name, text=last.text_rank, final=last.final_rank, refresh=False)
            bar.update(1)

        def write(report: dict[str, Any]) -> None:
            if options["out"]:
                out: Path = options["out"]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(report, indent=2, ensure_ascii=False))

        try:
            report = dialogues.evaluate(catalog, cases, variants, progress=tick, partial=write)
        except dialogues.DialogueFileError as err:
            raise CommandError(str(err)) from None
        finally:
            bar.close()
        self.stdout.write(dialogues.format_table(report))
        write(report)
        if options["out"]:
            self.stdout.write(f"Report written to {options['out']}")
