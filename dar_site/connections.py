"""Database connections that workers keep from task to task, and the ones errors break.

Django checks its connections only around web requests (``close_if_unusable_or_obsolete``).
Workers keep theirs (``CELERY_DB_REUSE_MAX``), so they check them themselves: before each task,
and before writing down a failure that may have been the database's.
"""

from __future__ import annotations

from typing import Any


def replace_if_broken(conn: Any) -> None:
    """Close ``conn`` if a database error broke it (a restart, a killed backend); Django opens a
    new one at its next query. No round trip unless the connection met an error; nothing inside
    an atomic block, which its owner must end first."""
    if conn.connection is None or conn.in_atomic_block or not conn.errors_occurred:
        return
    if conn.is_usable():
        conn.errors_occurred = False
    else:
        conn.close()


def ready_for_next_task(conn: Any) -> None:
    """``replace_if_broken``, and close a connection that a task left mid-transaction. Django's
    ``close_if_unusable_or_obsolete`` without the age limit, which is the web process's
    (DB_CONN_MAX_AGE, 0 by default: a connection per request)."""
    if conn.connection is None:
        return
    if conn.in_atomic_block or conn.get_autocommit() != conn.settings_dict["AUTOCOMMIT"]:
        conn.close()
        return
    replace_if_broken(conn)
