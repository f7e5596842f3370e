"""apps.core.singleton: one copy of a periodic task at a time, and a lock released only by its holder."""

from django.core.cache import cache

from apps.core.singleton import singleton, singleton_key, singleton_renew


def test_a_copy_finding_the_lock_held_returns_skipped_and_the_holder_releases_it():
    @singleton("test.job")
    def job():
        assert cache.get(singleton_key("test.job"))  # held while running
        return {"done": True}

    cache.add(singleton_key("test.job"), "another-copy", 60)
    assert job() == {"skipped": True}
    cache.delete(singleton_key("test.job"))
    assert job() == {"done": True} and cache.get(singleton_key("test.job")) is None


def test_a_copy_that_outlived_its_lock_leaves_the_newer_copys_lock_alone():
    @singleton("test.slow")
    def slow():
        cache.set(singleton_key("test.slow"), "a-newer-copy", 60)  # ours lapsed; another copy took it
        return {"done": True}

    assert slow() == {"done": True}
    assert cache.get(singleton_key("test.slow")) == "a-newer-copy"
    cache.delete(singleton_key("test.slow"))


def test_renewing_gives_the_lock_its_full_time_again_from_now(time_machine, settings):
    # Expiry read on the test's clock: Redis keeps its own, which time_machine cannot move.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    time_machine.move_to("2026-11-01T00:00:00Z", tick=False)

    @singleton("test.long", seconds=60)
    def long_job():
        time_machine.shift(50)
        assert singleton_renew()
        time_machine.shift(50)  # 100 s after it started: held only because it was renewed at 50 s
        held = cache.get(singleton_key("test.long"))
        time_machine.shift(61)  # not renewed since: lapsed, so a dead worker's lock frees itself
        return {"held_after_renewal": held is not None, "lapsed": cache.get(singleton_key("test.long")) is None}

    assert long_job() == {"held_after_renewal": True, "lapsed": True}


def test_renewing_a_lapsed_lock_leaves_the_newer_copys_lock_alone():
    @singleton("test.lapsed", seconds=60)
    def lapsed():
        cache.set(singleton_key("test.lapsed"), "a-newer-copy", 5)
        return singleton_renew()

    assert lapsed() is False
    assert cache.get(singleton_key("test.lapsed")) == "a-newer-copy"
    cache.delete(singleton_key("test.lapsed"))


def test_renewing_outside_a_singleton_task_does_nothing():
    assert singleton_renew() is False
