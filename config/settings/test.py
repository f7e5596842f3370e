"""Test settings: the embedded defaults unless DATABASE_URL / REDIS_URL point at real services."""

from .base import *  # noqa: F401,F403
from .base import DATABASES, env

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
