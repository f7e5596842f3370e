"""Ledger selectors behind the dashboard: exact Decimal money, scoped to what the caller may see."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from apps.ledger import selectors
from apps.ledger.models import Run, Thread
from apps.tenants.models import Tenant
from apps.tenants.scoping import TenantScope, TenantScopeError
from tests import builders

from .conftest import NOW
from .seed import run_row, thread_row

pytestmark = pytest.mark.django_db
TODAY = NOW.date()  # 2026-11-20


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)


def test_spend_summary_compares_month_to_date_with_last_month_and_projects_linearly(tenant, other_tenant):
    run_row(tenant, created_at=at(dt.date(2026, 11, 1)), cost="1.10")
    run_row(tenant, created_at=at(dt.date(2026, 11, 20), hour=23), cost="0.90")
    run_row(tenant, created_at=at(dt.date(2026, 10, 5)), cost="3.00")
    run_row(tenant, created_at=at(dt.date(2026, 10, 25)), cost="4.00")  # after the same point of last month
    run_row(tenant, created_at=at(dt.date(2026, 9, 30)), cost="100")  # two months ago: ignored
    run_row(other_tenant, created_at=at(dt.date(2026, 11, 2)), cost="50")

    summary = selectors.spend_summary(scope=TenantScope.of([tenant]), today=TODAY)

    assert summary.month_to_date_usd == Decimal("2.00")
    assert summary.last_month_usd == Decimal("7.00")
    assert summary.last_month_same_point_usd == Decimal("3.00")
    assert summary.projected_month_end_usd == Decimal("3.00")  # 2.00 / 20 days * 30 days
    assert summary.change_vs_same_point == Decimal("2.00") / Decimal("3.00") * 100 - 100
    assert selectors.spend_summary(scope=TenantScope.every_tenant(), today=TODAY).month_to_date_usd == Decimal("52.00")


def _spend_like_last_month_until(tenant, now: dt.datetime, spent_today: str) -> selectors.SpendSummary:
    """$24 a day on October 1-2 and November 1, `spent_today` so far on November 2; the summary at `now`."""
    for day, cost in ((dt.date(2026, 10, 1), "24"), (dt.date(2026, 10, 2), "24"), (dt.date(2026, 11, 1), "24"),
                      (dt.date(2026, 11, 2), spent_today)):
        run_row(tenant, created_at=at(day, hour=0), cost=cost)
    return selectors.spend_summary(tenant=tenant, today=now.date(), now=now)


def test_spend_summary_counts_today_only_as_far_as_it_has_gone(tenant):
    # A month spending exactly like the last one ($24 a day, $1 an hour), asked at 01:00 on the 2nd: whole
    # days read -48% ($25 against $48) and projected $375; the same point of last month is its first day and
    # an hour of its second.
    summary = _spend_like_last_month_until(tenant, dt.datetime(2026, 11, 2, 1, 0, tzinfo=dt.UTC), "1")
    assert summary.month_to_date_usd == Decimal("25") == summary.last_month_same_point_usd
    assert summary.change_vs_same_point == 0
    assert summary.projected_month_end_usd == Decimal("720")  # $24 a day for 30 days


def test_spend_summary_just_after_midnight_compares_pro_rata_and_projects_from_at_least_an_hour(tenant):
    # Six minutes into the 2nd, at $24 a day like last month: the comparison takes six minutes of last
    # month's 2nd (no change); only the projection counts a whole hour as elapsed, so a few minutes' spend
    # does not project wildly.
    summary = _spend_like_last_month_until(tenant, dt.datetime(2026, 11, 2, 0, 6, tzinfo=dt.UTC), "0.10")
    assert summary.month_to_date_usd == Decimal("24.10") == summary.last_month_same_point_usd
    assert summary.change_vs_same_point == 0
    expected = (Decimal("24.10") / (1 + Decimal(1) / 24) * 30).quantize(Decimal("1E-10"))
    assert summary.projected_month_end_usd == expected


def test_spend_summary_same_point_stops_at_the_end_of_a_shorter_last_month(tenant):
    run_row(tenant, created_at=at(dt.date(2026, 2, 28)), cost="1")
    summary = selectors.spend_summary(tenant=tenant, today=dt.date(2026, 3, 31))
    assert summary.last_month_same_point_usd == Decimal("1") == summary.last_month_usd
    assert summary.days_in_month == 31 and summary.days_elapsed == 31


def test_cost_by_day_by_tenant_keeps_the_top_tenants_and_groups_the_rest(tenant, other_tenant):
    small = Tenant.objects.create(slug="small", name="Small")
    day1, day2 = dt.date(2026, 11, 18), dt.date(2026, 11, 19)
    run_row(tenant, created_at=at(day1), cost="5")
    run_row(other_tenant, created_at=at(day2), cost="2")
    run_row(small, created_at=at(day2), cost="0.25")
    run_row(small, created_at=at(day1), cost="0.75")

    series = selectors.cost_by_day_by_tenant(scope=TenantScope.every_tenant(), start=day1, end=TODAY, top=2)

    assert series.days == [day1, day2, TODAY]
    assert list(series.series) == ["acme", "globex", selectors.OTHERS_LABEL]
    assert series.series["acme"] == [Decimal("5"), Decimal("0"), Decimal("0")]
    assert series.series["globex"] == [Decimal("0"), Decimal("2"), Decimal("0")]
    assert series.series[selectors.OTHERS_LABEL] == [Decimal("0.75"), Decimal("0.25"), Decimal("0")]
    assert series.total_usd == Decimal("8")
    assert series.labels == {"acme": "Acme Corp", "globex": "Globex Inc"}  # the legend's names, the rest unlabelled


def test_tenants_that_spent_the_same_are_ranked_by_slug_and_the_cut_keeps_the_first(tenant, other_tenant):
    # The ranking sums per tenant id and reads slugs and names after: the tie still breaks on the slug.
    zeta = Tenant.objects.create(slug="zeta", name="Zeta")
    beta = Tenant.objects.create(slug="beta", name="Beta")
    for each in (zeta, beta, other_tenant):
        run_row(each, created_at=at(TODAY), cost="2")
    run_row(tenant, created_at=at(TODAY), cost="1")

    series = selectors.cost_by_day_by_tenant(scope=TenantScope.every_tenant(), start=TODAY, end=TODAY, top=2)

    assert list(series.series) == ["beta", "globex", selectors.OTHERS_LABEL]
    assert series.series[selectors.OTHERS_LABEL] == [Decimal("3")]
    assert series.labels == {"beta": "Beta", "globex": "Globex Inc"}


def test_a_tenant_called_others_keeps_its_own_series_apart_from_the_rest(tenant, other_tenant):
    # Its spend and the rest's were one grey "others" bar on the overview.
    others = Tenant.objects.create(slug="others", name="Others Ltd")
    run_row(others, created_at=at(TODAY), cost="5")
    run_row(tenant, created_at=at(TODAY), cost="3")
    run_row(other_tenant, created_at=at(TODAY), cost="1")

    series = selectors.cost_by_day_by_tenant(scope=TenantScope.every_tenant(), start=TODAY, end=TODAY, top=2)

    assert series.series == {"others": [Decimal("5")], "acme": [Decimal("3")], selectors.OTHERS_LABEL: [Decimal("1")]}


def test_tenant_legend_names_never_read_others_or_alike():
    """Names as the legend shows them: a name two tenants share, or "(others)", carries the slug; blank is the slug."""
    assert selectors._tenant_legend_names({"a": "Acme", "b": "Acme", "c": " (others) ", "d": "", "e": "Beta"}) == {
        "a": "Acme (a)", "b": "Acme (b)", "c": "(others) (c)", "d": "d", "e": "Beta"}


def test_cost_by_day_by_tenant_only_sees_the_scope(tenant, other_tenant):
    run_row(tenant, created_at=at(TODAY), cost="1")
    run_row(other_tenant, created_at=at(TODAY), cost="9")
    series = selectors.cost_by_day_by_tenant(scope=TenantScope.of([tenant]), start=TODAY, end=TODAY)
    assert series.series == {"acme": [Decimal("1")]}


def test_cost_by_day_by_model_orders_models_by_cost(tenant):
    run_row(tenant, created_at=at(TODAY), cost="0.5", model="gpt-5-mini")
    run_row(tenant, created_at=at(TODAY), cost="2", model="gpt-5.4")
    series = selectors.cost_by_day_by_model(tenant=tenant, start=TODAY - dt.timedelta(days=1), end=TODAY)
    assert list(series.series) == ["gpt-5.4", "gpt-5-mini"]
    assert series.series["gpt-5-mini"] == [Decimal("0"), Decimal("0.5")]


def test_cost_by_feature_and_wasted_spend(tenant):
    run_row(tenant, created_at=at(TODAY), cost="1.25", feature="chat")
    run_row(tenant, created_at=at(TODAY), cost="0.75", feature="chat", status="failed")
    run_row(tenant, created_at=at(TODAY), cost="0.10", feature="", status="cancelled")
    rows = selectors.cost_by_feature(tenant=tenant, start=TODAY, end=TODAY)
    assert [(r["feature"], r["runs"], r["cost_usd"], r["wasted_cost_usd"]) for r in rows] == [
        ("chat", 2, Decimal("2.00"), Decimal("0.75")), ("", 1, Decimal("0.10"), Decimal("0.10")),
    ]
    wasted = selectors.wasted_summary(tenant=tenant, start=TODAY, end=TODAY)
    assert (wasted.wasted_usd, wasted.total_usd, wasted.runs) == (Decimal("0.85"), Decimal("2.10"), 3)
    assert wasted.share_percent == Decimal("0.85") / Decimal("2.10") * 100
    series = selectors.wasted_by_day(tenant=tenant, start=TODAY, end=TODAY)
    assert series.series == {"wasted": [Decimal("0.85")], "useful": [Decimal("1.25")]}


def test_cost_by_end_user_reads_runs_in_the_period(tenant):
    run_row(tenant, created_at=at(TODAY), cost="0.3", user_id="u1")
    run_row(tenant, created_at=at(TODAY), cost="0.2", user_id="u1")
    run_row(tenant, created_at=at(TODAY), cost="0.4", user_id="u2")
    run_row(tenant, created_at=at(TODAY - dt.timedelta(days=40)), cost="9", user_id="u3")
    rows = list(selectors.cost_by_end_user(tenant=tenant, start=TODAY - dt.timedelta(days=29), end=TODAY))
    assert [(r["user_id"], r["runs"], r["cost_usd"]) for r in rows] == [("u1", 2, Decimal("0.5")), ("u2", 1, Decimal("0.4"))]


def test_tenants_with_spend_annotates_month_to_date_and_exact_budget_percent(tenant, other_tenant):
    Tenant.objects.filter(pk=tenant.pk).update(monthly_budget_usd=Decimal("8.00"))
    run_row(tenant, created_at=at(dt.date(2026, 11, 3)), cost="1.5")
    run_row(tenant, created_at=at(dt.date(2026, 11, 4)), cost="0.5")
    run_row(tenant, created_at=at(dt.date(2026, 10, 31)), cost="7")
    scope = TenantScope.every_tenant()
    rows = {t.slug: t for t in selectors.tenants_with_spend(Tenant.objects.all(), scope=scope, today=TODAY)}
    assert rows["acme"].month_to_date_usd == Decimal("2.0")
    assert rows["acme"].budget_used_percent == Decimal("25")
    assert rows["globex"].month_to_date_usd == Decimal("0")
    assert rows["globex"].budget_used_percent is None


def test_daily_cost_for_tenants_fills_missing_days_with_zero(tenant):
    run_row(tenant, created_at=at(TODAY), cost="0.2")
    trend = selectors.daily_cost_for_tenants(scope=TenantScope.every_tenant(), tenant_ids=[tenant.pk],
                                             start=TODAY - dt.timedelta(days=2), end=TODAY)
    assert trend == {tenant.pk: [Decimal("0"), Decimal("0"), Decimal("0.2")]}


def test_runs_filtered_defaults_to_high_cost_and_applies_every_filter(tenant, other_tenant):
    cheap = run_row(tenant, created_at=at(TODAY), cost="0.01")
    pricey = run_row(tenant, created_at=at(TODAY), cost="0.50", model="gpt-5.5", feature="search")
    failed = run_row(tenant, created_at=at(TODAY), cost="0.30", status="failed")
    old = run_row(tenant, created_at=at(TODAY - dt.timedelta(days=10)), cost="5")
    theirs = run_row(other_tenant, created_at=at(TODAY), cost="9")
    scope = TenantScope.of([tenant])

    def ids(**filters):
        base = {"start": TODAY - dt.timedelta(days=1), "end": TODAY}
        return [run.openai_id for run in selectors.runs_filtered(scope=scope, filters=selectors.RunFilters(**{**base, **filters}))]

    assert ids() == [pricey.openai_id, failed.openai_id]
    assert ids(min_cost_usd=Decimal("0")) == [pricey.openai_id, failed.openai_id, cheap.openai_id]
    assert ids(model="gpt-5.5") == [pricey.openai_id]
    assert ids(feature="search") == [pricey.openai_id]
    assert ids(status="failed") == [failed.openai_id]
    assert ids(start=TODAY - dt.timedelta(days=30)) == [old.openai_id, pricey.openai_id, failed.openai_id]
    assert ids(tenant=other_tenant) == []  # outside the scope, even when named
    assert theirs.openai_id not in ids(min_cost_usd=Decimal("0"))


def test_run_get_visible_hides_other_tenants_runs(tenant, other_tenant):
    theirs = run_row(other_tenant, created_at=at(TODAY), cost="1")
    assert selectors.run_get_visible(scope=TenantScope.of([tenant]), openai_id=theirs.openai_id) is None
    assert selectors.run_get_visible(scope=TenantScope.every_tenant(), openai_id=theirs.openai_id) == theirs


def test_run_timeline_and_tokens_by_kind(tenant):
    run = run_row(tenant, created_at=at(TODAY), cost="1", status="failed", input_tokens=5000, cached_input_tokens=1200,
                  output_tokens=900, reasoning_tokens=400, started_at=at(TODAY) + dt.timedelta(seconds=2),
                  failed_at=at(TODAY) + dt.timedelta(seconds=9))
    assert [name for name, _ in selectors.run_timeline(run)] == ["created", "started", "failed"]
    assert selectors.run_tokens_by_kind(run) == [
        ("input (uncached)", 3800), ("input (cached)", 1200), ("input (cache write)", 0), ("output (excl. reasoning)", 500),
        ("reasoning", 400),
    ]


def test_prompt_token_histogram_counts_each_bin_and_the_long_tail(tenant):
    for tokens in [150, 150, 300, 800, 900, 1500, 60_000, 2_000_000]:
        run_row(tenant, created_at=at(TODAY), cost="0.01", input_tokens=tokens)
    histogram = selectors.prompt_token_histogram(tenant=tenant, start=TODAY, end=TODAY)
    counts = dict(zip(histogram.labels, histogram.counts, strict=True))
    assert counts["100–200"] == 2 and counts["200–500"] == 1 and counts["500–1k"] == 2 and counts["1k–2k"] == 1
    assert counts["50k–100k"] == 1 and counts["≥1M"] == 1
    assert histogram.total_runs == 8 and histogram.max_tokens == 2_000_000
    assert histogram.tail_runs == 2 and histogram.tail_from == 5_000  # median bin 500–1k; 5k and up is the tail


def test_thread_retention_status_on_both_sides_of_the_boundary(tenant):
    now = NOW
    retention = 60
    due_tomorrow = thread_row(tenant, last_activity_at=now - dt.timedelta(days=59))
    overdue = thread_row(tenant, last_activity_at=now - dt.timedelta(days=61))
    fresh = thread_row(tenant, last_activity_at=now - dt.timedelta(days=10))
    deleted = thread_row(tenant, last_activity_at=now - dt.timedelta(days=90), status=Thread.Status.DELETED)

    def status(thread, held=False):
        return selectors.thread_retention_status(thread, retention_days=retention, legal_hold=held, now=now)

    assert status(due_tomorrow) == {"deletes_at": now + dt.timedelta(days=1), "days_left": 1, "state": "due_soon"}
    assert status(overdue)["state"] == "overdue" and status(overdue)["days_left"] == -1  # due a day ago
    long_overdue = Thread(last_activity_at=now - dt.timedelta(days=118, hours=5))  # unsaved: not in `ordered`
    assert status(long_overdue)["days_left"] == -58  # 58 whole days past due (and 5 hours)
    assert status(fresh)["state"] == "ok" and status(fresh)["days_left"] == 50
    assert status(deleted)["state"] == "deleted"
    assert status(overdue, held=True)["state"] == "held"
    ordered = list(selectors.threads_with_retention(tenant=tenant))
    assert ordered == [overdue, due_tomorrow, fresh]


# --- spend counts metered vector storage, as the statement bills it ---------------------------------------


def _storage(tenant, day: dt.date, cost: str) -> None:
    """A day of the lifecycle meter for `tenant` (None: the unassigned stores)."""
    builders.storage_meter(tenant=tenant, day=day, usage_bytes=1, cost_usd=Decimal(cost))


def test_spend_adds_each_tenants_metered_vector_storage_to_its_runs(tenant, other_tenant):
    run_row(tenant, created_at=at(dt.date(2026, 11, 3)), cost="1.00")
    _storage(tenant, dt.date(2026, 11, 3), "0.25")
    _storage(tenant, dt.date(2026, 11, 4), "0.50")  # a day with storage and no run
    _storage(tenant, dt.date(2026, 10, 4), "2.00")  # last month, before the same point
    _storage(other_tenant, dt.date(2026, 11, 3), "40.00")  # makes globex the costlier tenant
    _storage(None, dt.date(2026, 11, 3), "900.00")  # the unassigned stores belong to no tenant

    summary = selectors.spend_summary(tenant=tenant, today=TODAY)
    assert (summary.month_to_date_usd, summary.last_month_usd) == (Decimal("1.75"), Decimal("2.00"))
    assert summary.last_month_same_point_usd == Decimal("2.00")
    everyone = TenantScope.every_tenant()
    assert selectors.spend_summary(scope=everyone, today=TODAY).month_to_date_usd == Decimal("41.75")
    assert selectors.spend_summary(scope=TenantScope.of([tenant]), today=TODAY).month_to_date_usd == Decimal("1.75")

    month_to_date = {"start": dt.date(2026, 11, 1), "end": TODAY + dt.timedelta(days=1)}
    assert selectors.spend_by_tenant(scope=everyone, **month_to_date) == {
        tenant.pk: Decimal("1.75"), other_tenant.pk: Decimal("40.00")}
    listed = selectors.tenants_with_spend(Tenant.objects.all(), scope=everyone, today=TODAY).order_by("-month_to_date_usd")
    assert [(t.slug, t.month_to_date_usd) for t in listed] == [("globex", Decimal("40.00")), ("acme", Decimal("1.75"))]

    by_tenant = selectors.cost_by_day_by_tenant(scope=everyone, start=dt.date(2026, 11, 3), end=dt.date(2026, 11, 4))
    assert by_tenant.series == {"globex": [Decimal("40.00"), Decimal("0")], "acme": [Decimal("1.25"), Decimal("0.50")]}
    assert list(by_tenant.series) == ["globex", "acme"]  # ranked by spend: storage makes globex the costlier
    top_one = selectors.cost_by_day_by_tenant(scope=everyone, start=dt.date(2026, 11, 3), end=dt.date(2026, 11, 4), top=1)
    assert list(top_one.series) == ["globex", selectors.OTHERS_LABEL]  # on runs alone acme would lead
    trends = selectors.daily_cost_for_tenants(scope=everyone, tenant_ids=[tenant.pk], start=dt.date(2026, 11, 3),
                                              end=dt.date(2026, 11, 4))
    assert trends == {tenant.pk: [Decimal("1.25"), Decimal("0.50")]}
    by_model = selectors.cost_by_day_by_model(tenant=tenant, start=dt.date(2026, 11, 3), end=dt.date(2026, 11, 4))
    assert by_model.series[selectors.STORAGE_SERIES] == [Decimal("0.25"), Decimal("0.50")]
    assert by_model.total_usd == Decimal("1.75")


def test_a_tenants_scope_never_adds_another_tenants_storage(tenant, other_tenant):
    _storage(other_tenant, dt.date(2026, 11, 3), "40.00")
    mine = TenantScope.of([tenant])
    assert selectors.spend_summary(scope=mine, today=TODAY).month_to_date_usd == Decimal("0")
    assert selectors.spend_by_tenant(scope=mine, start=dt.date(2026, 11, 1), end=TODAY + dt.timedelta(days=1)) == {}
    assert selectors.cost_by_day_by_tenant(scope=mine, start=dt.date(2026, 11, 3), end=dt.date(2026, 11, 3)).series == {}


def test_storage_is_compared_and_projected_by_the_days_metered_so_far(tenant):
    # Storage is metered once a day, at its end. A month storing exactly like the last ($24 a day), at noon on
    # the 2nd with the 1st metered: counted pro rata like runs, it read -50% and projected $360.
    for day in (dt.date(2026, 10, 1), dt.date(2026, 10, 2), dt.date(2026, 11, 1)):
        _storage(tenant, day, "24")
    noon = dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)
    summary = selectors.spend_summary(tenant=tenant, today=noon.date(), now=noon)
    assert summary.month_to_date_usd == Decimal("24") == summary.last_month_same_point_usd
    assert summary.change_vs_same_point == 0
    assert summary.projected_month_end_usd == Decimal("720")  # $24 a metered day for 30 days
    # Nothing metered yet this month: no storage to compare or project (runs still count as they come).
    first = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
    early = selectors.spend_summary(tenant=tenant, today=first.date(), now=first)
    assert (early.month_to_date_usd, early.last_month_same_point_usd, early.projected_month_end_usd) == (0, 0, 0)
    assert early.last_month_usd == Decimal("24")


@pytest.fixture
def two_months_of_spend(tenant, other_tenant):
    """Runs of three tenants (one of them's of a model with no price) and one's storage meters, October and
    November."""

    small = Tenant.objects.create(slug="small", name="Small")
    for offset in range(0, 50, 3):
        day = TODAY - dt.timedelta(days=offset)
        run_row(tenant, created_at=at(day), cost=f"{1 + offset % 4}.25")
        run_row(other_tenant, created_at=at(day, hour=3), cost="0.50", model="gpt-unpriced-1")
        if offset % 2:
            run_row(small, created_at=at(day), cost="0.125")
        builders.storage_meter(tenant=tenant, day=day, usage_bytes=1, store_count=1, gb_days=1,
                               cost_usd=Decimal("0.0300000000"), price_version="t")
    return small


def test_every_tenants_spend_per_day_comes_from_the_day_totals_and_is_what_their_tenant_days_add_up_to(
        tenant, other_tenant, two_months_of_spend):
    """Staff (a scope of every tenant) read the day totals kept over every tenant, 90 rows for 90 days; a scope
    naming the same tenants reads their tenant-days: the figures must be the same."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    start = TODAY - dt.timedelta(days=60)
    with CaptureQueriesContext(connection) as queries:
        from_totals = selectors.spend_days(scope=TenantScope.every_tenant(), start=start, end=TODAY)
    tables = " ".join(query["sql"] for query in queries)
    assert len(queries) == 2 and "ledger_tenantdailyrollup" not in tables and "lifecycle_storagemeter" not in tables
    named = selectors.spend_days(scope=TenantScope.of(Tenant.objects.all()), start=start, end=TODAY)
    assert from_totals == named
    assert from_totals.runs_usd and from_totals.storage_usd and any(from_totals.unpriced_runs.values())
    with pytest.raises(TenantScopeError):  # every tenant's spend: never a member's answer, even if asked
        selectors._every_tenant_spend_days(scope=TenantScope.of([tenant]), start=start, end=TODAY)


@pytest.mark.parametrize("chart_days", [7, 30, 90])
def test_the_overview_reads_spend_per_day_once_for_the_month_and_the_chart_with_the_same_figures(
        tenant, other_tenant, two_months_of_spend, chart_days):
    """The overview reads the scope's spend per day once (from the chart's start or last month's first day,
    whichever is earlier) and hands it to both: the figures must be those each reads on its own, and the
    chart's "others" (the day's total less the top tenants') what the rest of the tenants spent."""
    everyone = TenantScope.every_tenant()
    start = TODAY - dt.timedelta(days=chart_days - 1)
    days = selectors.spend_days(scope=everyone, start=min(start, selectors.spend_summary_start(TODAY)), end=TODAY)
    now = NOW
    assert selectors.spend_summary(scope=everyone, today=TODAY, now=now, days=days) == \
        selectors.spend_summary(scope=everyone, today=TODAY, now=now)
    shared = selectors.cost_by_day_by_tenant(scope=everyone, start=start, end=TODAY, top=1, days=days)
    assert shared == selectors.cost_by_day_by_tenant(scope=everyone, start=start, end=TODAY, top=1)
    assert list(shared.series) == ["acme", selectors.OTHERS_LABEL]
    rest = {day: Decimal(0) for day in shared.days}
    for run in Run.objects.unscoped().exclude(tenant=tenant).filter(created_at__date__gte=start):
        rest[run.created_at.date()] += run.cost_total_usd
    assert shared.series[selectors.OTHERS_LABEL] == [rest[day] for day in shared.days]


def test_rows_read_without_the_orms_converters_are_the_orms_rows_value_for_value(tenant, two_months_of_spend):
    """tenant_spend reads its rows straight from the driver on PostgreSQL: the same values, of the same types,
    as the ORM's; and names that are not the query's columns in order are refused, not read shifted."""
    from django.db.models import Count

    everyone = TenantScope.every_tenant()
    for rows, amount in selectors._spend_sources(scope=everyone):
        summed = rows.values("tenant_id").order_by().annotate(usd=selectors._sum_money(amount), days=Count("pk"))
        read = selectors._rows_as_read(summed, ("tenant_id", "usd", "days"))
        expected = list(summed.values_list("tenant_id", "usd", "days"))
        assert sorted(read) == sorted(expected) and read
        assert [tuple(map(type, row)) for row in sorted(read)] == [tuple(map(type, row)) for row in sorted(expected)]
        with pytest.raises(ValueError, match="selects"):
            selectors._rows_as_read(summed, ("usd", "tenant_id", "days"))


def test_a_summary_given_fewer_days_than_it_needs_reads_its_own(tenant, two_months_of_spend):
    everyone = TenantScope.every_tenant()
    last_week = selectors.spend_days(scope=everyone, start=TODAY - dt.timedelta(days=6), end=TODAY)
    assert selectors.spend_summary(scope=everyone, today=TODAY, days=last_week) == \
        selectors.spend_summary(scope=everyone, today=TODAY)
    assert selectors.spend_summary(scope=everyone, today=TODAY).last_month_usd > 0


def test_spend_days_only_see_the_scope(tenant, other_tenant, two_months_of_spend):
    mine = selectors.spend_days(scope=TenantScope.of([other_tenant]), start=TODAY - dt.timedelta(days=60), end=TODAY)
    assert set(mine.runs_usd.values()) == {Decimal("0.50")} and mine.storage_usd == {}
    assert sum(mine.unpriced_runs.values()) == len(mine.runs_usd)  # its runs are of a model with no price


def _listed(tenants) -> list[tuple[str, Decimal]]:
    return [(t.slug, t.month_to_date_usd) for t in tenants]


@pytest.mark.parametrize("limit", [1, 3, 4, 10])
def test_top_tenants_this_month_are_those_the_full_ordering_lists_first(tenant, other_tenant, limit):
    """Only the tenants whose month to date reaches the limit-th largest are annotated; the list must be the
    one ordering every tenant gives: ties at the cut broken by slug, and tenants that spent nothing (or whose
    spend is last month's) filling it by slug when fewer spent."""
    for slug, cost in (("delta", "3"), ("alpha", "3"), ("gamma", "2"), ("beta", "1"), ("idle", None), ("old", "9")):
        each = Tenant.objects.create(slug=slug, name=slug.title())
        if cost:
            run_row(each, created_at=at(dt.date(2026, 10, 30) if slug == "old" else TODAY), cost=cost)
    run_row(tenant, created_at=at(TODAY), cost="2")
    everyone = TenantScope.every_tenant()
    spend = selectors.tenant_spend(scope=everyone, start=TODAY - dt.timedelta(days=29), end=TODAY, today=TODAY)
    assert "old" not in {t.slug for t in Tenant.objects.filter(pk__in=spend.month_to_date)}
    expected = selectors.tenants_with_spend(Tenant.objects.all(), scope=everyone, today=TODAY).order_by(
        "-month_to_date_usd", "slug")[:limit]
    listed = selectors.top_tenants_this_month(scope=everyone, today=TODAY, month_to_date=spend.month_to_date,
                                              limit=limit)
    assert _listed(listed) == _listed(expected)
    assert [t.budget_used_percent for t in listed] == [t.budget_used_percent for t in expected]


def test_top_tenants_this_month_see_only_the_scope_and_skip_a_tenant_gone_since(tenant, other_tenant):
    run_row(tenant, created_at=at(TODAY), cost="1")
    run_row(other_tenant, created_at=at(TODAY), cost="5")
    mine = TenantScope.of([tenant])
    spend = selectors.tenant_spend(scope=mine, start=TODAY, end=TODAY, today=TODAY)
    assert spend.month_to_date == {tenant.pk: Decimal("1")}
    assert _listed(selectors.top_tenants_this_month(scope=mine, today=TODAY, month_to_date=spend.month_to_date)) == [
        ("acme", Decimal("1"))]
    # Sums read before a tenant was deleted name an id that no longer exists: the list is still full.
    stale = {**spend.month_to_date, 10**9: Decimal("99")}
    listed = selectors.top_tenants_this_month(scope=TenantScope.every_tenant(), today=TODAY, month_to_date=stale, limit=2)
    assert _listed(listed) == [("globex", Decimal("5")), ("acme", Decimal("1"))]


@pytest.mark.postgres
def test_every_tenants_storage_per_day_is_summed_from_the_meters_index_alone(tenant, two_months_of_spend):
    """The overview's and the lifecycle page's sums over every tenant's storage meters read the (day, tenant)
    index, which carries the amounts, not the table (issue #9)."""
    from apps.lifecycle.selectors import tenant_storage_meters
    from tests.plans import plan_of

    rows = (tenant_storage_meters(scope=TenantScope.every_tenant()).filter(day__gte=TODAY - dt.timedelta(days=29))
            .values("day").order_by().annotate(cost=selectors._sum_money("cost_usd")))
    plan = plan_of(rows)
    assert "Index Only Scan using storagemeter_day_tenant" in plan, plan
