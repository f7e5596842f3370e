"""Settings of the processes a drill starts (gunicorn, Celery workers): local settings with production's
DEBUG off, and the drill's compressed clock (leases, lock TTLs, redelivery) read from the environment."""

from config.settings.local import *  # noqa: F401,F403
from config.settings.local import CELERY_BROKER_TRANSPORT_OPTIONS, REDIS_URL, REST_FRAMEWORK, env

DEBUG = False
# Load is the point of the load drill; the per-key limit is proven separately (tests/reliability).
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": env.str("API_KEY_RATE_LIMIT",
                                                                                     default="1000000/min")}}
# Production waits minutes before it decides a worker died; a drill waits seconds.
LIFECYCLE_ITEM_LEASE_SECONDS = env.int("LIFECYCLE_ITEM_LEASE_SECONDS", default=300)
LIFECYCLE_SWEEP_STALE_SECONDS = env.int("LIFECYCLE_SWEEP_STALE_SECONDS", default=300)
LIFECYCLE_SWEEP_LOCK_SECONDS = env.int("LIFECYCLE_SWEEP_LOCK_SECONDS", default=300)
LIFECYCLE_TRANSIENT_RETRY_SECONDS = env.int("LIFECYCLE_TRANSIENT_RETRY_SECONDS", default=30)
LIFECYCLE_SWEEP_BATCH_SIZE = env.int("LIFECYCLE_SWEEP_BATCH_SIZE", default=50)
RECONCILIATION_LOCK_SECONDS = env.int("RECONCILIATION_LOCK_SECONDS", default=120)
if REDIS_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **CELERY_BROKER_TRANSPORT_OPTIONS,
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    }
# The alert outbox catch-up leaves fresh alerts to the task queued at raise time for this long.
ALERTS_PENDING_GRACE_SECONDS = env.int("ALERTS_PENDING_GRACE_SECONDS", default=120)
