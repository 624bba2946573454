"""``make demo`` leaves a local .env with the settings manage.py needs, and never overwrites one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dotenv import dotenv_values

from dar_site.local_env import ensure_local_env

ROOT = Path(__file__).resolve().parent.parent


def test_a_missing_env_file_gets_debug_and_a_secret_key(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    assert ensure_local_env(path) == ["DJANGO_DEBUG", "DJANGO_SECRET_KEY"]
    values = dotenv_values(path)
    assert values["DJANGO_DEBUG"] == "1"
    assert len(values["DJANGO_SECRET_KEY"] or "") >= 50
    assert path.stat().st_mode & 0o077 == 0
    # A second demo run keeps the key (sessions and signed cookies stay valid).
    assert ensure_local_env(path) == []
    assert dotenv_values(path) == values


def test_an_existing_env_file_keeps_its_values(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("DJANGO_SECRET_KEY=mine\nDAR_MODEL_PROFILE=offline")
    assert ensure_local_env(path) == ["DJANGO_DEBUG"]
    values = dotenv_values(path)
    assert values == {
        "DJANGO_SECRET_KEY": "mine",
        "DAR_MODEL_PROFILE": "offline",
        "DJANGO_DEBUG": "1",
    }


def test_settings_load_with_only_what_the_demo_wrote(tmp_path: Path) -> None:
    # The real failure: manage.py without DJANGO_DEBUG / DJANGO_SECRET_KEY in the environment.
    path = tmp_path / ".env"
    ensure_local_env(path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        {k: v for k, v in dotenv_values(path).items() if v is not None}
    )  # what settings.py's load_dotenv does with the repo's .env
    code = "import django; from django.conf import settings; django.setup(); print(settings.DEBUG)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "dar_site.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"
