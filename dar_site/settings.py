"""Django settings, all read from the environment (see ``.env.example``)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import load_dotenv

from .dburl import parse_database_url
from .env import (
    EnvError,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_path,
    env_pg_size,
    env_rate,
    env_str,
    float_or_auto,
)
from .origin_names import OriginError, normalize_origins
from .storage_config import storages_setting

BASE_DIR = Path(__file__).resolve().parent.parent
# A local .env (see .env.example) fills in variables the real environment leaves unset.
load_dotenv(BASE_DIR / ".env", override=False)
RUN_DIR = env_path("DAR_RUN_DIR", BASE_DIR / ".run")

DEBUG = env_bool("DJANGO_DEBUG", False)


def _secret_key() -> str:
    key = env_str("DJANGO_SECRET_KEY")
    if key:
        return key
    if not DEBUG:
        raise EnvError("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    # Development only: generate once and keep it so sessions survive restarts.
    path = RUN_DIR / "secret_key"
    if not path.exists():
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("DJANGO_BEHIND_TLS_PROXY", False) else None
)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
# Served over HTTPS (what secure cookies already assume, so production by default; development,
# tests and benchmarks on loopback HTTP turn secure cookies off and with them these): plain HTTP
# is redirected and browsers are told to use HTTPS only (`manage.py check --deploy` is clean).
SECURE_SSL_REDIRECT = env_bool("DJANGO_SSL_REDIRECT", SESSION_COOKIE_SECURE)
SECURE_HSTS_SECONDS = env_int(
    "DJANGO_HSTS_SECONDS", 365 * 24 * 3600 if SESSION_COOKIE_SECURE else 0, min=0
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI / ReDoc assets served locally: no CDN
    "channels",
    "axes",  # login lockout (admin, API Basic auth): see AXES_* below
    "csp",  # Content-Security-Policy header
    "catalog",
    "retrieval",
    "workers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Shops' widgets call the search API from their own sites (dar_site/cors.py).
    "dar_site.cors.WidgetCorsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "dar_site.urls"
ASGI_APPLICATION = "dar_site.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Services -------------------------------------------------------------------------------
# Without URLs the instance runs its own PostgreSQL+pgvector and Redis (dar_site/embedded.py).
EMBEDDED_DATABASE = not env_str("DATABASE_URL")
if EMBEDDED_DATABASE:
    from .embedded import postgres_url

    DATABASE_URL = postgres_url(RUN_DIR / "pgdata")
else:
    DATABASE_URL = env_str("DATABASE_URL")
DATABASES = {
    "default": parse_database_url(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0, min=0))
}
DATABASES["default"]["TEST"] = {"NAME": env_str("DAR_TEST_DB_NAME", "test_dar")}

EMBEDDED_REDIS = not env_str("REDIS_URL")
if EMBEDDED_REDIS:
    from .embedded import redis_url

    REDIS_URL = redis_url(RUN_DIR / "redis")
else:
    REDIS_URL = env_str("REDIS_URL")

# A prefix keeps several instances (or parallel test runs) apart on one Redis server.
REDIS_PREFIX = env_str("DAR_REDIS_PREFIX", "dar")
# Django's cache (DRF's throttles count in it) lives in the same Redis, so a limit holds across
# every web process instead of per process.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{REDIS_PREFIX}:cache",
    }
}

# redis-py 8 gives every socket read a 5 s timeout, exactly channels_redis's BZPOPMIN wait: an idle
# consumer's receive would then fail with TimeoutError every 5 s and drop its websocket. Reads must
# outlast the blocking pop (tests/test_faults.py checks an idle receive survives).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "dar_site.channel_layer.RedisChannelLayer",
        "CONFIG": {
            # redis-py's async pool holds at most 100 connections and then raises instead of
            # waiting: 100 shoppers connecting at once made group_add fail (issue #16).
            "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "max_connections": 1000}],
            "prefix": f"{REDIS_PREFIX}:asgi",
            "capacity": 500,
        },
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_GPU_QUEUE = env_str("DAR_GPU_QUEUE", f"{REDIS_PREFIX}.gpu")
# The text stage of a turn (provisional results) has a queue and worker of its own, so that it
# never waits behind other sessions' LLM and diffusion work on the gpu queue.
CELERY_INTERACTIVE_QUEUE = env_str("DAR_INTERACTIVE_QUEUE", f"{REDIS_PREFIX}.interactive")
CELERY_DEFAULT_QUEUE = env_str("DAR_DEFAULT_QUEUE", f"{REDIS_PREFIX}.default")
CELERY_TASK_ALWAYS_EAGER = False
# A worker that dies mid-task leaves the message unacknowledged, so another worker reruns it.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes a worker's database connection around every task unless told to
# reuse it: a new PostgreSQL backend and handshake per task, several ms on every turn. Workers keep
# their connections (recycled every this many tasks); dar_site/celery.py replaces a broken one
# before the next task instead.
CELERY_DB_REUSE_MAX = 500
DAR_TASK_VISIBILITY_TIMEOUT = env_int("DAR_TASK_VISIBILITY_TIMEOUT", 600, min=30)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": DAR_TASK_VISIBILITY_TIMEOUT,
    "global_keyprefix": f"{REDIS_PREFIX}:celery:",
    # One Redis list per priority, 0 first: search turns at 0, embedding jobs at 1-9 by how many
    # of their shop's jobs wait ahead (catalog/services/embed_queue.py).
    "priority_steps": list(range(10)),
}
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_SERIALIZER = CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- Auth, i18n, files ----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out username+address before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Lockout after this many wrong passwords for one username from one address, for this long
# (attempts are stored in the database: admin "Access attempts"; a success resets the count).
AXES_FAILURE_LIMIT = env_int("DAR_LOGIN_FAILURE_LIMIT", 5, min=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("DAR_LOGIN_COOLOFF_MINUTES", 15, min=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The client address is REMOTE_ADDR (set by the ASGI server), never a client-sent header.
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)
AXES_VERBOSE = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_path("DJANGO_STATIC_ROOT", BASE_DIR / ".run" / "static")
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = env_str("DJANGO_MEDIA_URL", "/media/")
MEDIA_ROOT = env_path("DJANGO_MEDIA_ROOT", BASE_DIR / ".run" / "media")
# Uploaded originals, kept as received and never served.
PRIVATE_MEDIA_ROOT = env_path("DAR_PRIVATE_MEDIA_ROOT", BASE_DIR / ".run" / "private")
# Media behind signed, expiring URLs (dar_site/media.py): the local disk, or any S3-compatible
# object store (AWS S3, MinIO, R2...) shared by every web and worker host.
DAR_MEDIA_STORAGE = env_choice("DAR_MEDIA_STORAGE", "local", ["local", "s3"])
DAR_MEDIA_URL_MAX_AGE = env_int("DAR_MEDIA_URL_MAX_AGE", 3600, min=60)
# Local storage behind nginx: the internal location that maps to MEDIA_ROOT (e.g.
# /protected-media/); the checked request is then answered with X-Accel-Redirect.
DAR_MEDIA_ACCEL_REDIRECT = env_str("DAR_MEDIA_ACCEL_REDIRECT", "")
STORAGES = storages_setting(
    backend=DAR_MEDIA_STORAGE,
    media_root=str(MEDIA_ROOT),
    media_url=MEDIA_URL,
    private_root=str(PRIVATE_MEDIA_ROOT),
    s3={
        "bucket_name": env_str("DAR_S3_BUCKET", "dar-media"),
        "endpoint_url": env_str("DAR_S3_ENDPOINT_URL") or None,
        "region_name": env_str("DAR_S3_REGION") or None,
        "access_key": env_str("DAR_S3_ACCESS_KEY") or None,
        "secret_key": env_str("DAR_S3_SECRET_KEY") or None,
        # "path" for MinIO and most self-hosted stores; "virtual" for AWS.
        "addressing_style": env_choice("DAR_S3_ADDRESSING_STYLE", "path", ["path", "virtual"]),
        "querystring_expire": DAR_MEDIA_URL_MAX_AGE,
    },
)
# Static files from WhiteNoise (compressed, cache headers), straight from the apps' folders when
# collectstatic has not run (development, tests).
WHITENOISE_USE_FINDERS = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Uploads: Django spools anything above this to disk instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("DAR_MAX_UPLOAD_FILES", 1000, min=1)
# Request bodies over these are refused with 413 before they are read (dar_site/body_limit.py):
# every request, and staff's requests to the catalog upload endpoints (images and zips).
DAR_MAX_REQUEST_BYTES = env_int("DAR_MAX_REQUEST_BYTES", 2 * 1024 * 1024, min=1024)
DAR_MAX_UPLOAD_REQUEST_BYTES = env_int("DAR_MAX_UPLOAD_REQUEST_BYTES", 2 * 1024**3, min=1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON bodies with text PostgreSQL cannot store (NUL, lone surrogates) are a 400, not a 500.
    "DEFAULT_PARSER_CLASSES": [
        "dar_site.storable_text.StorableJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    # Throttles key clients by REMOTE_ADDR, never by a client-sent X-Forwarded-For (DRF trusts it
    # unless told how many proxies there are; the ASGI server resolves trusted proxies itself).
    "NUM_PROXIES": 0,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "DAR search API",
    "VERSION": "1.0.0",
    # Swagger UI and ReDoc from the installed drf-spectacular-sidecar (static files), not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Content-Security-Policy (django-csp 4): scripts, styles, fonts and frames only from this origin,
# no inline script or style (the pages, the admin and Swagger UI, whose assets and initialiser
# come from drf-spectacular-sidecar and the split view, need none). Images: this origin, data: URIs
# (icons of the admin and Swagger UI) and, with an object store, the media's origin; sockets and
# fetches: this origin (ws/wss of the same host included).
_MEDIA_ORIGINS = env_list("DAR_CSP_MEDIA_ORIGINS")
if DAR_MEDIA_STORAGE == "s3" and env_str("DAR_S3_ENDPOINT_URL"):
    _endpoint = urlsplit(env_str("DAR_S3_ENDPOINT_URL"))
    _MEDIA_ORIGINS.append(f"{_endpoint.scheme}://{_endpoint.netloc}")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", *_MEDIA_ORIGINS],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("DAR_LOG_LEVEL", "INFO")},
    # pgserver narrates every start and stop at INFO.
    "loggers": {"pgserver": {"level": "WARNING"}},
}

# --- Product: catalog ingest ----------------------------------------------------------------
DAR_MAX_IMAGE_BYTES = env_int("DAR_MAX_IMAGE_BYTES", 20 * 1024 * 1024, min=1024)
DAR_MAX_IMAGE_PIXELS = env_int("DAR_MAX_IMAGE_PIXELS", 40_000_000, min=1)
DAR_MAX_ZIP_ENTRIES = env_int("DAR_MAX_ZIP_ENTRIES", 20_000, min=1)
DAR_MAX_ZIP_BYTES = env_int("DAR_MAX_ZIP_BYTES", 2 * 1024**3, min=1024)
DAR_EMBED_BATCH = env_int("DAR_EMBED_BATCH", 32, min=1, max=4096)
DAR_WEB_IMAGE_SIZE = env_int("DAR_WEB_IMAGE_SIZE", 1024, min=64, max=8192)
DAR_INGEST_PROCESSES = env_int("DAR_INGEST_PROCESSES", 0, min=0, max=256)
DAR_MAX_UPLOAD_PIXELS = env_int("DAR_MAX_UPLOAD_PIXELS", 400_000_000, min=1)
# Product feeds (catalog/services/feeds.py, sync.py) and the image fetcher (fetch.py). Hosts
# (exact names or IP addresses) the fetcher may reach although they resolve to a private,
# loopback or link-local address; empty: public addresses only.
DAR_FETCH_ALLOWED_HOSTS = env_list("DAR_FETCH_ALLOWED_HOSTS")
DAR_FETCH_TIMEOUT = env_float("DAR_FETCH_TIMEOUT", 15.0, min=0.1, max=600.0)
DAR_FETCH_MAX_REDIRECTS = env_int("DAR_FETCH_MAX_REDIRECTS", 3, min=0, max=20)
DAR_FETCH_THREADS = env_int("DAR_FETCH_THREADS", 8, min=1, max=64)
DAR_MAX_FEED_BYTES = env_int("DAR_MAX_FEED_BYTES", 200 * 1024 * 1024, min=1024)
# Celery beat looks for catalogs whose feed sync is due this often (seconds).
DAR_FEED_CHECK_INTERVAL = env_int("DAR_FEED_CHECK_INTERVAL", 300, min=10)
# Re-embed requests a shop may make per window (catalog/services/reembed.py); one catalog never
# has two in flight whatever these say.
DAR_REEMBED_PER_SHOP = env_int("DAR_REEMBED_PER_SHOP", 10, min=1)
DAR_REEMBED_WINDOW = env_int("DAR_REEMBED_WINDOW", 3600, min=1)

# --- Product: search ------------------------------------------------------------------------
DAR_RESULTS_K = env_int("DAR_RESULTS_K", 24, min=1, max=500)
DAR_PREVIEWS_PER_TURN = env_int("DAR_PREVIEWS_PER_TURN", 1, min=0, max=8)
# Paper weights: text/generated 0.8/0.2 on turns 0-1, 0.5/0.5 from turn 2 on.
DAR_WEIGHT_TEXT_EARLY = env_float("DAR_WEIGHT_TEXT_EARLY", 0.8, min=0.0)
DAR_WEIGHT_GEN_EARLY = env_float("DAR_WEIGHT_GEN_EARLY", 0.2, min=0.0)
DAR_WEIGHT_TEXT_LATE = env_float("DAR_WEIGHT_TEXT_LATE", 0.5, min=0.0)
DAR_WEIGHT_GEN_LATE = env_float("DAR_WEIGHT_GEN_LATE", 0.5, min=0.0)
DAR_EARLY_TURNS = env_int("DAR_EARLY_TURNS", 2, min=0)
DAR_WEIGHT_PRODUCT_TEXT = env_float("DAR_WEIGHT_PRODUCT_TEXT", 0.0, min=0.0)
# How much the encoder's image similarity counts next to product text (when that is weighted):
# "auto" = 0 for the offline profile's random-weight stand-in encoder (its similarities are
# noise), 1 for a trained one. The demo sets auto.
DAR_WEIGHT_IMAGE = float_or_auto("DAR_WEIGHT_IMAGE", env_str("DAR_WEIGHT_IMAGE", "1"), min=0.0)
# Weight of the dialogue's own text (the text-first query) mixed into the final query beside the
# refined description: a refinement can then add to what the shopper said but not lose it.
DAR_FINAL_DIALOGUE_WEIGHT = env_float("DAR_FINAL_DIALOGUE_WEIGHT", 0.0, min=0.0)
DAR_FEEDBACK_LIKE = env_float("DAR_FEEDBACK_LIKE", 0.3, min=0.0)
DAR_FEEDBACK_DISLIKE = env_float("DAR_FEEDBACK_DISLIKE", 0.15, min=0.0)
DAR_ASK_QUESTIONS = env_bool("DAR_ASK_QUESTIONS", True)
DAR_HNSW_EF_SEARCH = env_int("DAR_HNSW_EF_SEARCH", 60, min=1, max=1000)
# A filtered search whose filters leave at most this many items ranks them exactly (by their
# ids); above, an iterative HNSW scan reads candidates until k pass (0: always the index).
DAR_FILTER_EXACT_MAX = env_int("DAR_FILTER_EXACT_MAX", 1000, min=0, max=1_000_000)
# hnsw.ef_search of filtered index scans: a filter skips most candidates, and a wider search
# keeps recall (10% filter at 100k: recall@10 0.90 at 60, 0.93 at 200, 0.97 at 400).
DAR_FILTER_EF_SEARCH = env_int("DAR_FILTER_EF_SEARCH", 200, min=1, max=1000)
# Search breadth: at 1M clustered 512-d vectors (ef_construction 128) 60 gave recall@10 0.995 at
# p50 4.1 ms; iterative scans keep filtered searches from running short (docs/benchmarks.md).
# HNSW graph parameters. m is pgvector's default; ef_construction doubles its 64: at 1M vectors
# recall@10 at ef_search 40 rose from 0.79 to 0.93-0.97, for twice the build time.
DAR_HNSW_M = env_int("DAR_HNSW_M", 16, min=2, max=100)
DAR_HNSW_EF_CONSTRUCTION = env_int("DAR_HNSW_EF_CONSTRUCTION", 128, min=4, max=1000)
# Memory for building an HNSW index (PostgreSQL's maintenance_work_mem, for that build only).
DAR_HNSW_BUILD_MEMORY = env_pg_size("DAR_HNSW_BUILD_MEMORY", "1GB")
# A model's HNSW index is built once its first bulk load is over (catalog/services/index_builds.py).
# Celery beat looks this often (seconds) for a build the load's last job did not do, and builds it
# when the load is over (no item pending, no import running) or when nothing was stored into it
# for DAR_DEFERRED_INDEX_IDLE seconds (jobs lost with a broker flush leave items pending for good).
DAR_DEFERRED_INDEX_CHECK = env_int("DAR_DEFERRED_INDEX_CHECK", 300, min=10)
DAR_DEFERRED_INDEX_IDLE = env_int("DAR_DEFERRED_INDEX_IDLE", 900, min=60)
# New search sessions per anonymous client address (DRF throttle, counted in the Redis cache).
DAR_SESSION_CREATE_RATE = env_rate("DAR_SESSION_CREATE_RATE", "20/min")
DAR_MAX_MESSAGE_CHARS = env_int("DAR_MAX_MESSAGE_CHARS", 1000, min=1)
DAR_TURN_TIME_LIMIT = env_int("DAR_TURN_TIME_LIMIT", 120, min=5)
# Analysts' "nothing useful found" list: a done turn whose best final result scored below this
# (fused cosine similarity) is listed as a low-score turn (retrieval/analytics/outcomes.py).
DAR_ANALYTICS_LOW_SCORE = env_float("DAR_ANALYTICS_LOW_SCORE", 0.2, min=-1.0, max=1.0)
DAR_MAX_TURNS_PER_SESSION = env_int("DAR_MAX_TURNS_PER_SESSION", 30, min=1)
DAR_RATE_LIMIT_TURNS = env_int("DAR_RATE_LIMIT_TURNS", 10, min=1)
DAR_RATE_LIMIT_WINDOW = env_int("DAR_RATE_LIMIT_WINDOW", 60, min=1)


def _exact_origins(name: str, values: list[str]) -> list[str]:
    try:
        return normalize_origins(values)
    except OriginError as error:
        raise EnvError(f"{name}: {error}") from None


# Exact origins (scheme://host[:port]) besides our own pages' that may open search websockets;
# shops' widgets are allowed per catalog instead (catalog admin, dar_site/origins.py).
DAR_WEBSOCKET_ALLOWED_ORIGINS = _exact_origins(
    "DAR_WEBSOCKET_ALLOWED_ORIGINS", env_list("DAR_WEBSOCKET_ALLOWED_ORIGINS")
)
# Search sessions a shop's widget may start per client address and rate-limit window.
DAR_RATE_LIMIT_WIDGET_SESSIONS = env_int("DAR_RATE_LIMIT_WIDGET_SESSIONS", 20, min=1)
# Search turns (retrieval/turn/). Per-address turn limit: several
# shoppers may share one address (NAT, office), so it is looser than the per-session one.
DAR_RATE_LIMIT_ADDRESS_TURNS = env_int(
    "DAR_RATE_LIMIT_ADDRESS_TURNS", 5 * DAR_RATE_LIMIT_TURNS, min=1
)
# Turns that may wait for a gpu worker at once (retrieval/turn/admission.py); a message that
# finds this many waiting is refused ("busy", REST 503 + Retry-After) and not stored. About the
# turns an instance finishes within DAR_TURN_TIME_LIMIT: ~0.28 turns/s on 2 CPU cores.
DAR_TURN_QUEUE_DEPTH = env_int("DAR_TURN_QUEUE_DEPTH", 32, min=1)
# Threads of the web process's pool for the search consumers' database calls
# (retrieval/consumer_db.py): the most calls (and PostgreSQL connections) they have at once.
DAR_WS_DB_THREADS = env_int("DAR_WS_DB_THREADS", 8, min=1, max=256)
# Disliked items are left out of the session's later rankings (besides Rocchio's push).
DAR_FEEDBACK_EXCLUDE_DISLIKED = env_bool("DAR_FEEDBACK_EXCLUDE_DISLIKED", True)
# A turn whose worker died this many times is failed ("worker_lost") instead of rerun again.
DAR_TURN_MAX_ATTEMPTS = env_int("DAR_TURN_MAX_ATTEMPTS", 3, min=1)
# A turn's tasks commit without waiting for PostgreSQL's WAL flush (synchronous_commit off): what
# they write is derived from the stored message, see retrieval/turn/store.py, derived_writes.
DAR_TURN_ASYNC_COMMIT = env_bool("DAR_TURN_ASYNC_COMMIT", True)
# Celery beat runs the stuck-turn sweeper this often (pages also sweep when they connect).
DAR_SWEEP_INTERVAL = env_int("DAR_SWEEP_INTERVAL", 60, min=5)
CELERY_BEAT_SCHEDULE = {
    "sweep-stuck-turns": {"task": "search.sweep_stuck_turns", "schedule": DAR_SWEEP_INTERVAL},
    "sync-due-feeds": {"task": "catalog.sync_due_feeds", "schedule": DAR_FEED_CHECK_INTERVAL},
    "build-deferred-indexes": {
        "task": "catalog.build_deferred_indexes",
        "schedule": DAR_DEFERRED_INDEX_CHECK,
    },
}
# Gpu workers load every model at start instead of on the first turn (workers/warmup.py).
DAR_WARM_MODELS = env_bool("DAR_WARM_MODELS", True)
# The models (DAR_MODEL_PROFILE, DAR_ENCODER, DAR_LLM...) are the model layer's settings, read
# once per process by workers.models.config.model_settings(), not Django settings.
