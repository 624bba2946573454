"""Shared plumbing of the benchmarks: Django setup, a throwaway bench database, figures, tables."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()


@contextmanager
def bench_database(*, keep: bool = False, drop: bool = True) -> Iterator[str]:
    """Create (or, with ``keep``, reuse) the bench database, migrated; drop it on exit if ``drop``.

    Django's test-database machinery does exactly this for the test suite, so the bench runs on the
    same schema the product migrates to, including the pgvector extension.
    """
    from django.db import connection

    old_name = connection.settings_dict["NAME"]
    name = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, serialize=False, keepdb=keep
    )
    try:
        yield name
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=not drop)
        if drop:
            _remove_bench_media()


def _remove_bench_media() -> None:
    import shutil

    from django.conf import settings

    media = Path(settings.MEDIA_ROOT)
    # Only ever the bench's own folder (bench/settings.py), never an instance's media.
    if media.parent.name == "bench-media":
        shutil.rmtree(media, ignore_errors=True)


def database_url() -> str:
    """A libpq URL for the database this process is connected to (the bench database)."""
    from urllib.parse import quote

    from django.db import connection

    conf = connection.settings_dict
    auth = quote(conf["USER"] or "") + (":" + quote(conf["PASSWORD"]) if conf["PASSWORD"] else "")
    host = conf["HOST"] or ""
    if host.startswith("/"):  # a Unix socket directory
        return f"postgresql://{auth}@/{quote(conf['NAME'])}?host={quote(host)}"
    port = f":{conf['PORT']}" if conf["PORT"] else ""
    return f"postgresql://{auth}@{host}{port}/{quote(conf['NAME'])}"


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a worker or server process on this benchmark's database and Redis."""
    from django.conf import settings

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        DAR_REDIS_PREFIX=settings.REDIS_PREFIX,
        DJANGO_SECRET_KEY=settings.SECRET_KEY,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A product process (worker, server) of the benchmark, writing to ``log``."""
    handle = log.open("wb")
    return subprocess.Popen(
        command,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_for_worker(
    name: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120
) -> None:
    """Until the Celery worker ``name`` (as in ``--hostname name@%h``) answers a ping."""
    from dar_site.celery import app

    node = f"{name}@{socket.gethostname()}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the {name} worker exited; see {log}")
        if app.control.ping(destination=[node], timeout=1.0):
            return
    raise SystemExit(f"the {name} worker did not answer in {timeout:.0f} s; see {log}")


@dataclass(frozen=True)
class Summary:
    n: int
    p50: float
    p95: float
    mean: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            return cls(0, float("nan"), float("nan"), float("nan"))
        arr = np.asarray(samples, dtype=np.float64)
        p50, p95 = np.percentile(arr, [50, 95]).tolist()
        return cls(len(arr), p50, p95, float(arr.mean()))


class Stopwatch:
    """Collects named durations in milliseconds."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, (time.perf_counter() - start) * 1000)

    def add(self, name: str, ms: float) -> None:
        self.samples.setdefault(name, []).append(ms)


def fmt(value: object, digits: int = 2) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: nothing measured
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print(
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
