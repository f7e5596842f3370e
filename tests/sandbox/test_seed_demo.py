"""`manage.py seed_demo` against a running sandbox: the scenario lands in the ledger through ingest, metering and
reconciliation, only the billing drift the sandbox injected is flagged, and a second run changes nothing."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.management import call_command

from apps.core.models import AuditEvent
from apps.ledger.models import Run
from apps.lifecycle.models import StorageMeter
from apps.reconciliation.models import LateLedgerDay, ReconciliationLine
from apps.reconciliation.services import reconciliation_recompare_late
from apps.sandbox.demo import DEMO_SEEDED, demo_scenario_end
from apps.tenants.models import Tenant

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 9, 10, 12, tzinfo=dt.UTC)


def _flagged() -> set[tuple[dt.date, str]]:
    return set(ReconciliationLine.objects.filter(run__is_current=True).exclude(status="matched")
               .values_list("day", "line"))


def test_seed_demo_loads_the_sandbox_and_flags_only_the_injected_unattributed_spend(sandbox, provider):
    sandbox.clock.set(NOW.timestamp())
    summary = sandbox.load_scenario(tenants=3, days=20, seed=5, name="demo")  # make run's is bigger, see test_scenario
    drift_day = NOW.date() - dt.timedelta(days=4)
    sandbox.faults.add_drift(day=drift_day, amount_usd="0.80", unattributed=True)

    out = io.StringIO()
    call_command("seed_demo", no_sweep_preview=True, stdout=out, stderr=io.StringIO())
    assert Tenant.objects.count() == 3
    assert Run.objects.unscoped().count() == summary["runs"] + summary["responses"]
    first_day = dt.date.fromisoformat(summary["first_day"])
    assert StorageMeter.objects.unscoped().filter(day=first_day).exists()
    assert _flagged() == {(drift_day, "unattributed spend")}
    line = ReconciliationLine.objects.get(run__is_current=True, day=drift_day, line="unattributed spend")
    assert line.openai_value.quantize(Decimal("0.000001")) == Decimal("0.80")
    assert "1 flagged lines" in out.getvalue() and f"flagged {drift_day.isoformat()} unattributed spend" in out.getvalue()
    # The history it loaded reached the ledger after its days (they are marked as late), but the seed's
    # reconciliation saw those runs: the hourly pass has nothing to compare again.
    assert not LateLedgerDay.objects.filter(day__lte=NOW.date() - dt.timedelta(days=1)).exists()
    assert reconciliation_recompare_late().runs == []

    # What `make run` passes the sandbox on a later day, so that it serves this same scenario again.
    assert demo_scenario_end(5) == summary["ends_at"] == NOW.timestamp() and demo_scenario_end(42) is None

    again = io.StringIO()
    call_command("seed_demo", no_sweep_preview=True, stdout=again, stderr=io.StringIO())
    assert "'created': 0, 'updated': 0, 'unchanged'" in again.getvalue()
    assert _flagged() == {(drift_day, "unattributed spend")}
    assert AuditEvent.objects.filter(action=DEMO_SEEDED).count() == 1  # the first seeding's end, kept

    # `make run` two days later: the sandbox generates the same scenario from the end recorded above. Generated
    # for the new now instead, its objects took the old ones' ids and the ledger held both scenarios.
    sandbox.clock.set((NOW + dt.timedelta(days=2)).timestamp())
    sandbox.load_scenario(tenants=3, days=20, seed=5, name="demo", end=demo_scenario_end(5))
    later = io.StringIO()
    call_command("seed_demo", no_sweep_preview=True, stdout=later, stderr=io.StringIO())
    assert "'created': 0, 'updated': 0, 'unchanged'" in later.getvalue() and "'rejected': 0" in later.getvalue()
    assert Run.objects.unscoped().count() == summary["runs"] + summary["responses"]


def test_the_demo_scenario_flags_exactly_its_two_drift_days(sandbox):
    """The demo's drift rules are unattributed spend on two days inside the reconciled window, each large enough
    to be beyond the tolerance of a demo day (1% of the day's spend)."""
    sandbox.clock.set(dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC).timestamp())
    summary = sandbox.sandbox.load_demo(seed=42)
    days = sorted(dt.date.fromisoformat(rule["day"]) for rule in summary["drift"])
    assert days == [dt.date(2026, 11, 19), dt.date(2026, 11, 22)]
    assert all(Decimal(rule["amount_usd"]) >= Decimal("0.50") and rule["unattributed"] for rule in summary["drift"])
    assert sandbox.sandbox.load_demo(seed=42, drift=False)["drift"] == [] and sandbox.faults.drift_rules() == []


def test_seed_demo_syncs_the_inventory_under_the_hourly_syncs_lock_and_waits_for_one_running(sandbox, provider,
                                                                                            monkeypatch):
    """Run beside a worker, the seed's inventory sync listed every object at OpenAI a second time at once."""
    from apps.lifecycle import tasks
    from apps.lifecycle.models import VectorStore
    from apps.sandbox.management.commands import seed_demo

    sandbox.clock.set(NOW.timestamp())
    sandbox.load_scenario(tenants=2, days=5, seed=3)
    held = [True]
    real = tasks.inventory_sync_exclusive

    def another_sync_first(**kwargs):
        if held:
            held.pop()
            return False  # the hourly sync holds the lock
        return real(**kwargs)

    monkeypatch.setattr(seed_demo, "inventory_sync_exclusive", another_sync_first)
    monkeypatch.setattr(seed_demo.time, "sleep", lambda seconds: None)
    out = io.StringIO()
    call_command("seed_demo", no_sweep_preview=True, stdout=out, stderr=io.StringIO())
    assert "another inventory sync is running; waiting for it to finish" in out.getvalue()
    assert VectorStore.objects.unscoped().exists()  # the sync ran once the lock was free
