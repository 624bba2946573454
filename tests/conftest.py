"""Shared fixtures: the real PostgreSQL+pgvector and Redis, a real Celery worker, offline models.

The settings module (dar_site.settings_test) gives every pytest process its own test database and
Redis key prefix, so runs never see each other's tasks or channel messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


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
def celery_worker(transactional_db: None, offline_models: dict[str, Any]) -> Iterator[Any]:
    """A real Celery worker, in a thread of this process, consuming this run's queues."""
    from celery.contrib.testing.worker import start_worker
    from django.conf import settings

    from dar_site.celery import app

    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        queues=[settings.CELERY_GPU_QUEUE, settings.CELERY_DEFAULT_QUEUE],
        perform_ping_check=False,
        shutdown_timeout=30,
    ) as worker:
        yield worker


@pytest.fixture
def redis_client() -> Iterator[Any]:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()
