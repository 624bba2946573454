"""Fixed-window turn counters in Redis, shared by every web process.

Each new turn counts against its search session and against the client's address; either one
going over its limit refuses the turn with ``rate_limited``.
"""

from __future__ import annotations

import functools

import redis
from django.conf import settings

from .errors import SearchError


@functools.cache
def client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def _key(scope: str, ident: str) -> str:
    return f"{settings.REDIS_PREFIX}:ratelimit:turns:{scope}:{ident}"


def hit(key: str, window: int) -> int:
    """Count one hit on ``key`` in a fixed window of ``window`` seconds; returns the count."""
    return hit_window(key, window)[0]


def hit_window(key: str, window: int) -> tuple[int, int]:
    """``hit``, also returning the seconds left in the window (for a Retry-After)."""
    # SET NX EX + INCR in one MULTI: the window starts at the first hit and the counter can never
    # be left without an expiry (the embedded Redis 6 has no EXPIRE NX).
    pipe = client().pipeline(transaction=True)
    pipe.set(key, 0, ex=window, nx=True)
    pipe.incr(key)
    pipe.ttl(key)
    _, count, left = pipe.execute()
    return int(count), max(1, int(left))


def check_turn_allowed(session_id: object, address: str | None) -> None:
    """Count one turn; raise ``rate_limited`` when the session or the address is over its limit."""
    window = settings.DAR_RATE_LIMIT_WINDOW
    counters = [(_key("session", str(session_id)), settings.DAR_RATE_LIMIT_TURNS)]
    if address:
        counters.append((_key("address", address), settings.DAR_RATE_LIMIT_ADDRESS_TURNS))
    for key, limit in counters:
        count, left = hit_window(key, window)
        if count > limit:
            raise SearchError(
                "rate_limited",
                f"Too many messages: at most {limit} every {window} seconds. "
                "Please wait a moment and try again.",
                retry_after=left,
            )


def check_widget_session_allowed(address: str | None) -> None:
    """Count one search session started by an embedded widget (anonymous, no cookie) against the
    client's address; raise ``rate_limited`` over ``DAR_RATE_LIMIT_WIDGET_SESSIONS``."""
    window = settings.DAR_RATE_LIMIT_WINDOW
    limit = settings.DAR_RATE_LIMIT_WIDGET_SESSIONS
    key = f"{settings.REDIS_PREFIX}:ratelimit:widget-sessions:address:{address or 'unknown'}"
    if hit(key, window) > limit:
        raise SearchError(
            "rate_limited",
            f"Too many new searches: at most {limit} every {window} seconds. "
            "Please wait a moment and try again.",
        )
