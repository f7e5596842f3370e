"""The run-expiry watch (runs_requires_action_watch): runs still requires_action past their expiry raise one
wasted_spend alert each, in one bulk insert, and runs already alerted are left out of the minute's page, so
a backlog of stale runs never hides a new one."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from apps.alerts.models import Alert
from apps.ledger.models import Run
from apps.lifecycle import services


def _overdue(tenant, openai_id: str, expired: dt.datetime) -> Run:
    return Run(tenant=tenant, openai_id=openai_id, api="assistants", model="gpt-5", status="requires_action",
               created_at=expired - dt.timedelta(minutes=10), expires_at=expired)


def test_a_new_overdue_run_is_alerted_behind_a_full_page_of_older_alerted_ones(tenant):
    now = timezone.now()
    old = now - dt.timedelta(days=30)
    Run.objects.bulk_create([_overdue(tenant, f"run_old_{i:05d}", old) for i in range(services.WATCH_EXPIRED_PAGE)],
                            batch_size=1000)
    assert services.runs_requires_action_watch(now=now)["expired"] == services.WATCH_EXPIRED_PAGE
    _overdue(tenant, "run_new", now - dt.timedelta(minutes=1)).save()
    assert services.runs_requires_action_watch(now=now)["expired"] == 1
    alert = Alert.unscoped_objects.get(cause_key="wasted_spend:run_new")
    assert (alert.kind, alert.tenant_id, alert.data["run"]) == ("wasted_spend", tenant.pk, "run_new")
    # A run lost at $0 is still an alert (an integration stopped answering), its cost written as pages write
    # money: the message read "what it cost ($0E-10)".
    assert alert.message.endswith("what it cost ($0.00) is wasted spend.")


def test_overdue_runs_are_alerted_with_a_few_queries_whatever_their_number(tenant, other_tenant,
                                                                           django_assert_max_num_queries):
    now = timezone.now()
    Run.objects.bulk_create([_overdue(t, f"run_{t.slug}_{i}", now - dt.timedelta(hours=i + 1))
                             for t in (tenant, other_tenant) for i in range(40)])
    with django_assert_max_num_queries(8):
        result = services.runs_requires_action_watch(now=now)
    assert result["expired"] == 80
    assert Alert.unscoped_objects.filter(tenant=other_tenant, kind="wasted_spend").count() == 40
    # The next minute: nothing new, nothing re-read per run (the warning scan's two more are its turn under the
    # ingest lock: a savepoint and the lock).
    with django_assert_max_num_queries(5):
        assert services.runs_requires_action_watch(now=now)["expired"] == 0
