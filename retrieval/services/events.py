"""Websocket notifications: every event for a search session goes through here.

Events are plain JSON dicts with a ``type`` and the ``turn`` index; the consumer forwards them to
the socket unchanged. They are sent through the Channels layer (Redis), so a worker process can
notify pages served by any web process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

# How long a turn may wait for one notification before giving up on it.
EMIT_TIMEOUT = 5.0

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None


def group_name(session_id: object) -> str:
    return f"search.{session_id}"


def _sender_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process, on a daemon thread, for every emit.

    channels_redis keeps its connection pools per event loop; ``async_to_sync`` from a worker
    thread would start a new loop (and so a new Redis connection) for every event. A long-lived
    loop reuses its connections. Checked against the pid so a forked worker builds its own.
    """
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="dar-events", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def _send(layer: Any, session_id: object, event: dict[str, Any]) -> None:
    message = {"type": "search.event", "event": event}
    future = asyncio.run_coroutine_threadsafe(
        layer.group_send(group_name(session_id), message), _sender_loop()
    )
    try:
        future.result(timeout=EMIT_TIMEOUT)
    except BaseException:
        future.cancel()
        raise


def emit(session_id: object, event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    # Two tries: after a Redis restart the first use of a pooled connection fails once.
    for attempt in (1, 2):
        try:
            _send(layer, session_id, event)
            return
        except Exception:
            if attempt == 2:
                # A notification lost to Redis trouble must not fail the turn: the page restores
                # the session from the database when it reconnects.
                log.exception("could not emit %s for session %s", event.get("type"), session_id)
