"""The `reconcile` command and the daily task: progress output, arguments, clear errors, singleton lock."""

import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command

from apps.ledger.models import DailyRollup
from apps.reconciliation import services
from apps.reconciliation.models import ReconciliationRun
from apps.reconciliation.tasks import reconcile_daily
from config.beat import BEAT_SCHEDULE

from .fakes import FakeAdminProvider

pytestmark = pytest.mark.django_db

DAY = dt.date(2026, 11, 3)


@pytest.fixture
def fake_provider(monkeypatch, tenant):
    DailyRollup.objects.create(tenant=tenant, day=DAY, model="gpt-5.4", runs=1, input_tokens=1_000_000,
                               cost_input_usd=Decimal("2.50"), cost_total_usd=Decimal("2.50"))
    provider = FakeAdminProvider().cost(DAY, "gpt-5.4, input", 2.5).completions(DAY, "gpt-5.4", 1_000_000, 0, 0)
    monkeypatch.setattr(services, "_provider_for", lambda project: provider)
    return provider


def test_command_reconciles_the_given_days_and_shows_progress(fake_provider):
    out = io.StringIO()
    call_command("reconcile", "--date", "2026-11-03", "--days", "2", stdout=out)
    text = out.getvalue()
    assert "proj_default: reconciling 2026-11-02 to 2026-11-03 (2 days)" in text
    assert "fetching Costs grouped by line item and project" in text
    assert "proj_default 2026-11-03: 3 lines, 0 flagged, ledger $2.50 vs OpenAI $2.50, unattributed $0.00" in text
    assert "2 project-days reconciled, 0 lines flagged" in text
    assert ReconciliationRun.objects.filter(is_current=True).count() == 2


def test_progress_writes_money_as_the_pages_do(fake_provider):
    # It formatted with :.2f, which wrote a negative zero or a sub-cent refund as "$-0.00".
    fake_provider.cost(dt.date(2026, 11, 2), "gpt-5.4, input", -0.004)
    out = io.StringIO()
    call_command("reconcile", "--date", "2026-11-03", "--days", "2", stdout=out)
    assert "unattributed -$0.004" in out.getvalue()
    assert "$-" not in out.getvalue()


def test_command_refuses_bad_arguments_with_what_to_do(fake_provider):
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        call_command("reconcile", "--date", "03/11/2026")
    with pytest.raises(CommandError, match="between 1 and 366"):
        call_command("reconcile", "--days", "0")
    # The days before a --date near Python's first date were an OverflowError traceback.
    with pytest.raises(CommandError, match="--date must be 1970-01-01 or later"):
        call_command("reconcile", "--date", "0001-01-01")
    with pytest.raises(CommandError, match="admin"):
        call_command("reconcile", "--date", "2026-11-03", "--project", "proj_unknown")


def test_command_fails_loudly_when_openai_cannot_be_reached(fake_provider):
    fake_provider.fail_with = ConnectionError("connection refused")
    with pytest.raises(CommandError, match="connection refused"):
        call_command("reconcile", "--date", "2026-11-03", "--days", "1", stdout=io.StringIO())
    assert ReconciliationRun.objects.get().status == "failed"


def test_daily_task_reconciles_yesterday_and_the_seven_days_before(fake_provider, time_machine):
    time_machine.move_to(dt.datetime(2026, 11, 4, 4, 15, tzinfo=dt.UTC))
    summary = reconcile_daily()
    assert summary["proj_default"]["runs"] == 8
    assert sorted(ReconciliationRun.objects.values_list("day", flat=True)) == [
        DAY - dt.timedelta(days=offset) for offset in range(7, -1, -1)]


def test_daily_task_skips_a_project_another_run_holds(fake_provider):
    key = services._lock_key("proj_default")
    cache.add(key, "token|another-task-id", 60)
    try:
        assert reconcile_daily()["proj_default"]["skipped"] is True
        assert not ReconciliationRun.objects.exists()
    finally:
        cache.delete(key)


def test_daily_task_is_scheduled_acks_late_with_an_explicit_name():
    assert BEAT_SCHEDULE["reconciliation-daily"]["task"] == reconcile_daily.name == "reconciliation.reconcile_daily"
    assert reconcile_daily.acks_late is True


def test_daily_task_tries_a_failed_project_again_later_with_backoff_then_stops(fake_provider, monkeypatch):
    """OpenAI down at 04:15 should not leave the day unreconciled until tomorrow's re-check."""
    fake_provider.fail_with = ConnectionError("connection refused")
    queued = []
    monkeypatch.setattr(reconcile_daily, "apply_async", lambda **options: queued.append(options))
    summary = reconcile_daily(end_day="2026-11-03", days=1)
    assert summary["proj_default"]["error"]
    assert queued == [{"kwargs": {"end_day": "2026-11-03", "days": 1, "project_id": "proj_default", "attempt": 1},
                       "countdown": 900}]
    reconcile_daily(end_day="2026-11-03", days=1, project_id="proj_default", attempt=2)
    assert queued[-1]["countdown"] == 2700 and queued[-1]["kwargs"]["attempt"] == 3  # under the broker's hour
    queued.clear()
    reconcile_daily(end_day="2026-11-03", days=1, project_id="proj_default", attempt=3)
    assert queued == []  # the next day's 7-day re-check takes it from here


def test_a_project_still_failing_after_its_retries_raises_one_alert_saying_what_to_run(fake_provider, monkeypatch):
    from apps.alerts.models import Alert

    fake_provider.fail_with = ConnectionError("connection refused")
    monkeypatch.setattr(reconcile_daily, "apply_async", lambda **options: None)
    reconcile_daily(end_day="2026-11-03", days=1, project_id="proj_default", attempt=2)
    assert not Alert.objects.unscoped().filter(kind="reconciliation_failed").exists()  # retries left: no alert yet

    for _redelivered in range(2):
        reconcile_daily(end_day="2026-11-03", days=1, project_id="proj_default", attempt=3)

    [alert] = Alert.objects.unscoped().filter(kind="reconciliation_failed")
    assert alert.severity == "critical" and "proj_default" in alert.title
    assert "connection refused" in alert.message
    assert "python manage.py reconcile --date 2026-11-03 --days 1 --project proj_default" in alert.message


def test_a_bad_date_on_the_command_line_is_one_line_saying_the_format_not_a_traceback():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    done = subprocess.run([sys.executable, "manage.py", "reconcile", "--date", "nope"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "--date must be YYYY-MM-DD, got 'nope'." in done.stderr
