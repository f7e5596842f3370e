"""Production: every secret and host from the environment, secure cookies, HSTS, JSON logs, no sandbox."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F401,F403
from .base import ALERT_WEBHOOK_SECRET, ALERT_WEBHOOK_URL, LOGGING, OPENAI_API_KEY, env

DEBUG = False
SECRET_KEY = env.str("DJANGO_SECRET_KEY")
if SECRET_KEY.startswith("generate-with-"):
    # .env.example's placeholder, copied unchanged: a secret everyone who has read the repository knows.
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is still .env.example's placeholder. Set it to a secret of your own: "
        "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )
if ALERT_WEBHOOK_URL and not ALERT_WEBHOOK_SECRET:
    # Without a secret every alert is "signed" with an empty key: a signature anyone can compute, so the receiver
    # cannot tell RunLedger's alerts from forged ones (.env.example leaves the secret empty beside the URL).
    raise ImproperlyConfigured(
        "ALERT_WEBHOOK_URL is set without ALERT_WEBHOOK_SECRET: alerts would be signed with an empty key. Set it to "
        "a secret shared with the receiver: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )
for _required in ("DATABASE_URL", "REDIS_URL"):
    if not env.str(_required, default=""):
        # base.py's fallbacks are for `make run`: an SQLite file and an SQLite broker under var/. Here they would give
        # each container or machine a database and a task queue of its own, and nothing would say so.
        raise ImproperlyConfigured(
            f"{_required} is not set: production needs PostgreSQL (DATABASE_URL=postgres://user:pass@host:5432/runledger) "
            f"and Redis (REDIS_URL=redis://host:6379/0); see README 'Production'."
        )
if not OPENAI_API_KEY:
    # base.py's empty default: every collector pass, sweep, inventory and staff delete then failed at OpenAI, one
    # by one, in the workers' logs, while the web process started as if nothing were missing.
    raise ImproperlyConfigured(
        "OPENAI_API_KEY is not set: production reaches OpenAI with it (collectors, sweeps, inventory, staff deletes). "
        "Set it to an API key of the default OpenAI project (OPENAI_PROJECT_ID), from "
        "https://platform.openai.com/api-keys; see README 'Production'."
    )
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
SANDBOX_ENABLED = False

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)

LOGGING["handlers"]["default"]["formatter"] = env.str("LOG_FORMAT", default="json")
