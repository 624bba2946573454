"""Every environment variable the code reads is documented in .env.example, and vice versa."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READERS = "str|int|float|bool|choice|list|path|required|pg_size|rate"
READ = re.compile(rf"env_(?:{READERS})\(\s*\"([A-Z][A-Z0-9_]+)\"")


def _read_by_code() -> set[str]:
    names: set[str] = set()
    for folder in ("dar_site", "catalog", "retrieval", "workers"):
        for path in (ROOT / folder).rglob("*.py"):
            names.update(READ.findall(path.read_text()))
    return names


def _documented() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


def test_env_example_lists_every_variable() -> None:
    read = _read_by_code()
    assert "DATABASE_URL" in read and "DAR_MODEL_PROFILE" in read  # the scan found the readers
    assert read - _documented() == set()


def test_env_example_lists_nothing_the_code_ignores() -> None:
    assert _documented() - _read_by_code() == set()
