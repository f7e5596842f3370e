"""One copy at a time of a periodic task: beat sends one on schedule, and the broker hands a task that outlasts
its visibility timeout to a second worker while the first still runs it."""

from __future__ import annotations

import contextvars
import functools
import logging
import uuid
from dataclasses import dataclass

from django.core.cache import cache

logger = logging.getLogger(__name__)


def singleton_key(name: str) -> str:
    return f"lock:{name}"


@dataclass(frozen=True)
class _Lease:
    key: str
    holder: str
    seconds: int


# The lock the singleton task running in this context holds, for singleton_renew.
_held: contextvars.ContextVar[_Lease | None] = contextvars.ContextVar("singleton_lease", default=None)


def singleton(name: str, *, seconds: int = 10 * 60, skipped=None):
    """Run the task body only while holding `name`'s cache lock; a copy that finds it held returns `skipped`
    (default {"skipped": True}) at once. The lock lapses after `seconds` (a worker that dies holding it frees it
    then) and is released only by its holder, so a copy that outlived it never drops a newer copy's lock. A
    body that can run longer than `seconds` calls singleton_renew() as it makes progress, so `seconds` can stay
    short: it is how long a dead worker's lock blocks the next copy."""

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            key, holder = singleton_key(name), uuid.uuid4().hex
            if not cache.add(key, holder, seconds):
                logger.info("%s already running; skipped", name)
                return {"skipped": True} if skipped is None else skipped
            token = _held.set(_Lease(key, holder, seconds))
            try:
                return fn(*args, **kwargs)
            finally:
                _held.reset(token)
                if cache.get(key) == holder:
                    cache.delete(key)

        return wrapper

    return decorator


def singleton_renew() -> bool:
    """Give the lock of the singleton task running here its full `seconds` again, from now. False when called
    outside one, or when the lock lapsed meanwhile (another copy may hold it now: the caller's work is no
    longer exclusive, and the lock is left to its new holder)."""
    lease = _held.get()
    if lease is None or cache.get(lease.key) != lease.holder:
        return False
    # Between the read and the touch the lock could lapse and be taken: the newer copy's lock would then
    # live `seconds` longer than it asked, which delays a later copy and never lets two run.
    return bool(cache.touch(lease.key, lease.seconds))
