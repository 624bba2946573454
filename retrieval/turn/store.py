"""Every statement on turns, their results, previews and the session's feedback.

The rest of the turn package computes; this module reads and writes. Three rules hold here and
nowhere else:

- **The attempt fence.** A gpu attempt starts with ``claim`` (RUNNING, ``attempts`` + 1) and every
  later write of that attempt matches only while the turn is still RUNNING under that attempt's
  number (``owned``). A redelivered task or the sweeper can take a turn over; the stale attempt's
  writes then match nothing and it stops (``Superseded``).
- **First results first.** Provisional (text-only) results are written only while the turn has no
  results at all, and announced before they are committed (``store_provisional``); the final
  write matches only once provisional results exist (``store_final``). So the page always sees
  text-only results before the final ones, whichever worker is quicker.
- **Derived writes do not wait for the disk** (``derived_writes``): everything a turn's tasks
  write is derived from the message, which the web side commits normally (``create_turn``).

Each write is one statement or one transaction, so a turn is never seen half written.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, transaction
from django.db.models import Exists, Field, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from dar_site import advisory_locks
from retrieval.models import Feedback, Preview, SearchSession, Turn, TurnResult
from retrieval.services import events

from . import payloads

log = logging.getLogger(__name__)

ACTIVE = (Turn.Status.QUEUED, Turn.Status.RUNNING)
FINISHED = (Turn.Status.DONE, Turn.Status.FAILED)
# First key of the advisory lock that serialises the writes of a turn's provisional results.
RESULTS_LOCK_SPACE = 0x7E57


class TurnNotReady(Exception):
    """The previous turn of the session has not finished; try again after ``delay`` seconds."""

    def __init__(self, turn_id: int, delay: float = 0.5) -> None:
        super().__init__(turn_id)
        self.delay = delay


class Superseded(Exception):
    """Another attempt (or the sweeper) owns the turn now; this attempt must stop quietly."""


# --- durability -------------------------------------------------------------------------------


@contextmanager
def derived_writes() -> Iterator[None]:
    """Commits inside this block do not wait for the WAL flush.

    What a turn's tasks write (status, refinement, previews, results, timings) is derived from
    the shopper's message, stored before any task runs with an ordinary commit. PostgreSQL stays
    consistent whatever happens; only a crash of the database server itself can lose the last
    moments of such commits (about three ``wal_writer_delay``): the turn is then left queued or
    running, the sweeper fails it as timed out and the page asks for the message again; the
    message is never lost. In exchange a turn waits for no disk flush (5 ms per gpu task on the
    development VM, docs/benchmarks.md). ``DAR_TURN_ASYNC_COMMIT=0`` turns this off.

    Session-wide SET and RESET around the block rather than ``SET LOCAL`` in each transaction:
    most of a turn's writes are single autocommit statements. The worker keeps its connection
    from task to task, so the setting never outlives the block.
    """
    if not settings.DAR_TURN_ASYNC_COMMIT:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("RESET synchronous_commit")
        except DatabaseError:
            # The connection broke meanwhile: closed, so that it is not reused with the setting.
            connection.close()


# --- the session's feedback -------------------------------------------------------------------


def _opinions_sql(sign: str, session: str) -> str:
    """The session's liked (``>``) or disliked (``<``) item ids, oldest first, as one SQL
    expression; ``session`` is the SQL giving the session's id. The one definition of the read:
    the claim, the text stage and a rerun all use it."""
    feedback = Feedback._meta
    column = {f.name: f.column for f in feedback.concrete_fields}
    return (
        f'ARRAY(SELECT f."{column["item"]}" FROM "{feedback.db_table}" AS f '
        f'WHERE f."{column["session"]}" = {session} AND f."{column["value"]}" {sign} 0 '
        'ORDER BY f."id")'
    )


def _turns_session() -> str:
    return f'"{Turn._meta.db_table}"."{Turn._meta.get_field("session").column}"'


def feedback_of(session_id: Any) -> tuple[list[int], list[int]]:
    """(liked, disliked) item ids of a session."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_opinions_sql('>', '%s')}, {_opinions_sql('<', '%s')}",
            [session_id, session_id],
        )
        liked, disliked = cursor.fetchone()
    return list(liked), list(disliked)


def set_opinion(session: SearchSession, item_id: int, value: int) -> None:
    """The shopper's latest opinion of an item replaces any earlier one; 0 takes it back."""
    if value == 0:
        Feedback.objects.filter(session=session, item_id=item_id).delete()
        return
    latest = session.turns.order_by("-index").first()
    Feedback.objects.update_or_create(
        session=session, item_id=item_id, defaults={"value": value, "turn": latest}
    )


# --- the web side: storing a message ----------------------------------------------------------


def lock_history(session_id: Any) -> tuple[dict[str, Any], list[tuple[Any, ...]]] | None:
    """Lock the session row until the transaction ends (concurrent messages are serialised, so
    indexes stay gapless) and read its clicked filters (``filters``) and its turns: (message,
    status, created_at, started_at, context) in index order. None when the session is gone."""
    session = SearchSession._meta
    with connection.cursor() as cursor:
        # The lock and the filters in one round trip: UPDATE ... RETURNING.
        cursor.execute(
            f'UPDATE "{session.db_table}" SET "updated_at" = %s WHERE "id" = %s '
            'RETURNING "filters"',
            [timezone.now(), session_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    state = _jsonb(row[0])
    history = list(
        Turn.objects.filter(session_id=session_id)
        .order_by("index")
        .values_list("message", "status", "created_at", "started_at", "context")
    )
    return dict(state or {}), history


def save_filter_state(session_id: Any, state: dict[str, Any]) -> None:
    SearchSession.objects.filter(pk=session_id).update(filters=state)


def create_turn(**values: Any) -> Turn:
    """The turn's row, written once (its gpu task's id is chosen before), with an ordinary commit:
    it holds what the shopper said."""
    return Turn.objects.create(**values)


# --- claiming a turn for a gpu attempt ----------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A turn started by this attempt (``turn.attempts`` is its number), with the session's
    liked and disliked items as they were when it started."""

    turn: Turn
    liked: list[int]
    disliked: list[int]


def owned(turn_id: int, attempt: int) -> QuerySet[Turn]:
    """The fence: the turn's row while that attempt owns it, empty once another attempt or the
    sweeper took the turn over."""
    return Turn.objects.filter(pk=turn_id, status=Turn.Status.RUNNING, attempts=attempt)


def claim(turn_id: int) -> Claim | None:
    """Start a new attempt of the turn; None when there is nothing to run (finished, or failed
    after too many lost attempts). Raises ``TurnNotReady`` while its predecessor is unfinished.

    For a queued turn whose predecessor is over (the usual case) that is one round trip; a rerun
    after a lost attempt also removes that attempt's partial output, or gives up after
    DAR_TURN_MAX_ATTEMPTS."""
    from .sweep import sweep_stuck_turns

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
    turn, session = Turn._meta, SearchSession._meta
    columns = ", ".join(f't."{f.column}"' for f in turn.concrete_fields)
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
          {_opinions_sql(">", 't."session_id"')} AS "liked_ids",
          {_opinions_sql("<", 't."session_id"')} AS "disliked_ids"
    """


def _start_queued(turn_id: int) -> Claim | None:
    """The usual claim in one round trip: a queued turn whose predecessor is over starts its first
    attempt; returned with its session's catalog (the only part of the session a run needs) and
    the session's feedback (read in the same statement)."""
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
    return Claim(turn, *feedback_of(turn.session_id))


# --- the text stage ---------------------------------------------------------------------------


def _has_results() -> Exists:
    return Exists(TurnResult.objects.filter(turn_id=OuterRef("pk")))


@dataclass(frozen=True)
class TextStageStart:
    """What the text stage decides on, read in one statement."""

    turn: Turn  # with its session
    waiting: bool  # its predecessor is unfinished
    has_results: bool
    liked: list[int]
    disliked: list[int]


def for_text_stage(turn_id: int) -> TextStageStart | None:
    """The turn, whether it may run and the session's feedback, in one statement."""
    predecessor_active = Exists(
        Turn.objects.filter(
            session_id=OuterRef("session_id"), index=OuterRef("index") - 1, status__in=ACTIVE
        )
    )
    turn = (
        Turn.objects.select_related("session")
        .annotate(
            waiting=predecessor_active,
            has_results=_has_results(),
            # Built from the models' table and column names only, no outside text.
            liked_ids=RawSQL(_opinions_sql(">", _turns_session()), ()),  # noqa: S611
            disliked_ids=RawSQL(_opinions_sql("<", _turns_session()), ()),  # noqa: S611
        )
        .filter(pk=turn_id)
        .first()
    )
    if turn is None:
        return None
    return TextStageStart(
        turn, turn.waiting, turn.has_results, list(turn.liked_ids), list(turn.disliked_ids)
    )


def store_provisional(
    turn: Turn,
    results: list[TurnResult],
    encoder_name: str,
    ms: int,
    *,
    attempt: int | None = None,
) -> bool:
    """Store and announce provisional results unless the turn has results already; returns
    whether it did. With ``attempt``, only while that gpu attempt owns the turn (``Superseded``
    otherwise); without, while the turn is queued or running.

    The event goes out before the commit: final results, stored only once provisional ones are
    visible (``store_final``), can never reach the page before them. The lock serialises the two
    writers of provisional results (the text stage and the gpu task's fallback) without locking
    the turn's row, which the gpu task's claim takes.
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
        TurnResult.objects.bulk_create(results)
        events.emit(turn.session_id, payloads.results_event(turn, results, final=False), wait=True)
        # Last, so that the turn's row is locked only for the commit (the gpu task's claim and
        # writes take it); the stage's time joins whatever timings the row has by then.
        text_ms = RawSQL("timings || %s::jsonb", [json.dumps({"text": ms})])
        rows.update(encoder_name=encoder_name, timings=text_ms)
    turn.encoder_name = encoder_name
    turn.timings = {**turn.timings, "text": ms}
    return True


def _lock_results(turn_id: int) -> None:
    """Serialise the writes of a turn's provisional results until the transaction ends."""
    advisory_locks.xact(RESULTS_LOCK_SPACE, turn_id & 0x7FFFFFFF)


# --- the gpu task's final write ---------------------------------------------------------------


@functools.cache
def _final_sql(fields: tuple[str, ...], after_provisional: bool = True) -> str:
    """One ``UPDATE`` of the turn (the fence) with two ``INSERT``s riding on it (data-modifying
    ``WITH`` clauses) that take their turn id from the rows it returns: when it matches nothing,
    nothing is written."""
    turn, preview, result = Turn._meta, Preview._meta, TurnResult._meta

    def col(meta: Any, name: str) -> str:
        return f'"{meta.get_field(name).column}"'

    sets = ", ".join(f"{col(turn, name)} = %({name})s" for name in fields)
    timings = col(turn, "timings")
    provisional = f"""
              AND EXISTS (
                SELECT 1 FROM "{result.db_table}" AS r
                WHERE r.{col(result, "turn")} = t."id" AND NOT r.{col(result, "final")}
              )"""
    return f"""
        WITH owned AS (
            UPDATE "{turn.db_table}" AS t
            SET {sets}, {timings} = t.{timings} || %(timings)s::jsonb
            WHERE t."id" = %(turn)s AND t.{col(turn, "status")} = %(running)s
              AND t.{col(turn, "attempts")} = %(attempt)s{provisional if after_provisional else ""}
            RETURNING t."id", t.{timings}
        ), previews AS (
            INSERT INTO "{preview.db_table}" ({col(preview, "turn")}, {col(preview, "index")},
                {col(preview, "prompt")}, {col(preview, "seed")}, {col(preview, "image")})
            SELECT owned."id", p.i, p.prompt, p.seed, p.image FROM owned,
              unnest(%(p_index)s::int[], %(p_prompt)s::text[], %(p_seed)s::bigint[],
                     %(p_image)s::text[]) AS p (i, prompt, seed, image)
        ), results AS (
            INSERT INTO "{result.db_table}" ({col(result, "turn")}, {col(result, "item")},
                {col(result, "final")}, {col(result, "rank")}, {col(result, "score")})
            SELECT owned."id", r.item, true, r.rank, r.score FROM owned,
              unnest(%(r_item)s::bigint[], %(r_rank)s::int[], %(r_score)s::float8[])
                AS r (item, rank, score)
        )
        SELECT {timings} FROM owned
    """


def store_final(
    turn: Turn,
    attempt: int,
    values: dict[str, Any],
    timings: dict[str, int],
    previews: Sequence[Preview],
    results: Sequence[TurnResult],
    *,
    after_provisional: bool = True,
) -> dict[str, int] | None:
    """Store ``values`` (turn fields), ``timings`` (merged into the stored ones), the previews'
    rows and the final results in one statement, sent in autocommit: one round trip, all or
    nothing. Returns the turn's timings as stored, or None (nothing written) while the turn has
    no provisional results; raises ``Superseded`` when this attempt no longer owns the turn.

    Why "has provisional results" suffices for the page's order: the text stage announces its
    results before it commits them, so a statement that sees them sees results whose event has
    already been sent. ``after_provisional=False`` drops that condition: only for a turn whose
    text ranking found nothing at all (an empty catalog), which leaves no row to see."""
    fields = tuple(sorted(values))
    params: dict[str, Any] = {
        name: _field(name).get_db_prep_save(value, connection) for name, value in values.items()
    }
    params |= {
        "timings": _field("timings").get_db_prep_save(timings, connection),
        "turn": turn.pk,
        "running": Turn.Status.RUNNING,
        "attempt": attempt,
        "p_index": [p.index for p in previews],
        "p_prompt": [p.prompt for p in previews],
        "p_seed": [p.seed for p in previews],
        "p_image": [str(p.image.name) for p in previews],
        "r_item": [r.item_id for r in results],
        "r_rank": [r.rank for r in results],
        "r_score": [r.score for r in results],
    }
    with connection.cursor() as cursor:
        cursor.execute(_final_sql(fields, after_provisional), params)
        row = cursor.fetchone()
    if row is not None:
        return dict(_jsonb(row[0]))
    if not owned(turn.pk, attempt).exists():
        raise Superseded(turn.pk)
    return None


def _jsonb(value: Any) -> Any:
    """A jsonb column read through a raw cursor: text (Django's own loader) or already parsed."""
    return json.loads(value) if isinstance(value, str) else value


def _field(name: str) -> Field[Any, Any]:
    return Turn._meta.get_field(name)  # type: ignore[return-value]


def update_owned(turn: Turn, attempt: int, **values: Any) -> None:
    """One fenced statement (the turn's end after its question); the values are kept on
    ``turn`` too."""
    if not owned(turn.pk, attempt).update(**values):
        raise Superseded(turn.pk)
    for name, value in values.items():
        setattr(turn, name, value)


def questions_before(turn: Turn) -> list[str]:
    """The clarifying questions the session's earlier turns asked, in order."""
    earlier = Turn.objects.filter(session_id=turn.session_id, index__lt=turn.index)
    return list(earlier.exclude(question="").order_by("index").values_list("question", flat=True))


def has_newer_turn(turn: Turn) -> bool:
    """Whether the shopper has sent the next message since this turn was stored."""
    return Turn.objects.filter(session_id=turn.session_id, index__gt=turn.index).exists()


# --- failing ----------------------------------------------------------------------------------


def fail_turn(
    turn: Turn,
    code: str,
    message: str,
    *,
    attempt: int | None = None,
    statuses: Iterable[str] = ACTIVE,
    found: dict[str, Any] | None = None,
) -> bool:
    """Mark a turn failed and tell the page, unless it already finished (or, with ``attempt``, a
    newer attempt took it over). Returns whether this call failed it. ``found``: other fields the
    failed attempt stores with its failure (its refinement)."""
    now = timezone.now()
    rows = Turn.objects.filter(pk=turn.pk, status__in=list(statuses))
    if attempt is not None:
        rows = rows.filter(attempts=attempt)
    timings = dict(turn.timings)
    if turn.started_at:
        timings["total"] = round((now - turn.started_at).total_seconds() * 1000)
    updated = rows.update(
        status=Turn.Status.FAILED,
        error_code=code,
        error=message,
        finished_at=now,
        timings=timings,
        **(found or {}),
    )
    if updated:
        events.emit(turn.session_id, payloads.error_event(turn.index, code, message))
    return bool(updated)


def stuck_candidates(cutoff: datetime, session_id: Any = None) -> QuerySet[Turn]:
    """Turns running since before ``cutoff``, or queued since before it, in order."""
    candidates = Turn.objects.filter(
        Q(status=Turn.Status.RUNNING, started_at__lt=cutoff)
        | Q(status=Turn.Status.QUEUED, created_at__lt=cutoff)
    )
    if session_id is not None:
        candidates = candidates.filter(session_id=session_id)
    return candidates.order_by("session_id", "index")


def predecessor(turn: Turn) -> Turn | None:
    return Turn.objects.filter(session_id=turn.session_id, index=turn.index - 1).first()
