"""CPU seconds spent by this process, the processes it started and the PostgreSQL server.

A benchmark on a machine of a few cores is bounded by the CPU all its parts use together, not by
any one stage's wall time: an import at N images/s on C cores can spend at most C / N core-seconds
per image, wherever they go. This reads Linux's /proc (user + system time, in clock ticks) for:

* this process (every thread: the importing thread, the embedding worker's threads, file writes);
* its descendants (the ingest's decoding processes, started by a fork server): live ones read
  directly, and the ones that already exited through their parents' "children" counters (a parent
  that waited for a child adds the child's time to its own cutime/cstime);
* the PostgreSQL server the connection talks to (postmaster and its backends, likewise).

Other tenants of the same PostgreSQL server count too: measure on a quiet server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, own CPU s, waited-for children's CPU s), or None once the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return int(fields[1]), (utime + stime) / _TICK, (cutime + cstime) / _TICK


def _parents() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            out[int(entry)] = stat[0]
    return out


def _descendants(root: int, parents: dict[int, int]) -> Iterator[int]:
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        yield pid
        stack.extend(children.get(pid, []))


def _tree_cpu(root: int, parents: dict[int, int], *, include_root: bool) -> float:
    """CPU of ``root``'s descendants, live and exited (and of ``root`` itself if asked)."""
    total = 0.0
    root_stat = _stat(root)
    if root_stat is not None:
        total += root_stat[2] + (root_stat[1] if include_root else 0.0)
    for pid in _descendants(root, parents):
        stat = _stat(pid)
        if stat is not None:
            total += stat[1] + stat[2]
    return total


def postgres_server_pid() -> int | None:
    """The postmaster behind Django's default connection (the parent of its backend)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    backend = _stat(int(row[0])) if row else None
    return backend[0] if backend else None  # a server on another host: nothing to read


def snapshot(postgres_pid: int | None) -> dict[str, float]:
    """Cumulative CPU seconds so far, per part (subtract two snapshots for a window)."""
    me = os.getpid()
    parents = _parents()
    own = _stat(me)
    parts = {
        "this process (import, embedding threads, file writes)": own[1] if own else 0.0,
        "its processes (decoding pool, broker)": _tree_cpu(me, parents, include_root=False),
    }
    if postgres_pid is not None:
        parts["PostgreSQL server"] = _tree_cpu(postgres_pid, parents, include_root=True)
    return parts


def difference(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {part: after[part] - before.get(part, 0.0) for part in after}
