"""Dashboard fixtures: a frozen clock and exact money. (Playwright's launch arguments are in tests/conftest.py.)"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def frozen_now():
    import time_machine

    with time_machine.travel(NOW, tick=False):
        yield NOW


def usd(text: str) -> Decimal:
    return Decimal(text)


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def member_client(client, member_user):
    client.force_login(member_user)
    return client
