"""Helpers shared by the catalog commands (progress bar, waiting for embeddings)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.models import Catalog
from catalog.services import progress


def get_catalog(slug: str) -> Catalog:
    try:
        return Catalog.objects.select_related("shop").get(slug=slug)
    except Catalog.DoesNotExist:
        raise CommandError(
            f"no catalog with slug {slug!r} (import_catalog can create it: --create --shop SLUG)"
        ) from None


def format_counts(c: dict[str, Any]) -> str:
    return (
        f"{c['total']} items: {c['pending']} pending, {c['embedded']} embedded, "
        f"{c['failed']} failed, {c['stale']} stale (encoder: {c['encoder'] or 'unknown'})"
    )


def wait_for_embeddings(
    command: BaseCommand, catalog: Catalog, *, timeout: float, show_progress: bool
) -> dict[str, Any]:
    """Wait until no item is pending, with a progress bar; needs a worker on the gpu queue."""
    start = progress.counts(catalog)
    bar = tqdm(total=start["total"], desc="Embedding", unit="item", disable=not show_progress)

    def tick(c: dict[str, Any]) -> None:
        bar.n = c["total"] - c["pending"]
        bar.set_postfix(embedded=c["embedded"], failed=c["failed"], refresh=False)
        bar.refresh()

    final = progress.wait_until_done(catalog, timeout=timeout, on_tick=tick)
    bar.close()
    if final["pending"]:
        command.stderr.write(
            f"Still {final['pending']} pending after {timeout:.0f}s: is a worker consuming the "
            "gpu queue? (celery -A dar_site worker -Q <DAR_GPU_QUEUE>)"
        )
    return final
