"""The web process serves pages and sockets without ever importing torch (or any model code)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dar_site.settings_test")
import django
django.setup()
import dar_site.asgi            # the whole ASGI app: urls, consumers, admin
from django.urls import get_resolver
get_resolver().url_patterns     # force every urlconf and view module to import
from django.contrib import admin
admin.autodiscover()
heavy = sorted(m for m in ("torch", "open_clip", "transformers", "diffusers",
                           "sentence_transformers") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


def test_web_side_never_imports_torch() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY:")]
    assert line == "HEAVY:", f"the web process imported model libraries: {line}"
