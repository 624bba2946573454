"""A turn's text stage (``interactive.turn_text``, the interactive worker): first results, fast.

It embeds the dialogue text, ranks the catalog and publishes provisional results at once, on a
queue and worker of its own so that they never wait behind other sessions' LLM work. The gpu task
(``pipeline``) starts on the same turn at the same time; whoever stores results first wins:
provisional results are written only while the turn has no results at all, and announced before
they are committed, so they always reach the page before the final ones. The gpu task redoes this
stage itself when it failed or is late (``store_provisional`` with its attempt number).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.db.models.expressions import RawSQL

from catalog.models import CatalogItem
from catalog.services.vectors import Hit
from retrieval.models import Turn, TurnResult

from . import durability, events, payloads, turn_ranking
from .claims import Superseded, TurnNotReady, owned
from .feedback import feedback_subqueries
from .turns import ACTIVE

log = logging.getLogger(__name__)

# The text stage polls for its predecessor more often than the gpu task: it is one cheap query,
# and its whole point is to be quick once the turn may run.
TEXT_STAGE_POLL = 0.2
# First key of the advisory lock that serialises the writes of a turn's results.
RESULTS_LOCK_SPACE = 0x7E57


def _predecessor_active() -> Exists:
    return Exists(
        Turn.objects.filter(
            session_id=OuterRef("session_id"), index=OuterRef("index") - 1, status__in=ACTIVE
        )
    )


def _has_results() -> Exists:
    return Exists(TurnResult.objects.filter(turn_id=OuterRef("pk")))


def run_text_stage(turn_id: int) -> None:
    """Publish a turn's provisional (text-only) results; a no-op once the turn has results or is
    over (a redelivered task, or the gpu task was first).

    Raises ``TurnNotReady`` while the session's previous turn is unfinished (the task retries), so
    turns stay in order and each sees the feedback given before it. Never fails the turn: on any
    error the gpu task ranks by text itself before it stores its final results.
    """
    # The session's feedback comes in the same statement: the stage needs no other read.
    liked_ids, disliked_ids = feedback_subqueries()
    turn = (
        Turn.objects.select_related("session")
        .annotate(
            waiting=_predecessor_active(),
            has_results=_has_results(),
            liked_ids=liked_ids,
            disliked_ids=disliked_ids,
        )
        .filter(pk=turn_id)
        .first()
    )
    if turn is None or turn.status not in ACTIVE or turn.has_results:
        return
    if turn.waiting:
        raise TurnNotReady(turn.pk, delay=TEXT_STAGE_POLL)
    try:
        liked, disliked = list(turn.liked_ids), list(turn.disliked_ids)
        found = text_ranking(turn, turn.session.catalog_id, liked, disliked)
        with durability.derived_writes():
            store_provisional(turn, found)
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
    dialogue_text = turn_ranking.query_text(turn_ranking.dialogue_for(turn))
    query = turn_ranking.with_feedback(
        encoder.name, encoder.encode_texts([dialogue_text])[0], liked, disliked
    )
    hits = turn_ranking.rank_catalog(
        catalog_id,
        encoder.name,
        query,
        exclude=disliked if settings.DAR_FEEDBACK_EXCLUDE_DISLIKED else [],
        product_text=turn_ranking.product_text(dialogue_text, settings.DAR_WEIGHT_PRODUCT_TEXT),
        item_filters=turn_ranking.filters_of(turn),
    )
    ms = round((time.monotonic() - start) * 1000)
    return TextRanking(encoder.name, hits, turn_ranking.items_of(hits), ms)


def store_provisional(turn: Turn, found: TextRanking, *, attempt: int | None = None) -> bool:
    """Store and announce provisional results unless the turn has results already; returns
    whether it did. With ``attempt``, only while that gpu attempt owns the turn (``Superseded``
    otherwise); without, while the turn is queued or running.

    The event goes out before the commit: final results, stored only once provisional ones are
    visible (``finals``), can never reach the page before them. The lock serialises the two
    writers of provisional results (this stage and the gpu task's fallback).
    """
    with transaction.atomic():
        _lock_results(turn.pk)
        if attempt is None:
            rows = Turn.objects.filter(pk=turn.pk, status__in=ACTIVE)
        else:
            rows = owned(turn.pk, attempt)
        has_results = rows.annotate(has=_has_results()).values_list("has", flat=True).first()
        if has_results is None:
            if attempt is not None:
                raise Superseded(turn.pk)
            return False
        if has_results:
            return False
        results = turn_ranking.result_rows(turn, found.hits, found.items, final=False)
        TurnResult.objects.bulk_create(results)
        events.emit(turn.session_id, payloads.results_event(turn, results, final=False), wait=True)
        # Last, so that the turn's row is locked only for the commit (the gpu task's claim and
        # writes take it); the stage's time joins whatever timings the row has by then.
        text_ms = RawSQL("timings || %s::jsonb", [json.dumps({"text": found.ms})])
        rows.update(encoder_name=found.encoder_name, timings=text_ms)
    turn.encoder_name = found.encoder_name
    turn.timings = {**turn.timings, "text": found.ms}
    return True


def _lock_results(turn_id: int) -> None:
    """Serialise the writes of a turn's provisional results (text stage, gpu fallback) until the
    transaction ends, without locking the turn's row (which the gpu task's claim takes)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)", [RESULTS_LOCK_SPACE, turn_id & 0x7FFFFFFF]
        )
