"""Local development and the `make run` demo: embedded SQLite and broker, sandbox mounted."""

from .base import *  # noqa: F401,F403
from .base import env, env_http_url

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SANDBOX_ENABLED = env.bool("SANDBOX_ENABLED", default=True)
if SANDBOX_ENABLED:
    INSTALLED_APPS = [*INSTALLED_APPS, "apps.sandbox", "apps.drills", "apps.benchmarks"]  # noqa: F405
SANDBOX_PORT = env.int("SANDBOX_PORT", default=8765)
OPENAI_BASE_URL = env_http_url("OPENAI_BASE_URL", default=f"http://127.0.0.1:{SANDBOX_PORT}/v1",
                               example=f"http://127.0.0.1:{SANDBOX_PORT}/v1 (the sandbox)")
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="sk-sandbox")
OPENAI_ADMIN_KEY = env.str("OPENAI_ADMIN_KEY", default="sk-admin-sandbox")
# Static files straight from the apps' and project's folders, DEBUG or not: `DJANGO_DEBUG=false make run` (to
# see the product's own error pages) served unstyled pages, there being no collectstatic here.
WHITENOISE_USE_FINDERS = True
