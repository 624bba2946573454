"""`make demo`: one local instance with everything it needs, until Ctrl-C.

Starts (or attaches to) the embedded PostgreSQL+pgvector and Redis unless DATABASE_URL/REDIS_URL
are set, migrates, builds the offline models if the profile needs them, loads the demo catalog,
starts the Celery workers (the gpu worker, with beat, and the interactive worker for the turns'
text stage) and the ASGI server, waits for the catalog's embeddings and prints the search page's
URL. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import FrameType

from dar_site.env import env_int
from dar_site.processes import interactive_worker_command, web_command, worker_command

CHILDREN: list[subprocess.Popen[bytes]] = []


def _defaults() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dar_site.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")
    # The stand-in models rank images at random; the emoji's names (product text, embedded by the
    # real all-MiniLM-L6-v2) are what make the offline demo's results meaningful.
    os.environ.setdefault("DAR_WEIGHT_PRODUCT_TEXT", "0.5")
    # ...and the stand-in encoder's noise is left out of the fusion when it is the random one;
    # the final query keeps the dialogue's own words beside the refinement.
    os.environ.setdefault("DAR_WEIGHT_IMAGE", "auto")
    os.environ.setdefault("DAR_FINAL_DIALOGUE_WEIGHT", "1")


def _port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


def _admin_password(run_dir: Path) -> str:
    from django.contrib.auth import get_user_model

    path = run_dir / "demo_admin_password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(12))
        path.chmod(0o600)
    password = path.read_text().strip()
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username="admin", defaults={"is_staff": True})
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return password


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")  # noqa: SIM115 - the child keeps writing after we return
    proc = subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT)
    CHILDREN.append(proc)
    return proc


def _stop(*_: object) -> None:
    for proc in CHILDREN:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 15
    for proc in CHILDREN:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_for_embeddings(catalog_slug: str, worker: subprocess.Popen[bytes], log: Path) -> None:
    from catalog.models import CatalogItem

    last = ""
    while True:
        items = CatalogItem.objects.filter(catalog__slug=catalog_slug)
        pending = items.filter(status=CatalogItem.Status.PENDING).count()
        line = f"embedding demo catalog: {items.count() - pending}/{items.count()} done"
        if line != last:
            print(line, flush=True)
            last = line
        if pending == 0:
            return
        if worker.poll() is not None:
            raise SystemExit(f"the Celery worker exited; see {log}")
        time.sleep(1)


def main() -> None:
    from dar_site.local_env import ensure_local_env

    env_file = Path(__file__).resolve().parent.parent / ".env"
    added = ensure_local_env(env_file)
    if added:
        print(f"wrote {', '.join(added)} to {env_file} (for manage.py commands)", flush=True)
    _defaults()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    run_dir = Path(settings.RUN_DIR)
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print("preparing database and models...", flush=True)
    call_command("migrate", verbosity=0)
    call_command("prepare_models")
    call_command("load_demo_catalog")
    password = _admin_password(run_dir)

    # Children talk to the servers this process holds, instead of managing their own.
    env = dict(os.environ, DATABASE_URL=settings.DATABASE_URL, REDIS_URL=settings.REDIS_URL)
    worker_log = logs / "worker.log"
    worker = _spawn(
        worker_command(threads=4, beat_schedule=run_dir / "celerybeat-schedule"), env, worker_log
    )
    # A turn's text stage (first results) has a worker of its own: it holds only the encoder and
    # never waits behind another session's LLM work.
    _spawn(interactive_worker_command(threads=4), env, logs / "interactive.log")
    port = _port(env_int("DAR_DEMO_PORT", 8000, min=1, max=65535))
    _spawn(web_command(port=port), env, logs / "web.log")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        call_command("embed_catalog", catalog="demo", stale=True)
        _wait_for_embeddings("demo", worker, worker_log)
        url = f"http://127.0.0.1:{port}/search/demo/"
        print(
            f"\nDAR search is running.\n  search page:  {url}\n"
            f"  admin:        http://127.0.0.1:{port}/admin/  (user admin, password {password})\n"
            f"  logs:         {logs}\nPress Ctrl-C to stop.",
            flush=True,
        )
        while all(proc.poll() is None for proc in CHILDREN):
            time.sleep(0.5)
        print(f"a child process exited; see the logs in {logs}", flush=True)
    finally:
        _stop()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    print("\nstopping...", flush=True)
    raise SystemExit(0)


if __name__ == "__main__":
    main()
