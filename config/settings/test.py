"""Test settings: the embedded defaults unless DATABASE_URL / REDIS_URL point at real services."""

import os
from urllib.parse import urlsplit, urlunsplit

from .base import *  # noqa: F401,F403
from .base import DATABASES, env


def redis_url_for_worker(url: str, worker: str) -> str:
    """The Redis URL of pytest-xdist worker `worker` ("gw0", "gw1", ...): the database after the one `url`
    names for gw0, the next for gw1, and so on (wrapping at Redis's default 16 databases)."""
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(database + 1 + int(worker.removeprefix('gw'))) % 16}"))


SECRET_KEY = "test-secret-key-not-for-production-0123456789abcdefghijklmnop"
DEBUG = False
SANDBOX_ENABLED = True
if SANDBOX_ENABLED:
    INSTALLED_APPS = [*INSTALLED_APPS, "apps.sandbox", "apps.drills", "apps.benchmarks"]  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
OPENAI_BASE_URL = ""  # each test points the provider at its own sandbox
OPENAI_API_KEY = "sk-sandbox"
OPENAI_ADMIN_KEY = "sk-admin-sandbox"
LOG_LEVEL = "WARNING"
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "100000/min"}}  # noqa: F405

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3" and not env.str("DATABASE_URL", default=""):
    DATABASES["default"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
if not env.str("REDIS_URL", default=""):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
elif os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N`: each worker empties the cache before every test (tests/conftest.py), and on Redis that
    # is FLUSHDB, so workers sharing a database wipe each other's throttle counters and rate-limit windows
    # mid-test (their API keys even share ids: each worker has its own test database). One Redis
    # database per worker, counted from the one REDIS_URL names.
    worker_cache = CACHES["default"]  # noqa: F405
    worker_cache["LOCATION"] = redis_url_for_worker(worker_cache["LOCATION"], os.environ["PYTEST_XDIST_WORKER"])
