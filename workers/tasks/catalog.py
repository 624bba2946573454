"""Catalog embedding tasks (gpu queue)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError

# Transient database trouble (a restart, a dropped connection) is retried with exponential
# backoff; acks_late (global) reruns the job if the worker itself dies. Reruns are harmless: the
# job upserts vectors and overwrites statuses.
RETRY_ON = (OperationalError, InterfaceError)


@shared_task(
    name="gpu.embed_items",
    autoretry_for=RETRY_ON,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
)
def embed_items(item_ids: list[int]) -> dict[str, Any]:
    from django.db import close_old_connections

    from catalog.services.embedding import embed_items as run

    # A connection broken by a database restart must not be reused by the retry.
    close_old_connections()
    return run(item_ids).as_dict()
