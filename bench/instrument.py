"""Measuring where the time goes inside the real code paths, without changing them.

A ``Meter`` collects seconds per bucket from every thread. Spans wrap functions of the product
(patched on their module for the duration of a benchmark, so the code under test calls them as
usual); SQL time is taken with Django's execute wrappers on every connection, and is attributed to
the enclosing span when there is one (``vectors.store`` includes its own SQL), else to ``db``.

What the tests use as well (``EventTap``, ``closing_thread_connections``) is in
``dar_site/instrument.py``.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from dar_site.instrument import closing_thread_connections


class Meter:
    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._local = threading.local()

    def add(self, bucket: str, seconds: float) -> None:
        with self._lock:
            self.totals[bucket] += seconds
            self.calls[bucket] += 1

    @property
    def in_span(self) -> bool:
        return bool(getattr(self._local, "depth", 0))

    @contextmanager
    def span(self, bucket: str) -> Iterator[None]:
        outer = self.in_span
        self._local.depth = getattr(self._local, "depth", 0) + 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self._local.depth -= 1
            # A span inside another (a model call inside a timed helper) counts once, outside.
            if not outer:
                self.add(bucket, time.perf_counter() - start)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self.totals)

    def reset(self) -> None:
        with self._lock:
            self.totals.clear()
            self.calls.clear()


def timed(meter: Meter, bucket: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with meter.span(bucket):
            return func(*args, **kwargs)

    return wrapper


@contextmanager
def patched(target: Any, name: str, meter: Meter, bucket: str) -> Iterator[None]:
    """Time every call of ``target.name`` (a module function) while the context is open."""
    original = getattr(target, name)
    setattr(target, name, timed(meter, bucket, original))
    try:
        yield
    finally:
        setattr(target, name, original)


class TimedModel:
    """A model object whose listed methods are timed; everything else passes through."""

    def __init__(self, model: Any, meter: Meter, buckets: dict[str, str]) -> None:
        self._model = model
        for method, bucket in buckets.items():
            if hasattr(model, method):
                setattr(self, method, timed(meter, bucket, getattr(model, method)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


# Which model methods are compute, by registry getter.
MODEL_METHODS = {
    "get_encoder": {"encode_images": "model: encode images", "encode_texts": "model: encode text"},
    "get_text_embedder": {"encode": "model: product text"},
    "get_refiner": {"refine": "model: refine (LLM)", "ask": "model: ask (LLM)"},
    "get_generator": {"generate": "model: generate previews"},
}


@contextmanager
def model_timing(meter: Meter) -> Iterator[None]:
    """Wrap what the registry hands out; callers import the getters at call time."""
    from workers.models import registry

    originals = {name: getattr(registry, name) for name in MODEL_METHODS}

    def wrap(name: str) -> Callable[[], Any]:
        def getter(*args: Any, **kwargs: Any) -> Any:
            with meter.span("model: load"):
                model = originals[name](*args, **kwargs)
            return TimedModel(model, meter, MODEL_METHODS[name])

        return getter

    for name in MODEL_METHODS:
        setattr(registry, name, wrap(name))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(registry, name, original)


@contextmanager
def sql_timing(meter: Meter, bucket: str = "db") -> Iterator[None]:
    """Time every SQL statement on every connection opened meanwhile, in any thread."""
    from django.db import connections
    from django.db.backends.signals import connection_created

    def wrapper(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        if meter.in_span:
            return execute(sql, params, many, context)
        with meter.span(bucket):
            return execute(sql, params, many, context)

    wrapped: list[Any] = []

    def attach(connection: Any, **_: Any) -> None:
        if wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(wrapper)
            wrapped.append(connection)

    for conn in connections.all(initialized_only=True):
        attach(conn)
    connection_created.connect(attach, weak=False)
    try:
        yield
    finally:
        connection_created.disconnect(attach)
        for conn in wrapped:
            if wrapper in conn.execute_wrappers:
                conn.execute_wrappers.remove(wrapper)


@contextmanager
def instrumented(meter: Meter, functions: list[tuple[Any, str, str]]) -> Iterator[None]:
    """Models, SQL and the given (module, function name, bucket) spans, all at once."""
    with ExitStack() as stack:
        stack.enter_context(model_timing(meter))
        stack.enter_context(sql_timing(meter))
        for target, name, bucket in functions:
            stack.enter_context(patched(target, name, meter, bucket))
        yield


@contextmanager
def celery_worker(concurrency: int = 1) -> Iterator[Any]:
    """A real Celery worker consuming this run's gpu and default queues, in threads of this
    process (so that the benchmark can time the calls it makes)."""
    from celery.contrib.testing.worker import start_worker
    from django.conf import settings

    from dar_site.celery import app

    with (
        closing_thread_connections(),
        start_worker(
            app,
            pool="threads",
            concurrency=concurrency,
            queues=[settings.CELERY_GPU_QUEUE, settings.CELERY_DEFAULT_QUEUE],
            hostname=f"gpu-{os.getpid()}@bench",
            perform_ping_check=False,
            shutdown_timeout=60,
        ) as worker,
    ):
        yield worker


@contextmanager
def interactive_worker(logs: Path, threads: int = 2) -> Iterator[None]:
    """The interactive worker (a turn's text stage) as its own process, as an instance runs it.

    Not in this process: its work would then compete with the gpu worker's threads for the
    interpreter lock, which separate processes never do.
    """
    from bench.common import child_env, spawn, stop, wait_for_worker
    from dar_site.processes import interactive_worker_command

    log = logs / "interactive.log"
    command = interactive_worker_command(threads=threads, loglevel="WARNING")
    proc = spawn(command, child_env(DAR_LOG_LEVEL="WARNING"), log)
    try:
        wait_for_worker("interactive", proc, log)
        yield
    finally:
        stop(proc)
