"""Database work of the search consumers, on a pool of threads of its own.

Channels' ``database_sync_to_async`` is thread-sensitive. Django gives every HTTP request a
``ThreadSensitiveContext`` of its own, Channels gives websockets none, so every consumer's database
call in the process ran on asgiref's one shared thread: under 100 shoppers their connects and
messages queued there one after another (first results waited ~9 s for ~90 ms of work, see
docs/benchmarks.md section 4), while plain GETs stayed fast.

Here they run on a bounded pool (DAR_WS_DB_THREADS; the bound is also the most PostgreSQL
connections the consumers hold at once). Nothing here needs one thread: a consumer handles its
frames one at a time, every call is a whole unit of work (its own transaction), and each call still
closes stale connections before and after, as ``database_sync_to_async`` does
(``DatabaseSyncToAsync``), so no connection or transaction carries over between calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from channels.db import DatabaseSyncToAsync
from django.conf import settings

from retrieval.services.threadpools import pool

P = ParamSpec("P")
R = TypeVar("R")

POOL_NAME = "ws-db"


def run_in_pool(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``func`` as a coroutine function that runs on the consumers' database pool."""
    executor = pool(POOL_NAME, settings.DAR_WS_DB_THREADS)
    return DatabaseSyncToAsync(func, thread_sensitive=False, executor=executor)
