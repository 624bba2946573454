"""A turn's text stage (``interactive.turn_text``, the interactive worker): first results, fast.

It embeds the dialogue text, ranks the catalog and publishes provisional results at once, on a
queue and worker of its own so that they never wait behind other sessions' LLM work. The gpu task
(``pipeline``) starts on the same turn at the same time; whoever stores results first wins
(``store.store_provisional``). The gpu task redoes this stage itself when it failed or is late.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings

from catalog.models import CatalogItem
from catalog.services.vectors import Hit
from retrieval.models import Turn

from . import ranking, store

log = logging.getLogger(__name__)

# The text stage polls for its predecessor more often than the gpu task: it is one cheap query,
# and its whole point is to be quick once the turn may run.
TEXT_STAGE_POLL = 0.2


def run_text_stage(turn_id: int) -> None:
    """Publish a turn's provisional (text-only) results; a no-op once the turn has results or is
    over (a redelivered task, or the gpu task was first).

    Raises ``TurnNotReady`` while the session's previous turn is unfinished (the task retries), so
    turns stay in order and each sees the feedback given before it. Never fails the turn: on any
    error the gpu task ranks by text itself before it stores its final results.
    """
    start = store.for_text_stage(turn_id)
    if start is None or start.turn.status not in store.ACTIVE or start.has_results:
        return
    turn = start.turn
    if start.waiting:
        raise store.TurnNotReady(turn.pk, delay=TEXT_STAGE_POLL)
    try:
        found = text_ranking(turn, turn.session.catalog_id, start.liked, start.disliked)
        with store.derived_writes():
            publish(turn, found)
    except Exception:
        log.exception("turn %s: text stage failed; the gpu task will rank by text", turn.pk)


@dataclass(frozen=True)
class TextRanking:
    encoder_name: str
    hits: list[Hit]
    items: dict[int, CatalogItem]
    ms: int


def text_ranking(turn: Turn, catalog_id: int, liked: list[int], disliked: list[int]) -> TextRanking:
    """The text stage's computation: the dialogue text (with feedback and product text) ranked."""
    from workers.models.registry import get_encoder

    start = time.monotonic()
    encoder = get_encoder()
    dialogue_text = ranking.query_text(ranking.dialogue_for(turn))
    query = ranking.with_feedback(
        encoder.name, encoder.encode_texts([dialogue_text])[0], liked, disliked
    )
    hits = ranking.rank(
        catalog_id=catalog_id,
        model_name=encoder.name,
        query=query,
        exclude=disliked if settings.DAR_FEEDBACK_EXCLUDE_DISLIKED else [],
        product_text=ranking.product_text(dialogue_text, settings.DAR_WEIGHT_PRODUCT_TEXT),
        filters=ranking.filters_of(turn),
    )
    ms = round((time.monotonic() - start) * 1000)
    return TextRanking(encoder.name, hits, ranking.items_of(hits), ms)


def publish(turn: Turn, found: TextRanking, *, attempt: int | None = None) -> bool:
    """Store and announce ``found`` as the turn's provisional results unless it has results
    already; returns whether it did (``store.store_provisional`` says when)."""
    results = ranking.result_rows(turn, found.hits, found.items, final=False)
    return store.store_provisional(turn, results, found.encoder_name, found.ms, attempt=attempt)
