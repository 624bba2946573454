"""The product's channel layer: the core Redis layer with ``group_send`` pipelined in two round
trips. Each check runs against both layers on the real Redis: the outcome must be the core's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer as CoreLayer
from django.conf import settings

from dar_site.channel_layer import RedisChannelLayer as PipelinedLayer

LAYERS = [pytest.param(CoreLayer, id="core"), pytest.param(PipelinedLayer, id="pipelined")]


@pytest.fixture(params=LAYERS)
async def make_layer(request: Any) -> AsyncIterator[Any]:
    made: list[Any] = []
    # The layers of one test share their keys, as a web and a worker process do.
    prefix = f"{settings.REDIS_PREFIX}:layer-{uuid.uuid4().hex[:8]}"

    def make(**config: Any) -> Any:
        layers: Any = settings.CHANNEL_LAYERS
        base = {**layers["default"]["CONFIG"], "prefix": prefix}
        layer = request.param(**(base | config))
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.flush()


async def _nothing_more(layer: Any, channel: str) -> bool:
    try:
        await asyncio.wait_for(layer.receive(channel), timeout=0.3)
    except TimeoutError:
        return True
    return False


async def test_group_send_reaches_every_member_once(make_layer: Any) -> None:
    sender, page = make_layer(), make_layer()
    # Two process-local channels of one layer share a Redis key; a plain named channel has its own.
    local_a, local_b = await page.new_channel(), await page.new_channel()
    named = f"named.{uuid.uuid4().hex}"
    for channel in (local_a, local_b, named):
        await page.group_add("search.1", channel)
    await page.group_add("search.2", local_a)  # another group: must not get search.1's messages

    await sender.group_send("search.1", {"type": "search.events", "events": [{"n": 1}]})

    for channel in (local_a, local_b, named):
        message = await asyncio.wait_for(page.receive(channel), timeout=5)
        assert message == {"type": "search.events", "events": [{"n": 1}]}
        assert await _nothing_more(page, channel)


async def test_group_send_drops_messages_for_channels_at_capacity(make_layer: Any) -> None:
    sender, page = make_layer(capacity=2), make_layer()
    full, free = f"full.{uuid.uuid4().hex}", f"free.{uuid.uuid4().hex}"
    await page.group_add("search.3", full)
    await sender.send(full, {"type": "x", "n": 0})
    await sender.send(full, {"type": "x", "n": 1})  # now at capacity
    await page.group_add("search.3", free)

    await sender.group_send("search.3", {"type": "x", "n": 2})

    assert (await page.receive(free))["n"] == 2
    assert [(await page.receive(full))["n"] for _ in range(2)] == [0, 1]
    assert await _nothing_more(page, full)


async def test_group_send_forgets_members_past_the_group_expiry(make_layer: Any) -> None:
    layer = make_layer(group_expiry=1)
    stale = f"stale.{uuid.uuid4().hex}"
    await layer.group_add("search.4", stale)
    await asyncio.sleep(2.1)  # the membership's score is its add time, in whole seconds

    await layer.group_send("search.4", {"type": "x"})

    connection = layer.connection(layer.consistent_hash("search.4"))
    assert await connection.zcard(layer._group_key("search.4")) == 0
    assert await _nothing_more(layer, stale)
