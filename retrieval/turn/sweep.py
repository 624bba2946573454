"""Nothing stays queued or running forever: turns that outlived DAR_TURN_TIME_LIMIT are failed
(code ``timeout``) and the page is told.

The sweep runs when a page connects or restores, when a new message finds an earlier turn past its
limit, while a queued task waits for its predecessor (``store.claim``), and periodically from
Celery beat (``tasks.sweep_stuck_turns``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from retrieval.models import Turn

from . import store

log = logging.getLogger(__name__)

# Celery's hard limit fires TIME_LIMIT_GRACE seconds after the soft one; the sweeper waits a bit
# longer so that a live worker always gets to report its own timeout first.
TIME_LIMIT_GRACE = 15
SWEEP_GRACE = TIME_LIMIT_GRACE + 15


def sweep_stuck_turns(session_id: Any = None) -> int:
    """Fail turns queued or running for longer than DAR_TURN_TIME_LIMIT; returns how many.

    A queued turn's clock starts when it became runnable (its predecessor finished), so a turn
    that legitimately waits behind a slow predecessor is not failed for the wait.
    """
    cutoff = _stuck_cutoff()
    failed = 0
    for turn in store.stuck_candidates(cutoff, session_id):
        if turn.status == Turn.Status.QUEUED and not _queued_too_long(turn, cutoff):
            continue
        if store.fail_turn(turn, "timeout", _timeout_message(turn), statuses=[turn.status]):
            log.warning("turn %s (session %s) swept as timed out", turn.index, turn.session_id)
            failed += 1
    return failed


def looks_stuck(status: str, created_at: datetime, started_at: datetime | None) -> bool:
    """Whether ``sweep_stuck_turns`` would look at a turn (a cheap test on loaded values)."""
    cutoff = _stuck_cutoff()
    if status == Turn.Status.RUNNING:
        return started_at is not None and started_at < cutoff
    return status == Turn.Status.QUEUED and created_at < cutoff


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


def _queued_too_long(turn: Turn, cutoff: datetime) -> bool:
    if turn.index == 0:
        return True
    previous = store.predecessor(turn)
    if previous is None:
        return True
    if previous.status in store.ACTIVE:
        return False  # still waiting in line; the predecessor is swept on its own clock
    return previous.finished_at is None or previous.finished_at < cutoff
