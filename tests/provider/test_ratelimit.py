"""SharedRateLimiter: never more than `limit` grants in ANY sliding window of `window_seconds` (not only in
aligned windows), across limiter instances sharing a cache (LocMem, the database cache, Redis), while a
saturating caller still gets >= 90% of the configured rate."""

from __future__ import annotations

import math
import random
import threading
import time
import warnings

import pytest
from django.conf import settings
from django.core.cache import cache
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.provider.ratelimit import SharedRateLimiter

warnings.filterwarnings("ignore", category=DeprecationWarning)

START = 1_000_000.0


class FakeTime:
    """A shared fake clock; `lateness` makes every sleep overshoot, as a loaded scheduler does."""

    def __init__(self, start: float = START, lateness: float = 0.0, seed: int = 1):
        self.now = start
        self.lock = threading.Lock()
        self.lateness = lateness
        self.rng = random.Random(seed)

    def time(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds + self.rng.uniform(0, self.lateness)


def max_in_any_window(times: list[float], window: float) -> int:
    """The most moments inside any half-open interval [s, s + window), whatever s."""
    times, most, start = sorted(times), 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


def utilization(times: list[float], limiter: SharedRateLimiter) -> float:
    """Grants per second after the first one, as a share of limit / window."""
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0]) / (limiter.limit / limiter.window_seconds)


def limiter_on(backend, fake: FakeTime | None = None, *, rpm: int, window: float, name: str = "t") -> SharedRateLimiter:
    clock = {"clock": fake.time, "sleep": fake.sleep} if fake else {}
    return SharedRateLimiter(requests_per_minute=rpm, window_seconds=window, name=name, cache=backend, **clock)


@pytest.fixture
def database_cache(db):
    """A DatabaseCache on its own table in the test database (the embedded default's backend)."""
    from django.core.cache.backends.db import DatabaseCache
    from django.core.management.commands.createcachetable import Command

    command = Command()
    command.verbosity = 0
    command.create_table("default", "rl_test_ratelimit_cache", False)
    return DatabaseCache("rl_test_ratelimit_cache", {"OPTIONS": {"MAX_ENTRIES": 10_000}})


@pytest.fixture
def redis_cache():
    from django.core.cache.backends.redis import RedisCache

    backend = RedisCache(settings.REDIS_URL, {"KEY_PREFIX": f"rltest{time.time_ns()}"})
    yield backend
    client = backend._cache.get_client(write=True)
    for key in client.scan_iter(match=f"{backend.key_prefix}*"):
        client.delete(key)


# -- the rule ------------------------------------------------------------------------------------
@pytest.mark.parametrize("rpm, window", [(1, 60.0), (180, 1.0), (600, 60.0), (1200, 10.0), (3000, 60.0), (1500, 0.2)])
def test_the_spacing_makes_any_limit_plus_one_grants_span_more_than_a_window(rpm, window):
    limiter = limiter_on(cache, rpm=rpm, window=window)
    assert limiter.limit == max(1, rpm * window // 60)
    # GCRA: limit + 1 grants span at least (limit - credit) × interval, which must exceed the window.
    assert (limiter.limit - limiter.credit) * limiter.interval >= window + limiter.margin_seconds > window
    assert limiter.credit <= limiter.limit // 20
    # ... and the steady rate 1 / interval is still >= 94% of limit / window (98% at 60 s from a limit of 100).
    assert (1 / limiter.interval) / (limiter.limit / window) >= (0.98 if window == 60 and limiter.limit >= 100 else 0.94)


@pytest.mark.parametrize("rpm, window", [(1, 60.0), (180, 1.0), (600, 60.0), (1200, 10.0), (3000, 60.0), (1500, 0.2)])
def test_a_saturating_caller_never_exceeds_the_limit_in_any_window_and_uses_over_90_percent(rpm, window):
    fake = FakeTime()
    limiter = limiter_on(cache, fake, rpm=rpm, window=window)
    granted = []
    for _ in range(max(40, limiter.limit * 4)):
        limiter.acquire()
        granted.append(fake.time())
    assert max_in_any_window(granted, window) <= limiter.limit
    assert utilization(granted, limiter) >= 0.9
    assert limiter.waited_seconds > 0


def test_a_caller_woken_late_keeps_its_rate_thanks_to_the_catch_up_credit():
    fake = FakeTime(lateness=0.004)  # every sleep overshoots by up to 4 ms; the interval is ~51 ms
    limiter = limiter_on(cache, fake, rpm=1200, window=10.0)
    assert limiter.credit == 1
    granted = []
    for _ in range(1000):
        limiter.acquire()
        granted.append(fake.time())
    assert max_in_any_window(granted, 10.0) <= limiter.limit
    assert utilization(granted, limiter) >= 0.95


def test_a_burst_across_a_window_boundary_cannot_pass_twice_the_limit():
    """The fixed-window limiter let `limit` calls through just before a boundary and `limit` more just after."""
    fake = FakeTime(start=1_000_009.5)  # half a second before a 10 s boundary
    limiter = limiter_on(cache, fake, rpm=1200, window=10.0)
    granted = []
    for _ in range(400):
        if limiter.try_acquire():
            granted.append(fake.time())
        fake.now += 0.0025  # 400 attempts over one second: 0.5 s each side of the boundary
    assert max_in_any_window(granted, 10.0) <= 200
    assert len(granted) <= 1 + limiter.credit + 1 / limiter.interval + 1  # spaced, not a burst of 200


def test_try_acquire_never_waits_and_refuses_until_the_interval_has_passed():
    fake = FakeTime()
    limiter = limiter_on(cache, fake, rpm=120, window=1.0)  # 2 per second: one every ~0.505 s
    assert limiter.limit == 2 and limiter.credit == 0
    assert limiter.try_acquire()
    assert limiter.granted_at == START
    assert not limiter.try_acquire()
    fake.now += limiter.interval - 0.001
    assert not limiter.try_acquire()
    fake.now += 0.001
    assert limiter.try_acquire()
    assert fake.time() == START + limiter.interval  # try_acquire itself never slept


def test_acquire_returns_the_seconds_it_waited():
    fake = FakeTime()
    limiter = limiter_on(cache, fake, rpm=60, window=1.0)  # one per ~1.01 s
    assert limiter.acquire() == 0.0
    waited = limiter.acquire()
    assert limiter.interval <= waited <= limiter.interval + 0.002
    assert fake.time() - START == pytest.approx(waited)
    assert limiter.waited_seconds == pytest.approx(waited)


def test_limiters_with_the_same_name_share_the_limit_and_other_names_do_not():
    fake = FakeTime()
    first = limiter_on(cache, fake, rpm=120, window=1.0, name="shared")
    second = limiter_on(cache, fake, rpm=120, window=1.0, name="shared")
    other = limiter_on(cache, fake, rpm=120, window=1.0, name="other")
    assert first.try_acquire()
    assert not second.try_acquire()
    assert other.try_acquire()
    fake.now += first.interval
    assert second.try_acquire() and not first.try_acquire()


def test_the_limit_must_be_positive():
    with pytest.raises(ValueError, match="requests_per_minute"):
        SharedRateLimiter(requests_per_minute=0, cache=cache)
    with pytest.raises(ValueError, match="window_seconds"):
        SharedRateLimiter(requests_per_minute=10, window_seconds=0, cache=cache)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rpm=st.integers(1, 4000), window=st.sampled_from([0.5, 1.0, 10.0, 60.0]),
       gaps=st.lists(st.floats(0, 3.0), min_size=20, max_size=300), instances=st.integers(1, 4), data=st.data())
def test_any_pattern_of_attempts_from_any_instances_stays_within_the_limit(rpm, window, gaps, instances, data):
    cache.clear()
    fake = FakeTime()
    limiters = [limiter_on(cache, fake, rpm=rpm, window=window, name="prop") for _ in range(instances)]
    granted = []
    for gap in gaps:
        fake.now += gap * limiters[0].interval  # attempts at irregular times, bursts (gap 0) included
        limiter = limiters[data.draw(st.integers(0, instances - 1))]
        if limiter.try_acquire():
            granted.append(fake.time())
    assert max_in_any_window(granted, window) <= limiters[0].limit


# -- several instances on real threads (as worker processes share one cache) ----------------------
# Real threads on a real clock: the scheduler decides how soon a waiting thread runs again, so on a loaded
# machine (the suite on two workers beside other work) their share of the rate drops, once to 85% here. These
# tests pin that the limit is never exceeded; the >= 90% share is pinned on an injected clock above and measured
# for real by `bench sweeps` (docs/benchmarks.md). Here it only has to show the limiter is not starving callers.
REAL_THREADS_MIN_UTILIZATION = 0.6


def _saturate_from_threads(make_limiter, *, workers: int, seconds: float) -> tuple[list[float], SharedRateLimiter]:
    granted: list[float] = []
    lock = threading.Lock()
    deadline = time.time() + seconds
    limiters = [make_limiter() for _ in range(workers)]
    failures: list[BaseException] = []

    def worker(limiter):
        try:
            while time.time() < deadline:
                limiter.acquire()
                with lock:
                    granted.append(limiter.granted_at)
        except BaseException as error:  # surfaced below: a thread's assertion must fail the test
            failures.append(error)

    threads = [threading.Thread(target=worker, args=(limiter,)) for limiter in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    return granted, limiters[0]


def test_several_limiters_on_real_threads_never_exceed_the_limit_on_locmem():
    granted, limiter = _saturate_from_threads(
        lambda: SharedRateLimiter(requests_per_minute=6000, window_seconds=0.25, name="threads", cache=cache),
        workers=5, seconds=1.6)
    assert limiter.limit == 25
    assert max_in_any_window(granted, 0.25) <= 25
    assert utilization(granted, limiter) >= REAL_THREADS_MIN_UTILIZATION


def test_the_database_cache_grants_by_compare_and_set(database_cache):
    fake = FakeTime()
    first = limiter_on(database_cache, fake, rpm=1200, window=10.0, name="db")
    second = limiter_on(database_cache, fake, rpm=1200, window=10.0, name="db")
    granted = []
    for step in range(600):
        if (first if step % 3 else second).try_acquire():
            granted.append(fake.time())
        fake.now += 0.02
    assert max_in_any_window(granted, 10.0) <= 200
    assert utilization(granted, first) >= 0.9


def test_the_database_cache_loser_of_a_race_decides_again_on_the_winners_state(database_cache):
    """Another process grants between this limiter's read and its compare-and-set: the UPDATE matches no
    row, and the retry sees the winner's TAT and refuses."""
    fake = FakeTime()
    rival = limiter_on(database_cache, fake, rpm=60, window=1.0, name="race")
    assert rival.try_acquire()
    fake.now += rival.interval  # one grant is free again
    raced = []

    def clock_with_a_rival():
        if not raced:
            raced.append(rival.try_acquire())  # wins the free grant after we read the state
        return fake.time()

    loser = SharedRateLimiter(requests_per_minute=60, window_seconds=1.0, name="race", cache=database_cache,
                              clock=clock_with_a_rival, sleep=fake.sleep)
    assert not loser.try_acquire()
    assert raced == [True]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_several_limiters_on_real_threads_never_exceed_the_limit_on_the_database_cache():
    from django.core.cache.backends.db import DatabaseCache
    from django.core.management.commands.createcachetable import Command
    from django.db import connection, connections

    command = Command()
    command.verbosity = 0
    command.create_table("default", "rl_test_ratelimit_threads", False)
    try:
        def make():
            return SharedRateLimiter(requests_per_minute=2400, window_seconds=0.5, name="dbthreads",
                                     cache=DatabaseCache("rl_test_ratelimit_threads", {}))

        def run():
            try:
                return _saturate_from_threads(make, workers=4, seconds=2.5)
            finally:
                connections.close_all()

        granted, limiter = run()
        assert limiter.limit == 20
        assert max_in_any_window(granted, 0.5) <= 20
        assert utilization(granted, limiter) >= REAL_THREADS_MIN_UTILIZATION
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE rl_test_ratelimit_threads")


@pytest.mark.redis
def test_redis_applies_the_rule_in_one_script_with_an_injected_clock(redis_cache):
    fake = FakeTime()
    limiter = limiter_on(redis_cache, fake, rpm=1200, window=10.0, name="redis-fake")
    granted = []
    for _ in range(800):
        limiter.acquire()
        granted.append(fake.time())
    assert max_in_any_window(granted, 10.0) <= 200
    assert utilization(granted, limiter) >= 0.95
    # The state is one key that expires once it no longer matters.
    client = redis_cache._cache.get_client(write=True)
    ttl_ms = client.pttl(redis_cache.make_and_validate_key(limiter.key))
    assert 0 < ttl_ms <= math.ceil((limiter.tolerance + limiter.interval + 1.0) * 1000)


@pytest.mark.redis
def test_several_limiters_on_real_threads_never_exceed_the_limit_on_redis_server_time(redis_cache):
    granted, limiter = _saturate_from_threads(
        lambda: SharedRateLimiter(requests_per_minute=6000, window_seconds=0.25, name="redis-threads",
                                  cache=redis_cache),
        workers=5, seconds=1.6)
    assert limiter._use_server_clock
    assert max_in_any_window(granted, 0.25) <= 25
    assert utilization(granted, limiter) >= REAL_THREADS_MIN_UTILIZATION
    assert abs(max(granted) - time.time()) < 2  # stamped with the Redis server's clock


@pytest.mark.redis
def test_the_default_cache_proxy_reaches_redis_when_configured():
    limiter = SharedRateLimiter(requests_per_minute=60, window_seconds=1.0, name=f"proxy-{time.time_ns()}")
    assert limiter.try_acquire() and not limiter.try_acquire()
