"""The channel layer: channels_redis's core layer, with ``group_send`` in two Redis round trips.

Every search event goes to a session's group (``events.emit``), and a turn sends several, some of
them on the way to the shopper's results. The core layer's ``group_send`` makes four round trips
one after the other: drop expired members, read the members, drop expired messages, deliver. The
same commands, pipelined in two (membership, then delivery per shard), give the same outcome:
nothing here decides between the commands of one pipeline.

Everything else (receiving, groups, capacity, expiry, message format) is the core layer's own.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from channels_redis.core import RedisChannelLayer as CoreRedisChannelLayer

log = logging.getLogger(__name__)

# Deliver one message per channel key, unless that channel is at capacity: KEYS are the channel
# keys; ARGV the messages, then the capacities (in KEYS order), then the time and the expiry.
# Returns how many channels were over capacity (their message is dropped, as in the core layer).
DELIVER = """
local n = #KEYS
local now = ARGV[2 * n + 1]
local expiry = ARGV[2 * n + 2]
local over = 0
for i = 1, n do
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over = over + 1
    end
end
return over
"""


class RedisChannelLayer(CoreRedisChannelLayer):
    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert self.require_valid_group_name(group), "Group name not valid"
        key = self._group_key(group)
        # Round trip 1: forget members that outlived group_expiry, and read the others.
        pipe = self.connection(self.consistent_hash(group)).pipeline(transaction=False)
        pipe.zremrangebyscore(key, min=0, max=int(time.time()) - self.group_expiry)
        pipe.zrange(key, 0, -1)
        _, members = await pipe.execute()
        channels = [member.decode("utf8") for member in members]
        by_connection, messages, capacities = self._map_channel_keys_to_connection(
            channels, message
        )
        # Round trip 2, per shard: drop the channels' expired messages, then deliver.
        for index, channel_keys in by_connection.items():
            pipe = self.connection(index).pipeline(transaction=False)
            for channel_key in channel_keys:
                pipe.zremrangebyscore(channel_key, min=0, max=int(time.time()) - int(self.expiry))
            args = [messages[k] for k in channel_keys] + [capacities[k] for k in channel_keys]
            pipe.eval(DELIVER, len(channel_keys), *channel_keys, *args, time.time(), self.expiry)
            over = (await pipe.execute())[-1]
            if over:
                log.info("%s of %s channels over capacity in group %s", over, len(channels), group)
