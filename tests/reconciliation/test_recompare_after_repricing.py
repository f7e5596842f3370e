"""A re-rating leaves no stale reconciliation result behind: the re-rated days' current results are compared
again with the ledger as it is now, from the OpenAI figures they stored (no OpenAI call), as soon as the
re-rating commits. Before, a day older than the daily window kept comparing OpenAI with the old ledger cost
until someone ran `manage.py reconcile` for it."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.management import call_command

from apps.alerts.models import Alert
from apps.core.models import AuditEvent
from apps.ledger.services import runs_reprice
from apps.pricing.models import ModelPrice
from apps.pricing.services import model_price_add
from apps.reconciliation.models import ReconciliationRun
from apps.reconciliation.selectors import ResultFilters, failed_attempts
from apps.reconciliation.services import (
    LEGACY_UNMAPPED_ITEM,
    _ProjectLock,
    reconciliation_after_repricing,
    reconciliation_reconcile,
)

from .one_day import DAY, MODEL, PROJECT, current, ingest, openai_bill, price, reconcile

pytestmark = pytest.mark.django_db


def test_a_price_change_that_re_rates_a_clean_day_20_days_back_shows_its_new_drift_without_a_manual_reconcile(
        tenant, django_capture_on_commit_callbacks):
    price("2")
    ingest()
    provider = openai_bill(2.0)
    clean = reconcile(provider)
    assert (clean.flagged_count, clean.ledger_total_usd, clean.openai_total_usd) == (0, Decimal("2.8"), Decimal("2.8"))
    calls = list(provider.calls)

    # A price correction effective before the day, then `manage.py reprice` over it.
    price("3", effective_from=DAY - dt.timedelta(days=5))
    with django_capture_on_commit_callbacks(execute=True):
        call_command("reprice", "--start", DAY.isoformat(), "--end", DAY.isoformat())

    run, lines = current()
    assert run.pk != clean.pk and run.recompared_from_id == clean.pk and run.status == "complete"
    line = lines[f"{MODEL}, input"]
    assert (line.ledger_value, line.openai_value, line.difference, line.status) == (
        Decimal("3"), Decimal("2"), Decimal("-1"), "drift")
    # Exact Decimal totals: the ledger's new cost, OpenAI's figures as stored.
    assert (run.ledger_total_usd, run.openai_total_usd, run.unattributed_usd) == (
        Decimal("3.8"), Decimal("2.8"), Decimal("-1"))
    assert run.flagged_count == 1
    assert provider.calls == calls  # OpenAI was not asked again
    assert any("manage.py reconcile --date " + DAY.isoformat() in note for note in run.notes)
    # The drift alert follows the new result, as the daily run's would.
    alert = Alert.unscoped_objects.get(kind="reconciliation_drift")
    assert alert.cause_key == f"reconciliation:{PROJECT}:{DAY.isoformat()}:{MODEL}, input:drift"
    audit = AuditEvent.objects.get(action="reconciliation.recompare")
    assert audit.data["days"] == [DAY.isoformat()] and audit.data["recompared_from"] == [clean.pk]
    assert ReconciliationRun.objects.filter(day=DAY).count() == 2  # the earlier result kept as history


def test_a_drift_that_a_price_correction_explains_disappears_from_the_day_and_the_page(
        tenant, client, staff_user, django_capture_on_commit_callbacks):
    price("2")
    ingest()
    drifting = reconcile(openai_bill(3.0))  # OpenAI billed the new price; the ledger had the old one
    assert drifting.flagged_count == 1
    price("3", effective_from=DAY)
    with django_capture_on_commit_callbacks(execute=True):
        runs_reprice(start=DAY, end=DAY)
    run, lines = current()
    assert run.flagged_count == 0 and {line.status for line in lines.values()} == {"matched"}
    assert lines[f"{MODEL}, input"].ledger_value == Decimal("3")
    client.force_login(staff_user)
    body = client.get("/reconciliation/", {"start": DAY.isoformat(), "end": DAY.isoformat(), "status": "flagged"}).content.decode()
    assert f"{MODEL}, input" not in body


def test_a_price_added_for_unpriced_runs_through_the_prices_service_re_compares_their_day(
        tenant, django_capture_on_commit_callbacks):
    ingest()  # no price yet: the run is stored unpriced, the ledger shows $0
    before = reconcile(openai_bill(2.0))
    assert before.ledger_total_usd == Decimal("0") and before.flagged_count > 0
    with django_capture_on_commit_callbacks(execute=True):
        model_price_add(model=MODEL, effective_from=dt.date(2026, 1, 1), input_usd_per_1m=Decimal("2"),
                        output_usd_per_1m=Decimal("8"))
    run, _ = current()
    assert run.recompared_from_id == before.pk
    assert (run.ledger_total_usd, run.flagged_count) == (Decimal("2.8"), 0)


def test_a_re_rating_that_changes_nothing_leaves_the_results_untouched(tenant, django_capture_on_commit_callbacks):
    price("2")
    ingest()
    clean = reconcile(openai_bill(2.0))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        call_command("reprice", "--start", DAY.isoformat(), "--end", DAY.isoformat())
        call_command("reprice", "--start", DAY.isoformat(), "--end", DAY.isoformat(), "--dry-run")
    assert callbacks == []
    assert list(ReconciliationRun.objects.filter(day=DAY).values_list("pk", flat=True)) == [clean.pk]
    assert not AuditEvent.objects.filter(action="reconciliation.recompare").exists()


def test_a_re_rating_of_one_tenant_re_compares_the_whole_day_which_belongs_to_no_tenant(
        tenant, other_tenant, django_capture_on_commit_callbacks):
    """Tenancy is unchanged: the re-rating stays scoped to its tenant (the other tenant's run keeps its cost),
    and reconciliation, organization-level, compares the whole day's ledger: both tenants."""
    price("2")
    ingest("acme")
    ingest("globex")
    clean = reconcile(openai_bill(2.0, runs=2))
    assert clean.flagged_count == 0
    price("3", effective_from=DAY)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("reprice", "--start", DAY.isoformat(), "--end", DAY.isoformat(), "--tenant", "acme")
    from apps.ledger.models import Run

    assert Run.objects.for_tenant(other_tenant).get().cost_total_usd == Decimal("2.8")
    run, lines = current()
    assert lines[f"{MODEL}, input"].ledger_value == Decimal("5")  # acme at $3 + globex still at $2
    assert run.ledger_total_usd == Decimal("6.6")


def test_spend_on_line_items_the_ledger_cannot_hold_is_kept_itemised_and_for_an_older_result_as_a_total(
        tenant, django_capture_on_commit_callbacks):
    price("2")
    ingest()
    provider = openai_bill(2.0).cost(DAY, "fine-tuning training", 0.5)
    first = reconcile(provider)
    assert first.openai_extras["unmapped"] == {"fine-tuning training": "0.5000000000"}
    price("3", effective_from=DAY)
    with django_capture_on_commit_callbacks(execute=True):
        runs_reprice(start=DAY, end=DAY)
    run, lines = current()
    assert run.openai_total_usd == Decimal("3.3") and run.unattributed_usd == Decimal("-0.5")
    assert any("fine-tuning training $0.5000" in note for note in run.notes)
    assert run.openai_extras == first.openai_extras

    # A result saved before openai_extras existed: the total is still exact, named as such.
    ReconciliationRun.objects.filter(pk=run.pk).update(openai_extras=None)
    ModelPrice.objects.filter(model=MODEL, effective_from=DAY).update(input_usd_per_1m=Decimal("2"))
    with django_capture_on_commit_callbacks(execute=True):
        runs_reprice(start=DAY, end=DAY)
    legacy, _ = current()
    assert legacy.recompared_from_id == first.pk  # names the run that fetched the figures
    assert (legacy.ledger_total_usd, legacy.openai_total_usd, legacy.flagged_count) == (
        Decimal("2.8"), Decimal("3.3"), 1)
    assert legacy.openai_extras["unmapped"] == {LEGACY_UNMAPPED_ITEM: "0.5000000000"}


def test_a_re_compared_result_does_not_hide_a_failed_fetch_of_the_day(tenant, django_capture_on_commit_callbacks):
    price("2")
    ingest()
    reconcile(openai_bill(2.0))
    broken = openai_bill(2.0)
    broken.fail_with = RuntimeError("admin key revoked")
    reconciliation_reconcile(end_day=DAY, days=1, trigger="test", provider_factory=lambda project: broken)
    price("3", effective_from=DAY)
    with django_capture_on_commit_callbacks(execute=True):
        runs_reprice(start=DAY, end=DAY)
    assert current()[0].recompared_from_id is not None
    failed = failed_attempts(ResultFilters(start=DAY, end=DAY + dt.timedelta(days=1)))
    assert [run.error for run in failed] == ["RuntimeError: admin key revoked"]


def test_a_re_rating_hands_its_days_to_the_task_instead_of_comparing_them_where_it_ran(tenant, monkeypatch):
    """Compared in the receiver, the days were compared inside the request that added a price (the prices API,
    the admin), for as many days as it re-rated, under the web server's timeout."""
    from apps.reconciliation import tasks

    price("2")
    ingest()
    clean = reconcile(openai_bill(2.0))
    queued = []
    monkeypatch.setattr(tasks.recompare_days, "apply_async", lambda **kwargs: queued.append(kwargs))
    reconciliation_after_repricing(changed_days={"": frozenset({DAY})})
    assert ReconciliationRun.objects.get(is_current=True, day=DAY).pk == clean.pk
    assert queued == [{"kwargs": {"changed_days": {"": [DAY.isoformat()]}}, "countdown": 0}]


def test_without_a_broker_the_re_rated_days_are_compared_where_the_re_rating_ran(tenant, monkeypatch):
    from apps.reconciliation import tasks

    def no_broker(**kwargs):
        raise ConnectionError("broker unreachable")

    price("2")
    ingest()
    clean = reconcile(openai_bill(2.0))
    monkeypatch.setattr(tasks.recompare_days, "apply_async", no_broker)
    price("3", effective_from=DAY)
    runs_reprice(start=DAY, end=DAY)  # (its own announcement is not run: no commit in this test)
    reconciliation_after_repricing(changed_days={"": frozenset({DAY})})
    run, lines = current()
    assert run.recompared_from_id == clean.pk and lines[f"{MODEL}, input"].status == "drift"


def test_the_task_retries_a_day_another_reconciliation_holds_then_compares_it(tenant, monkeypatch):
    from apps.reconciliation import tasks

    price("2")
    ingest()
    clean = reconcile(openai_bill(2.0))
    queued = []
    monkeypatch.setattr(tasks.recompare_days, "apply_async", lambda **kwargs: queued.append(kwargs))
    lock = _ProjectLock(PROJECT, owner="another-task")
    assert lock.acquire()
    try:
        tasks.recompare_days.run(changed_days={"": [DAY.isoformat()]})
    finally:
        lock.release()
    assert ReconciliationRun.objects.get(is_current=True, day=DAY).pk == clean.pk
    assert [call["kwargs"] for call in queued] == [{"changed_days": {PROJECT: [DAY.isoformat()]}, "attempt": 1}]
    assert queued[0]["countdown"] > 0

    # Once the lock is free, the task compares the day again.
    price("3", effective_from=DAY)
    runs_reprice(start=DAY, end=DAY)
    tasks.recompare_days.run(**queued[0]["kwargs"])
    run, lines = current()
    assert run.recompared_from_id == clean.pk and lines[f"{MODEL}, input"].status == "drift"


def test_a_failed_re_compare_stops_being_a_failure_once_a_later_re_compare_of_the_day_succeeds(tenant, monkeypatch):
    """A failed fetch stays on the failure card until a fetch succeeds; a failed re-compare stayed too, for
    good: the daily run never looks at a day that old again."""
    from apps.reconciliation import services

    price("2")
    ingest()
    reconcile(openai_bill(2.0))
    price("3", effective_from=DAY)
    runs_reprice(start=DAY, end=DAY)
    real_swap_in = services._swap_in

    def failing_swap_in(**kwargs):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(services, "_swap_in", failing_swap_in)
    with pytest.raises(RuntimeError):
        services.reconciliation_recompare(changed_days={"": {DAY}})
    window = ResultFilters(start=DAY, end=DAY + dt.timedelta(days=1))
    assert [run.error for run in failed_attempts(window)] == ["RuntimeError: database hiccup"]

    monkeypatch.setattr(services, "_swap_in", real_swap_in)
    services.reconciliation_recompare(changed_days={"": {DAY}})
    assert failed_attempts(window) == []
