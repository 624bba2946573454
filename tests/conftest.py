"""Shared fixtures: the real PostgreSQL+pgvector and Redis, a real Celery worker, offline models.

The settings module (dar_site.settings_test) gives every pytest process its own test database and
Redis key prefix, so runs never see each other's tasks or channel messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


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
