"""Fair queuing on the gpu queue: search turns before embedding jobs, shops' jobs interleaved
(catalog/services/embed_queue.py). Read from the real Redis broker in the order a worker takes
messages (highest priority list first, oldest first within one)."""

from __future__ import annotations

from typing import Any

import pytest
from celery import current_app
from django.conf import settings

from catalog.models import CatalogItem
from catalog.services import embed_queue, embedding
from catalog.tasks import embed_items
from retrieval.turn.tasks import RUN_TURN_TASK
from tests.factories import CatalogFactory, CatalogItemFactory

pytestmark = pytest.mark.django_db


def _take_all(queue: str) -> list[tuple[str, Any]]:
    """Every message of the queue, in the order a worker would take them (and removed)."""
    taken: list[tuple[str, Any]] = []
    with current_app.connection_for_read() as conn:
        channel = conn.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            args = message.decode()[0] if message.headers.get("task") else None
            taken.append((message.headers.get("task"), args))
    return taken


@pytest.fixture
def gpu_queue(redis_client: Any) -> Any:
    queue = settings.CELERY_GPU_QUEUE
    _take_all(queue)  # nothing of an earlier test may be counted (or left for a later one)
    yield queue
    _take_all(queue)
    for key in redis_client.scan_iter(f"{settings.REDIS_PREFIX}:embed:waiting:*"):
        redis_client.delete(key)


def _items(n: int) -> list[CatalogItem]:
    catalog = CatalogFactory.create()
    return CatalogItemFactory.create_batch(n, catalog=catalog)


def test_a_worker_takes_turns_first_and_one_job_per_shop_in_turn(gpu_queue: str) -> None:
    # Shop A imports a large catalog (three jobs) just before shop B uploads one picture; then a
    # shopper sends a message. First come, first served would make B wait behind all of A's jobs
    # and the shopper behind both.
    big, small = _items(3), _items(1)
    for item in big:
        embedding.send_batch([item.pk])
    embedding.send_batch([small[0].pk])
    current_app.send_task(RUN_TURN_TASK, args=[-1])

    order = _take_all(gpu_queue)
    assert [task for task, _ in order] == [RUN_TURN_TASK] + [embedding.TASK_NAME] * 4
    jobs = [args[0] for _, args in order[1:]]
    assert jobs == [[big[0].pk], [small[0].pk], [big[1].pk], [big[2].pk]]


def test_a_shops_waiting_jobs_are_counted_until_a_worker_takes_them(gpu_queue: str) -> None:
    items = _items(2)
    shop = items[0].catalog.shop_id
    for item in items:
        embedding.send_batch([item.pk])
    assert embed_queue.waiting(shop) == 2
    # The task (run as a worker runs it) counts itself out before it embeds.
    embed_items.apply(args=[[]], kwargs={"shop": shop})
    assert embed_queue.waiting(shop) == 1
    embed_items.apply(args=[[]], kwargs={"shop": shop})
    embed_items.apply(args=[[]], kwargs={"shop": shop})  # a count that expired meanwhile
    assert embed_queue.waiting(shop) == 0
    # With nothing of the shop waiting, its next job goes first among jobs again.
    assert embed_queue.enqueue(shop) == embed_queue.FIRST_JOB_PRIORITY


def test_a_job_for_items_deleted_before_the_commit_is_not_sent(gpu_queue: str) -> None:
    item = _items(1)[0]
    shop = item.catalog.shop_id
    CatalogItem.objects.filter(pk=item.pk).delete()
    embedding.send_batch([item.pk])
    assert _take_all(gpu_queue) == [] and embed_queue.waiting(shop) == 0
