"""apps.core.singleton: one copy of a periodic task at a time, and a lock released only by its holder."""

from django.core.cache import cache

from apps.core.singleton import singleton, singleton_key


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
