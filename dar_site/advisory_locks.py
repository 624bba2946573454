"""PostgreSQL advisory locks on Django's default connection: the one place that speaks their SQL.

A lock is named by one 64-bit key (``key`` derives one from a name) or by two 32-bit keys (a
keyspace and an id). Two lifetimes:

* ``xact``: until the current transaction ends (call it inside ``transaction.atomic``);
* ``session``: for a ``with`` block, released at its end. A broken connection took its session,
  and the lock, with it: the release then gives up quietly instead of raising over the error
  that broke it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from django.db import DatabaseError, connection


def key(name: str) -> int:
    """A 64-bit lock key (signed, as PostgreSQL takes it) for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _call(function: str, keys: tuple[int, ...]) -> bool:
    if len(keys) not in (1, 2):
        raise ValueError("an advisory lock takes one 64-bit key or two 32-bit keys")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}({', '.join(['%s'] * len(keys))})", list(keys))
        row = cursor.fetchone()
    # The waiting functions return void (None): they only return once the lock is held.
    return row is not None and row[0] is not False


def xact(*keys: int, wait: bool = True) -> bool:
    """Take the lock until the transaction ends; with ``wait`` off, False if another holds it."""
    return _call("pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock", keys)


@contextmanager
def session(*keys: int, wait: bool = True, shared: bool = False) -> Iterator[bool]:
    """Hold the lock for the block; yields False (holding nothing) when ``wait`` is off and
    another session holds it."""
    mode = "_shared" if shared else ""
    take = f"pg_advisory_lock{mode}" if wait else f"pg_try_advisory_lock{mode}"
    held = _call(take, keys)
    try:
        yield held
    finally:
        if held:
            with suppress(DatabaseError):
                _call(f"pg_advisory_unlock{mode}", keys)
