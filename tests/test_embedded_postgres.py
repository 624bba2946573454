"""The embedded PostgreSQL runs with DAR_PG_* memory settings, from a fresh data folder on."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from dar_site.embedded import TUNING_FILE, postgres_url
from dar_site.env import EnvError, env_pg_size


def _show(url: str, setting: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SHOW {setting}").fetchone()
    assert row is not None
    return str(row[0])


def test_a_fresh_server_runs_with_the_configured_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pgserver

    monkeypatch.setenv("DAR_PG_SHARED_BUFFERS", "160MB")
    monkeypatch.setenv("DAR_PG_EFFECTIVE_CACHE_SIZE", "3GB")
    data = tmp_path / "pgdata"
    try:
        url = postgres_url(data)
        # The first start ran initdb on stock settings; the server was restarted with ours.
        assert _show(url, "shared_buffers") == "160MB"
        assert _show(url, "effective_cache_size") == "3GB"
        assert (data / TUNING_FILE).read_text().count("shared_buffers") == 1
        # Attaching again (another process of the instance) reuses the running server.
        assert postgres_url(data) == url
        conf = (data / "postgresql.conf").read_text()
        assert conf.count(f"include_if_exists = '{TUNING_FILE}'") == 1
    finally:
        pgserver.get_server(data)._cleanup()


def test_sizes_are_checked() -> None:
    assert env_pg_size("DAR_UNSET_FOR_TEST", "2GB") == "2GB"
    for bad in ("2G", "lots", "-1MB", "1.5GB"):
        with pytest.raises(EnvError, match="PostgreSQL size"):
            env_pg_size("DAR_UNSET_FOR_TEST", bad)
