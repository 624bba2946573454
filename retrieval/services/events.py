"""Websocket notifications: every event for a search session goes through here.

Events are plain JSON dicts with a ``type`` and the ``turn`` index; the consumer forwards them to
the socket unchanged. They are sent through the Channels layer (Redis), so a worker process can
notify pages served by any web process. One channel message carries one or more events (a turn's
question and ``turn.done`` go together: one Redis round trip and one delivery instead of two).

Each process sends its events one after another, in the order they were emitted, from one
long-lived event loop (so its Redis connections are reused). ``emit`` waits until its event is
sent, unless ``wait=False``: then it returns at once and the event follows the earlier ones, which
keeps a turn's stages from waiting on Redis round trips. Waiting is for events that another
process's events must not overtake (a turn's text-only results, which the gpu worker's final
results must follow; ``turn.accepted``, which the turn's first events must follow).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

# How long one notification may take before it is given up (per try; two tries).
EMIT_TIMEOUT = 5.0
# How long a process that exits waits for the events it has not sent yet.
FLUSH_TIMEOUT = 2.0

_Item = tuple[Any, object, list[dict[str, Any]], concurrent.futures.Future[None]]

_lock = threading.Lock()
_sender: _Sender | None = None


def group_name(session_id: object) -> str:
    return f"search.{session_id}"


class _Sender:
    """One event loop per process, on a daemon thread, sending queued events in order.

    channels_redis keeps its connection pools per event loop; ``async_to_sync`` from a worker
    thread would start a new loop (and so a new Redis connection) for every event.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        threading.Thread(target=self._run, name="dar-events", daemon=True).start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._drain())

    async def _drain(self) -> None:
        while True:
            layer, session_id, batch, done = await self.queue.get()
            await _send(layer, session_id, batch)  # never raises: trouble is logged
            if done.set_running_or_notify_cancel():
                done.set_result(None)

    def put(self, item: _Item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


def _the_sender() -> _Sender:
    global _sender
    with _lock:
        # Checked against the pid so that a forked worker builds its own.
        if _sender is None or _sender.pid != os.getpid() or _sender.loop.is_closed():
            _sender = _Sender()
        return _sender


async def _send(layer: Any, session_id: object, batch: list[dict[str, Any]]) -> None:
    message = {"type": "search.events", "events": batch}
    # Two tries: after a Redis restart the first use of a pooled connection fails once.
    for attempt in (1, 2):
        try:
            await asyncio.wait_for(layer.group_send(group_name(session_id), message), EMIT_TIMEOUT)
            return
        except Exception:
            if attempt == 2:
                # A notification lost to Redis trouble must not fail the turn: the page restores
                # the session from the database when it reconnects.
                log.exception("could not emit %s for session %s", _types(batch), session_id)


def emit(session_id: object, *batch: dict[str, Any], wait: bool = True) -> None:
    """Send the events, in order and in one message, to the session's pages after every event this
    process emitted before; with ``wait`` (the default), return once they are sent (or given up)."""
    layer = get_channel_layer()
    if layer is None or not batch:
        return
    done: concurrent.futures.Future[None] = concurrent.futures.Future()
    _the_sender().put((layer, session_id, list(batch), done))
    if wait:
        try:
            # Events queued before this one go first, each within its own time limit.
            done.result(timeout=2 * EMIT_TIMEOUT + 1)
        except concurrent.futures.TimeoutError:
            done.cancel()
            log.error("gave up waiting to emit %s for session %s", _types(batch), session_id)


def flush(timeout: float = FLUSH_TIMEOUT) -> None:
    """Wait (at most ``timeout`` seconds) until the events emitted so far are sent."""
    sender = _sender
    if sender is None or sender.pid != os.getpid() or sender.loop.is_closed():
        return
    # A marker behind everything queued: it completes once the events before it went out.
    done: concurrent.futures.Future[None] = concurrent.futures.Future()
    sender.put((_Marker(), None, [], done))
    try:
        done.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        done.cancel()
        log.warning("%s event(s) may not have been sent", sender.queue.qsize())


def _types(batch: Sequence[dict[str, Any]]) -> str:
    return ", ".join(str(event.get("type")) for event in batch)


class _Marker:
    """A stand-in channel layer whose ``group_send`` does nothing (see ``flush``)."""

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        return None


atexit.register(flush)
