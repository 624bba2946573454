"""Watching a running instance from inside its process: shared by the benchmarks and the tests.

* ``closing_thread_connections``: the database connections that worker threads (a Celery worker
  started in threads of this process) opened are closed at the end, so that the database can be
  dropped;
* ``EventTap``: a search session's websocket events, as the channel layer delivers them, with
  their arrival times.

Neither one depends on the test tools or on the benchmarks, so both can use them (the tests never
import ``bench``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Self


@contextmanager
def closing_thread_connections() -> Iterator[None]:
    """Close, at the end, the database connections other threads opened meanwhile: workers keep
    theirs from task to task (CELERY_DB_REUSE_MAX), and the bench database must be dropped."""
    from django.db.backends.signals import connection_created

    here = threading.get_ident()
    opened: list[Any] = []

    def track(connection: Any, **_: Any) -> None:
        if threading.get_ident() != here:
            opened.append(connection)

    connection_created.connect(track, weak=False)
    try:
        yield
    finally:
        connection_created.disconnect(track)
        for conn in opened:
            conn.inc_thread_sharing()  # its thread is done with it
            try:
                conn.close()
            finally:
                conn.dec_thread_sharing()


class EventTap:
    """Receives a search session's websocket events from the channel layer, with arrival times
    (``events[i]`` arrived at ``arrived[i]``). The tests' ``EventRecorder`` builds on it.

    A receive is never cancelled while events may arrive (only at the end): channels_redis can
    lose a message whose blocking pop is cancelled just as it returns.
    """

    def __init__(self, group: str) -> None:
        self.group = group
        self.events: list[dict[str, Any]] = []
        self.arrived: list[float] = []
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the event tap did not subscribe")
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)

    async def _listen(self) -> None:
        from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

        # A layer of its own: channels_redis lets one event loop receive per layer object.
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        channel = await layer.new_channel()
        await layer.group_add(self.group, channel)
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            while True:
                receiving = asyncio.ensure_future(layer.receive(channel))
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    receiving.cancel()
                    break
                with self._cond:
                    batch = receiving.result()["events"]
                    self.arrived += [time.perf_counter()] * len(batch)
                    self.events += batch
                    self._cond.notify_all()
        finally:
            await layer.group_discard(self.group, channel)

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> float:
        """Arrival time of the first event matching ``predicate``."""

        def found() -> float | None:
            pairs = zip(self.arrived, self.events, strict=True)
            return next((t for t, e in pairs if predicate(e)), None)

        with self._cond:
            if not self._cond.wait_for(lambda: found() is not None, timeout):
                raise TimeoutError(f"no matching event in {timeout} s: {self.events[-3:]}")
            arrival = found()
            assert arrival is not None
            return arrival
