"""A turn's Celery tasks, thin: each calls the stage that owns the work.

A turn is two tasks, sent together by ``submit``: ``interactive.turn_text`` (the interactive
queue, a worker that holds only the encoder) publishes the text-only results at once
(``text_stage``); ``gpu.run_turn`` (the gpu queue, where the LLM and the generator stay loaded)
does the rest (``pipeline``). Routing by name prefix is in dar_site/celery.py.
"""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings

from . import pipeline, store, sweep, text_stage
from .sweep import TIME_LIMIT_GRACE

RUN_TURN_TASK = "gpu.run_turn"
TEXT_STAGE_TASK = "interactive.turn_text"


@shared_task(
    name=TEXT_STAGE_TASK,
    bind=True,
    acks_late=True,
    # Like run_turn, it waits for the session's previous turn; the sweeper bounds the wait. It
    # never fails a turn: when it cannot run, run_turn ranks by text itself.
    max_retries=None,
    ignore_result=True,
)
def turn_text(self: Task, turn_id: int) -> None:
    try:
        text_stage.run_text_stage(turn_id)
    except store.TurnNotReady as wait:
        raise self.retry(countdown=wait.delay) from None


@shared_task(
    name=RUN_TURN_TASK,
    bind=True,
    acks_late=True,
    # Waiting for the previous turn retries without a cap: the sweeper ends any turn that
    # outlives DAR_TURN_TIME_LIMIT, so the wait is bounded by the predecessor's limit.
    max_retries=None,
    # The soft limit raises inside the turn, which then fails itself with code "timeout"; the
    # hard limit kills a turn stuck in native code, and the sweeper reports that one.
    soft_time_limit=settings.DAR_TURN_TIME_LIMIT,
    time_limit=settings.DAR_TURN_TIME_LIMIT + TIME_LIMIT_GRACE,
)
def run_turn(self: Task, turn_id: int) -> None:
    try:
        pipeline.run_turn(turn_id)
    except store.TurnNotReady as wait:
        # Turns run in index order: come back when the previous turn of the session is over.
        raise self.retry(countdown=wait.delay) from None


@shared_task(name="search.sweep_stuck_turns")
def sweep_stuck_turns() -> int:
    return sweep.sweep_stuck_turns()
