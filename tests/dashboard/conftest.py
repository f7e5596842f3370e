"""Dashboard fixtures: a ledger with two tenants' runs, and Playwright pointed at Debian's Chromium."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from decimal import Decimal

import pytest

CHROMIUM = "/usr/bin/chromium"
REQUIRE_SERVICES = os.environ.get("RUNLEDGER_REQUIRE_SERVICES") == "1"


def pytest_collection_modifyitems(config, items):
    """Browser tests skip without Chromium, except in CI (RUNLEDGER_REQUIRE_SERVICES=1) where they fail."""
    if os.path.exists(CHROMIUM) or shutil.which("chromium"):
        return
    for item in items:
        if item.get_closest_marker("browser"):
            if REQUIRE_SERVICES:
                item.add_marker(pytest.mark.usefixtures("_fail_missing_chromium"))
            else:
                item.add_marker(pytest.mark.skip(reason=f"needs Chromium at {CHROMIUM}"))


@pytest.fixture
def _fail_missing_chromium():
    pytest.fail(f"RUNLEDGER_REQUIRE_SERVICES=1 but {CHROMIUM} is missing (apt-get install chromium)")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "headless": True,
        "args": [
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run",
        ],
    }


NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def frozen_now():
    import time_machine

    with time_machine.travel(NOW, tick=False):
        yield NOW


def usd(text: str) -> Decimal:
    return Decimal(text)
