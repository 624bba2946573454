"""Command lines of the instance's processes, shared by `make demo` and the load benchmark."""

from __future__ import annotations

import sys
from pathlib import Path

from django.conf import settings


def worker_command(
    *, threads: int, loglevel: str = "INFO", beat_schedule: Path | None = None
) -> list[str]:
    """A Celery worker on this instance's gpu and default queues. Threads share one copy of each
    model; with ``beat_schedule`` it also runs beat (the stuck-turn sweeper)."""
    beat = [] if beat_schedule is None else ["-B", "--schedule", str(beat_schedule)]
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "dar_site",
        "worker",
        "--loglevel",
        loglevel,
        *beat,
        "--pool",
        "threads",
        "--concurrency",
        str(threads),
        "--queues",
        f"{settings.CELERY_GPU_QUEUE},{settings.CELERY_DEFAULT_QUEUE}",
    ]


def web_command(*, port: int, loglevel: str = "info") -> list[str]:
    """The ASGI server (uvicorn) on loopback."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "dar_site.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ws",
        "websockets-sansio",
        "--log-level",
        loglevel,
    ]
