"""Runs reported after the daily run stopped re-checking their day leave no stale reconciliation result
behind: ingest marks the day (in the batch's own transaction), and the hourly `recompare_late_days` task
compares its current result again with the ledger as it is now, from the OpenAI figures it stored (no OpenAI
call), as after a re-rating. Before, a day more than 8 days back kept comparing OpenAI with the ledger as it was
before the late runs until someone ran `manage.py reconcile` for it."""

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from apps.core.models import AuditEvent
from apps.reconciliation import services, tasks
from apps.reconciliation.models import LateLedgerDay, ReconciliationRun
from apps.reconciliation.services import (
    LATE_RUNS_TRIGGER,
    RECHECK_DAYS,
    _ProjectLock,
    late_ledger_days_mark,
    reconciliation_recompare_late,
)
from config.beat import BEAT_SCHEDULE
from tests.threads import InAnotherThread, a_session_waits_on_a_row

from .one_day import DAY, MODEL, PROJECT, current, ingest, openai_bill, price, reconcile

pytestmark = pytest.mark.django_db

TODAY = timezone.now().astimezone(dt.UTC).date()


def _marks() -> list[tuple[str, dt.date]]:
    return list(LateLedgerDay.objects.values_list("openai_project", "day"))


def test_a_run_reported_20_days_late_re_compares_its_day_at_the_next_hourly_pass(tenant):
    price("2")
    ingest()
    provider = openai_bill(2.0, runs=2)  # OpenAI billed two runs; one had not reached the ledger yet
    before = reconcile(provider)
    assert (before.ledger_total_usd, before.openai_total_usd, before.flagged_count) == (
        Decimal("2.8"), Decimal("5.6"), 4)
    calls = list(provider.calls)

    ingest()  # the second run, reported 20 days late
    assert _marks() == [(PROJECT, DAY)]
    assert tasks.recompare_late_days.run() == {"recompared": 1, "locked": [], "failed": []}

    run, lines = current()
    assert run.pk != before.pk and run.recompared_from_id == before.pk and run.trigger == LATE_RUNS_TRIGGER
    assert (run.ledger_total_usd, run.openai_total_usd, run.unattributed_usd, run.flagged_count) == (
        Decimal("5.6"), Decimal("5.6"), Decimal("0"), 0)
    assert lines[f"{MODEL}, input"].ledger_value == Decimal("4")
    assert {line.status for line in lines.values()} == {"matched"}
    assert provider.calls == calls  # OpenAI was not asked again
    note = next(note for note in run.notes if note.startswith("Compared again"))
    assert "reported late" in note and f"manage.py reconcile --date {DAY.isoformat()} --days 1" in note
    audit = AuditEvent.objects.get(action="reconciliation.recompare")
    assert (audit.actor_label, audit.data["days"]) == (LATE_RUNS_TRIGGER, [DAY.isoformat()])
    assert _marks() == []
    # Nothing left to do: the next pass compares nothing.
    assert tasks.recompare_late_days.run() == {"recompared": 0, "locked": [], "failed": []}
    assert ReconciliationRun.objects.filter(day=DAY).count() == 2


def test_only_days_no_daily_run_will_fetch_again_are_marked(tenant):
    """Tomorrow's daily run re-checks today and the 7 days before it; a run of any of those days marks
    nothing, a run of the day before them marks its day."""
    price("2")
    ingest(day=TODAY)
    ingest(day=TODAY - dt.timedelta(days=RECHECK_DAYS))
    assert _marks() == []
    ingest(day=TODAY - dt.timedelta(days=RECHECK_DAYS + 1))
    assert _marks() == [(PROJECT, TODAY - dt.timedelta(days=RECHECK_DAYS + 1))]


def test_the_boundary_is_the_start_of_the_oldest_day_tomorrows_run_fetches():
    now = dt.datetime(2026, 12, 7, 23, 59, tzinfo=dt.UTC)
    covered = {"old": None, "new": {"created_at": dt.datetime(2026, 11, 30, 0, 0, tzinfo=dt.UTC),
                                    "openai_project": "proj_a"}}
    late = {"old": None, "new": {"created_at": dt.datetime(2026, 11, 29, 23, 59, 59, tzinfo=dt.UTC),
                                 "openai_project": "proj_a"}}
    late_ledger_days_mark(changes=[covered], now=now)
    assert _marks() == []
    late_ledger_days_mark(changes=[covered, late], now=now)
    assert _marks() == [("proj_a", dt.date(2026, 11, 29))]


def test_a_late_report_of_an_old_run_marks_its_day_and_a_repeated_report_marks_nothing(tenant):
    price("2")
    run_id = ingest(status="in_progress")
    LateLedgerDay.objects.all().delete()
    ingest(response_id=run_id, status="in_progress", expect="unchanged")  # the same state again
    assert _marks() == []
    ingest(response_id=run_id, status="completed", expect="updated")
    assert _marks() == [(PROJECT, DAY)]


def test_a_run_moved_to_another_project_marks_the_day_in_both():
    """The day's result in each project compared a ledger the move changed: one lost the run, one gained it."""
    moved = {"created_at": dt.datetime(DAY.year, DAY.month, DAY.day, 12, tzinfo=dt.UTC), "openai_project": ""}
    late_ledger_days_mark(changes=[{"old": {**moved, "openai_project": "proj_other"}, "new": moved}])
    assert sorted(_marks()) == [(PROJECT, DAY), ("proj_other", DAY)]


def test_a_batch_that_rolls_back_leaves_no_mark(tenant):
    price("2")
    with pytest.raises(RuntimeError), transaction.atomic():
        ingest()
        assert _marks() == [(PROJECT, DAY)]
        raise RuntimeError("the request failed after the batch")
    assert _marks() == []


def test_a_marked_day_never_reconciled_is_only_unmarked(tenant):
    price("2")
    ingest()
    assert reconciliation_recompare_late().runs == []
    assert _marks() == [] and not ReconciliationRun.objects.exists()
    assert not AuditEvent.objects.filter(action="reconciliation.recompare").exists()


def test_a_day_another_reconciliation_holds_keeps_its_mark_for_the_next_pass(tenant):
    price("2")
    ingest()
    before = reconcile(openai_bill(2.0, runs=2))
    ingest()
    lock = _ProjectLock(PROJECT, owner="the-daily-run")
    assert lock.acquire()
    try:
        assert tasks.recompare_late_days.run() == {"recompared": 0, "locked": [PROJECT], "failed": []}
    finally:
        lock.release()
    assert _marks() == [(PROJECT, DAY)] and current()[0].pk == before.pk
    assert tasks.recompare_late_days.run() == {"recompared": 1, "locked": [], "failed": []}
    assert current()[0].flagged_count == 0 and _marks() == []


def test_a_day_marked_again_while_the_pass_compared_it_keeps_its_mark(tenant, monkeypatch):
    """The pass may have read the day's ledger before the newer late runs committed: they are compared by
    the next pass, not dropped with the mark."""
    price("2")
    ingest()
    reconcile(openai_bill(2.0, runs=3))
    ingest()
    compare = services.reconciliation_recompare

    def compare_while_more_runs_arrive(**kwargs):
        outcome = compare(**kwargs)
        ingest()  # the third run, committed after this pass read the ledger
        return outcome

    monkeypatch.setattr(services, "reconciliation_recompare", compare_while_more_runs_arrive)
    reconciliation_recompare_late()
    assert current()[0].ledger_total_usd == Decimal("5.6")
    assert _marks() == [(PROJECT, DAY)]
    monkeypatch.setattr(services, "reconciliation_recompare", compare)
    reconciliation_recompare_late()
    run, _ = current()
    assert (run.ledger_total_usd, run.flagged_count, _marks()) == (Decimal("8.4"), 0, [])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_late_run_committing_while_the_pass_unmarks_its_day_keeps_the_mark(tenant):
    """The test above, with two real sessions: a batch of late runs has re-marked the day but not committed when
    the pass reads the marks and compares the day (without that batch's run). The pass's delete waits on the
    batch's row lock, and once the batch commits it finds the mark changed and leaves it: nothing is lost
    between the two, whichever commits first."""
    price("2")
    ingest()
    reconcile(openai_bill(2.0, runs=3))
    ingest()
    written, commit = threading.Event(), threading.Event()

    def late_batch_held_open():
        with transaction.atomic():
            ingest()  # re-marks the day: its mark row is locked until this commits
            written.set()
            assert commit.wait(30)

    batch = InAnotherThread(late_batch_held_open)
    assert written.wait(30)
    the_pass = InAnotherThread(reconciliation_recompare_late)
    waited = a_session_waits_on_a_row()
    commit.set()
    batch.finish()
    assert len(the_pass.finish().runs) == 1
    assert waited  # the pass's delete waited on the mark the batch held (the interleaving this test is about)
    assert current()[0].ledger_total_usd == Decimal("5.6")  # compared without the third run...
    assert _marks() == [(PROJECT, DAY)]  # ...so its day stays marked for the next pass
    reconciliation_recompare_late()
    run, _ = current()
    assert (run.ledger_total_usd, run.flagged_count, _marks()) == (Decimal("8.4"), 0, [])


def test_a_pass_takes_at_most_its_limit_of_marks_the_oldest_first(tenant):
    now = timezone.now()
    # Created newest first: the pass goes by when a day was marked, not by which mark came first.
    for age, project in enumerate(["proj_c", "proj_a", "proj_b"]):
        LateLedgerDay.objects.create(openai_project=project, day=DAY, marked_at=now - dt.timedelta(seconds=age))
    reconciliation_recompare_late(limit=2)
    assert _marks() == [("proj_c", DAY)]


def test_a_day_whose_comparison_fails_is_recorded_and_unmarked_and_the_other_projects_go_on(tenant, monkeypatch):
    """Left marked, the failing day and every day before it in the pass were compared again every hour (a new
    result each time) and the marks behind them never reached."""
    price("2")
    ingest()
    reconcile(openai_bill(2.0, runs=2))
    ingest()  # late: marks DAY in the default project
    other_day = DAY - dt.timedelta(days=1)
    LateLedgerDay.objects.create(openai_project="proj_other", day=other_day, marked_at=timezone.now())
    swap_in = services._swap_in

    def broken_swap_in(**kwargs):
        if kwargs["run"].openai_project == PROJECT:
            raise RuntimeError("disk full")
        return swap_in(**kwargs)

    monkeypatch.setattr(services, "_swap_in", broken_swap_in)
    assert tasks.recompare_late_days.run() == {"recompared": 0, "locked": [], "failed": [PROJECT]}
    failed = ReconciliationRun.objects.get(day=DAY, trigger=LATE_RUNS_TRIGGER)
    assert (failed.status, failed.error) == ("failed", "RuntimeError: disk full")
    assert _marks() == []  # the failed day unmarked (its failure card says what to run), proj_other's too
    # The next pass has nothing to repeat.
    assert tasks.recompare_late_days.run() == {"recompared": 0, "locked": [], "failed": []}
    assert ReconciliationRun.objects.filter(day=DAY).count() == 2


def test_comparing_a_day_again_after_late_runs_does_not_settle_its_failed_fetch(tenant):
    """Compared again from the figures of an earlier fetch, the day still has not been fetched since the fetch
    that failed: the failure card (and its alert) stay until a fetch succeeds."""
    from apps.alerts.models import Alert
    from apps.reconciliation.selectors import ResultFilters, failed_attempts
    from apps.reconciliation.services import reconciliation_failure_alert, reconciliation_reconcile

    price("2")
    ingest()
    reconcile(openai_bill(2.0, runs=2))
    broken = openai_bill(2.0, runs=2)
    broken.fail_with = RuntimeError("admin key revoked")
    reconciliation_reconcile(end_day=DAY, days=1, trigger="test", provider_factory=lambda project: broken)
    reconciliation_failure_alert(project_id=PROJECT, end_day=DAY, days=1, error="admin key revoked")
    ingest()
    assert tasks.recompare_late_days.run()["recompared"] == 1
    assert [run.error for run in failed_attempts(ResultFilters(start=DAY, end=DAY + dt.timedelta(days=1)))] == [
        "RuntimeError: admin key revoked"]
    assert Alert.unscoped_objects.get(kind="reconciliation_failed").state == "open"


def test_beat_runs_the_late_days_task_every_hour():
    entry = BEAT_SCHEDULE["reconciliation-recompare-late-days"]
    assert entry["task"] == tasks.recompare_late_days.name == "reconciliation.recompare_late_days"
    assert entry["schedule"].minute == {45} and len(entry["schedule"].hour) == 24


def test_the_page_and_the_api_say_which_results_late_runs_reached_until_the_pass_compares_them(
        tenant, client, staff_user, api_client, admin_key):
    from tests.conftest import bearer

    price("2")
    ingest()
    reconcile(openai_bill(2.0, runs=2))
    ingest()  # late
    LateLedgerDay.objects.create(openai_project=PROJECT, day=DAY - dt.timedelta(days=1), marked_at=timezone.now())
    period = {"start": (DAY - dt.timedelta(days=3)).isoformat(), "end": DAY.isoformat()}
    client.force_login(staff_user)
    body = client.get("/reconciliation/", period).content.decode()
    # Only the day with a result is listed: the other has nothing to compare yet.
    assert "Runs reached 1 project-day after its reconciliation" in body
    assert f"<strong>{DAY:%b} {DAY.day}, {DAY.year}</strong>, <code>{PROJECT}</code>" in body
    answer = api_client.get("/api/v1/reconciliation/", {"start": period["start"],
                                                       "end": (DAY + dt.timedelta(days=1)).isoformat()},
                            **bearer(admin_key)).json()
    assert answer["summary"]["late_project_days"] == 1
    assert [(mark["day"], mark["project"]) for mark in answer["late"]] == [(DAY.isoformat(), PROJECT)]

    tasks.recompare_late_days.run()
    assert 'data-card="late"' not in client.get("/reconciliation/", period).content.decode()
    assert api_client.get("/api/v1/reconciliation/", {"start": period["start"],
                                                      "end": (DAY + dt.timedelta(days=1)).isoformat()},
                          **bearer(admin_key)).json()["late"] == []
