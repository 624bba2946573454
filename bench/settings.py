"""Settings for the benchmarks: the real settings, on a database and Redis key space of their own.

A benchmark never touches the instance's data: it creates a bench database (Django's test-database
machinery, named by ``DAR_TEST_DB_NAME``) and drops it afterwards, and uses its own Redis prefix.
Subprocesses a benchmark starts (Celery workers, ASGI servers) get the bench database's URL in
``DATABASE_URL`` and the same ``DAR_REDIS_PREFIX`` (see ``bench.common.child_env``).
"""

import os

_tag = f"b{os.getpid()}"
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-not-for-production")
os.environ.setdefault("DAR_TEST_DB_NAME", f"dar_bench_{_tag}")
os.environ.setdefault("DAR_REDIS_PREFIX", f"darbench:{_tag}")
os.environ.setdefault("DAR_MODEL_PROFILE", "offline")
os.environ.setdefault("DAR_LOG_LEVEL", "WARNING")
os.environ.setdefault("DJANGO_SECURE_COOKIES", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Model-loading progress bars would bury the figures.
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from dar_site.settings import *  # noqa: E402,F403

MEDIA_ROOT = RUN_DIR / "bench-media" / os.environ["DAR_REDIS_PREFIX"].replace(":", "-")  # noqa: F405
PRIVATE_MEDIA_ROOT = MEDIA_ROOT / "private"
STORAGES = storages_setting(  # noqa: F405
    backend="local",
    media_root=str(MEDIA_ROOT),
    media_url=MEDIA_URL,  # noqa: F405
    private_root=str(PRIVATE_MEDIA_ROOT),
    s3={},
)
