"""Typed environment readers fail loudly; database URLs parse for TCP and Unix sockets."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dar_site.dburl import parse_database_url
from dar_site.env import EnvError, env_bool, env_choice, env_float, env_int, env_list, env_str


def test_readers_use_defaults_when_unset_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X_UNSET", raising=False)
    monkeypatch.setenv("X_EMPTY", "  ")
    assert env_str("X_UNSET", "d") == "d"
    assert env_int("X_EMPTY", 7) == 7
    assert env_bool("X_UNSET", True) is True
    assert env_list("X_UNSET", ["a"]) == ["a"]


@pytest.mark.parametrize(
    ("reader", "value", "message"),
    [
        (lambda: env_int("X", 1), "ten", "not an integer"),
        (lambda: env_int("X", 1, min=2), "1", "below the minimum"),
        (lambda: env_float("X", 1.0, max=1.0), "1.5", "above the maximum"),
        (lambda: env_float("X", 1.0), "nan", "not a number"),
        (lambda: env_bool("X", False), "maybe", "not a boolean"),
        (lambda: env_choice("X", "a", ["a", "b"]), "c", "must be one of a, b"),
    ],
)
def test_bad_values_raise_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, reader: object, value: str, message: str
) -> None:
    monkeypatch.setenv("X", value)
    with pytest.raises(EnvError, match=message) as info:
        reader()  # type: ignore[operator]
    assert "X" in str(info.value)


def test_typed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X", " yes ")
    assert env_bool("X", False) is True
    monkeypatch.setenv("X", "a, b,,c")
    assert env_list("X") == ["a", "b", "c"]


def test_database_url_tcp_and_socket() -> None:
    tcp = parse_database_url("postgresql://u%40x:p%2Fw@db.example:6543/shop?sslmode=require")
    assert (tcp["USER"], tcp["PASSWORD"], tcp["HOST"], tcp["PORT"], tcp["NAME"]) == (
        "u@x",
        "p/w",
        "db.example",
        "6543",
        "shop",
    )
    assert tcp["OPTIONS"] == {"sslmode": "require"}
    sock = parse_database_url("postgresql://postgres:@/postgres?host=/tmp/pg")
    assert sock["HOST"] == "/tmp/pg" and sock["OPTIONS"] == {}
    with pytest.raises(EnvError, match="postgresql://"):
        parse_database_url("mysql://x@y/z")


def test_production_settings_refuse_to_start_without_secret_key(tmp_path: object) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_DEBUG": "0",
        # Set, but empty: the .env that `make demo` writes (it has a key) fills in only unset
        # variables, so a developer's test run after the demo must not pick up its key.
        "DJANGO_SECRET_KEY": "",
        "DATABASE_URL": "postgresql://x@h/db",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "DAR_RUN_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-c", "import dar_site.settings"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in proc.stderr
