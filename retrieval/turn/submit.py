"""The web side of a turn: a shopper's message, filter clicks and likes come in here.

``submit_message`` validates a message, stores it as the session's next turn (``store``) and
queues its two tasks (``tasks``): the text stage, first results on a queue of its own, and the gpu
task, the rest of the pipeline (``pipeline`` says how they share the turn).

Ordering: a message sent while an earlier turn of the same session is still queued or running is
*accepted and queued*, never refused. Turns run strictly in index order: both tasks of turn n wait
(Celery retry with a short countdown, see ``store.TurnNotReady``) until turn n-1 is done or
failed, so each turn sees the feedback given before it and its stages start after the previous
turn's have ended (only that turn's last event, sent by another process, may still be on its way
when turn n's first results go out). Under load, ``admission`` bounds the line; turns that outlive
their limit are failed by ``sweep``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction

from catalog.models import CatalogItem
from dar_site.input_ids import row_id
from dar_site.storable_text import unstorable_reason
from retrieval.models import SearchSession, Turn
from retrieval.services import events, ratelimit
from retrieval.services.errors import SearchError

from . import admission, payloads, store
from . import filters as search_filters
from .sweep import looks_stuck, sweep_stuck_turns
from .tasks import RUN_TURN_TASK, TEXT_STAGE_TASK

log = logging.getLogger(__name__)


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
        locked = store.lock_history(session.pk)
        if locked is None:
            raise SearchError("not_found", "This search session no longer exists.")
        state, previous = locked
        # The dialogue so far: the latest turn's (every message, unless a turn searched again).
        last_context = [str(m) for m in previous[-1][4]] if previous else []
        last_context = last_context or [str(message) for message, *_ in previous]
        # A click counts the messages said before it: the words of a message with that index or
        # later (one sent with the click included) win over it.
        at = 0 if restate else len(last_context)
        change = search_filters.parse_change(session.catalog_id, raw_filters, at)
        if restate:
            # The dialogue starts again from the restatement: so do the clicks' message counts.
            state = search_filters.restarted(state)
        if change:
            state = search_filters.changed_state(state, change, at)
        if change or restate:
            store.save_filter_state(session.pk, state)
        if text is None and not previous:
            return None, state
        if len(previous) >= settings.DAR_MAX_TURNS_PER_SESSION:
            raise SearchError(
                "too_many_turns",
                "This search has reached its length limit; please start a new search.",
            )
        if any(
            looks_stuck(status, created, started) for _, status, created, started, _c in previous
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
        turn = store.create_turn(
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
    events.emit(turn.session_id, *payloads.accepted_events(turn, place), wait=True)
    send(turn)


def _send_tasks(turn: Turn) -> None:
    # Both at once: the text stage does not wait for a gpu worker, nor the gpu task for it. Their
    # outcome is the turn's row and events, never a task result (nothing to store or subscribe to).
    current_app.send_task(TEXT_STAGE_TASK, args=[turn.pk], ignore_result=True)
    current_app.send_task(RUN_TURN_TASK, args=[turn.pk], task_id=turn.task_id, ignore_result=True)


def record_feedback(session: SearchSession, item: Any, value: Any) -> dict[str, Any]:
    """Store the shopper's opinion of a result item: 1 like, -1 dislike, 0 takes it back.

    The latest opinion of an item replaces the earlier one. It applies from the next turn on
    (Rocchio, ``ranking.with_feedback``): the claim reads it when the turn starts.
    """
    item_id = row_id(item)
    if item_id is None:
        raise SearchError("bad_feedback", "Feedback needs the id of a result item.")
    if isinstance(value, bool) or value not in (1, -1, 0):
        raise SearchError("bad_feedback", "Feedback value must be 1 (like) or -1 (dislike).")
    if not CatalogItem.objects.filter(pk=item_id, catalog_id=session.catalog_id).exists():
        raise SearchError("bad_feedback", f"Item {item_id} is not in this catalog.")
    store.set_opinion(session, item_id, value)
    event = payloads.feedback_event(item_id, value)
    events.emit(session.pk, event)
    return event
