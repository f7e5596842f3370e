"""Data migrations of the ledger, run forwards and backwards on the test database (PostgreSQL or SQLite)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection

from apps.ledger.models import EndUserDailyRollup, EndUserMonthlyRollup, EndUserMonthPartRollup
from tests.ledger.migrations import migrate_ledger_to, migrate_ledger_to_latest

pytestmark = pytest.mark.django_db(transaction=True)  # SQLite refuses schema changes inside a transaction

# The smallest amount, one with every decimal place, a large one, zero. SQLite keeps a decimal as a float (15
# significant digits, which is all the app ever read back there): only PostgreSQL gets 18 digits, and on
# SQLite even four times the total stays within 15.
LARGE = Decimal("98765432.1098765432") if connection.vendor == "postgresql" else Decimal("9876.5432109876")
AMOUNTS = {
    "cost_input_usd": Decimal("0.0000000001"),
    "cost_cached_input_usd": Decimal("1.2345678901"),
    "cost_output_usd": LARGE,
    "cost_tools_usd": Decimal("0"),
    "cost_total_usd": LARGE + Decimal("1.2345678902"),
}
UNITS = {name.removesuffix("_usd") + "_units": int(amount.scaleb(10)) for name, amount in AMOUNTS.items()}
# One daily row on each of these November days, every part of the month (1-8, 9-15, 16-23, 24-30) and both
# halves (1-15, 16-30) holding some, and their edges.
DAYS = (3, 9, 15, 16, 23, 24, 30)


def _times(amounts: dict, count: int) -> dict:
    return {name: amount * count for name, amount in amounts.items()}


def test_0010_turns_end_user_money_into_ledger_units_and_0011_sums_the_parts_of_months_and_both_undo(tenant):
    before = migrate_ledger_to("0009_enduser_half_month_rollup")
    try:
        daily = before.get_model("ledger", "EndUserDailyRollup")._default_manager
        for day in DAYS:
            daily.create(tenant_id=tenant.pk, user_id="u_1", runs=1, input_tokens=10, day=dt.date(2026, 11, day),
                         **AMOUNTS)
        before.get_model("ledger", "EndUserMonthlyRollup")._default_manager.create(
            tenant_id=tenant.pk, user_id="u_1", runs=1, input_tokens=10, month=dt.date(2026, 11, 1), **AMOUNTS)

        migrate_ledger_to_latest()
        for model in (EndUserDailyRollup, EndUserMonthlyRollup):
            rows = list(model.objects.unscoped().values("runs", "input_tokens", *UNITS))
            assert rows == [{"runs": 1, "input_tokens": 10, **UNITS}] * len(rows), model.__name__
        parts = {row.pop("part"): row for row in EndUserMonthPartRollup.objects.unscoped().values("part", "runs", *UNITS)}
        assert parts == {dt.date(2026, 11, first): {"runs": count, **_times(UNITS, count)}
                         for first, count in ((1, 1), (9, 2), (16, 2), (24, 2))}

        undone = migrate_ledger_to("0009_enduser_half_month_rollup")
        for model_name in ("enduserdailyrollup", "endusermonthlyrollup"):
            rows = list(undone.get_model("ledger", model_name)._default_manager.values(*AMOUNTS))
            assert rows == [AMOUNTS] * len(rows), model_name
        # Undoing 0011 fills the half-month rollup again from the daily rows (the code of 0010 reads it).
        halves = {row.pop("half"): row for row in
                  undone.get_model("ledger", "EndUserHalfMonthRollup")._default_manager.values("half", "runs", *AMOUNTS)}
        assert halves == {dt.date(2026, 11, 1): {"runs": 3, **_times(AMOUNTS, 3)},
                          dt.date(2026, 11, 16): {"runs": 4, **_times(AMOUNTS, 4)}}
    finally:
        migrate_ledger_to_latest()


def test_0015_fills_the_tenant_day_rollup_with_each_tenant_days_sums_exactly(tenant, other_tenant):
    from apps.ledger.models import TenantDailyRollup

    before = migrate_ledger_to("0014_model_names_as_long_as_fine_tuned_ids")
    try:
        daily = before.get_model("ledger", "DailyRollup")._default_manager
        for model, feature, runs in (("gpt-5.4", "chat", 2), ("gpt-5-mini", "chat", 1), ("gpt-5.4", "", 3)):
            daily.create(tenant_id=tenant.pk, day=dt.date(2026, 11, 3), model=model, feature=feature, runs=runs,
                         unpriced_runs=1, cost_total_usd=AMOUNTS["cost_cached_input_usd"])
        daily.create(tenant_id=other_tenant.pk, day=dt.date(2026, 11, 3), model="gpt-5.4", runs=1,
                     cost_total_usd=AMOUNTS["cost_input_usd"])

        migrate_ledger_to_latest()
        rows = {row.pop("tenant_id"): row for row in TenantDailyRollup.objects.unscoped().values(
            "tenant_id", "day", "runs", "unpriced_runs", "cost_total_usd")}
        assert rows == {
            tenant.pk: {"day": dt.date(2026, 11, 3), "runs": 6, "unpriced_runs": 3,
                        "cost_total_usd": AMOUNTS["cost_cached_input_usd"] * 3},
            other_tenant.pk: {"day": dt.date(2026, 11, 3), "runs": 1, "unpriced_runs": 0,
                              "cost_total_usd": AMOUNTS["cost_input_usd"]},
        }
    finally:
        migrate_ledger_to_latest()


def test_0020_adds_up_each_days_tenant_days_into_the_day_totals_over_every_tenant_exactly(tenant, other_tenant):
    from apps.ledger.models import EveryTenantDailyRollup

    before = migrate_ledger_to("0019_rollup_compaction_of_open_periods")
    try:
        tenant_days = before.get_model("ledger", "TenantDailyRollup")._default_manager
        for owner, day, runs, unpriced, cost in (
                (tenant, 3, 2, 1, AMOUNTS["cost_cached_input_usd"]), (other_tenant, 3, 1, 0, AMOUNTS["cost_input_usd"]),
                (tenant, 4, 5, 0, LARGE)):
            tenant_days.create(tenant_id=owner.pk, day=dt.date(2026, 11, day), runs=runs, unpriced_runs=unpriced,
                               cost_total_usd=cost)

        migrate_ledger_to_latest()
        assert {row.pop("day"): row for row in EveryTenantDailyRollup.objects.values(
            "day", "runs", "unpriced_runs", "cost_total_usd")} == {
            dt.date(2026, 11, 3): {"runs": 3, "unpriced_runs": 1,
                                   "cost_total_usd": AMOUNTS["cost_cached_input_usd"] + AMOUNTS["cost_input_usd"]},
            dt.date(2026, 11, 4): {"runs": 5, "unpriced_runs": 0, "cost_total_usd": LARGE},
        }
    finally:
        migrate_ledger_to_latest()

