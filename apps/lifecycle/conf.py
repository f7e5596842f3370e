"""Lifecycle settings with their defaults; each can be overridden in Django settings or the environment
(a variable of the same name: `LIFECYCLE_SWEEP_UNASSIGNED=true`, `LIFECYCLE_SWEEP_BATCH_SIZE=100`)."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

_DEFAULTS = {
    # Files attached to nothing live are deleted once they are at least this old.
    "LIFECYCLE_FILE_MIN_AGE_DAYS": 7,
    # Containers idle this long (or reported expired by OpenAI) are deleted. OpenAI expires them after
    # 20 idle minutes by default; an hour leaves room for a clock difference and a slow run.
    "LIFECYCLE_CONTAINER_IDLE_MINUTES": 60,
    # Orphans (no tenant known) are deleted by sweeps only when this is on; otherwise only staff delete
    # them, because an orphan could belong to a tenant on legal hold.
    "LIFECYCLE_SWEEP_UNASSIGNED": False,
    "LIFECYCLE_UNASSIGNED_VECTOR_STORE_IDLE_DAYS": 30,
    # Items processed per batch before the task re-enqueues itself.
    "LIFECYCLE_SWEEP_BATCH_SIZE": 50,
    # Rows examined per planning step.
    "LIFECYCLE_SWEEP_PLAN_PAGE": 500,
    # Source rows per set-based planning step (thread sweeps: one INSERT ... SELECT per page).
    "LIFECYCLE_SWEEP_SET_PLAN_PAGE": 20_000,
    # A claimed item whose worker has not renewed its claim within this many seconds is offered again. The
    # claim is renewed before every provider call of the item, so the lease must outlast the slowest single
    # call with its retries: 5 attempts of up to 30 s plus 4 Retry-After waits of up to 60 s is ~390 s.
    # (A sweep whose heartbeat goes stale meanwhile may be resumed by another worker, but not on this item.)
    "LIFECYCLE_ITEM_LEASE_SECONDS": 600,
    # A running sweep whose heartbeat is older than this is taken over by the reaper.
    "LIFECYCLE_SWEEP_STALE_SECONDS": 300,
    # TTL of the per-kind singleton lock, refreshed with the heartbeat.
    "LIFECYCLE_SWEEP_LOCK_SECONDS": 300,
    # Attempts at one item before it is "failed": transient failures (5xx, timeouts that outlived the client's
    # retries; a 429 never counts), and claims of an item whose worker stopped while processing it.
    "LIFECYCLE_MAX_ITEM_ATTEMPTS": 5,
    # Batches in a row that raise outside the per-item handling (no API key, a database error) before the
    # sweep is failed (audited); the reaper resumes it in between, so this is 10 to 20 minutes of retrying.
    "LIFECYCLE_MAX_BATCH_FAILURES": 3,
    # Seconds before a batch that hit a transient failure is retried.
    "LIFECYCLE_TRANSIENT_RETRY_SECONDS": 30,
    "LIFECYCLE_ARCHIVE_MAX_ITEMS": 10_000,
    # A file's re-check asks each live vector store it could be in whether it holds the file (one request a
    # store); with more stores than this the file is kept rather than spend the rate limit on one file.
    "LIFECYCLE_FILE_RECHECK_MAX_STORES": 50,
    "REQUIRES_ACTION_WARN_MINUTES": 7,
}


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def setting(name: str):
    """Django settings first (tests override there), then the environment, then the default."""
    if hasattr(settings, name):
        return getattr(settings, name)
    default = _DEFAULTS[name]
    text = os.environ.get(name)
    if text is None:
        return default
    return _parsed(name, text.strip(), default)


def _parsed(name: str, text: str, default):
    if isinstance(default, bool):
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ImproperlyConfigured(f"{name} must be true or false; it is {text!r}.")
    if text.isascii() and text.isdigit() and int(text) > 0:
        return int(text)
    raise ImproperlyConfigured(f"{name} must be a whole number of at least 1, like {default}; it is {text!r}.")


def check_environment() -> None:
    """Read every setting once at start-up, so a bad value stops the process naming its variable instead of
    failing a sweep hours later."""
    for name in _DEFAULTS:
        setting(name)
