"""Fair queuing of embedding jobs on the gpu queue, which every shop's search turns also use.

Without it the gpu queue is first come, first served: a shop that imports or re-embeds 100,000
items puts 1,500 jobs in front of every other shop's search turns and uploads (the probe measured
another shop's final results going from 4 s to 26 s behind 27 re-embed jobs).

Celery's Redis transport keeps one list per priority and a worker always takes from the highest
priority first (0 is the highest; ``CELERY_BROKER_TRANSPORT_OPTIONS["priority_steps"]``). So:

* a search turn's tasks go at priority 0: a worker that frees up takes a waiting turn before any
  embedding job (a turn waits at most for the jobs already running, never for the backlog);
* a shop's embedding jobs go at 1 + the number of its jobs already waiting (at most 9): each
  shop's first job waiting is served before any shop's second, and so on, which interleaves the
  shops' jobs (round robin over shops, first come first served within a shop, up to nine deep).

The count of a shop's waiting jobs lives in Redis (incremented when a job is sent, decremented
when it starts). A count left behind by a lost message only lowers that shop's priority for a
while: it expires after ``DAR_TASK_VISIBILITY_TIMEOUT`` x 2 without new jobs.
"""

from __future__ import annotations

import redis
from django.conf import settings

TURN_PRIORITY = 0
FIRST_JOB_PRIORITY = 1
LOWEST_PRIORITY = 9


def _key(shop_id: int) -> str:
    return f"{settings.REDIS_PREFIX}:embed:waiting:{shop_id}"


def _client() -> redis.Redis:
    from retrieval.services import ratelimit

    return ratelimit.client()


def enqueue(shop_id: int) -> int:
    """Count one more waiting job of the shop; returns the priority to send it with."""
    key = _key(shop_id)
    with _client().pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, 2 * settings.DAR_TASK_VISIBILITY_TIMEOUT)
        waiting, _ = pipe.execute()
    ahead = max(0, int(waiting) - 1)
    return min(LOWEST_PRIORITY, FIRST_JOB_PRIORITY + ahead)


def started(shop_id: int | None) -> None:
    """A job of the shop left the queue (a worker took it)."""
    if shop_id is None:
        return  # sent before fair queuing: never counted
    key, client = _key(shop_id), _client()
    if int(client.decr(key)) < 0:
        client.delete(key)  # the count had expired meanwhile: back to nothing waiting


def waiting(shop_id: int) -> int:
    """How many of the shop's jobs wait (as counted; for tests and the admin)."""
    return max(0, int(_client().get(_key(shop_id)) or 0))
