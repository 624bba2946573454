"""``manage.py evaluate``: ChatIR / PlugIR / DAR's evaluation protocol (docs/evaluation.md)."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Rank each dialogue's target at every round with the live search's ranking and write "
        "ranks, Hits@K / Recall@K / BRI per mode and a Hits@10 plot."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--dialogs", type=Path, required=True, help="ChatIR dialogue JSON")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--corpus", type=Path, help="JSON list of corpus image paths")
        source.add_argument("--catalog", help="slug of an existing catalog to search instead")
        parser.add_argument("--images", type=Path, help="folder the --corpus paths are under")
        parser.add_argument(
            "--mode",
            action="append",
            dest="modes",
            choices=["text", "reformulated", "dar"],
            help="text (ChatIR baseline), reformulated (LLM description) or dar; repeatable "
            "(default: text). ranks.json holds the first mode given.",
        )
        parser.add_argument(
            "--split",
            action="store_true",
            help="dialog[k] is already the full query of round k (PlugIR/DAR reformulations)",
        )
        parser.add_argument("--out", type=Path, required=True, help="output folder")
        parser.add_argument("--max-dialogs", type=int, help="only the first N dialogues")
        parser.add_argument("--rounds", type=int, default=11, help="rounds 0..R-1 (default 11)")
        parser.add_argument(
            "--images-per-round",
            type=int,
            default=settings.DAR_PREVIEWS_PER_TURN,
            help="generated images per round in dar mode (default DAR_PREVIEWS_PER_TURN)",
        )
        parser.add_argument("--seed", type=int, default=0, help="base seed of the generator")
        parser.add_argument(
            "--cache",
            type=Path,
            help="folder caching corpus vectors, LLM output, generated images and query vectors "
            "(an interrupted run resumes from it)",
        )
        parser.add_argument(
            "--use-index",
            action="store_true",
            help="rank through the HNSW index, as live search does, instead of exactly",
        )
        parser.add_argument(
            "--index-depth",
            type=int,
            default=1000,
            help="with --use-index: results fetched per query (deeper targets get their exact "
            "rank, at least this depth)",
        )
        parser.add_argument(
            "--jobs", type=int, default=1, help="database connections ranking in parallel"
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=settings.DAR_EMBED_BATCH,
            help="corpus images per encoder call (default DAR_EMBED_BATCH)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from retrieval.evaluation.runner import EvaluationError, Options, run

        run_options = Options(
            dialogs=options["dialogs"],
            out=options["out"],
            modes=options["modes"] or ["text"],
            corpus=options["corpus"],
            images=options["images"],
            catalog=options["catalog"],
            split=options["split"],
            max_dialogs=options["max_dialogs"],
            rounds=options["rounds"],
            images_per_round=options["images_per_round"],
            seed=options["seed"],
            cache=options["cache"],
            use_index=options["use_index"],
            index_depth=options["index_depth"],
            jobs=options["jobs"],
            batch_size=options["batch_size"],
            progress=options["verbosity"] > 0,
        )
        try:
            result = run(run_options)
        except EvaluationError as exc:
            raise CommandError(str(exc)) from exc
        for mode, summary in result.metrics["modes"].items():
            hits = summary["hits@10"]
            picks = ", ".join(
                f"r{k}={100 * hits[k]:.1f}" for k in sorted({0, len(hits) // 2, len(hits) - 1})
            )
            bri = summary["bri"]
            self.stdout.write(
                f"{mode}: Hits@10 {picks}; BRI {'n/a' if bri is None else f'{bri:.3f}'}"
                f" ({summary['dialogues']} dialogues)"
            )
        self.stdout.write(f"wrote {', '.join(str(p) for p in result.files)}")
