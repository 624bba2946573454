"""With DATABASE_URL, the app uses that server, and stops with a clear message without pgvector."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# This machine kind runs a plain PostgreSQL (no pgvector) on 5432; elsewhere the test skips.
PLAIN_POSTGRES = os.environ.get(
    "DAR_TEST_PLAIN_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _has_pgvector(url: str) -> bool | None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
            return row is not None
    except psycopg.Error:
        return None


@pytest.fixture
def scratch_database() -> Iterator[str]:
    """A throwaway database on the plain server, so the migration attempt leaves nothing behind."""
    import psycopg

    if not _reachable("127.0.0.1", 5432) or _has_pgvector(PLAIN_POSTGRES) is not False:
        pytest.skip("needs a reachable PostgreSQL without pgvector (DAR_TEST_PLAIN_POSTGRES_URL)")
    name = f"dar_no_pgvector_{os.getpid()}"
    with psycopg.connect(PLAIN_POSTGRES, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield PLAIN_POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PLAIN_POSTGRES, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_migrate_against_a_server_without_pgvector_explains_what_to_do(
    tmp_path: Path, scratch_database: str
) -> None:
    env = dict(
        os.environ,
        DATABASE_URL=scratch_database,
        DJANGO_SETTINGS_MODULE="dar_site.settings",
        DJANGO_SECRET_KEY="x" * 50,
        DAR_RUN_DIR=str(tmp_path),
        # Redis is not needed to reach the migration; point it anywhere to skip the embedded one.
        REDIS_URL="redis://127.0.0.1:1/0",
    )
    proc = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "does not have the pgvector extension installed" in proc.stderr
    # It used that server: the embedded one was never started in this run folder.
    assert not (tmp_path / "pgdata").exists()
