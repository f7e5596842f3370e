"""Data migrations of the lifecycle app, run forwards on the test database (PostgreSQL or SQLite)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tests.ledger.migrations import migrate_app_to, migrate_ledger_to_latest

pytestmark = pytest.mark.django_db(transaction=True)  # SQLite refuses schema changes inside a transaction


def test_0010_adds_up_each_metered_days_tenant_meters_leaving_the_unassigned_stores_out(tenant, other_tenant):
    from apps.lifecycle.models import StorageDailyTotal

    before = migrate_app_to("lifecycle", "0009_storage_meter_sums_from_the_index")
    try:
        meters = before.get_model("lifecycle", "StorageMeter")._default_manager
        for owner, day, cost in ((tenant, 3, Decimal("1.2345678901")), (other_tenant, 3, Decimal("9876.5432109876")),
                                 (None, 3, Decimal("500")), (None, 4, Decimal("7"))):
            meters.create(tenant_id=owner and owner.pk, day=dt.date(2026, 11, day), cost_usd=cost)

        migrate_ledger_to_latest()
        assert dict(StorageDailyTotal.objects.values_list("day", "cost_usd")) == {
            dt.date(2026, 11, 3): Decimal("1.2345678901") + Decimal("9876.5432109876")}
    finally:
        migrate_ledger_to_latest()
