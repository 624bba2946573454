"""A turn's clarifying question, asked on a thread of its own while the final results are stored.

The question needs only the final ranking (the titles of its first candidates) and the dialogue,
so the LLM starts on it as soon as the ranking is known, and the task's thread stores and
announces the results meanwhile: storing them no longer delays the question, and so the turn's
end. Model calls are thread-safe (concurrent calls are batched, workers/models/batching.py); the
asking thread touches no database connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from retrieval.services import threadpools
from workers.models.protocols import Dialogue

log = logging.getLogger(__name__)

# One thread per turn asking at the same time (threads start only when needed). Fewer than the gpu
# worker's concurrency would queue questions one behind the other instead of batching them.
ASKERS = 64


@dataclass(frozen=True)
class Asked:
    question: str | None
    ms: int  # the LLM's time, for the turn's timings


def _askers() -> ThreadPoolExecutor:
    return threadpools.pool("ask", ASKERS)


def start(
    refiner: Any, dialogue: Dialogue, candidates: Sequence[str], turn_id: int
) -> Future[Asked]:
    """Start asking; ``wait`` gives the question (or None)."""
    return _askers().submit(_ask, refiner, dialogue, list(candidates), turn_id)


def _ask(refiner: Any, dialogue: Dialogue, candidates: list[str], turn_id: int) -> Asked:
    from workers.models import questions

    start = time.monotonic()
    try:
        question = refiner.ask(dialogue, candidates)
    except Exception:
        # A question is a nicety: its failure must not cost the shopper the results.
        log.exception("turn %s: asking a question failed", turn_id)
        question = None
    # Never a repeat nor one the dialogue answered: else one about the candidates' difference.
    question = questions.review(
        question if isinstance(question, str) else None, dialogue, candidates
    )
    ms = round((time.monotonic() - start) * 1000)
    if isinstance(question, str) and question.strip():
        return Asked(question.strip(), ms)
    return Asked(None, ms)


def wait(pending: Future[Asked], timeout: float, turn_id: int) -> Asked | None:
    """The question, or None when there is none within ``timeout`` seconds (the turn's time is
    up: the results are out, so only the question is dropped)."""
    try:
        return pending.result(timeout=max(0.0, timeout))
    except (FutureTimeout, SoftTimeLimitExceeded):
        log.warning("turn %s: out of time while asking, no question", turn_id)
        return None
