"""How durable a turn's worker writes are: committed without waiting for the WAL flush.

Everything the text stage and the gpu task write (status, refined query, previews, results,
timings) is derived from the shopper's message, which the web side stores with an ordinary,
synchronous commit before any task runs. So those tasks run with ``synchronous_commit = off``: each
of their commits returns without waiting for its WAL record to reach the disk. PostgreSQL stays
consistent whatever happens (WAL order is kept); only a crash of the database server itself can
lose the last moments of such commits (at most about three ``wal_writer_delay``). A turn caught by
that is left queued or running, the sweeper fails it as timed out, and the page asks the shopper
to send the message again; the message itself is never lost. In exchange a turn waits for no disk
flush: 5 ms less per gpu task on the development VM (docs/benchmarks.md).

``DAR_TURN_ASYNC_COMMIT=0`` makes the tasks commit like everything else.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import DatabaseError, connection


@contextmanager
def derived_writes() -> Iterator[None]:
    """Commits inside this block do not wait for the WAL flush (see the module docstring).

    Session-wide SET and RESET around the block rather than ``SET LOCAL`` in each transaction:
    most of a turn's writes are single autocommit statements. The worker keeps its connection
    from task to task, so the setting never outlives the block.
    """
    if not settings.DAR_TURN_ASYNC_COMMIT:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("RESET synchronous_commit")
        except DatabaseError:
            # The connection broke meanwhile: closed, so that it is not reused with the setting.
            connection.close()
