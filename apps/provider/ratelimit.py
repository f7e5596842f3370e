"""The shared limit on OpenAI management calls: never more than `limit` in any sliding window, across processes.

Guarantee: with `limit` = floor(RPM × `window_seconds` / 60) (at least 1), no interval of `window_seconds`
— aligned or not — ever contains more than `limit` grants, whichever processes make them.

Rule (GCRA, the "generic cell rate algorithm", one shared number per limiter name): grants are spaced by an
emission interval T, with a small catch-up credit of `credit` grants so a caller that wakes a few
milliseconds late does not lose its turn. The shared state is the theoretical arrival time TAT:

    a call at time `now` is granted iff now >= TAT - credit × T;  then TAT := max(TAT, now) + T

Any limit + 1 consecutive grants s_0 <= ... <= s_limit then satisfy s_limit - s_0 >= (limit - credit) × T,
and T = (window + margin) / (limit - credit), so they span at least window + margin: no window can hold
limit + 1 of them. The `margin` (1% of the window, at most 0.25 s) absorbs the variable delay between the
grant and the request reaching OpenAI, so the bound also holds for arrival times. `credit` covers ~50 ms of
scheduler lateness when grants are under a second apart and never exceeds 5% of the limit. A saturating
caller gets 1 / T grants per second: (limit - credit) / limit × window / (window + margin) of the configured
rate — at least 94%, and at least 98% with the production 60 s window and a limit of 100 or more. Traffic is
spread evenly over the window instead of a whole window's allowance bursting at once (OpenAI enforces its own
limits over shorter periods than a minute).

The read-check-write of TAT is atomic on every backend:
- Redis: one Lua script (EVALSHA) reads and writes TAT; "now" is the Redis server's clock (TIME), so clock
  skew between worker hosts does not matter. A limiter built with an injected clock sends that clock instead.
- Database cache (the embedded default): compare-and-set with one `UPDATE … WHERE cache_key = k AND value =
  <the value read>` on the cache table — a single statement, atomic on PostgreSQL and SQLite; the loser
  re-reads. "now" is the caller's clock (every process shares the machine's clock in the embedded setup).
- Any other backend (LocMem in tests, memcached, files): a process-wide lock plus, for backends shared
  between processes, a short-lived `cache.add` lock key.
If the state is lost (a cache flush or eviction), the next caller starts from "no recent grants", and one
window can then hold up to `credit` + 1 more than the limit: keep the cache from evicting it (the database
cache culls beyond MAX_ENTRIES).
"""

from __future__ import annotations

import base64
import math
import pickle
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

_PROCESS_LOCK = threading.Lock()

# KEYS[1]: the TAT key. ARGV: now ('' = use the server clock), T, credit × T, key TTL in ms.
# Returns {granted 0/1, now, seconds until the next grant is possible}; numbers as strings, because Redis
# truncates Lua floats to integers in replies.
_GCRA_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
local allow_at = tat - tolerance
if now < allow_at then
  return {0, string.format('%.6f', now), string.format('%.6f', allow_at - now)}
end
local new_tat = math.max(tat, now) + interval
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', tonumber(ARGV[4]))
return {1, string.format('%.6f', now), '0'}
"""


@dataclass(frozen=True)
class _Decision:
    granted: bool
    now: float  # the clock the decision was made on (the Redis server's, or the limiter's)
    wait: float  # seconds until a grant is possible when refused (0 when granted)


class SharedRateLimiter:
    """At most `limit` grants in any `window_seconds`, shared by every limiter with the same `name` on the
    same cache. `acquire()` blocks until granted and returns the seconds it waited; `try_acquire()` never
    waits. `granted_at` is when this instance's last grant was decided (on the clock that decided it)."""

    def __init__(self, *, requests_per_minute: int, window_seconds: float = 60.0, name: str = "openai-management",
                 cache=None, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        if requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive")
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if cache is None:
            from django.core.cache import cache as default_cache

            cache = default_cache
        self.cache = cache
        self.window_seconds = float(window_seconds)
        self.limit = max(1, math.floor(requests_per_minute * self.window_seconds / 60.0))
        self.name = name
        self.clock = clock
        self.sleep = sleep
        self.margin_seconds = min(0.01 * self.window_seconds, 0.25)
        # Catch-up credit only where 50 ms of lateness would matter (grants under a second apart).
        spacing = self.window_seconds / self.limit
        self.credit = min(self.limit // 20, math.ceil(0.05 / spacing)) if spacing < 1.0 else 0
        self.interval = (self.window_seconds + self.margin_seconds) / (self.limit - self.credit)
        self.tolerance = self.credit * self.interval
        self.waited_seconds = 0.0
        self.granted_at: float | None = None
        self.key = f"ratelimit:gcra:{name}"
        self._use_server_clock = clock is time.time
        self._script = None

    # -- the shared decision ----------------------------------------------------------------------
    def _decide(self, tat: float, now: float) -> tuple[_Decision, float]:
        allow_at = tat - self.tolerance
        if now < allow_at:
            return _Decision(False, now, allow_at - now), tat
        return _Decision(True, now, 0.0), max(tat, now) + self.interval

    def _backend(self):
        """The cache object itself (django.core.cache.cache is a per-thread proxy)."""
        from django.utils.connection import ConnectionProxy

        if isinstance(self.cache, ConnectionProxy):
            return self.cache._connections[self.cache._alias]
        return self.cache

    def _state_ttl(self) -> float:
        # After a grant TAT <= now + tolerance + interval; once that has passed a missing key reads the same.
        return self.tolerance + self.interval + 1.0

    def _decide_redis(self, backend) -> _Decision:
        key = backend.make_and_validate_key(self.key)
        client = backend._cache.get_client(key, write=True)
        if self._script is None:
            self._script = client.register_script(_GCRA_LUA)
        now_arg = "" if self._use_server_clock else repr(float(self.clock()))
        granted, now, wait = self._script(keys=[key], client=client, args=[
            now_arg, repr(self.interval), repr(self.tolerance), math.ceil(self._state_ttl() * 1000)])
        return _Decision(bool(int(granted)), float(now), float(wait))

    def _decide_database(self, backend) -> _Decision:
        from django.db import connections, router, transaction

        db = router.db_for_write(backend.cache_model_class)
        connection = connections[db]
        quote = connection.ops.quote_name
        table, key = quote(backend._table), backend.make_and_validate_key(self.key)
        for _ in range(100):
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {quote('value')} FROM {table} WHERE {quote('cache_key')} = %s", [key])
                row = cursor.fetchone()
            if row is None:
                # No state yet: create it (an INSERT; a concurrent creator makes this a no-op) and re-read.
                backend.add(self.key, 0.0, timeout=None)
                continue
            stored = row[0]
            tat = float(pickle.loads(base64.b64decode(stored.encode("latin1"))))
            decision, new_tat = self._decide(tat, self.clock())
            if not decision.granted:
                return decision
            encoded = base64.b64encode(pickle.dumps(new_tat, backend.pickle_protocol)).decode("latin1")
            with transaction.atomic(using=db), connection.cursor() as cursor:
                cursor.execute(f"UPDATE {table} SET {quote('value')} = %s WHERE {quote('cache_key')} = %s "
                               f"AND {quote('value')} = %s", [encoded, key, stored])
                if cursor.rowcount == 1:
                    return decision
            # Another process granted in between: decide again on its TAT.
        return _Decision(False, self.clock(), 0.002)

    def _decide_locked(self, backend) -> _Decision:
        from django.core.cache.backends.locmem import LocMemCache

        shared_between_processes = not isinstance(backend, LocMemCache)
        with _PROCESS_LOCK:
            lock_key, token = f"{self.key}:lock", uuid.uuid4().hex
            if shared_between_processes and not backend.add(lock_key, token, timeout=5):
                return _Decision(False, self.clock(), 0.002)  # another process is deciding; retry shortly
            try:
                tat = float(backend.get(self.key, 0.0))
                decision, new_tat = self._decide(tat, self.clock())
                if decision.granted:
                    backend.set(self.key, new_tat, timeout=self._state_ttl())
                return decision
            finally:
                if shared_between_processes and backend.get(lock_key) == token:
                    backend.delete(lock_key)

    def _attempt(self) -> _Decision:
        from django.core.cache.backends.db import DatabaseCache
        from django.core.cache.backends.redis import RedisCache

        backend = self._backend()
        if isinstance(backend, RedisCache):
            decision = self._decide_redis(backend)
        elif isinstance(backend, DatabaseCache):
            decision = self._decide_database(backend)
        else:
            decision = self._decide_locked(backend)
        if decision.granted:
            self.granted_at = decision.now
        return decision

    # -- public --------------------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """Take a grant if one is free now; never waits."""
        return self._attempt().granted

    def acquire(self) -> float:
        """Block until granted; returns the seconds spent waiting."""
        waited = 0.0
        while True:
            decision = self._attempt()
            if decision.granted:
                break
            # A little jitter so waiters woken together do not all ask at the same instant; the catch-up
            # credit absorbs it for a lone caller.
            pause = decision.wait + random.uniform(0, min(0.002, self.interval / 20))
            self.sleep(pause)
            waited += pause
        self.waited_seconds += waited
        return waited
