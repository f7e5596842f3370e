"""Data migrations of the alerts app, run forwards on the test database (PostgreSQL or SQLite)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.ledger.migrations import migrate_app_to, migrate_ledger_to_latest

pytestmark = pytest.mark.django_db(transaction=True)  # SQLite refuses schema changes inside a transaction


def test_0006_opens_every_alert_when_it_was_raised_in_batches(tenant, monkeypatch):
    """Listed by opened_at after the upgrade, the alerts keep their order: each opened when it was raised (not
    all at the moment of the upgrade, the column's database default), batch after batch."""
    from apps.alerts.models import Alert

    backfill = __import__("apps.alerts.migrations.0006_alert_opened_again", fromlist=["BACKFILL_BATCH"])
    monkeypatch.setattr(backfill, "BACKFILL_BATCH", 2)  # five alerts: three batches
    before = migrate_app_to("alerts", "0005_alert_resolution")
    try:
        alerts = before.get_model("alerts", "Alert").unscoped_objects
        raised = {f"budget:{n}": dt.datetime(2026, 10, n + 1, 9, tzinfo=dt.UTC) for n in range(5)}
        for cause_key, when in raised.items():
            alert = alerts.create(tenant_id=tenant.pk, kind="budget", cause_key=cause_key, title=cause_key)
            alerts.filter(pk=alert.pk).update(created_at=when)

        migrate_ledger_to_latest()

        assert dict(Alert.unscoped_objects.values_list("cause_key", "opened_at")) == raised
        assert set(Alert.unscoped_objects.values_list("times_reopened", flat=True)) == {0}
    finally:
        migrate_ledger_to_latest()
