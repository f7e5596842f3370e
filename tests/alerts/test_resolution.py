"""An alert whose cause went away is resolved, kept as history with when and why (audited), and opened again
if its cause comes back: a model that got its price, a run that got its tool outputs, a reconciliation day
whose drift a late run explained, a failed reconciliation whose days were reconciled since. Before, every
alert stayed open for good, and the overview's recent alerts read as if every problem were still there."""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.alerts.models import Alert
from apps.core.models import AuditEvent
from apps.ledger.services import ingest_events
from apps.pricing.services import model_price_add
from apps.reconciliation import tasks
from apps.reconciliation.services import reconciliation_failure_alert
from tests import builders
from tests.reconciliation.one_day import DAY, PROJECT, ingest, openai_bill, price, reconcile

pytestmark = pytest.mark.django_db

PRICED_FROM = dt.date(2026, 6, 1)


def _alert(cause_key: str) -> Alert:
    return Alert.unscoped_objects.get(cause_key=cause_key)


def _unpriced_run(run_id: str, day: dt.date) -> None:
    ingest_events(events=[{"tenant": "acme", "object": builders.response(
        response_id=run_id, created_at=dt.datetime(day.year, day.month, day.day, 9, tzinfo=dt.UTC),
        model="gpt-new-test", input_tokens=1_000, output_tokens=100)}])


def test_an_unpriced_model_alert_resolves_once_a_price_rates_its_runs_and_opens_again_when_one_is_unpriced(tenant):
    _unpriced_run("resp_1", PRICED_FROM + dt.timedelta(days=3))
    assert _alert("unpriced_model:gpt-new-test").state == "open"

    model_price_add(model="gpt-new-test", effective_from=PRICED_FROM, input_usd_per_1m=Decimal("1"),
                    output_usd_per_1m=Decimal("2"))
    alert = _alert("unpriced_model:gpt-new-test")
    assert (alert.state, alert.resolution) == ("resolved", "Every run of this model is priced now.")
    audit = AuditEvent.objects.get(action="alert.resolve")
    assert audit.data["alerts"] == [alert.pk] and audit.actor_label == "service:alerts"

    # A run from before the price's date is stored unpriced: the cause is back, the same alert is open again.
    _unpriced_run("resp_0", PRICED_FROM - dt.timedelta(days=1))
    alert.refresh_from_db()
    assert (alert.state, alert.resolved_at, alert.resolution, alert.times_reopened) == ("reopened", None, "", 1)
    assert AuditEvent.objects.get(action="alert.reopen").data["alerts"] == [alert.pk]
    assert Alert.unscoped_objects.filter(kind="unpriced_model").count() == 1


def test_a_price_that_leaves_some_runs_unpriced_leaves_the_alert_open(tenant):
    _unpriced_run("resp_early", PRICED_FROM - dt.timedelta(days=10))
    _unpriced_run("resp_late", PRICED_FROM + dt.timedelta(days=10))
    model_price_add(model="gpt-new-test", effective_from=PRICED_FROM, input_usd_per_1m=Decimal("1"),
                    output_usd_per_1m=Decimal("2"))
    assert _alert("unpriced_model:gpt-new-test").state == "open"
    assert not AuditEvent.objects.filter(action="alert.resolve").exists()


def test_a_requires_action_warning_resolves_when_the_run_moves_on(tenant):
    now = timezone.now().replace(microsecond=0)
    waiting = builders.assistants_run(run_id="run_close", created_at=now - dt.timedelta(minutes=8),
                                      status="requires_action")
    ingest_events(events=[{"tenant": "acme", "object": waiting}])
    assert _alert("requires_action:run_close").state == "open"
    answered = builders.assistants_run(run_id="run_close", created_at=now - dt.timedelta(minutes=8),
                                       status="completed")
    ingest_events(events=[{"tenant": "acme", "object": answered}])
    alert = _alert("requires_action:run_close")
    assert (alert.state, alert.resolution) == ("resolved", "The run got its tool outputs: it is completed.")


def test_a_requires_action_warning_stays_open_when_the_run_expires_as_it_warned(tenant):
    now = timezone.now().replace(microsecond=0)
    created = now - dt.timedelta(minutes=8)
    ingest_events(events=[{"tenant": "acme", "object": builders.assistants_run(
        run_id="run_lost", created_at=created, status="requires_action")}])
    ingest_events(events=[{"tenant": "acme", "object": builders.assistants_run(
        run_id="run_lost", created_at=created, status="expired")}])
    assert _alert("requires_action:run_lost").state == "open"


def test_a_run_answered_within_seconds_costs_ingest_no_look_for_a_warning(tenant, monkeypatch):
    """Most tool outputs arrive long before a warning could have been raised: ingest does not look for one."""
    from apps.alerts import services

    created = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=20)
    ingest_events(events=[{"tenant": "acme", "object": builders.assistants_run(
        run_id="run_quick", created_at=created, status="requires_action")}])
    looked = []
    monkeypatch.setattr(services, "alerts_resolve", lambda **kwargs: looked.append(kwargs))
    ingest_events(events=[{"tenant": "acme", "object": builders.assistants_run(
        run_id="run_quick", created_at=created, status="completed")}])
    assert looked == []


def test_a_drift_alert_resolves_when_the_day_is_compared_again_and_matches(tenant, django_capture_on_commit_callbacks):
    price("2")
    ingest()
    with django_capture_on_commit_callbacks(execute=True):  # drift is alerted once the day's result commits
        reconcile(openai_bill(2.0, runs=2))  # one run had not reached the ledger yet
    drift = Alert.unscoped_objects.filter(kind="reconciliation_drift")
    assert drift.count() == 4 and {alert.state for alert in drift} == {"open"}
    ingest()  # the late run
    with django_capture_on_commit_callbacks(execute=True):
        tasks.recompare_late_days.run()
    assert {alert.state for alert in drift.all()} == {"resolved"}
    assert all(alert.resolution.endswith("no longer flags this line.") for alert in drift.all())
    assert all(alert.data["day"] == DAY.isoformat() for alert in drift.all())


def test_a_failed_reconciliation_alert_resolves_once_its_days_are_reconciled(tenant):
    price("2")
    ingest()
    broken = openai_bill(2.0)
    broken.fail_with = RuntimeError("admin key revoked")
    from apps.reconciliation.services import reconciliation_reconcile

    reconciliation_reconcile(end_day=DAY, days=1, trigger="test", provider_factory=lambda project: broken)
    reconciliation_failure_alert(project_id=PROJECT, end_day=DAY, days=1, error="admin key revoked")
    failed = _alert(f"reconciliation-failed:{PROJECT}:{DAY.isoformat()}")
    assert failed.state == "open"
    reconcile(openai_bill(2.0))
    failed.refresh_from_db()
    assert (failed.state, failed.resolution) == ("resolved", "Every day it named has been reconciled since.")


def test_an_alert_resolved_before_it_was_delivered_is_not_chased(tenant, settings):
    from apps.alerts.services import alert_raise, alerts_pending, alerts_resolve

    settings.ALERT_WEBHOOK_URL = "http://127.0.0.1:9/hook"
    alert = alert_raise(kind="requires_action_expiring", cause_key="requires_action:run_x", tenant=tenant, title="t")
    later = timezone.now() + dt.timedelta(minutes=5)
    assert [pending.pk for pending in alerts_pending(now=later)] == [alert.pk]
    alerts_resolve(alerts=Alert.unscoped_objects.filter(pk=alert.pk), reason="gone")
    assert list(alerts_pending(now=later)) == []
