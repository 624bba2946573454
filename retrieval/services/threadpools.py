"""Thread pools a process keeps beside its main work: a worker's pools for work beside a turn's
stages (preview files, questions), the web process's pool for the search consumers' database
calls (``consumer_db``), and an import's file writes (``catalog.services.storing``)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_lock = threading.Lock()
_pools: dict[str, tuple[int, ThreadPoolExecutor]] = {}


def pool(name: str, threads: int) -> ThreadPoolExecutor:
    """This process's pool ``name`` (threads named ``dar-<name>``, started when needed)."""
    with _lock:
        made = _pools.get(name)
        # Per process: a pool's threads do not survive a fork (Celery's prefork children).
        if made is None or made[0] != os.getpid():
            made = (os.getpid(), ThreadPoolExecutor(threads, thread_name_prefix=f"dar-{name}"))
            _pools[name] = made
        return made[1]
