"""Settings for the test suite: the real settings with test-only defaults in the environment."""

import os

# Each pytest process gets its own database and Redis key space, so parallel runs on one machine
# (developers, CI) never consume each other's tasks or channel messages.
_tag = f"t{os.getpid()}"
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault("DAR_TEST_DB_NAME", f"test_dar_{_tag}")
os.environ.setdefault("DAR_REDIS_PREFIX", f"dartest:{_tag}")
os.environ.setdefault("DAR_MODEL_PROFILE", "offline")
os.environ.setdefault("DJANGO_SECURE_COOKIES", "0")
# Every test client talks from 127.0.0.1; tests/test_anonymous_limits.py sets its own rate.
os.environ.setdefault("DAR_SESSION_CREATE_RATE", "100000/min")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests load the models they use; preloading all of them in every worker would only cost time.
os.environ.setdefault("DAR_WARM_MODELS", "0")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from .settings import *  # noqa: E402,F403

MEDIA_ROOT = RUN_DIR / "test-media" / _tag  # noqa: F405
PRIVATE_MEDIA_ROOT = RUN_DIR / "test-media" / f"{_tag}-private"  # noqa: F405
STORAGES = storages_setting(  # noqa: F405
    backend="local",
    media_root=str(MEDIA_ROOT),
    media_url=MEDIA_URL,  # noqa: F405
    private_root=str(PRIVATE_MEDIA_ROOT),
    s3={},
)
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
