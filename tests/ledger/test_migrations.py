"""Data migrations of the ledger, run forwards and backwards on the test database (PostgreSQL or SQLite)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection

from apps.ledger.models import EndUserDailyRollup, EndUserMonthlyRollup, EndUserMonthPartRollup
from tests.ledger.migrations import migrate_ledger_to, migrate_ledger_to_latest

pytestmark = pytest.mark.django_db(transaction=True)  # SQLite refuses schema changes inside a transaction

DAY = dt.date(2026, 11, 20)
# The smallest amount, one with every decimal place, a large one, zero. SQLite keeps a decimal as a float (15
# significant digits, which is all the app ever read back there), so only PostgreSQL gets one of 18 digits.
LARGE = Decimal("98765432.1098765432") if connection.vendor == "postgresql" else Decimal("98765.4321098765")
AMOUNTS = {
    "cost_input_usd": Decimal("0.0000000001"),
    "cost_cached_input_usd": Decimal("1.2345678901"),
    "cost_output_usd": LARGE,
    "cost_tools_usd": Decimal("0"),
    "cost_total_usd": LARGE + Decimal("1.2345678902"),
}
UNITS = {name.removesuffix("_usd") + "_units": int(amount.scaleb(10)) for name, amount in AMOUNTS.items()}
PERIODS = {"enduserdailyrollup": {"day": DAY}, "endusermonthlyrollup": {"month": DAY.replace(day=1)},
           "enduserhalfmonthrollup": {"half": DAY.replace(day=16)}}


def test_0010_turns_end_user_money_into_ledger_units_exactly_and_back_and_0011_sums_parts_of_months(tenant):
    before = migrate_ledger_to("0009_enduser_half_month_rollup")
    try:
        for model_name, period in PERIODS.items():
            before.get_model("ledger", model_name)._default_manager.create(
                tenant_id=tenant.pk, user_id="u_1", runs=3, input_tokens=10, **period, **AMOUNTS)

        migrate_ledger_to_latest()
        # 0011 then fills the rollup by part of a month from the daily rows (November 16-23 holds the 20th).
        for model in (EndUserDailyRollup, EndUserMonthlyRollup, EndUserMonthPartRollup):
            row = model.objects.unscoped().values("runs", "input_tokens", *UNITS).get()
            assert row == {"runs": 3, "input_tokens": 10, **UNITS}, model.__name__
        assert EndUserMonthPartRollup.objects.unscoped().get().part == dt.date(2026, 11, 16)

        after_undo = migrate_ledger_to("0009_enduser_half_month_rollup")
        for model_name in ("enduserdailyrollup", "endusermonthlyrollup"):  # undoing 0011 leaves halves empty
            row = after_undo.get_model("ledger", model_name)._default_manager.values(*AMOUNTS).get()
            assert row == AMOUNTS, model_name
    finally:
        migrate_ledger_to_latest()
