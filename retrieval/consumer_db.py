"""Database work of the search consumers, on a pool of threads of its own.

Channels' ``database_sync_to_async`` is thread-sensitive. Django gives every HTTP request a
``ThreadSensitiveContext`` of its own, Channels gives websockets none, so every consumer's database
call in the process ran on asgiref's one shared thread: under 100 shoppers their connects and
messages queued there one after another (first results waited ~9 s for ~90 ms of work, see
docs/benchmarks.md section 4), while plain GETs stayed fast.

Here they run on a bounded pool (DAR_WS_DB_THREADS). Nothing here needs one thread: a consumer
handles its frames one at a time and every call is a whole unit of work (its own transaction).

Each pool thread keeps its PostgreSQL connection between calls, whatever DB_CONN_MAX_AGE says:
opening one per call (a new server process each time) was most of a call's cost under load. That
is safe here, unlike for Django's HTTP views under ASGI (a new thread per request, so kept
connections would pile up): the pool's threads are few and live as long as the process, so the
consumers hold at most DAR_WS_DB_THREADS connections. A connection that is broken, or that a call
left with autocommit off, is closed after the call, as ``close_old_connections`` would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import close_old_connections, connections

from retrieval.services.threadpools import pool

P = ParamSpec("P")
R = TypeVar("R")

POOL_NAME = "ws-db"


# A connection this thread used this recently is not health-checked again before the next call.
# Django checks a kept connection (a ``SELECT 1`` round trip) before every call's first query:
# under 100 shoppers at once that was a sixth of the pool's time. A connection that broke in the
# last seconds (a database restart) then fails one call, which the consumer answers with an error
# frame, and is closed after it, as any connection with errors is.
RECHECK_AFTER_IDLE_S = 5.0
_used = threading.local()


class _PoolCall(SyncToAsync[P, R]):
    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        close_old_connections()  # drops a connection that broke since the last call
        if time.monotonic() - getattr(_used, "at", -RECHECK_AFTER_IDLE_S) < RECHECK_AFTER_IDLE_S:
            for conn in connections.all(initialized_only=True):
                if conn.connection is not None and not conn.errors_occurred:
                    conn.health_check_done = True  # type: ignore[attr-defined]
        try:
            return super().thread_handler(loop, *args, **kwargs)
        finally:
            _keep_connections()
            _used.at = time.monotonic()


def _keep_connections() -> None:
    for conn in connections.all(initialized_only=True):
        conn.close_at = None  # no age limit on a pool thread's connection...
        conn.close_if_unusable_or_obsolete()  # ...but never keep a broken or odd one


def run_in_pool(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``func`` as a coroutine function that runs on the consumers' database pool."""
    executor = pool(POOL_NAME, settings.DAR_WS_DB_THREADS)
    return _PoolCall(func, thread_sensitive=False, executor=executor)


def close_connections() -> None:
    """Close the connections the pool's threads keep (test teardown: a kept connection holds the
    test database open, so it cannot be dropped). Each thread closes its own: a barrier holds
    every task until all have started, so no thread takes two."""
    executor = pool(POOL_NAME, settings.DAR_WS_DB_THREADS)
    threads = int(settings.DAR_WS_DB_THREADS)
    barrier = threading.Barrier(threads, timeout=10)

    def close() -> None:
        connections.close_all()
        barrier.wait()

    for future in [executor.submit(close) for _ in range(threads)]:
        future.result()
