"""Shared fixtures: the real PostgreSQL+pgvector and Redis, a real Celery worker, offline models.

The settings module (dar_site.settings_test) gives every pytest process its own test database and
Redis key prefix, so runs never see each other's tasks or channel messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

# Shared with the benchmarks, which start in-process workers the same way.
from dar_site.instrument import closing_thread_connections


@pytest.fixture(scope="session", autouse=True)
def _drop_abandoned_test_databases(django_db_blocker: Any) -> None:
    """Drop test databases left by runs that were killed (their pid is gone)."""
    import re

    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test_dar_t%%'")
        for (name,) in cursor.fetchall():
            match = re.fullmatch(r"test_dar_t(\d+)", name)
            if match and not _alive(int(match[1])):
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


@pytest.fixture(scope="session", autouse=True)
def _close_consumer_pool_connections(django_db_setup: Any) -> Iterator[None]:
    """The consumers' database pool keeps its threads' connections; close them before the test
    database is dropped (torn down before ``django_db_setup``, which this depends on)."""
    yield
    from retrieval.consumer_db import close_connections

    close_connections()


@pytest.fixture(scope="session", autouse=True)
def _test_media_root() -> Iterator[None]:
    """Uploaded and generated files of this run live in a folder of its own, removed at the end."""
    import shutil

    from django.conf import settings

    yield
    shutil.rmtree(settings.MEDIA_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def offline_models() -> dict[str, Any]:
    """Build the offline model weights once (idempotent; kept in DAR_MODEL_DIR between runs)."""
    from workers.models.config import ModelSettings
    from workers.models.offline import build_offline_models

    return build_offline_models(ModelSettings.from_env().model_dir)


@pytest.fixture
def turn_models(offline_models: dict[str, Any], monkeypatch: Any, settings: Any) -> None:
    """The offline models with short LLM answers, for tests that run turns on CPU."""
    from tests.factories import limit_llm_tokens

    limit_llm_tokens(monkeypatch)
    # A loaded 2-core CI machine can be slow; the limit itself is tested with its own value.
    settings.DAR_TURN_TIME_LIMIT = 900
    settings.DAR_ASK_QUESTIONS = False


@pytest.fixture
def start_worker(transactional_db: None, offline_models: dict[str, Any]) -> Any:
    """``with start_worker(name, queues): ...`` runs a real Celery worker (threads of this
    process) on the given queues while the block lasts.

    Celery's event loop (kombu's hub) is one per process: a second worker running at the same
    time must pass ``event_loop=False`` (it then blocks on the broker in a loop of its own).
    """
    from celery.contrib.testing import worker

    from dar_site.celery import app

    @contextmanager
    def start(name: str, queues: list[str], *, event_loop: bool = True) -> Iterator[Any]:
        with (
            closing_thread_connections(),
            worker.start_worker(
                app,
                pool="threads",
                concurrency=2,
                queues=queues,
                hostname=f"{name}-{os.getpid()}@tests",
                perform_ping_check=False,
                shutdown_timeout=30,
                use_eventloop=event_loop,
            ) as started,
        ):
            try:
                yield started
            finally:
                _wait_until_workers_idle()

    return start


# A test may stop watching once it saw what it checks (say, the first results), while the gpu
# task goes on loading models and ranking. Stopping a threads-pool worker does not stop a running
# task, so without this wait the task ran on into later tests: it held database connections while
# their teardown truncated the tables, and the suite once hung there for good.
WORKER_DRAIN_TIMEOUT = 600


def _wait_until_workers_idle() -> None:
    import time

    from celery.worker import state

    deadline = time.monotonic() + WORKER_DRAIN_TIMEOUT
    while state.active_requests or state.reserved_requests:
        if time.monotonic() > deadline:
            running = [request.name for request in state.active_requests]
            raise AssertionError(f"worker tasks still running after the test: {running}")
        time.sleep(0.05)


@pytest.fixture
def celery_worker(start_worker: Any) -> Iterator[Any]:
    """Real Celery workers consuming this run's queues as an instance's do: one on the gpu and
    default queues, one on the interactive queue (a turn's text stage). Yields the gpu worker."""
    from django.conf import settings

    with (
        start_worker("interactive", [settings.CELERY_INTERACTIVE_QUEUE], event_loop=False),
        start_worker("gpu", [settings.CELERY_GPU_QUEUE, settings.CELERY_DEFAULT_QUEUE]) as gpu,
    ):
        yield gpu


@pytest.fixture
def redis_client() -> Iterator[Any]:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def no_task_queue(monkeypatch: Any) -> list[tuple[str, Any]]:
    """Accepted turns announce themselves but send no Celery task: no worker runs in these tests,
    and tasks left in this run's queues would reach the next test's workers."""
    from types import SimpleNamespace

    from retrieval.turn import submit

    sent: list[tuple[str, Any]] = []
    fake_app = SimpleNamespace(send_task=lambda name, **kwargs: sent.append((name, kwargs)))
    monkeypatch.setattr(submit, "current_app", fake_app)
    return sent
