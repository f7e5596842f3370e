"""One copy at a time of a periodic task: beat sends one on schedule, and the broker hands a task that outlasts
its visibility timeout to a second worker while the first still runs it."""

from __future__ import annotations

import functools
import logging
import uuid

from django.core.cache import cache

logger = logging.getLogger(__name__)


def singleton_key(name: str) -> str:
    return f"lock:{name}"


def singleton(name: str, *, seconds: int = 10 * 60, skipped=None):
    """Run the task body only while holding `name`'s cache lock; a copy that finds it held returns `skipped`
    (default {"skipped": True}) at once. The lock lapses after `seconds` (a worker that dies holding it frees it
    then) and is released only by its holder, so a copy that outlived it never drops a newer copy's lock."""

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            key, holder = singleton_key(name), uuid.uuid4().hex
            if not cache.add(key, holder, seconds):
                logger.info("%s already running; skipped", name)
                return {"skipped": True} if skipped is None else skipped
            try:
                return fn(*args, **kwargs)
            finally:
                if cache.get(key) == holder:
                    cache.delete(key)

        return wrapper

    return decorator
