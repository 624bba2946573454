"""Turn lifecycle on the web side: accept a message, enqueue its turn, fail turns that got stuck.

A turn is two tasks sent together: its text stage (``interactive.turn_text``, first results, on a
queue and worker of its own so that it never waits behind LLM work) and the rest of the pipeline
(``gpu.run_turn``); see ``pipeline`` for how they share the turn.

Ordering: a message sent while an earlier turn of the same session is still queued or running is
*accepted and queued*, never refused. Turns run strictly in index order: both tasks of turn n wait
(Celery retry with a short countdown, see ``claims.TurnNotReady``) until turn n-1 is done or
failed, so each turn sees the feedback given before it and its stages start after the previous
turn's have ended (only that turn's last event, sent by another process, may still be on its way
when turn n's first results go out).

Nothing stays queued or running forever: ``sweep_stuck_turns`` fails turns that outlived
DAR_TURN_TIME_LIMIT (code ``timeout``). It runs when a page connects or restores, when a new message
finds an earlier turn past its limit, while a queued task waits for its predecessor, and
periodically from Celery beat.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from dar_site.storable_text import unstorable_reason
from retrieval.models import SearchSession, Turn

from . import admission, events, ratelimit
from . import filters as search_filters
from .errors import SearchError

log = logging.getLogger(__name__)

RUN_TURN_TASK = "gpu.run_turn"
TEXT_STAGE_TASK = "interactive.turn_text"
# Celery's hard limit fires TIME_LIMIT_GRACE seconds after the soft one; the sweeper waits a bit
# longer so that a live worker always gets to report its own timeout first.
TIME_LIMIT_GRACE = 15
SWEEP_GRACE = TIME_LIMIT_GRACE + 15

ACTIVE = (Turn.Status.QUEUED, Turn.Status.RUNNING)
FINISHED = (Turn.Status.DONE, Turn.Status.FAILED)


def clean_message(text: Any) -> str:
    if not isinstance(text, str):
        raise SearchError("empty_message", "Send the message as text.")
    text = text.strip()
    if not text:
        raise SearchError("empty_message", "Describe what you are looking for.")
    reason = unstorable_reason(text)
    if reason:
        raise SearchError("invalid_text", f"That message {reason}; remove it and send again.")
    limit = settings.DAR_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise SearchError(
            "message_too_long", f"That message is {len(text)} characters; the limit is {limit}."
        )
    return text


def submit_message(
    session: SearchSession,
    text: Any,
    *,
    address: str | None = None,
    enqueue: Callable[[Turn], None] | None = None,
    filters: Any = None,
    restate: Any = False,
) -> Turn:
    """Validate a shopper's message, store it as the session's next turn and enqueue the turn.

    ``filters``: filters the shopper picked or removed along with the message
    (``{"set": [...], "remove": [...]}``, see ``filters.parse_change``).
    ``restate``: the message is the shopper's own rewrite of what the search understood (the
    page's editable description). It replaces the dialogue so far: this turn and the next ones
    search from it, as if the conversation had started there (chips removed before come back
    when it says them; see ``filters``).

    ``enqueue`` replaces sending the turn's tasks to Celery (the dialogue benchmark runs them in
    its own process, through the same stages); the ``turn.accepted`` event goes out either way.

    Raises ``SearchError`` (nothing is stored) for an empty or oversized message, filters that are
    not the catalog's (``bad_filter``), a session that reached DAR_MAX_TURNS_PER_SESSION, a full
    line of waiting turns (``busy``, see ``admission``), or a rate limit.
    """
    text = clean_message(text)
    if not isinstance(restate, bool):
        raise SearchError("invalid", "restate is true or false.")
    turn, _ = _store_turn(session, text, filters, address=address, enqueue=enqueue, restate=restate)
    assert turn is not None  # a message always makes a turn
    return turn


def change_filters(
    session: SearchSession,
    filters: Any,
    *,
    address: str | None = None,
    enqueue: Callable[[Turn], None] | None = None,
) -> tuple[dict[str, Any], Turn | None]:
    """Apply filters the shopper picked or removed (a chip) without saying anything: the latest
    message is searched again with them, as the session's next turn (same dialogue, so nothing
    counts as said again). Returns the session's filter state and that turn (None before the
    first message: the filters then apply to it)."""
    if not isinstance(filters, dict) or not (filters.get("set") or filters.get("remove")):
        raise SearchError(
            "bad_filter", 'Send {"set": [...]} or {"remove": [...]}: which filters to change.'
        )
    turn, state = _store_turn(session, None, filters, address=address, enqueue=enqueue)
    return search_filters.state_payload(state), turn


def _store_turn(
    session: SearchSession,
    text: str | None,
    raw_filters: Any,
    *,
    address: str | None,
    enqueue: Callable[[Turn], None] | None,
    restate: bool = False,
) -> tuple[Turn | None, dict[str, Any]]:
    """Store the session's next turn: ``text`` as a new message, or (None) the latest message
    again with changed filters; None when there is no message yet (only the filters are kept).
    Also returns the session's filter state as stored."""
    with transaction.atomic():
        # Touching the session row locks it: concurrent messages are serialised, so indexes stay
        # gapless.
        if not SearchSession.objects.filter(pk=session.pk).update(updated_at=timezone.now()):
            raise SearchError("not_found", "This search session no longer exists.")
        previous = list(
            Turn.objects.filter(session_id=session.pk)
            .order_by("index")
            .values_list("message", "status", "created_at", "started_at", "context")
        )
        # The dialogue so far: the latest turn's (every message, unless a turn searched again).
        last_context = [str(m) for m in previous[-1][4]] if previous else []
        last_context = last_context or [str(message) for message, *_ in previous]
        # A click counts the messages said before it: the words of a message with that index or
        # later (one sent with the click included) win over it.
        at = 0 if restate else len(last_context)
        change = search_filters.parse_change(session.catalog_id, raw_filters, at)
        state = SearchSession.objects.values_list("filters", flat=True).get(pk=session.pk)
        if restate:
            # The dialogue starts again from the restatement: so do the clicks' message counts.
            state = search_filters.restarted(state)
        if change:
            state = search_filters.changed_state(state, change, at)
        if change or restate:
            SearchSession.objects.filter(pk=session.pk).update(filters=state)
        if text is None and not previous:
            return None, state
        if len(previous) >= settings.DAR_MAX_TURNS_PER_SESSION:
            raise SearchError(
                "too_many_turns",
                "This search has reached its length limit; please start a new search.",
            )
        if any(
            _looks_stuck(status, created, started) for _, status, created, started, _c in previous
        ):
            # An earlier turn outlived its limit: fail it, or the new one would wait behind it.
            sweep_stuck_turns(session_id=session.pk)
        # Before the rate limit: a message refused for overload must not count against it.
        place = admission.admit(session.pk)
        ratelimit.check_turn_allowed(session.pk, address)
        repeated = text is None
        if text is None:
            # The same dialogue searched again with other filters.
            text, context = str(previous[-1][0]), last_context
        else:
            # Each turn's dialogue is the one before it plus this message (a turn that searched
            # again with other filters said nothing); a restatement starts anew.
            context = [text] if restate else [*last_context, text]
        turn = Turn.objects.create(
            session_id=session.pk,
            index=len(previous),
            message=text,
            context=context,
            restates=restate,
            filters=search_filters.for_turn(session.catalog_id, state, context, again=repeated),
            # The gpu task's id, chosen here so that the row is written once.
            task_id=str(uuid.uuid4()),
        )
        transaction.on_commit(lambda: _enqueue(turn, place, enqueue or _send_tasks))
    return turn, state


def _enqueue(turn: Turn, place: admission.Place | None, send: Callable[[Turn], None]) -> None:
    # Sent (waiting) before the tasks, so the page hears of the turn before any of its stages;
    # a turn that waits behind other shoppers' turns says where, in the same message.
    shown = search_filters.payload(turn.filters)
    accepted = {
        "type": "turn.accepted",
        "turn": turn.index,
        "message": turn.message,
        "restates": turn.restates,
        "status": "queued",
        "filters": shown,
    }
    batch = [accepted] if place is None else [accepted, place.event(turn.index)]
    if shown["notice"]:
        # Nothing matched every filter: the page says which one was let go.
        notice = {"type": "notice", "turn": turn.index, "code": "filters_relaxed"}
        batch.append({**notice, "message": shown["notice"]})
    events.emit(turn.session_id, *batch, wait=True)
    send(turn)


def _send_tasks(turn: Turn) -> None:
    # Both at once: the text stage does not wait for a gpu worker, nor the gpu task for it. Their
    # outcome is the turn's row and events, never a task result (nothing to store or subscribe to).
    current_app.send_task(TEXT_STAGE_TASK, args=[turn.pk], ignore_result=True)
    current_app.send_task(RUN_TURN_TASK, args=[turn.pk], task_id=turn.task_id, ignore_result=True)


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
        events.emit(
            turn.session_id,
            {"type": "error", "turn": turn.index, "code": code, "message": message},
        )
    return bool(updated)


def sweep_stuck_turns(session_id: Any = None) -> int:
    """Fail turns queued or running for longer than DAR_TURN_TIME_LIMIT; returns how many.

    A queued turn's clock starts when it became runnable (its predecessor finished), so a turn
    that legitimately waits behind a slow predecessor is not failed for the wait.
    """
    cutoff = _stuck_cutoff()
    candidates = Turn.objects.filter(
        Q(status=Turn.Status.RUNNING, started_at__lt=cutoff)
        | Q(status=Turn.Status.QUEUED, created_at__lt=cutoff)
    )
    if session_id is not None:
        candidates = candidates.filter(session_id=session_id)
    failed = 0
    for turn in candidates.order_by("session_id", "index"):
        if turn.status == Turn.Status.QUEUED and not _queued_too_long(turn, cutoff):
            continue
        if fail_turn(turn, "timeout", _timeout_message(turn), statuses=[turn.status]):
            log.warning("turn %s (session %s) swept as timed out", turn.index, turn.session_id)
            failed += 1
    return failed


def _timeout_message(turn: Turn) -> str:
    """What the shopper is told of a turn that ran out of time: where it stopped, what is kept."""
    if turn.status == Turn.Status.QUEUED:
        return (
            "Search is very busy: this message waited too long in line and was stopped "
            "(any results shown come from your words only). Please send it again."
        )
    return "This search step took too long and was stopped. Please send your message again."


def _stuck_cutoff() -> datetime:
    """Turns running (or queued) since before this have outlived their limit."""
    return timezone.now() - timedelta(seconds=settings.DAR_TURN_TIME_LIMIT + SWEEP_GRACE)


def _looks_stuck(status: str, created_at: datetime, started_at: datetime | None) -> bool:
    """Whether ``sweep_stuck_turns`` would look at a turn (a cheap test on loaded values)."""
    cutoff = _stuck_cutoff()
    if status == Turn.Status.RUNNING:
        return started_at is not None and started_at < cutoff
    return status == Turn.Status.QUEUED and created_at < cutoff


def _queued_too_long(turn: Turn, cutoff: Any) -> bool:
    if turn.index == 0:
        return True
    previous = Turn.objects.filter(session_id=turn.session_id, index=turn.index - 1).first()
    if previous is None:
        return True
    if previous.status in ACTIVE:
        return False  # still waiting in line; the predecessor is swept on its own clock
    return previous.finished_at is None or previous.finished_at < cutoff
