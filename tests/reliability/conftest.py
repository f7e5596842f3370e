"""Drill tests start private servers from installed binaries (initdb/pg_ctl, redis-server), not the shared
services: they skip locally when a binary is missing and fail in CI (RUNLEDGER_REQUIRE_SERVICES=1)."""

import os

import pytest

from apps.drills.infra import postgres_available, redis_available

REQUIRE = os.environ.get("RUNLEDGER_REQUIRE_SERVICES") == "1"


def _need(available: bool, what: str) -> None:
    if available:
        return
    if REQUIRE:
        pytest.fail(f"RUNLEDGER_REQUIRE_SERVICES=1 but {what} is not installed")
    pytest.skip(f"needs {what}")


@pytest.fixture
def postgres_binaries():
    _need(postgres_available(), "the PostgreSQL server binaries (initdb, pg_ctl)")


@pytest.fixture
def postgres_server():
    """A private instance, or a scratch database on DATABASE_URL's server."""
    url = os.environ.get("DATABASE_URL", "")
    _need(postgres_available() or url.startswith("postgres"), "PostgreSQL (binaries or DATABASE_URL)")


@pytest.fixture
def redis_binaries():
    _need(redis_available(), "redis-server and redis-cli")
