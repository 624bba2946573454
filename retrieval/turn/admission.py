"""Admission of new turns under load: a bounded line for the gpu stage, and each turn's place in it.

A turn's text-only results never wait in a line (the interactive worker serves them at once); the
rest of the turn (refine, paint, final ranking) waits for a gpu worker while its status is QUEUED.
That line is bounded: a message that finds DAR_TURN_QUEUE_DEPTH turns already waiting is refused
with ``busy`` (a websocket error frame; REST 503), with a Retry-After. A refused message is not
stored: the client keeps it and is told to send it again (the shopper page puts it back into the
composer), so nothing the shopper said is lost and no turn is accepted only to time out in line.

An accepted turn that has to wait behind other shoppers' turns is told where it stands: a
``turn.queued`` event right after ``turn.accepted`` with its ``position`` (1: next to start) and
``expected_wait_s`` (from how long recent turns ran and how many run at once; null before any turn
has finished). The page's state (and the REST turn) carries the same ``queue`` while it waits.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q

from retrieval.models import Turn
from retrieval.services.errors import SearchError

# Recent finished turns the expected wait is estimated from.
RECENT_TURNS = 20
# Retry-After when no turn has finished yet to estimate from.
UNKNOWN_RETRY_S = 15
MAX_RETRY_S = 300
# How long one estimate of the line's speed is reused.
ESTIMATE_TTL_S = 2.0
_estimate_lock = threading.Lock()
_estimate: dict[str, tuple[float, float | None]] = {}


@dataclass(frozen=True)
class Place:
    """Where a waiting turn stands in the gpu stage's line."""

    position: int
    expected_wait_s: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"position": self.position, "expected_wait_s": self.expected_wait_s}


def admit(session_id: object) -> Place | None:
    """Let one more turn of the session join the line, or refuse it (``busy``).

    Returns the new turn's place when it will wait behind other sessions' turns, else None (it
    starts at once, or waits only for the session's own earlier turn, which the shopper is
    watching). The count takes no lock: messages stored at the same instant may each see the
    line one short of full, so it can run over by as many as are being stored at once (at most
    DAR_WS_DB_THREADS per web process, plus REST requests). A lock held until each message's
    commit serialised every message of the instance: under 100 shoppers it was most of the time
    to ``turn.accepted`` (docs/benchmarks.md section 4).
    """
    waiting, others = _line(session_id)
    if waiting >= settings.DAR_TURN_QUEUE_DEPTH:
        retry = retry_after_s()
        raise SearchError(
            "busy",
            f"Search is very busy right now ({waiting} "
            f"{'search is' if waiting == 1 else 'searches are'} waiting). Nothing was "
            f"stored: please send your message again in about {retry} seconds.",
            retry_after=retry,
        )
    if not others:
        return None
    return Place(waiting + 1, expected_wait_s(waiting + 1))


def place_of(turn: Turn) -> Place | None:
    """A queued turn's current place in the line, as ``admit`` gives it (None once it started or
    ended, or when no other session's turn is ahead of it)."""
    if turn.status != Turn.Status.QUEUED:
        return None
    ahead, others = _line(turn.session_id, before=turn)
    return Place(ahead + 1, expected_wait_s(ahead + 1)) if others else None


def _line(session_id: object, before: Turn | None = None) -> tuple[int, int]:
    """How many turns wait (ahead of ``before``, if given), and how many of those are other
    sessions'. One statement on the (status, created_at) index."""
    rows = Turn.objects.filter(status=Turn.Status.QUEUED)
    if before is not None:
        rows = rows.filter(created_at__lt=before.created_at)
    line = rows.aggregate(waiting=Count("id"), others=Count("id", filter=~Q(session_id=session_id)))
    return int(line["waiting"]), int(line["others"])


def expected_wait_s(position: int) -> int | None:
    """Seconds until the turn at ``position`` starts: turns ahead of it leave the line as fast as
    recent turns ran, as many at a time as run now. None with nothing to estimate from."""
    per_start = _seconds_per_start()
    return None if per_start is None else max(1, math.ceil(position * per_start))


def retry_after_s() -> int:
    """When a refused message is worth sending again: once a place in the line is likely free."""
    per_start = _seconds_per_start()
    if per_start is None:
        return UNKNOWN_RETRY_S
    return min(MAX_RETRY_S, max(1, math.ceil(per_start)))


def _seconds_per_start() -> float | None:
    """Seconds between two turns leaving the line; cached briefly per process, since under load
    every new message asks and the answer moves slowly."""
    now = time.monotonic()
    with _estimate_lock:
        cached = _estimate.get("value")
        if cached is not None and now - cached[0] < ESTIMATE_TTL_S:
            return cached[1]
    value = _measure_seconds_per_start()
    with _estimate_lock:
        _estimate["value"] = (now, value)
    return value


def _measure_seconds_per_start() -> float | None:
    recent = list(
        Turn.objects.filter(status=Turn.Status.DONE, started_at__isnull=False)
        .order_by("-created_at")
        .values_list("started_at", "finished_at")[:RECENT_TURNS]
    )
    runs = [end - start for start, end in recent if start and end and end >= start]
    if not runs:
        return None
    mean = sum(runs, timedelta()).total_seconds() / len(runs)
    running = Turn.objects.filter(status=Turn.Status.RUNNING).count()
    return mean / max(running, 1)
