"""With DATABASE_URL / REDIS_URL set (CI), the suite really runs on PostgreSQL and Redis."""

import pytest
from django.core.cache import cache, caches
from django.db import connection


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_suite_runs_on_postgresql():
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('server_version_num')::int")
        assert cursor.fetchone()[0] >= 130000


@pytest.mark.redis
def test_the_cache_locks_and_rate_limits_live_in_redis():
    assert type(caches["default"]).__name__ == "RedisCache"
    assert cache.add("suite-redis-probe", 1, 5) is True
    assert cache.add("suite-redis-probe", 2, 5) is False
    assert caches["default"]._cache.get_client().ping() is True
