"""A requests-per-window limit on OpenAI management calls shared by every process through Django's cache.

Rule: time is cut into fixed windows of `window_seconds` aligned to the Unix epoch; each window has
`limit` slots (limit = RPM × window / 60, at least 1). A caller claims a slot with `cache.add` — atomic on
Redis (SET NX) and on the database cache (an INSERT that loses on the unique key) — so no window ever
admits more than `limit` calls, whichever process makes them. When a window is full the caller sleeps
until the next one instead of failing. A non-atomic hint key remembers the next free slot so a claim costs
about three cache round trips; a stale hint only makes a caller try a slot that is already taken.
Bursts at a window boundary can reach 2 × limit within one window length, never more than `limit` inside
any single aligned window."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable


class SharedRateLimiter:
    def __init__(self, *, requests_per_minute: int, window_seconds: float = 60.0, name: str = "openai-management",
                 cache=None, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        if requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive")
        if cache is None:
            from django.core.cache import cache as default_cache

            cache = default_cache
        self.cache = cache
        self.window_seconds = float(window_seconds)
        self.limit = max(1, math.floor(requests_per_minute * self.window_seconds / 60.0))
        self.name = name
        self.clock = clock
        self.sleep = sleep
        self.waited_seconds = 0.0
        self.claimed_window: int | None = None  # the window of this instance's last claimed slot

    def _window(self, now: float) -> int:
        return math.floor(now / self.window_seconds)

    def try_acquire(self) -> bool:
        """Claim a slot in the current window without waiting."""
        window = self._window(self.clock())
        prefix = f"ratelimit:{self.name}:{window}"
        ttl = max(2, math.ceil(self.window_seconds * 2))
        start = self.cache.get(f"{prefix}:next", 0)
        for slot in range(start, self.limit):
            if self.cache.add(f"{prefix}:{slot}", 1, timeout=ttl):
                self.cache.set(f"{prefix}:next", slot + 1, timeout=ttl)
                self.claimed_window = window
                return True
        self.cache.set(f"{prefix}:next", self.limit, timeout=ttl)
        return False

    def acquire(self) -> float:
        """Block until a slot is claimed; returns the seconds spent waiting."""
        waited = 0.0
        while not self.try_acquire():
            now = self.clock()
            pause = (self._window(now) + 1) * self.window_seconds - now
            # A little jitter so processes woken together do not stampede the first slots.
            pause = max(pause, 0.001) + random.uniform(0, min(0.05, self.window_seconds / 20))
            self.sleep(pause)
            waited += pause
        self.waited_seconds += waited
        return waited
