"""Alert retention (services.alerts_prune, the nightly alerts.prune task, `manage.py prune_alerts`): alerts last
opened more than ALERT_RETENTION_DAYS ago are deleted when resolved or about one moment (a run, a month's
budget); an open alert about a condition that still holds is kept whatever its age. Before, every alert was
kept for ever: one per high-cost run, hundreds of thousands a month at 10M runs, none of which ever resolves."""

from __future__ import annotations

import datetime as dt
import io
import threading

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.alerts import services, tasks
from apps.alerts.models import Alert
from apps.alerts.services import alerts_prune
from apps.core.models import AuditEvent
from config.beat import BEAT_SCHEDULE
from config.settings.base import env_retention_days
from tests.threads import InAnotherThread, dsn

pytestmark = pytest.mark.django_db


def _alert(kind: str, *, days_ago: float, resolved: bool = False, acknowledged: bool = False, tenant=None,
           times_reopened: int = 0) -> Alert:
    opened = timezone.now() - dt.timedelta(days=days_ago)
    return Alert.unscoped_objects.create(
        tenant=tenant, kind=kind, cause_key=f"{kind}:{days_ago}:{resolved}:{acknowledged}", title=kind,
        opened_at=opened, times_reopened=times_reopened,
        resolved_at=opened + dt.timedelta(hours=1) if resolved else None,
        acknowledged_at=opened + dt.timedelta(minutes=5) if acknowledged else None,
    )


def _left() -> set[int]:
    return set(Alert.unscoped_objects.values_list("pk", flat=True))


def test_old_alerts_about_a_moment_or_resolved_go_and_open_conditions_and_recent_ones_stay(tenant, settings):
    settings.ALERT_RETENTION_DAYS = 180
    gone = [
        _alert(Alert.Kind.HIGH_COST_RUN, days_ago=200, tenant=tenant),  # open: nothing ever resolves it
        _alert(Alert.Kind.WASTED_SPEND, days_ago=181, acknowledged=True, tenant=tenant),
        _alert(Alert.Kind.BUDGET, days_ago=365, tenant=tenant),
        _alert(Alert.Kind.REQUIRES_ACTION_EXPIRING, days_ago=190, tenant=tenant),  # the run expired unanswered
        _alert(Alert.Kind.UNPRICED_MODEL, days_ago=200, resolved=True),
        _alert(Alert.Kind.RECONCILIATION_DRIFT, days_ago=400, resolved=True),
    ]
    kept = [
        _alert(Alert.Kind.HIGH_COST_RUN, days_ago=179, tenant=tenant),
        _alert(Alert.Kind.UNPRICED_MODEL, days_ago=300),  # still unpriced: still true
        _alert(Alert.Kind.RECONCILIATION_FAILED, days_ago=300),
        _alert(Alert.Kind.ORPHANED_RESOURCE, days_ago=300, acknowledged=True),
        _alert(Alert.Kind.RECONCILIATION_DRIFT, days_ago=100, resolved=True),
    ]
    reopened = _alert(Alert.Kind.UNPRICED_MODEL, days_ago=10, times_reopened=1)  # first raised long ago, back now
    Alert.unscoped_objects.filter(pk=reopened.pk).update(created_at=timezone.now() - dt.timedelta(days=500))

    result = alerts_prune()

    assert _left() == {alert.pk for alert in [*kept, reopened]}
    assert (result.total, result.complete, result.retention_days) == (6, True, 180)
    assert result.by_kind == {"high_cost_run": 1, "wasted_spend": 1, "budget": 1, "requires_action_expiring": 1,
                              "unpriced_model": 1, "reconciliation_drift": 1}
    audit = AuditEvent.objects.get(action="alert.prune")
    assert audit.data["alerts"] == sorted(alert.pk for alert in gone)
    assert (audit.data["by_kind"], audit.data["retention_days"]) == (result.by_kind, 180)
    assert audit.data["by_tenant"] == {str(tenant.pk): 4}  # the model's and the day's alerts belong to no tenant
    assert audit.actor_label == "service:alerts" and audit.tenant_id is None
    # Run again: nothing left to do, nothing audited.
    assert alerts_prune().total == 0
    assert AuditEvent.objects.filter(action="alert.prune").count() == 1


def test_a_dry_run_counts_by_kind_and_deletes_nothing(tenant, settings):
    settings.ALERT_RETENTION_DAYS = 90
    for days in (91, 120, 200):
        _alert(Alert.Kind.HIGH_COST_RUN, days_ago=days, tenant=tenant)
    _alert(Alert.Kind.UNPRICED_MODEL, days_ago=95, resolved=True)
    _alert(Alert.Kind.HIGH_COST_RUN, days_ago=89, tenant=tenant)
    before = _left()

    result = alerts_prune(dry_run=True)

    assert result.by_kind == {"high_cost_run": 3, "unpriced_model": 1}
    assert (result.total, result.dry_run) == (4, True)
    assert _left() == before and not AuditEvent.objects.filter(action="alert.prune").exists()


def test_a_pass_stops_at_its_bound_oldest_first_and_the_next_goes_on(tenant):
    oldest_first = [_alert(Alert.Kind.HIGH_COST_RUN, days_ago=days, tenant=tenant) for days in (500, 400, 300, 250, 200)]
    seen = []

    first = alerts_prune(retention_days=180, at_most=3, batch_size=2, progress=seen.append)

    assert (first.total, first.complete) == (3, False)
    assert seen == [2, 3]  # after each transaction
    assert _left() == {alert.pk for alert in oldest_first[3:]}
    audits = AuditEvent.objects.filter(action="alert.prune").order_by("pk")
    assert [event.data["alerts"] for event in audits] == [[oldest_first[0].pk, oldest_first[1].pk], [oldest_first[2].pk]]
    second = alerts_prune(retention_days=180, at_most=3, batch_size=2)
    assert (second.total, second.complete, _left()) == (2, True, set())


def test_retention_zero_keeps_every_alert_and_fewer_than_the_minimum_days_is_refused(tenant, settings):
    _alert(Alert.Kind.HIGH_COST_RUN, days_ago=1000, tenant=tenant)
    settings.ALERT_RETENTION_DAYS = 0
    result = alerts_prune()
    assert (result.cutoff, result.total, len(_left())) == (None, 0, 1)
    # Last month's budget alerts must still be there when its late runs are checked (up to ~62 days back).
    with pytest.raises(ValueError, match="at least 90 days"):
        alerts_prune(retention_days=60)


@pytest.mark.parametrize("text", ["30", "89", "-1", "abc", "1.5", ""])
def test_alert_retention_days_from_the_environment_names_the_variable_when_wrong(monkeypatch, text):
    monkeypatch.setenv("ALERT_RETENTION_DAYS", text)
    with pytest.raises(ImproperlyConfigured, match="ALERT_RETENTION_DAYS must be 0 .* from 90, like 180"):
        env_retention_days("ALERT_RETENTION_DAYS", default=180, at_least=90)


@pytest.mark.parametrize(("text", "days"), [("0", 0), ("90", 90), (" 365 ", 365)])
def test_alert_retention_days_from_the_environment(monkeypatch, text, days):
    monkeypatch.setenv("ALERT_RETENTION_DAYS", text)
    assert env_retention_days("ALERT_RETENTION_DAYS", default=180, at_least=90) == days


def test_the_nightly_task_prunes_and_goes_on_in_a_fresh_task_when_it_stopped_at_its_bound(tenant, settings,
                                                                                          monkeypatch):
    assert BEAT_SCHEDULE["alerts-prune"]["task"] == tasks.prune_alerts.name == "alerts.prune"
    settings.ALERT_RETENTION_DAYS = 180
    for days in (300, 200, 190):
        _alert(Alert.Kind.WASTED_SPEND, days_ago=days, tenant=tenant)
    bounded = services.alerts_prune
    monkeypatch.setattr(tasks, "alerts_prune", lambda **kwargs: bounded(at_most=2, **kwargs))
    queued = []
    monkeypatch.setattr(tasks.prune_alerts, "apply_async", lambda *args, **kwargs: queued.append(kwargs))

    outcome = tasks.prune_alerts.apply().get()

    assert (outcome["total"], outcome["complete"], outcome["by_kind"]) == (2, False, {"wasted_spend": 2})
    assert queued == [{"countdown": tasks.PRUNE_AGAIN_AFTER_SECONDS}]
    assert tasks.prune_alerts.apply().get()["complete"] is True
    assert queued == [{"countdown": tasks.PRUNE_AGAIN_AFTER_SECONDS}] and _left() == set()


def test_the_command_lists_by_kind_says_what_it_did_and_refuses_too_few_days(tenant, settings):
    settings.ALERT_RETENTION_DAYS = 180
    _alert(Alert.Kind.HIGH_COST_RUN, days_ago=200, tenant=tenant)
    _alert(Alert.Kind.BUDGET, days_ago=120, tenant=tenant)

    out = io.StringIO()
    call_command("prune_alerts", dry_run=True, stdout=out, stderr=io.StringIO())
    assert "high_cost_run" in out.getvalue() and "budget" not in out.getvalue()
    assert "Dry run: 1 alerts last opened before" in out.getvalue() and len(_left()) == 2

    out = io.StringIO()
    call_command("prune_alerts", days=100, stdout=out, stderr=io.StringIO())
    assert "Deleted 2 alerts" in out.getvalue() and "(100 days); none is left." in out.getvalue()
    assert _left() == set()

    with pytest.raises(CommandError, match="--days must be at least 90"):
        call_command("prune_alerts", days=30, stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_alert_another_transaction_holds_is_left_for_the_next_pass(tenant):
    """An ingest batch reopening an old resolved alert holds its row until it commits: the pass does not wait on it
    (nor delete what the batch is opening again); it deletes the others and leaves that one to a later pass,
    which finds it opened now, no longer past retention."""
    held, other = (_alert(Alert.Kind.UNPRICED_MODEL, days_ago=days, resolved=True) for days in (300, 200))
    locked, release = threading.Event(), threading.Event()

    def reopening_batch():
        with psycopg.connect(dsn()) as session:  # one transaction, until `release`
            session.execute("SELECT 1 FROM alerts_alert WHERE id = %s FOR UPDATE", [held.pk])
            locked.set()
            assert release.wait(30)
            session.execute("UPDATE alerts_alert SET resolved_at = NULL, opened_at = now() WHERE id = %s", [held.pk])

    batch = InAnotherThread(reopening_batch)
    assert locked.wait(30)
    try:
        result = alerts_prune(retention_days=180)
    finally:
        release.set()
        batch.finish()

    assert (result.total, _left()) == (1, {held.pk})
    assert other.pk not in _left()
    assert alerts_prune(retention_days=180).total == 0  # reopened: kept


def test_a_run_left_in_requires_action_is_not_alerted_again_once_its_alert_is_deleted(tenant, settings):
    """Such a run stays requires_action in the ledger for ever, and the minute watch alerts every overdue run
    without an alert: once retention deleted its alert, the watch raised (and delivered) it again as news, every
    retention period. The watch now stops a day inside retention."""
    from apps.ledger.models import Run
    from apps.lifecycle.services import runs_requires_action_watch

    settings.ALERT_RETENTION_DAYS = 180
    now = timezone.now()
    expired = now - dt.timedelta(days=200)
    Run.objects.create(tenant=tenant, openai_id="run_stuck", api="assistants", model="gpt-5", status="requires_action",
                       created_at=expired - dt.timedelta(minutes=10), expires_at=expired)
    alert = Alert.unscoped_objects.create(tenant=tenant, kind=Alert.Kind.WASTED_SPEND, cause_key="wasted_spend:run_stuck",
                                          title="Run run_stuck expired", opened_at=expired + dt.timedelta(minutes=1))

    assert alerts_prune().total == 1 and not Alert.unscoped_objects.filter(pk=alert.pk).exists()
    assert runs_requires_action_watch(now=now)["expired"] == 0
    assert not Alert.unscoped_objects.exists()
    # A run that expired within retention is alerted as before; kept for ever, every overdue run is.
    Run.objects.unscoped().filter(openai_id="run_stuck").update(expires_at=now - dt.timedelta(days=178))
    assert runs_requires_action_watch(now=now)["expired"] == 1
    Alert.unscoped_objects.all().delete()
    Run.objects.unscoped().filter(openai_id="run_stuck").update(expires_at=expired)
    settings.ALERT_RETENTION_DAYS = 0
    assert runs_requires_action_watch(now=now)["expired"] == 1


def test_a_cause_back_just_as_its_resolved_alert_is_deleted_is_raised_as_a_new_alert(tenant, monkeypatch):
    """Ingest read the cause's alert as resolved, and the retention pass deleted it before the reopen: the reopen
    found nothing, and the cause's return was dropped (neither reopened nor inserted)."""
    from apps.alerts.services import AlertSpec, alerts_raise_many

    old = _alert(Alert.Kind.UNPRICED_MODEL, days_ago=300, resolved=True)
    read_causes = services._raised_causes

    def read_then_pruned(keys):
        causes = read_causes(keys)
        alerts_prune(retention_days=180)  # commits between ingest's read and its reopen
        return causes

    monkeypatch.setattr(services, "_raised_causes", read_then_pruned)
    (raised,) = alerts_raise_many([AlertSpec(kind=Alert.Kind.UNPRICED_MODEL, cause_key=old.cause_key,
                                             title="No price for model gpt-new")])

    assert raised.pk != old.pk and (raised.state, raised.times_reopened) == ("open", 0)
    assert list(Alert.unscoped_objects.values_list("cause_key", flat=True)) == [old.cause_key]


def test_a_cause_another_batch_reopened_first_is_neither_reopened_twice_nor_inserted(tenant, monkeypatch):
    from apps.alerts.services import AlertSpec, alerts_raise_many

    old = _alert(Alert.Kind.UNPRICED_MODEL, days_ago=10, resolved=True)
    read_causes = services._raised_causes

    def read_then_reopened_elsewhere(keys):
        causes = read_causes(keys)
        Alert.unscoped_objects.filter(pk=old.pk).update(resolved_at=None, times_reopened=1)
        return causes

    monkeypatch.setattr(services, "_raised_causes", read_then_reopened_elsewhere)
    assert alerts_raise_many([AlertSpec(kind=Alert.Kind.UNPRICED_MODEL, cause_key=old.cause_key, title="x")]) == []
    assert list(Alert.unscoped_objects.values_list("pk", "times_reopened")) == [(old.pk, 1)]
    assert not AuditEvent.objects.filter(action="alert.reopen").exists()
