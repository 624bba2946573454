"""Command lines of the instance's processes, shared by `make demo` and the load benchmark."""

from __future__ import annotations

import sys
from pathlib import Path

from django.conf import settings


def _celery_worker(
    *, name: str, queues: list[str], threads: int, loglevel: str, extra: list[str]
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "dar_site",
        "worker",
        "--hostname",
        f"{name}@%h",
        "--loglevel",
        loglevel,
        *extra,
        "--pool",
        "threads",
        "--concurrency",
        str(threads),
        "--queues",
        ",".join(queues),
    ]


def worker_command(
    *, threads: int, loglevel: str = "INFO", beat_schedule: Path | None = None
) -> list[str]:
    """A Celery worker on this instance's gpu and default queues. Threads share one copy of each
    model; with ``beat_schedule`` it also runs beat (the stuck-turn sweeper)."""
    beat = [] if beat_schedule is None else ["-B", "--schedule", str(beat_schedule)]
    return _celery_worker(
        name="gpu",
        queues=[settings.CELERY_GPU_QUEUE, settings.CELERY_DEFAULT_QUEUE],
        threads=threads,
        loglevel=loglevel,
        extra=beat,
    )


def interactive_worker_command(*, threads: int, loglevel: str = "INFO") -> list[str]:
    """A Celery worker on the interactive queue only: the text stage of turns (first results).

    It preloads only the encoder (and the product-text embedder when that term is weighted), so it
    is small, and it never runs LLM or diffusion work, so first results stay fast under load.
    """
    return _celery_worker(
        name="interactive",
        queues=[settings.CELERY_INTERACTIVE_QUEUE],
        threads=threads,
        loglevel=loglevel,
        extra=[],
    )


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
