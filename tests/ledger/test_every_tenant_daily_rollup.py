"""The day totals over every tenant (EveryTenantDailyRollup, apps/ledger/services.py): the tenant-day rollup's
rows of each day added up, kept so by ingest (new runs, later reports), by re-pricing and by
ledger_check --fix; ledger_check finds a wrong total (a sample's check, from the stored tenant-days), and a
storage day total that is not its meters' sum."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db.models import Sum

from apps.ledger.models import EveryTenantDailyRollup, TenantDailyRollup
from apps.ledger.services import ingest_events, ledger_check, runs_reprice
from apps.pricing.models import ModelPrice
from tests import builders

DAY_ONE, DAY_TWO = dt.date(2026, 10, 5), dt.date(2026, 10, 6)


def _at(day: dt.date, hour: int = 9) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def _totals() -> dict[dt.date, tuple]:
    return {row.day: (row.runs, row.unpriced_runs, row.cost_total_usd) for row in EveryTenantDailyRollup.objects.all()}


def _tenant_days_added_up() -> dict[dt.date, tuple]:
    return {row["day"]: (row["runs"], row["unpriced"], row["cost"]) for row in
            TenantDailyRollup.objects.unscoped().values("day").order_by("day")
            .annotate(runs=Sum("runs"), unpriced=Sum("unpriced_runs"), cost=Sum("cost_total_usd"))}


def _report(slug: str, response_id: str, day: dt.date, *, model: str = "acct-model", **fields) -> None:
    result = ingest_events(events=[{"tenant": slug, "object": builders.response(
        response_id=response_id, created_at=_at(day), model=model, **fields)}])
    assert result.rejected == 0, result.as_dict()


def test_each_days_total_is_the_sum_of_its_tenant_days_through_reports_updates_and_repricing(tenant, other_tenant):
    ModelPrice.objects.create(model="acct-model", effective_from=dt.date(2026, 10, 1), input_usd_per_1m=Decimal("2"),
                              output_usd_per_1m=Decimal("8"))
    _report("acme", "resp_a1", DAY_ONE, input_tokens=1_000_000, output_tokens=0)
    _report("globex", "resp_g1", DAY_ONE, input_tokens=500_000, output_tokens=0)
    _report("globex", "resp_g2", DAY_TWO, input_tokens=1_000, output_tokens=0, model="gpt-unpriced-9")
    assert _totals() == {DAY_ONE: (2, 0, Decimal("3")), DAY_TWO: (1, 1, Decimal("0"))}

    # A later report of a run: its new cost replaces the old in the day's total.
    _report("acme", "resp_a1", DAY_ONE, input_tokens=2_000_000, output_tokens=0)
    assert _totals()[DAY_ONE] == (2, 0, Decimal("5"))
    # A price correction: re-rating the runs changes the totals by the difference.
    ModelPrice.objects.filter(model="acct-model").update(input_usd_per_1m=Decimal("3"))
    runs_reprice(start=DAY_ONE, end=DAY_TWO)
    assert _totals() == {DAY_ONE: (2, 0, Decimal("7.5")), DAY_TWO: (1, 1, Decimal("0"))}
    assert _totals() == _tenant_days_added_up()
    assert ledger_check() == []


def test_ledger_check_finds_a_wrong_total_from_the_runs_or_from_a_samples_tenant_days_and_fix_rewrites_it(
        tenant, other_tenant):
    _report("acme", "resp_a1", DAY_ONE, input_tokens=1_000)
    _report("globex", "resp_g1", DAY_ONE, input_tokens=1_000)
    right = _totals()
    EveryTenantDailyRollup.objects.filter(day=DAY_ONE).update(runs=5)

    wrong = (("EveryTenantDailyRollup", DAY_ONE), "runs", 5, 2)
    # A sample's runs do not add up to every tenant's day: its check compares the totals with the tenant-days.
    [sampled] = ledger_check(tenant_ids=[tenant.pk])
    [difference] = ledger_check()
    for found in (sampled, difference):
        assert (found.key, found.field, found.stored, found.expected) == wrong
    assert ledger_check(fix=True)
    assert _totals() == right and ledger_check() == [] and ledger_check(tenant_ids=[tenant.pk]) == []


def test_ledger_check_finds_a_storage_day_total_that_is_not_its_meters_sum_and_fix_writes_it_again(
        tenant, other_tenant):
    from apps.lifecycle.models import StorageDailyTotal

    builders.storage_meter(tenant=tenant, day=DAY_ONE, cost_usd=Decimal("0.25"))
    builders.storage_meter(tenant=other_tenant, day=DAY_ONE, cost_usd=Decimal("0.5"))
    builders.storage_meter(tenant=None, day=DAY_TWO, cost_usd=Decimal("9"))  # the unassigned stores: no total
    assert ledger_check() == []
    StorageDailyTotal.objects.filter(day=DAY_ONE).update(cost_usd=Decimal("1"))
    StorageDailyTotal.objects.create(day=DAY_TWO, cost_usd=Decimal("9"))

    found = [(d.key, d.field, d.stored, d.expected) for d in ledger_check(tenant_ids=[tenant.pk])]
    assert found == [(("StorageDailyTotal", DAY_ONE), "cost_usd", Decimal("1"), Decimal("0.75")),
                     (("StorageDailyTotal", DAY_TWO), "cost_usd", Decimal("9"), None)]
    assert len(ledger_check(fix=True)) == 2
    assert dict(StorageDailyTotal.objects.values_list("day", "cost_usd")) == {DAY_ONE: Decimal("0.75")}
    assert ledger_check() == []
