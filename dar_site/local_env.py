"""The local ``.env`` that ``make demo`` leaves behind, so that ``manage.py`` works afterwards.

The demo runs with DJANGO_DEBUG=1 set in its own process only; a user who then types a README
command (``.venv/bin/python manage.py import_catalog ...``) has neither variable and would stop at
"DJANGO_SECRET_KEY must be set". Settings read ``.env`` (python-dotenv), so the demo writes the two
variables a local instance needs there. No Django import: this runs before settings load.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from dotenv import dotenv_values

HEADER = "# Written by `make demo` for a local instance; see .env.example for every variable.\n"


def ensure_local_env(path: Path) -> list[str]:
    """Add DJANGO_DEBUG=1 and a generated DJANGO_SECRET_KEY to ``path`` when it lacks them.

    Never changes a value that is there; returns the names it added.
    """
    present = dotenv_values(path) if path.exists() else {}
    wanted = {"DJANGO_DEBUG": "1", "DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}
    added = {name: value for name, value in wanted.items() if not present.get(name)}
    if not added:
        return []
    text = path.read_text() if path.exists() else HEADER
    if text and not text.endswith("\n"):
        text += "\n"
    text += "".join(f"{name}={value}\n" for name, value in added.items())
    path.write_text(text)
    path.chmod(0o600)  # it holds a secret key
    return list(added)
