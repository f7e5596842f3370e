"""A worker killed mid-sweep and mid-reconciliation (issues #5 and #10): the short real drill (a `celery -A config
worker` process group SIGKILLed, SQLite file + SQLAlchemy broker, the sandbox's request log as the judge), and
in-process tests of what makes it finish quickly: a dead worker's locks do not block the resumed work."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.core.cache import cache
from django.utils import timezone

from apps.drills.worker_kill import drill_worker_kill
from apps.ledger.models import Thread
from apps.lifecycle import services as lifecycle
from apps.lifecycle.models import Sweep, SweepItem
from apps.reconciliation import services as reconciliation
from apps.reconciliation.models import ReconciliationRun
from apps.reconciliation.tasks import reconcile_daily
from tests.lifecycle.fakes import FakeProvider
from tests.reconciliation.fakes import FakeAdminProvider

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
DAY = dt.date(2026, 11, 3)


@pytest.mark.slow
def test_real_worker_killed_mid_sweep_and_mid_reconciliation_finishes_with_nothing_twice_skipped_or_partial():
    messages: list[str] = []
    result = drill_worker_kill(fast=True, say=messages.append)
    sweep, recon = result["sweep"], result["reconciliation"]
    context = {"result": result, "log": messages}
    # The kill really landed mid-way: some deletes had been sent, one item was left claimed by the dead
    # worker, which also held the sweep's kind lock (300 s TTL, production's value).
    assert 0 < sweep["deletes_before_kill"] < result["setup"]["threads_past_retention"], context
    assert sweep["claimed_at_kill"] >= 1 and sweep["dead_worker_held_kind_lock"], context
    assert result["deletions_duplicated"] == 0 and result["items_skipped"] == 0, context
    assert sweep["delete_requests_per_thread"] == {1: result["setup"]["threads_past_retention"]}, context
    assert sweep["failed_checks"] == [] and sweep["finished_seconds_after_kill"] < 60, context
    # The reconciliation was killed while fetching, holding its lock; the redelivered copy retried (not
    # skipped) once that lock lapsed, and no day was ever partial.
    assert recon["attempts_running_at_kill"] == result["setup"]["reconciled_days"], context
    assert recon["dead_lock_owner"], context
    assert result["partial_days"] == 0 and recon["failed_checks"] == [], context
    assert all(runs == ["complete", "failed", "complete*"] for runs in recon["runs_per_day"].values()), context
    assert result["ok"], context


# --- lifecycle: a dead worker's sweep lock and item claims -------------------------------------------------


@pytest.fixture
def old_threads(tenant):
    tenant.thread_retention_days = 30
    tenant.save()
    provider = FakeProvider()
    for index in range(3):
        last = NOW - dt.timedelta(days=60)
        Thread.objects.create(tenant=tenant, openai_id=f"thread_{index}", kind="thread", created_at=last,
                              last_activity_at=last)
        provider.add_thread(f"thread_{index}", last)
    return provider


def _killed_mid_item(sweep: Sweep, worker: str, *, seconds_ago: float) -> SweepItem:
    """What SIGKILL leaves: the sweep claimed with its last heartbeat, the kind lock, one item claimed."""
    moment = timezone.now() - dt.timedelta(seconds=seconds_ago)
    lifecycle._plan_step(sweep)
    Sweep.objects.unscoped().filter(pk=sweep.pk).update(claimed_by=worker, heartbeat_at=moment, status="running")
    cache.set(lifecycle._lock_key("threads"), worker, 300)
    item = SweepItem.objects.unscoped().filter(sweep=sweep).order_by("pk").first()
    SweepItem.objects.unscoped().filter(pk=item.pk).update(state="claimed", claimed_by=worker, claimed_at=moment,
                                                           attempts=1)
    return item


@pytest.mark.django_db
def test_a_redelivered_batch_takes_over_the_kind_lock_of_a_worker_whose_heartbeat_went_stale(
        old_threads, settings):
    settings.LIFECYCLE_SWEEP_STALE_SECONDS = 60
    settings.LIFECYCLE_ITEM_LEASE_SECONDS = 600
    sweep = lifecycle.sweep_create(kind="threads", as_of=NOW)
    _killed_mid_item(sweep, "dead-worker", seconds_ago=120)
    result = lifecycle.sweep_run_batch(sweep_id=sweep.pk, provider=old_threads)
    # It works the two free items at once and waits for the dead claim's lease instead of spinning.
    assert result.status == "waiting" and result.processed == 2
    assert 400 < result.wait_seconds <= 481
    assert cache.get(lifecycle._lock_key("threads")) is None


@pytest.mark.django_db
def test_a_live_workers_kind_lock_is_respected(old_threads, settings):
    settings.LIFECYCLE_SWEEP_STALE_SECONDS = 60
    sweep = lifecycle.sweep_create(kind="threads", as_of=NOW)
    _killed_mid_item(sweep, "live-worker", seconds_ago=5)
    result = lifecycle.sweep_run_batch(sweep_id=sweep.pk, provider=old_threads)
    assert result.status == "busy" and old_threads.deletes == []
    assert cache.get(lifecycle._lock_key("threads")) == "live-worker"
    cache.delete(lifecycle._lock_key("threads"))


@pytest.mark.django_db
def test_the_reaper_frees_a_dead_workers_kind_lock_with_its_sweep(old_threads, settings):
    settings.LIFECYCLE_SWEEP_STALE_SECONDS = 60
    settings.LIFECYCLE_ITEM_LEASE_SECONDS = 60
    sweep = lifecycle.sweep_create(kind="threads", as_of=NOW)
    _killed_mid_item(sweep, "dead-worker", seconds_ago=120)
    assert lifecycle.sweeps_reap() == [sweep.pk]
    assert cache.get(lifecycle._lock_key("threads")) is None
    result = lifecycle.sweep_run_to_completion(sweep_id=sweep.pk, provider=old_threads, sleep=lambda s: None)
    assert result.status == "finished" and sorted(old_threads.deletes) == ["thread_0", "thread_1", "thread_2"]


# --- reconciliation: the lock of a killed attempt ------------------------------------------------------------


@pytest.fixture
def fake_admin(monkeypatch):
    provider = FakeAdminProvider().cost(DAY, "gpt-5.4, input", 2.5).completions(DAY, "gpt-5.4", 1_000_000, 0, 0)
    monkeypatch.setattr(reconciliation, "_provider_for", lambda project: provider)
    return provider


@pytest.mark.django_db
def test_the_reconciliation_lock_is_short_and_kept_alive_by_its_heartbeat(settings):
    settings.RECONCILIATION_LOCK_SECONDS = 2
    lock = reconciliation._ProjectLock("proj_hb", owner="task-1")
    assert lock.acquire()
    try:
        time.sleep(3)  # longer than the TTL: only the heartbeat keeps it
        assert reconciliation.reconciliation_lock_owner(project_id="proj_hb") == "task-1"
        assert not reconciliation._ProjectLock("proj_hb", owner="task-2").acquire()
    finally:
        lock.release()
    assert reconciliation.reconciliation_lock_owner(project_id="proj_hb") is None


@pytest.mark.django_db
def test_a_dead_workers_reconciliation_lock_lapses_without_its_heartbeat(settings):
    settings.RECONCILIATION_LOCK_SECONDS = 1
    cache.add(reconciliation._lock_key("proj_dead"), "token|killed-task", 1)  # no heartbeat: its process died
    time.sleep(1.2)
    lock = reconciliation._ProjectLock("proj_dead")
    assert lock.acquire()
    lock.release()


@pytest.mark.django_db
def test_a_redelivered_reconciliation_retries_when_its_dead_predecessor_holds_the_lock(fake_admin, monkeypatch):
    cache.add(reconciliation._lock_key("proj_default"), "token|task-7", 60)
    retried = {}

    class Retry(Exception):
        pass

    def fake_retry(**options):
        retried.update(options)
        return Retry()

    monkeypatch.setattr(reconcile_daily, "retry", fake_retry)
    try:
        with pytest.raises(Retry):
            reconcile_daily.apply(kwargs={"end_day": DAY.isoformat(), "days": 1}, task_id="task-7", throw=True)
    finally:
        cache.delete(reconciliation._lock_key("proj_default"))
    assert retried["kwargs"] == {"end_day": DAY.isoformat(), "days": 1, "project_id": "proj_default", "attempt": 0}
    assert retried["countdown"] == reconciliation.lock_ttl_seconds() + 1
    assert not ReconciliationRun.objects.exists()


@pytest.mark.django_db
def test_another_runs_lock_is_skipped_not_retried(fake_admin):
    cache.add(reconciliation._lock_key("proj_default"), "token|someone-else", 60)
    try:
        summary = reconcile_daily.apply(kwargs={"end_day": DAY.isoformat(), "days": 1}, task_id="task-8",
                                        throw=True).get()
    finally:
        cache.delete(reconciliation._lock_key("proj_default"))
    assert summary["proj_default"]["skipped"] is True


@pytest.mark.django_db
def test_an_attempt_left_running_by_a_killed_worker_is_failed_by_the_next_one_at_once(fake_admin):
    dead = ReconciliationRun.objects.create(day=DAY, openai_project="proj_default", started_at=timezone.now(),
                                            trigger="killed")
    reconciliation.reconciliation_reconcile(end_day=DAY, days=1, raise_errors=True)
    dead.refresh_from_db()
    assert dead.status == "failed" and "Abandoned" in dead.error
    current = ReconciliationRun.objects.get(day=DAY, is_current=True)
    assert current.status == "complete" and current.lines.count() == current.line_count > 0
