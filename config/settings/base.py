"""Settings shared by every environment; everything that differs is read from the environment."""

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path

import environ
from celery.schedules import crontab  # noqa: F401  (re-exported for config.beat)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(environ.Env().str("RUNLEDGER_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

env = environ.Env()


def env_usd(name: str, default: str, *, what: str = "an amount in USD") -> Decimal:
    """A non-negative USD amount (or `what` else) from the environment, or a start-up error naming the variable."""
    text = env.str(name, default=default)
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value < 0:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"{name} must be {what} of 0 or more, like {default}; it is {text!r}.")
    return value


def _env_whole_number(name: str, default: int, *, valid: Callable[[int], bool], expected: str) -> int:
    """A whole number from the environment that `valid` accepts, or a start-up error naming the variable and what
    it must be (`expected`)."""
    text = env.str(name, default=str(default)).strip()
    if not (text.isascii() and text.isdigit() and valid(int(text))):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"{name} must be {expected}, like {default}; it is {text!r}.")
    return int(text)


def env_minutes_before_expiry(name: str, default: int) -> int:
    """Whole minutes a run waits for tool outputs before a warning, or a start-up error naming the variable. OpenAI
    expires such a run at 10 minutes, so a warning due at 10 or later never fired, and nothing said so."""
    return _env_whole_number(name, default, valid=lambda minutes: minutes < 10,
                             expected="a whole number of minutes from 0 to 9 (OpenAI expires a run waiting for tool "
                                      "outputs at 10)")


def env_retention_days(name: str, default: int, *, at_least: int) -> int:
    """Whole days to keep something, 0 for ever, or a start-up error naming the variable."""
    return _env_whole_number(name, default, valid=lambda days: days == 0 or days >= at_least,
                             expected=f"0 (keep for ever) or a whole number of days from {at_least}")


def env_http_url(name: str, default: str = "", *, example: str) -> str:
    """An http(s) URL with a host from the environment ("" when unset and no default), or a start-up error naming
    the variable. A URL without a scheme or host (`api.openai.com/v1`, `localhost:8765`) was handed to the
    SDK as it came and failed every request, in the workers, long after start-up said nothing."""
    from urllib.parse import urlsplit

    text = env.str(name, default=default).strip()
    if not text:
        return ""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"{name} must be an http(s) URL with a host, like {example}, or unset; it is {text!r}.")
    return text


SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="insecure-local-only-key-change-me-in-production-0123456789")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI / Redoc assets served locally (no CDN)
    "apps.core",
    "apps.tenants",
    "apps.pricing",
    "apps.provider",
    "apps.ledger",
    "apps.alerts",
    "apps.lifecycle",
    "apps.reconciliation",
    "apps.billing",
    "apps.dashboard",
]

# Messages wait in the session (the database), not in a cookie: the admin shows a new API key's plaintext once
# as a message, and the default storage kept it in a signed but readable cookie until the next page.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

MIDDLEWARE = [
    "apps.core.middleware.RequestIdMiddleware",
    # Before SecurityMiddleware, whose host check and HTTPS redirect a container's health check cannot pass.
    "apps.core.middleware.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "apps.core.middleware.NulRefusedMiddleware",
    "apps.core.middleware.LengthRequiredMiddleware",
    "apps.core.middleware.ServiceUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.core.middleware.ViewerTimezoneMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'runledger.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web app, worker and beat read while one of them writes.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    # A cache every process on the machine shares, so locks and the OpenAI rate limit hold across
    # the web app, worker and beat without a server.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "runledger_cache",
            # Culling at the default 300 entries could drop a lock or the rate limiter's state.
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    # plotly.min.js straight from the installed plotly package, so the charts work offline and the
    # JS always matches the Python figures that feed it.
    "apps.core.staticfinders.PlotlyJsFinder",
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- REST API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.tenants.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.api.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["apps.tenants.authentication.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env.str("API_KEY_RATE_LIMIT", default="6000/min")},
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["apps.core.api.JSONParser"],
    "UNAUTHENTICATED_USER": None,
    # Proxies in front of the app that append the client's address to X-Forwarded-For: 0 reads REMOTE_ADDR,
    # and behind a proxy every client would then share the proxy's address (the login throttle counts failures
    # per address). Never trusted beyond that count, so a client cannot pick its own address.
    "NUM_PROXIES": env.int("DJANGO_NUM_PROXIES", default=0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "RunLedger API",
    "DESCRIPTION": "Per-tenant usage, statements, prices and ingestion for OpenAI agent runs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
# Ingest batches of 1,000 raw OpenAI objects are a few MB; anything far larger is refused with a 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("INGEST_MAX_BODY_BYTES", default=8 * 1024 * 1024)
INGEST_MAX_EVENTS = 1000

# --- Celery -------------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL or f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# kombu's SQLAlchemy transport hands these to create_engine(), so the embedded broker gets none.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600} if REDIS_URL else {}
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BEAT_SCHEDULE = {}  # filled in config.beat, imported by config.celery

# --- OpenAI -------------------------------------------------------------------------------------
# Default project used by the collectors and sweeps; reconciliation projects are configured in the DB
# and name the environment variables that hold their keys.
# Unset: OpenAI itself. Set only to point at a proxy or the sandbox.
OPENAI_BASE_URL = env_http_url("OPENAI_BASE_URL", example="https://api.openai.com/v1 (the sandbox: http://127.0.0.1:8765/v1)")
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_ADMIN_KEY = env.str("OPENAI_ADMIN_KEY", default="")
OPENAI_PROJECT_ID = env.str("OPENAI_PROJECT_ID", default="proj_default")
OPENAI_TIMEOUT_SECONDS = env.float("OPENAI_TIMEOUT_SECONDS", default=30.0)
# Shared across every worker: management calls (threads, vector stores, files, containers) per minute.
OPENAI_MANAGEMENT_RPM = env.int("OPENAI_MANAGEMENT_RPM", default=3000)

# The sandbox (a stand-in for OpenAI, apps.sandbox) is installed only where this is true: local and
# test settings. Production forces it off, so neither its server command nor its data generator exist there.
SANDBOX_ENABLED = env.bool("SANDBOX_ENABLED", default=False)

# --- Alerts -------------------------------------------------------------------------------------
ALERT_EMAILS = env.list("ALERT_EMAILS", default=[])
ALERT_WEBHOOK_URL = env.str("ALERT_WEBHOOK_URL", default="")
ALERT_WEBHOOK_SECRET = env.str("ALERT_WEBHOOK_SECRET", default="")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="runledger@localhost")
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
REQUIRES_ACTION_WARN_MINUTES = env_minutes_before_expiry("REQUIRES_ACTION_WARN_MINUTES", default=7)
# A failed or cancelled run raises a wasted-spend alert only when it cost at least this much: at any cost it
# raised one per failed run, most under $0.001. Every one still counts in the tenant page's wasted spend.
WASTED_SPEND_ALERT_MIN_USD = env_usd("WASTED_SPEND_ALERT_MIN_USD", default="0.05")
# Alerts last opened more than this many days ago are deleted every night (alerts.prune; apps/alerts/services.py
# says which). Not less than ALERT_RETENTION_MIN_DAYS: ingest checks the budget alerts of this month and the last
# (up to ~62 days back), and a budget alert deleted sooner would be raised a second time by a late run.
ALERT_RETENTION_MIN_DAYS = 90
ALERT_RETENTION_DAYS = env_retention_days("ALERT_RETENTION_DAYS", default=180, at_least=ALERT_RETENTION_MIN_DAYS)
# A reconciliation dollar line matches within the larger of this percent of OpenAI's value and this many dollars
# (a project's own tolerance, set in the admin, wins).
RECONCILIATION_TOLERANCE_PERCENT = env_usd("RECONCILIATION_TOLERANCE_PERCENT", default="1", what="a percentage")
RECONCILIATION_TOLERANCE_USD = env_usd("RECONCILIATION_TOLERANCE_USD", default="0.01")

# --- Logging ------------------------------------------------------------------------------------
LOG_FORMAT = env.str("LOG_FORMAT", default="console")  # "json" in production
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "apps.core.logging.RequestIdFilter"}},
    "formatters": {
        "console": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "default": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]},
    },
    "root": {"handlers": ["default"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
    },
}
