"""Claiming a turn for a gpu attempt: the first statement of every ``gpu.run_turn``.

A claim starts a new attempt (RUNNING, attempts + 1) and returns what the run needs to begin at
once: the turn, its session's catalog and the session's feedback. For a queued turn whose
predecessor is over (the usual case) that is one round trip; a rerun after a lost attempt also
removes that attempt's partial output, or gives up after DAR_TURN_MAX_ATTEMPTS.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import QuerySet
from django.utils import timezone

from retrieval.models import Feedback, SearchSession, Turn

from .feedback import feedback_items
from .turns import ACTIVE, fail_turn, sweep_stuck_turns

log = logging.getLogger(__name__)


class TurnNotReady(Exception):
    """The previous turn of the session has not finished; try again after ``delay`` seconds."""

    def __init__(self, turn_id: int, delay: float = 0.5) -> None:
        super().__init__(turn_id)
        self.delay = delay


class Superseded(Exception):
    """Another attempt (or the sweeper) owns the turn now; this attempt must stop quietly."""


@dataclass(frozen=True)
class Claim:
    """A turn started by this attempt (``turn.attempts`` is its number), with the session's
    liked and disliked items as they were when it started."""

    turn: Turn
    liked: list[int]
    disliked: list[int]


def owned(turn_id: int, attempt: int) -> QuerySet[Turn]:
    """The turn's row while that attempt owns it: empty once another attempt or the sweeper took
    the turn over. Every write of an attempt is fenced by it."""
    return Turn.objects.filter(pk=turn_id, status=Turn.Status.RUNNING, attempts=attempt)


def claim(turn_id: int) -> Claim | None:
    """Start a new attempt of the turn; None when there is nothing to run (finished, or failed
    after too many lost attempts). Raises ``TurnNotReady`` while its predecessor is unfinished."""
    for _ in range(2):
        started = _start_queued(turn_id)
        if started is not None:
            return started
        turn = Turn.objects.filter(pk=turn_id).first()
        if turn is None or turn.status not in ACTIVE:
            return None
        if turn.status == Turn.Status.RUNNING:
            # With late acks a message comes back only when its worker died mid-turn.
            return _reclaim(turn_id)
        # Waiting for the previous turn: fail it if it is stuck, then try once more.
        if not sweep_stuck_turns(session_id=turn.session_id):
            raise TurnNotReady(turn_id)
    raise TurnNotReady(turn_id)


@functools.cache
def _claim_sql() -> str:
    turn, session, feedback = Turn._meta, SearchSession._meta, Feedback._meta
    columns = ", ".join(f't."{f.column}"' for f in turn.concrete_fields)

    def opinions(sign: str) -> str:
        return (
            f'ARRAY(SELECT f."item_id" FROM "{feedback.db_table}" AS f '
            f'WHERE f."session_id" = t."session_id" AND f."value" {sign} 0 ORDER BY f."id")'
        )

    return f"""
        UPDATE "{turn.db_table}" AS t
        SET "status" = %(running)s, "attempts" = t."attempts" + 1, "started_at" = %(now)s
        FROM "{session.db_table}" AS s
        WHERE t."id" = %(turn)s AND t."status" = %(queued)s AND s."id" = t."session_id"
          AND NOT EXISTS (
            SELECT 1 FROM "{turn.db_table}" AS p
            WHERE p."session_id" = t."session_id" AND p."index" = t."index" - 1
              AND p."status" IN (%(queued)s, %(running)s)
          )
        RETURNING {columns}, s."catalog_id" AS "session_catalog_id",
          {opinions(">")} AS "liked_ids", {opinions("<")} AS "disliked_ids"
    """


def _start_queued(turn_id: int) -> Claim | None:
    """The usual claim in one round trip: a queued turn whose predecessor is over starts its first
    attempt; returned with its session's catalog (the only part of the session a run needs) and
    the session's feedback (read in the same statement: no round trip of its own)."""
    params = {
        "turn": turn_id,
        "now": timezone.now(),
        "queued": Turn.Status.QUEUED,
        "running": Turn.Status.RUNNING,
    }
    started = list(Turn.objects.raw(_claim_sql(), params))
    if not started:
        return None
    turn = started[0]
    extra = turn.__dict__
    turn.session = SearchSession.from_db(
        DEFAULT_DB_ALIAS, ["id", "catalog_id"], [turn.session_id, extra.pop("session_catalog_id")]
    )
    return Claim(turn, list(extra.pop("liked_ids")), list(extra.pop("disliked_ids")))


def _reclaim(turn_id: int) -> Claim | None:
    """Take over a RUNNING turn whose last attempt was lost: remove its partial output and start
    the next attempt, or fail the turn (``worker_lost``) once it has had its attempts."""
    stale_files: list[str] = []
    with transaction.atomic():
        turn = Turn.objects.select_for_update().select_related("session").get(pk=turn_id)
        if turn.status != Turn.Status.RUNNING:
            return None
        log.warning("turn %s: restarting after lost attempt %s", turn.pk, turn.attempts)
        gave_up = turn.attempts >= settings.DAR_TURN_MAX_ATTEMPTS
        if not gave_up:
            stale_files = list(turn.previews.values_list("image", flat=True))
            turn.previews.all().delete()
            turn.results.all().delete()
            turn.attempts += 1
            turn.started_at = timezone.now()
            turn.refined_query, turn.prompts, turn.refinement_fallback = "", [], False
            turn.question, turn.timings, turn.weights = "", {}, {}
            turn.encoder_name, turn.error_code, turn.error = "", "", ""
            turn.save()
    # Files go only once the rows are gone for good (after the commit).
    for name in stale_files:
        default_storage.delete(name)
    if gave_up:
        fail_turn(
            turn,
            "worker_lost",
            "The search worker stopped several times on this message; please rephrase it.",
        )
        return None
    return Claim(turn, *feedback_items(turn.session_id))
