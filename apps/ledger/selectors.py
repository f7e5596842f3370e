"""Read-side queries over the ledger (runs, threads, daily rollups). Every function takes a TenantScope or a
tenant, so nothing here can read a tenant it was not given. Charts that span days read the daily rollups,
never raw runs, and spend adds the tenants' daily vector-storage meters (through the lifecycle app's selector).

Money comes back as exact Decimal; days are UTC dates (the rollups' day boundary)."""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from operator import itemgetter

from django.db import DataError, ProgrammingError, connection, transaction
from django.db.models import (
    Case,
    Count,
    DecimalField,
    ExpressionWrapper,
    F,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncMonth

from apps.core.money import MONEY_FIELD_KWARGS, ZERO, units_as_usd_sql, units_to_usd, units_usd_string_sql
from apps.core.timeutils import day_start, moment_shifted, month_start, next_month
from apps.tenants.scoping import TenantScope, TenantScopeError

from .models import (
    END_USER_COUNTS,
    END_USER_MONEY,
    PROMPT_TOKEN_EDGES,
    DailyRollup,
    EndUserDailyRollup,
    EndUserMonthlyRollup,
    EndUserMonthPartRollup,
    EveryTenantDailyRollup,
    PromptSizeRollup,
    Run,
    TenantDailyRollup,
    Thread,
    ToolUsageRollup,
    end_user_units_column,
    month_parts,
)

# The series of the tenants outside a chart's top ones. Not a name a tenant can have (slugs are letters, digits and
# dashes): as "others", a tenant of that slug in the top had the rest's spend added to its own bar, drawn grey.
OTHERS_LABEL = "(others)"
_MONEY = DecimalField(**MONEY_FIELD_KWARGS)

logger = logging.getLogger(__name__)


def _zero_money() -> Value:
    return Value(ZERO, output_field=_MONEY)


def _sum_money(expression: str, **kwargs) -> Coalesce:
    return Coalesce(Sum(expression, **kwargs), _zero_money(), output_field=_MONEY)


def _rollups(*, scope: TenantScope | None = None, tenant=None) -> QuerySet:
    """The daily rollup rows that hold runs. Rows are never deleted: when a later report of a run names another
    model or feature, the old key's row stays at zero runs (and zero sums), and read as is it made a "0 runs"
    feature line, a model in the cost chart's legend and filter choices the usage API does not list
    (usage_lines leaves those groups out too)."""
    return _rows_with_runs(DailyRollup, scope=scope, tenant=tenant)


def _storage_meters(*, scope: TenantScope | None = None, tenant=None) -> QuerySet:
    """Tenants' metered vector storage per day, in the same scope as _rollups: a tenant's spend is its runs'
    cost plus its storage, its statement's subtotal (before markup). Read through the lifecycle app's selector."""
    from apps.lifecycle.selectors import tenant_storage_meters

    return tenant_storage_meters(scope=scope, tenant=tenant)


def _tenant_days(*, scope: TenantScope | None = None, tenant=None) -> QuerySet:
    """Tenants' runs and spend per day (TenantDailyRollup), in the same scope as _rollups and, like them, the
    rows that hold runs: for reads that need neither model nor feature."""
    return _rows_with_runs(TenantDailyRollup, scope=scope, tenant=tenant)


def _rows_with_runs(model, *, scope: TenantScope | None, tenant) -> QuerySet:
    """A rollup's rows of one tenant or of a scope, less those a later report of their runs left at zero."""
    if tenant is not None:
        rows = model.objects.for_tenant(tenant)
    elif scope is None:
        raise ValueError("Pass a scope or a tenant.")
    else:
        rows = model.objects.in_scope(scope)
    return rows.exclude(runs=0)


def _spend_sources(*, scope: TenantScope | None = None, tenant=None) -> tuple[tuple[QuerySet, str], ...]:
    """What a tenant's spend adds up, as (rows, amount column): its runs' cost per day (the tenant-day rollup,
    one row per tenant and day whatever its models and features) and its metered vector storage. Both have a
    tenant and a day, so every spend read filters and groups them alike."""
    return ((_tenant_days(scope=scope, tenant=tenant), "cost_total_usd"),
            (_storage_meters(scope=scope, tenant=tenant), "cost_usd"))


def _add_rows(into: dict, rows, key: Callable[[dict], object], value: str = "cost_usd") -> dict:
    for row in rows:
        into[key(row)] = into.get(key(row), ZERO) + row[value]
    return into


def spend_by_tenant(*, scope: TenantScope, start: dt.date, end: dt.date) -> dict[int, Decimal]:
    """Each tenant's spend (runs' cost and metered vector storage) over the UTC days [start, end): what budgets
    count. Tenants with none are absent. Two grouped queries, whatever the number of tenants."""
    spend: dict[int, Decimal] = {}
    for rows, amount in _spend_sources(scope=scope):
        _add_rows(spend, rows.filter(day__gte=start, day__lt=end).values("tenant_id").order_by()
                  .annotate(cost_usd=_sum_money(amount)), key=lambda row: row["tenant_id"])
    return spend


# --- spend over months ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SpendSummary:
    today: dt.date
    month_to_date_usd: Decimal
    last_month_usd: Decimal
    # Last month up to the same day of the month: the fair comparison for a month in progress.
    last_month_same_point_usd: Decimal
    projected_month_end_usd: Decimal
    days_elapsed: int
    days_in_month: int
    # This month's runs of a model with no price yet: in the spend at $0 until priced, as the month's statement
    # counts them (its unpriced_runs).
    unpriced_runs: int = 0

    @property
    def change_vs_same_point(self) -> Decimal | None:
        if not self.last_month_same_point_usd:
            return None
        return (self.month_to_date_usd - self.last_month_same_point_usd) / self.last_month_same_point_usd * 100


# The least of today that counts as elapsed: just after midnight a few minutes' spend would project wildly.
_MIN_ELAPSED_TODAY = Decimal(1) / 24


@dataclass(frozen=True)
class SpendDays:
    """Spend per UTC day from `start` to `end` (inclusive) of a scope or one tenant: the runs' cost and unpriced
    runs of the days with runs, and the metered storage of the days metered (a day metered at $0 is a key).
    Read once, it feeds both the month's figures and a chart of the period (the overview: issue #9)."""

    start: dt.date
    end: dt.date
    runs_usd: dict[dt.date, Decimal]
    unpriced_runs: dict[dt.date, int]
    storage_usd: dict[dt.date, Decimal]

    def covers(self, start: dt.date, end: dt.date) -> bool:
        return self.start <= start and end <= self.end

    def total(self, day: dt.date) -> Decimal:
        return self.runs_usd.get(day, ZERO) + self.storage_usd.get(day, ZERO)


def spend_days(*, scope: TenantScope | None = None, tenant=None, start: dt.date, end: dt.date) -> SpendDays:
    """Two reads (runs, storage), one row per day, whatever the number of tenants: for a scope of every tenant
    (staff) the day totals kept over every tenant, 90 rows for 90 days; for one tenant or a member's tenants
    their tenant-days, grouped by day (90,000 rows summed for 90 days of 1,000 tenants took ~20 ms per read
    at 10M runs: issue #9)."""
    if tenant is None and scope is not None and scope.is_every_tenant:
        return _every_tenant_spend_days(scope=scope, start=start, end=end)
    (runs, runs_amount), (storage, storage_amount) = _spend_sources(scope=scope, tenant=tenant)
    runs_usd, unpriced_runs = {}, {}
    for row in (runs.filter(day__gte=start, day__lte=end).values("day").order_by()
                .annotate(cost_usd=_sum_money(runs_amount), unpriced=Coalesce(Sum("unpriced_runs"), 0))):
        runs_usd[row["day"]], unpriced_runs[row["day"]] = row["cost_usd"], row["unpriced"]
    storage_usd = dict(storage.filter(day__gte=start, day__lte=end).values("day").order_by()
                       .annotate(cost_usd=_sum_money(storage_amount)).values_list("day", "cost_usd"))
    return SpendDays(start=start, end=end, runs_usd=runs_usd, unpriced_runs=unpriced_runs, storage_usd=storage_usd)


def _every_tenant_spend_days(*, scope: TenantScope, start: dt.date, end: dt.date) -> SpendDays:
    """spend_days over every tenant from the totals (the same days as keys: those with runs, those metered
    for a tenant). The totals hold every tenant's spend: a narrower scope is refused, never answered."""
    from apps.lifecycle.selectors import storage_daily_totals

    if not scope.is_every_tenant:
        raise TenantScopeError("The day totals over every tenant are for a scope of every tenant only.")
    runs_usd, unpriced_runs = {}, {}
    for day, cost, unpriced in (EveryTenantDailyRollup.objects.filter(day__gte=start, day__lte=end)
                                .exclude(runs=0).values_list("day", "cost_total_usd", "unpriced_runs")):
        runs_usd[day], unpriced_runs[day] = cost, unpriced
    return SpendDays(start=start, end=end, runs_usd=runs_usd, unpriced_runs=unpriced_runs,
                     storage_usd=storage_daily_totals(scope=scope, start=start, end=end))


def spend_summary_start(today: dt.date) -> dt.date:
    """The first day spend_summary reads: the first of last month."""
    return month_start(month_start(today) - dt.timedelta(days=1))


def spend_summary(*, scope: TenantScope | None = None, tenant=None, today: dt.date,
                  now: dt.datetime | None = None, days: SpendDays | None = None) -> SpendSummary:
    """Spend (runs and metered vector storage) this month to date, last month (whole and to the same point),
    and a straight-line projection of this month from the time elapsed so far (storage: from the days metered
    so far, see below). With `now`, today counts as the part of it that has passed: the
    comparison takes last month's earlier days and that share of its same day (the rollups are daily, so
    that share is pro rata), and the projection divides by the fractional days elapsed. Without `now`,
    today counts as a whole day. Otherwise, at 01:00 UTC a month running exactly like the last one read
    about -48% on the 2nd and projected half its end. `days`: the scope's spend per day already read, from
    spend_summary_start(today) or earlier to today (read here otherwise)."""
    this_start, last_start = month_start(today), spend_summary_start(today)
    if days is None or not days.covers(last_start, today):
        days = spend_days(scope=scope, tenant=tenant, start=last_start, end=today)
    same_day = last_start + dt.timedelta(days=today.day - 1)  # past last month's end when it is shorter
    today_share = Decimal(1)
    if now is not None:
        seconds = Decimal(int((now - day_start(today)).total_seconds()))
        today_share = min(Decimal(1), max(Decimal(0), seconds / 86400))

    def summed(amounts: dict, first: dt.date, before: dt.date):
        return sum((amount for day, amount in amounts.items() if first <= day < before), ZERO)

    after_today = today + dt.timedelta(days=1)
    runs_month_to_date = summed(days.runs_usd, this_start, after_today)
    runs_last_month = summed(days.runs_usd, last_start, this_start)
    runs_same_point = summed(days.runs_usd, last_start, min(same_day, this_start))
    if same_day < this_start:
        runs_same_point += days.runs_usd.get(same_day, ZERO) * today_share
    days_in_month = (next_month(today) - this_start).days
    runs_projected = runs_month_to_date / (today.day - 1 + max(today_share, _MIN_ELAPSED_TODAY)) * days_in_month
    # Storage has its own clock: a day is metered whole, once, at its end (23:50 UTC), never part of a day. It is
    # compared and projected by the days metered so far; counted like runs, pro rata of a day it has no row for
    # yet, a month storing exactly like the last read -92% at noon on the 1st.
    metered_through = max((day for day in days.storage_usd if this_start <= day <= today), default=None)
    metered_days = (metered_through - this_start).days + 1 if metered_through else 0
    last_month_point = last_start + dt.timedelta(days=metered_days)  # exclusive; past its end when it is shorter
    storage_month_to_date = summed(days.storage_usd, this_start, after_today)
    storage_projected = storage_month_to_date / metered_days * days_in_month if metered_days else ZERO
    same_point = runs_same_point + summed(days.storage_usd, last_start, min(last_month_point, this_start))
    return SpendSummary(
        today=today,
        month_to_date_usd=runs_month_to_date + storage_month_to_date,
        last_month_usd=runs_last_month + summed(days.storage_usd, last_start, this_start),
        last_month_same_point_usd=same_point.quantize(Decimal("0.0000000001")),
        projected_month_end_usd=(runs_projected + storage_projected).quantize(Decimal("0.0000000001")),
        days_elapsed=today.day,
        days_in_month=days_in_month,
        unpriced_runs=sum(count for day, count in days.unpriced_runs.items() if this_start <= day <= today),
    )


# --- cost per day ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DailySeries:
    """Cost per day split into named series; every series has one value per day in `days` (zeros filled)."""

    days: list[dt.date]
    series: dict[str, list[Decimal]] = field(default_factory=dict)
    # What a legend calls a series whose key is not for reading (a tenant's slug: its name); absent, the key.
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def total_usd(self) -> Decimal:
        return sum((sum(values, ZERO) for values in self.series.values()), ZERO)


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=offset) for offset in range((end - start).days + 1)]


def _fill(days: list[dt.date], rows, key_name: str, value_name: str = "cost_usd") -> dict[str, dict[dt.date, Decimal]]:
    grouped: dict[str, dict[dt.date, Decimal]] = defaultdict(dict)
    for row in rows:
        grouped[row[key_name] or ""][row["day"]] = row[value_name]
    return grouped


@dataclass(frozen=True)
class TenantSpend:
    """Each tenant's spend (runs and metered vector storage) from `start` to `end` (inclusive) and this month to
    date, by tenant id; a tenant is a key of each only with rows in it."""

    start: dt.date
    end: dt.date
    in_period: dict[int, Decimal]
    month_to_date: dict[int, Decimal]


def tenant_spend(*, scope: TenantScope, start: dt.date, end: dt.date, today: dt.date) -> TenantSpend:
    """One grouped read per source over both periods: the overview ranks its chart's tenants on the one and its
    top tenants this month on the other. Summed per tenant id and named after by callers: grouped by the
    tenant's slug and name, every row of the period was joined to its tenant before the sums (issue #9)."""
    this_start = month_start(today)
    period = Q(day__gte=start, day__lte=end)
    month = Q(day__gte=this_start, day__lte=today)
    in_period: dict[int, Decimal] = {}
    month_to_date: dict[int, Decimal] = {}
    for rows, amount in _spend_sources(scope=scope):
        summed = (rows.filter(day__gte=min(start, this_start), day__lte=max(end, today)).values("tenant_id").order_by()
                  .annotate(period_usd=_sum_money(amount, filter=period), period_rows=Count("pk", filter=period),
                            month_usd=_sum_money(amount, filter=month), month_rows=Count("pk", filter=month)))
        for tenant_id, period_usd, period_rows, month_usd, month_rows in _rows_as_read(
                summed, ("tenant_id", "period_usd", "period_rows", "month_usd", "month_rows")):
            if period_rows:
                in_period[tenant_id] = in_period.get(tenant_id, ZERO) + period_usd
            if month_rows:
                month_to_date[tenant_id] = month_to_date.get(tenant_id, ZERO) + month_usd
    return TenantSpend(start=start, end=end, in_period=in_period, month_to_date=month_to_date)


def _rows_as_read(queryset: QuerySet, names: Sequence[str]) -> list[tuple]:
    """The rows of a values(...).annotate(...) queryset as tuples of `names`, which must be its columns in
    order (its values, then its annotations). On PostgreSQL psycopg already returns the types those columns
    convert to (int, Decimal, date), so the rows are read without Django's per-value converters: ~2.6 µs a row,
    ~8 ms of the overview's 2,000 rows of tenants' spend (issue #9). Elsewhere through the ORM, whose converters
    do work there (SQLite's decimals)."""
    query = queryset.query
    columns = [*query.values_select, *query.annotation_select]
    if list(names) != columns:
        raise ValueError(f"_rows_as_read: asked for {list(names)}, the query selects {columns}")
    if connection.vendor != "postgresql":
        return list(queryset.values_list(*names))
    sql, params = query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def top_tenants_this_month(*, scope: TenantScope, today: dt.date, month_to_date: dict[int, Decimal],
                           limit: int = 10) -> list:
    """The `limit` tenants that spent most this month (then by slug), annotated by tenants_with_spend, given
    each tenant's month to date (TenantSpend.month_to_date). Only the tenants that can make the list are
    annotated: ordering all 1,000 by a subquery each took ~25-35 ms at 10M runs (issue #9). With fewer than
    `limit` that spent (or some deleted since), tenants that spent nothing fill the list by slug, so all are."""
    from apps.tenants.selectors import tenants_visible

    def leaders(tenants: QuerySet) -> list:
        return list(tenants_with_spend(tenants, scope=scope, today=today).order_by("-month_to_date_usd", "slug")[:limit])

    tenants = tenants_visible(scope)
    spent = [amount for amount in month_to_date.values() if amount > 0]
    if len(spent) >= limit:
        cut = heapq.nlargest(limit, spent)[-1]
        ranked = leaders(tenants.filter(pk__in=[tenant_id for tenant_id, amount in month_to_date.items()
                                                 if amount >= cut]))
        if len(ranked) == limit:
            return ranked
    return leaders(tenants)


def cost_by_day_by_tenant(
    *, scope: TenantScope, start: dt.date, end: dt.date, top: int = 5, days: SpendDays | None = None,
    tenants_spend: TenantSpend | None = None,
) -> DailySeries:
    """Spend per day (runs and metered vector storage, start..end inclusive) for the `top` tenants by spend in
    the period; the rest summed as "others". Series are keyed by tenant slug and ordered by spend, largest
    first; `labels` gives each its tenant's name (one lookup of the few tenants that can rank). `days` and
    `tenants_spend`: the scope's spend per day and per tenant already read for this period (read here
    otherwise)."""
    from apps.tenants.selectors import tenants_visible

    sources = [(rows.filter(day__gte=start, day__lte=end), amount) for rows, amount in _spend_sources(scope=scope)]
    if tenants_spend is None or (tenants_spend.start, tenants_spend.end) != (start, end):
        tenants_spend = tenant_spend(scope=scope, start=start, end=end, today=end)
    spend = tenants_spend.in_period
    # Ranked by spend, then slug. Only the tenants that spent at least the top-th largest amount can rank (ties
    # at the cut included), so only theirs are named: one short lookup, not a thousand ids. A tenant deleted
    # since its rows were summed drops out of the top (the "others" series still counts it).
    leaders = heapq.nlargest(top, spend.values())
    candidates = [tenant_id for tenant_id, amount in spend.items() if leaders and amount >= leaders[-1]]
    tenants = {pk: (slug, name) for pk, slug, name in tenants_visible(scope).filter(pk__in=candidates)
               .values_list("id", "slug", "name")} if candidates else {}
    ranking = sorted((tenant_id for tenant_id in candidates if tenant_id in tenants),
                     key=lambda tenant_id: (-spend[tenant_id], tenants[tenant_id][0]))
    top_ids = {tenant_id: tenants[tenant_id][0] for tenant_id in ranking[:top]}
    # The top tenants' days are a few hundred rows through the (tenant, day) keys; the rest of each day is the
    # day's total less theirs. Summed per day by the database into one "others" series, the period's rows were
    # read twice more (grouping 90 days of 1,000 tenants by a CASE; issue #9).
    buckets: dict[str, dict[dt.date, Decimal]] = {slug: {} for slug in top_ids.values()}
    for rows, amount in sources:
        for row in (rows.filter(tenant_id__in=list(top_ids)).values("tenant_id", "day").order_by()
                    .annotate(cost_usd=_sum_money(amount))):
            bucket = buckets[top_ids[row["tenant_id"]]]
            bucket[row["day"]] = bucket.get(row["day"], ZERO) + row["cost_usd"]
    period = _days(start, end)
    series = {name: [values.get(day, ZERO) for day in period] for name, values in buckets.items()}
    if len(spend) > len(top_ids):  # tenants outside the top (or deleted since) spent in the period
        if days is None or not days.covers(start, end):
            days = spend_days(scope=scope, start=start, end=end)
        series[OTHERS_LABEL] = [days.total(day) - sum((values[index] for values in series.values()), ZERO)
                                for index, day in enumerate(period)]
    return DailySeries(days=period, series=series,
                       labels=_tenant_legend_names({tenants[tenant_id][0]: tenants[tenant_id][1] for tenant_id in top_ids}))


def _tenant_legend_names(names: dict[str, str]) -> dict[str, str]:
    """{slug: name} → {slug: what the legend says}: the name, like the tables beside the chart, except that a
    name two of these tenants share or one reading "(others)" (the grouped rest's label, which no tenant's
    series may wear) carries its slug too, and a blank one is the slug (which has no parentheses)."""
    seen = Counter(name.strip() for name in names.values())
    labels = {}
    for slug, name in names.items():
        name = name.strip()
        if not name:
            labels[slug] = slug
        elif name == OTHERS_LABEL or seen[name] > 1:
            labels[slug] = f"{name} ({slug})"
        else:
            labels[slug] = name
    return labels


STORAGE_SERIES = "vector storage"


def cost_by_day_by_model(*, tenant, start: dt.date, end: dt.date) -> DailySeries:
    """One tenant's spend per day split by model, plus its metered vector storage as one more series (so the
    days add up to its spend), series ordered by cost in the period."""
    rows = list(
        _rollups(tenant=tenant).filter(day__gte=start, day__lte=end)
        .values("model", "day").annotate(cost_usd=_sum_money("cost_total_usd"))
    )
    rows += [{"model": STORAGE_SERIES, "day": row["day"], "cost_usd": row["cost_usd"]}
             for row in _storage_meters(tenant=tenant).filter(day__gte=start, day__lte=end, cost_usd__gt=0)
             .values("day", "cost_usd")]
    days = _days(start, end)
    grouped = _fill(days, rows, "model")
    ordered = sorted(grouped, key=lambda name: (-sum(grouped[name].values(), ZERO), name))
    return DailySeries(days=days, series={name: [grouped[name].get(day, ZERO) for day in days] for name in ordered})


def wasted_by_day(*, tenant, start: dt.date, end: dt.date) -> DailySeries:
    """Spend on runs that failed, were cancelled or expired, per day, beside the total spend."""
    rows = {
        row["day"]: row
        for row in _rollups(tenant=tenant).filter(day__gte=start, day__lte=end).values("day").annotate(
            wasted=_sum_money("wasted_cost_usd"), total=_sum_money("cost_total_usd")
        )
    }
    days = _days(start, end)
    return DailySeries(
        days=days,
        series={
            "wasted": [rows[day]["wasted"] if day in rows else ZERO for day in days],
            "useful": [rows[day]["total"] - rows[day]["wasted"] if day in rows else ZERO for day in days],
        },
    )


@dataclass(frozen=True)
class WastedSummary:
    wasted_usd: Decimal
    total_usd: Decimal
    runs: int

    @property
    def share_percent(self) -> Decimal | None:
        return self.wasted_usd / self.total_usd * 100 if self.total_usd else None


def wasted_summary(*, tenant, start: dt.date, end: dt.date) -> WastedSummary:
    totals = _rollups(tenant=tenant).filter(day__gte=start, day__lte=end).aggregate(
        wasted=_sum_money("wasted_cost_usd"), total=_sum_money("cost_total_usd"), runs=Coalesce(Sum("runs"), 0)
    )
    return WastedSummary(wasted_usd=totals["wasted"], total_usd=totals["total"], runs=totals["runs"])


def cost_by_feature(*, tenant, start: dt.date, end: dt.date) -> list[dict]:
    """Rows {feature, runs, high_cost_runs, cost_usd, wasted_cost_usd}, costliest first ("" = no feature)."""
    return list(
        _rollups(tenant=tenant).filter(day__gte=start, day__lte=end).values("feature").annotate(
            runs=Sum("runs"), high_cost_runs=Sum("high_cost_runs"),
            cost_usd=_sum_money("cost_total_usd"), wasted_cost_usd=_sum_money("wasted_cost_usd"),
        ).order_by("-cost_usd", "feature")
    )


def cost_by_model(*, scope: TenantScope | None = None, tenant=None, start: dt.date, end: dt.date) -> list[dict]:
    return list(
        _rollups(scope=scope, tenant=tenant).filter(day__gte=start, day__lte=end).values("model").annotate(
            runs=Sum("runs"), input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"),
            cost_usd=_sum_money("cost_total_usd"),
        ).order_by("-cost_usd", "model")
    )


def models_and_features(*, scope: TenantScope, start: dt.date, end: dt.date) -> tuple[list[str], list[str]]:
    """The models and features seen in the period (for filter choices), from rollups."""
    if scope.is_every_tenant and connection.vendor == "postgresql":
        pairs = _model_feature_pairs_of_every_tenant(start, end)
    else:
        # A scope's own tenants: a few hundred rollup rows a tenant for 90 days, read through the tenant index.
        pairs = _rollups(scope=scope).filter(day__gte=start, day__lte=end).values_list("model", "feature").distinct()
    models, features = set(), set()
    for model, feature in pairs:
        models.add(model)
        if feature:
            features.add(feature)
    return sorted(models), sorted(features)


def _model_feature_pairs_of_every_tenant(start: dt.date, end: dt.date) -> list[tuple[str, str]]:
    """PostgreSQL: the (model, feature) pairs with runs from start to end, over every tenant. DISTINCT over the
    period's rollup rows read all of them (~770,000 for 90 days of a realistic 10M-run ledger, ~250 ms); the
    ledger holds a few dozen pairs, so this skips through the (model, feature, day) index from one pair to the
    next and asks each pair for one row in the period: two index probes a pair (issue #9). Every tenant's
    rows, so no scope to apply: callers pass only the every-tenant scope."""
    table = connection.ops.quote_name(DailyRollup._meta.db_table)
    statement = f"""
        WITH RECURSIVE pairs (model, feature) AS (
            (SELECT model, feature FROM {table} ORDER BY model, feature LIMIT 1)
            UNION ALL
            SELECT following.model, following.feature FROM pairs CROSS JOIN LATERAL (
                SELECT model, feature FROM {table}
                WHERE (model, feature) > (pairs.model, pairs.feature)
                ORDER BY model, feature LIMIT 1
            ) AS following
        )
        SELECT model, feature FROM pairs
        WHERE EXISTS (SELECT FROM {table} AS seen WHERE seen.model = pairs.model AND seen.feature = pairs.feature
                      AND seen.day BETWEEN %s AND %s AND seen.runs <> 0)"""
    with connection.cursor() as cursor:
        cursor.execute(statement, [start, end])
        return cursor.fetchall()


# --- tenants ----------------------------------------------------------------------------------------


def tenants_with_spend(tenants: QuerySet, *, scope: TenantScope, today: dt.date) -> QuerySet:
    """Annotate a Tenant queryset with month_to_date_usd and budget_used_percent (NULL without a budget),
    as subqueries so the list can be sorted and paginated in the database."""
    def month_to_date(rows: QuerySet, amount: str) -> Coalesce:
        summed = (rows.filter(tenant_id=OuterRef("pk"), day__gte=month_start(today), day__lte=today)
                  .order_by().values("tenant_id").annotate(cost_usd=Sum(amount)).values("cost_usd"))
        return Coalesce(Subquery(summed, output_field=_MONEY), _zero_money())

    # Runs and metered vector storage, as spend_by_tenant adds them.
    (runs, runs_amount), (storage, storage_amount) = _spend_sources(scope=scope)
    annotated = tenants.annotate(month_to_date_usd=ExpressionWrapper(
        month_to_date(runs, runs_amount) + month_to_date(storage, storage_amount), output_field=_MONEY))
    return annotated.annotate(
        budget_used_percent=Case(
            When(monthly_budget_usd__gt=0, then=ExpressionWrapper(
                F("month_to_date_usd") * 100 / F("monthly_budget_usd"), output_field=_MONEY)),
            default=None, output_field=_MONEY,
        )
    )


def daily_cost_for_tenants(*, scope: TenantScope, tenant_ids, start: dt.date, end: dt.date) -> dict[int, list[Decimal]]:
    """Per tenant, spend per day (runs and metered vector storage) from start to end (zeros filled): the data
    of a trend sparkline."""
    days = _days(start, end)
    values: dict[tuple[int, dt.date], Decimal] = {}
    for rows, amount in _spend_sources(scope=scope):
        _add_rows(values, rows.filter(tenant_id__in=list(tenant_ids), day__gte=start, day__lte=end)
                  .values("tenant_id", "day").order_by().annotate(cost_usd=_sum_money(amount)),
                  key=lambda row: (row["tenant_id"], row["day"]))
    return {tenant_id: [values.get((tenant_id, day), ZERO) for day in days] for tenant_id in tenant_ids}


# --- runs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFilters:
    """What the high-cost runs page filters on. No min_cost: runs flagged high-cost by their tenant's threshold."""

    start: dt.date
    end: dt.date
    tenant: object | None = None  # a Tenant or its id
    model: str = ""
    feature: str = ""
    status: str = ""
    min_cost_usd: Decimal | None = None


# Ties break on id, as the run indexes and the API's list do.
RUN_ORDERINGS = {
    "cost": ("cost_total_usd", "id"),
    "-cost": ("-cost_total_usd", "-id"),
    "created": ("created_at", "id"),
    "-created": ("-created_at", "-id"),
    "prompt": ("input_tokens", "id"),
    "-prompt": ("-input_tokens", "-id"),
}


def runs_filtered(*, scope: TenantScope, filters: RunFilters, ordering: str = "-cost") -> QuerySet:
    runs = Run.objects.in_scope(scope) if filters.tenant is None else Run.objects.for_tenant(filters.tenant)
    if filters.tenant is not None and not scope.allows(filters.tenant):
        return runs.none()
    runs = runs.filter(created_at__gte=day_start(filters.start), created_at__lt=day_start(filters.end + dt.timedelta(days=1)))
    if filters.min_cost_usd is not None:
        runs = runs.filter(cost_total_usd__gte=filters.min_cost_usd)
    else:
        runs = runs.filter(is_high_cost=True)
    if filters.model:
        runs = runs.filter(model=filters.model)
    if filters.feature:
        runs = runs.filter(feature=filters.feature)
    if filters.status:
        runs = runs.filter(status=filters.status)
    return runs.select_related("tenant").order_by(*RUN_ORDERINGS.get(ordering, RUN_ORDERINGS["-cost"]))


def run_get_visible(*, scope: TenantScope, openai_id: str) -> Run | None:
    """The run with this OpenAI id if the scope may see it (None for missing and not-yours alike)."""
    return (
        Run.objects.in_scope(scope).select_related("tenant", "thread", "model_price", "tool_price")
        .filter(openai_id=openai_id).first()
    )


def run_timeline(run: Run) -> list[tuple[str, dt.datetime]]:
    """The run's status changes that happened, in time order (expires is a deadline, listed where it falls)."""
    moments = [
        ("created", run.created_at), ("started", run.started_at), ("completed", run.completed_at),
        ("failed", run.failed_at), ("cancelled", run.cancelled_at), ("expires", run.expires_at),
    ]
    return sorted(((name, moment) for name, moment in moments if moment is not None), key=lambda item: item[1])


def run_tokens_by_kind(run: Run) -> list[tuple[str, int]]:
    """Each token billed once, in its own kind: input splits into uncached, cached and cache-write;
    output into visible output and reasoning. The labels say which side reasoning is on: the run page's
    "Output tokens" (OpenAI's count, what bills as output) includes it, this "output" row does not."""
    uncached = max(run.input_tokens - run.cached_input_tokens - run.cache_write_tokens, 0)
    visible_output = max(run.output_tokens - run.reasoning_tokens, 0)
    return [
        ("input (uncached)", uncached),
        ("input (cached)", run.cached_input_tokens),
        ("input (cache write)", run.cache_write_tokens),
        ("output (excl. reasoning)", visible_output),
        ("reasoning", run.reasoning_tokens),
    ]


def thread_runs(*, thread: Thread) -> QuerySet:
    """Every run of a thread, newest first (the page shows them a page at a time; CSV exports them all)."""
    return Run.objects.for_tenant(thread.tenant_id).filter(thread=thread).order_by("-created_at", "-id")


def top_runs_for_scatter(runs: QuerySet, *, limit: int = 1000) -> list[dict]:
    """The costliest `limit` runs of a filtered queryset, as plain rows for a scatter."""
    return list(
        runs.order_by(*RUN_ORDERINGS["-cost"])
        .values("openai_id", "tenant__slug", "model", "feature", "status", "input_tokens", "cost_total_usd")[:limit]
    )


# PROMPT_TOKEN_EDGES (imported from models.py, where the prompt-size rollup needs it): log-spaced bins.


@dataclass(frozen=True)
class TokenHistogram:
    edges: list[int]  # bin i holds edges[i] <= tokens < edges[i+1]; the last bin is open-ended
    counts: list[int]
    total_runs: int
    max_tokens: int
    tail_runs: int  # runs at ten times the median prompt size or more: the long tail
    tail_from: int | None = None  # the tail's first bin edge (ten times the median bin's lower edge); None: no runs

    def label(self, index: int) -> str:
        low = self.edges[index]
        if index + 1 < len(self.edges):
            return f"{_short(low)}–{_short(self.edges[index + 1])}"
        return f"≥{_short(low)}"

    @property
    def labels(self) -> list[str]:
        return [self.label(index) for index in range(len(self.counts))]


def _short(tokens: int) -> str:
    if tokens >= 1_000_000:
        return f"{tokens // 1_000_000}M"
    if tokens >= 1_000:
        return f"{tokens // 1_000}k"
    return str(tokens)


def prompt_token_histogram(*, tenant, start: dt.date, end: dt.date) -> TokenHistogram:
    """How many runs fall in each prompt-size bin (start..end inclusive), from the prompt-size rollups (one
    aggregate query). max_tokens is the largest prompt of a run created in the period: the largest per-bin
    maximum among rows that still hold runs (exact while a run's token counts only grow, see PromptSizeRollup)."""
    edges = PROMPT_TOKEN_EDGES
    rows = (
        PromptSizeRollup.objects.for_tenant(tenant).filter(day__gte=start, day__lte=end)
        .values("size_bin").order_by("size_bin")
        .annotate(bin_runs=Coalesce(Sum("runs"), 0), max_tokens=Max("max_input_tokens", filter=Q(runs__gt=0)))
    )
    counts = [0] * len(edges)
    max_tokens = 0
    for row in rows:
        counts[row["size_bin"]] += row["bin_runs"]
        if row["bin_runs"] and row["max_tokens"] is not None:
            max_tokens = max(max_tokens, row["max_tokens"])
    median_bin = _median_bin(counts)
    tail_from = None if median_bin is None else max(edges[median_bin], 1) * 10
    tail = sum(count for edge, count in zip(edges, counts, strict=True) if tail_from is not None and edge >= tail_from)
    return TokenHistogram(edges=list(edges), counts=counts, total_runs=sum(counts), max_tokens=max_tokens,
                          tail_runs=tail, tail_from=tail_from)


def _median_bin(counts: list[int]) -> int | None:
    total = sum(counts)
    if not total:
        return None
    running = 0
    for index, count in enumerate(counts):
        running += count
        if running * 2 >= total:
            return index
    return len(counts) - 1


# --- end users (rollups by day and by month) -------------------------------------------------------

# What a usage line by day, model or feature sums from the daily rollups (by end user: models.END_USER_COUNTS
# and END_USER_MONEY, the same names, from the end-user rollups).
_USAGE_COUNTS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
_USAGE_MONEY = ("cost_input_usd", "cost_cached_input_usd", "cost_output_usd", "cost_tools_usd", "cost_total_usd")


# What reading one period's rows (a month's or a part's) costs, counted in days of daily rows: such a period
# holds about one row per end user active in it, and for a big tenant (5,000 end users, ~2,500 of them active
# on a given day) that is about two days' worth.
_PERIOD_ROWS_IN_DAYS = 2


@dataclass(frozen=True)
class _Reading:
    """How to read some days of the end-user rollups: the cost (in days of daily rows), the period rows read
    (model, period's first day, sign) and the day ranges read (first day, day after, sign). Signs: +1 adds
    the rows, -1 takes them back."""

    cost: int = 0
    periods: tuple[tuple[type, dt.date, int], ...] = ()
    days: tuple[tuple[dt.date, dt.date, int], ...] = ()

    def __add__(self, other: _Reading) -> _Reading:
        return _Reading(self.cost + other.cost, self.periods + other.periods, self.days + other.days)


def _days_between(ranges: Sequence[tuple[dt.date, dt.date]]) -> int:
    return sum((high - low).days for low, high in ranges)


def _end_user_sources(tenant, start: dt.date, end: dt.date) -> list[tuple[QuerySet, int]]:
    """Rollup rows, each source with a sign (+1 add, -1 subtract), whose signed sums are exactly those of the
    tenant's runs created from `start` to `end` (exclusive). Per month the range touches: its monthly row
    when the range covers the month whole (or covers every run of it: a month-to-date range when no run is
    dated later that month); otherwise whichever reads fewest rows of: the month's parts (days 1-8, 9-15,
    16-23, 24-end) inside the range, or the monthly row minus the parts outside it. A part only partly in
    (or out) is its row minus its other days, or its days, whichever is fewer (its row alone when its other
    days hold no run). So a ragged end reads a part's row and at most four days of daily rows."""
    daily = EndUserDailyRollup.objects.for_tenant(tenant)

    def runs_between(low: dt.date, high: dt.date) -> bool:
        # A short index range that stops at its first row: "in the period but not in the range" as one
        # condition made PostgreSQL walk every row of the range first (~10 ms a big month).
        return low < high and daily.filter(day__gte=low, day__lt=high).exists()

    def part_reading(part_start: dt.date, part_end: dt.date, wanted: list[tuple[dt.date, dt.date]], sign: int,
                     *, check_runs: bool) -> _Reading:
        """The `wanted` days of one part (ranges inside it), added (sign +1) or taken back (-1)."""
        row = ((EndUserMonthPartRollup, part_start, sign),)
        rest = _complement(part_start, part_end, wanted)
        if not rest or (check_runs and not any(runs_between(low, high) for low, high in rest)):
            return _Reading(_PERIOD_ROWS_IN_DAYS, row)
        by_days = _Reading(_days_between(wanted), days=tuple((low, high, sign) for low, high in wanted))
        by_row = _Reading(_PERIOD_ROWS_IN_DAYS + _days_between(rest), row,
                          tuple((low, high, -sign) for low, high in rest))
        return min(by_days, by_row, key=lambda reading: reading.cost)

    reading = _Reading()
    for month in _months_of(start, end):
        after = next_month(month)
        low, high = max(start, month), min(end, after)
        if not runs_between(month, low) and not runs_between(high, after):
            reading += _Reading(_PERIOD_ROWS_IN_DAYS, ((EndUserMonthlyRollup, month, 1),))
            continue
        inside, outside = _Reading(), _Reading(_PERIOD_ROWS_IN_DAYS, ((EndUserMonthlyRollup, month, 1),))
        for part_start, part_end in month_parts(month):
            wanted = _intersection(part_start, part_end, [(low, high)])
            if wanted:
                inside += part_reading(part_start, part_end, wanted, 1, check_runs=True)
            unwanted = _complement(part_start, part_end, wanted)
            if unwanted:
                outside += part_reading(part_start, part_end, unwanted, -1, check_runs=False)
        reading += min(inside, outside, key=lambda option: option.cost)
    # One source per period: a single one then holds one row per user, read without GROUP BY.
    sources: list[tuple[QuerySet, int]] = [
        (model.objects.for_tenant(tenant).filter(**{"month" if model is EndUserMonthlyRollup else "part": period}),
         sign)
        for model, period, sign in reading.periods
    ]
    for wanted_sign in (1, -1):
        ranges = [(low, high) for low, high, sign in reading.days if sign == wanted_sign]
        if ranges:
            condition = Q()
            for low, high in ranges:
                condition |= Q(day__gte=low, day__lt=high)
            sources.append((daily.filter(condition), wanted_sign))
    return sources


def _intersection(low: dt.date, high: dt.date, ranges: Sequence[tuple[dt.date, dt.date]]) -> list[tuple[dt.date, dt.date]]:
    """The parts of `ranges` within [low, high)."""
    return [(max(low, a), min(high, b)) for a, b in ranges if max(low, a) < min(high, b)]


def _complement(low: dt.date, high: dt.date, ranges: Sequence[tuple[dt.date, dt.date]]) -> list[tuple[dt.date, dt.date]]:
    """The days of [low, high) outside `ranges` (sorted, disjoint, within it), as ranges."""
    rest, at = [], low
    for a, b in sorted(ranges):
        if at < a:
            rest.append((at, a))
        at = max(at, b)
    if at < high:
        rest.append((at, high))
    return rest


def _end_user_totals(tenant, start: dt.date, end: dt.date, *, counts=END_USER_COUNTS,
                     money=END_USER_MONEY) -> dict[str, dict]:
    """user_id -> {count and money sums} over the tenant's runs created from `start` to `end` (exclusive),
    users with at least one run only. One statement on PostgreSQL (a read per source on SQLite), after a few
    short exists() per ragged month (one per side of the month and of each part it touches partly)."""
    if connection.vendor == "postgresql":
        return _signed_sums_by_user(_end_user_sources(tenant, start, end), counts, money)
    names = (*counts, *money)
    totals: dict[str, dict] = {}
    for user_id, *values in _end_user_unit_sums(tenant, start, end, counts=counts, money=money):
        row = totals[user_id] = dict(zip(names, values, strict=True))
        for name in money:
            row[name] = units_to_usd(row[name])
    return totals


def _end_user_unit_sums(tenant, start: dt.date, end: dt.date, *, counts: Sequence[str],
                        money: Sequence[str]) -> list[tuple]:
    """Rows (user_id, *counts, *money) like _end_user_totals, unordered, with the money as whole ledger units
    (ints): for a caller that ranks thousands of users and shows a page of them, which makes a Decimal (and a
    dict) only for the rows it shows. At 5,000 users the Decimals, the dicts and a sort on Decimal keys cost
    the biggest tenant's page more than the query (issue #9)."""
    sources = _end_user_sources(tenant, start, end)
    if connection.vendor == "postgresql":
        if not sources:
            return []
        return _read_signed_sums(lambda bigint_sum: _signed_sums_sql(sources, counts, money, bigint_sum=bigint_sum,
                                                                     money_as_units=True))
    # Not PostgreSQL: the sources' signed rows added up here (the rollups' money is whole ledger units:
    # integers, exact).
    names_count = len(counts) + len(money)
    totals: dict[str, list] = {}
    for source, sign in sources:
        for user_id, *values in source.values_list("user_id", *counts, *map(end_user_units_column, money)):
            if sign < 0:
                values = [-value for value in values]
            current = totals.get(user_id)
            if current is None:
                totals[user_id] = values
            else:
                for index in range(names_count):
                    current[index] += values[index]
    # A user whose runs all fall outside the range comes out at zero runs (and zero sums) here.
    runs_at = list(counts).index("runs")
    return [(user_id, *values) for user_id, values in totals.items() if values[runs_at]]


def _signed_sums_by_user(sources: list[tuple[QuerySet, int]], counts: Sequence[str],
                         money: Sequence[str]) -> dict[str, dict]:
    """PostgreSQL: _end_user_totals in one statement. psycopg's ints and Decimals come back without Django's
    per-value converters: with thousands of users the merging and converting in Python cost more than the
    queries."""
    if not sources:
        return {}
    names = (*counts, *money)
    rows = _read_signed_sums(lambda bigint_sum: _signed_sums_sql(sources, counts, money, bigint_sum=bigint_sum))
    return {user_id: dict(zip(names, values, strict=True)) for user_id, *values in rows}


# PostgreSQL's SUM(bigint) adds in 128 bits and answers numeric. ledger_bigint_sum (migration ledger.0012) stays
# bigint: over the tens of thousands of rollup rows a 30-day usage by end user groups, that takes about a fifth
# off the statement (docs/benchmarks-history.md, session 12). It raises on overflow, which takes an end user past ~922
# million USD over the range (or on the way there, adding a month before taking back its days): the read is
# then made again with SUM, so the answer is exact either way.
_BIGINT_SUM = "ledger_bigint_sum"


def _read_signed_sums(statement: Callable[[bool], tuple[str, list]]) -> list[tuple]:
    """The rows of `statement(bigint_sum)`: with ledger_bigint_sum, or with SUM when a sum went past bigint
    (or the aggregate is missing: code deployed before `migrate`, a database built without migrations)."""
    try:
        return _fetch_serial(*statement(True))
    except (DataError, ProgrammingError) as error:
        state = getattr(error.__cause__, "sqlstate", None)
        if state == "42883":  # undefined_function
            logger.warning("ledger_bigint_sum is missing (run `manage.py migrate`); summing with SUM")
        elif state != "22003":  # numeric_value_out_of_range
            raise
        return _fetch_serial(*statement(False))


def _signed_sums_sql(sources: list[tuple[QuerySet, int]], counts: Sequence[str], money: Sequence[str], *,
                     bigint_sum: bool, money_as_units: bool = False) -> tuple[str, list]:
    """PostgreSQL: the statement (and its parameters) selecting user_id, counts (bigint) and money per user
    with runs in the range the sources (from _end_user_sources, at least one) read: their rows, negated where
    the sign says so, summed per user by the database, with ledger_bigint_sum or (not `bigint_sum`) SUM. Each
    source is the scoped queryset compiled as is (tenancy stays the ORM's); only the sum around them is
    written here. The rollups hold money as whole ledger units (bigint sums cost PostgreSQL about a third less
    than numeric ones); each sum comes out as its USD amount, named as in `money`, or with `money_as_units`
    as its units, named as the rollups' unit columns (end_user_units_column)."""
    quote = connection.ops.quote_name
    columns = (*counts, *map(end_user_units_column, money))
    parts, params = [], []
    for index, (source, sign) in enumerate(sources):
        sql, source_params = source.values_list("user_id", *columns).order_by().query.sql_with_params()
        signed = ", ".join(quote(name) if sign > 0 else f"-{quote(name)}" for name in columns)
        parts.append(f"SELECT {quote('user_id')}, {signed} FROM ({sql}) AS source_{index}")
        params.extend(source_params)

    def summed(name: str, *, as_bigint: bool) -> str:
        if bigint_sum:
            return f"{_BIGINT_SUM}({quote(name)})"
        return f"SUM({quote(name)})::bigint" if as_bigint else f"SUM({quote(name)})"

    def usd(name: str, units: str) -> str:
        if money_as_units:
            return f"{units} AS {quote(end_user_units_column(name))}"
        return f"{units_as_usd_sql(units)} AS {quote(name)}"

    # One month of the monthly rollup, or one part of a month, holds one row per user already: read as stored,
    # no GROUP BY.
    if len(sources) == 1 and sources[0][1] > 0 and sources[0][0].model in (EndUserMonthlyRollup, EndUserMonthPartRollup):
        stored = [quote(name) for name in counts]
        stored += [usd(name, quote(end_user_units_column(name))) for name in money]
        return (f"SELECT {quote('user_id')}, {', '.join(stored)} FROM ({parts[0]}) AS period "
                f"WHERE {quote('runs')} <> 0"), params
    sums = [f"{summed(name, as_bigint=True)} AS {quote(name)}" for name in counts]
    sums += [usd(name, summed(end_user_units_column(name), as_bigint=False)) for name in money]
    return (f"SELECT {quote('user_id')}, {', '.join(sums)} FROM ({' UNION ALL '.join(parts)}) AS signed "
            f"GROUP BY {quote('user_id')} HAVING {summed('runs', as_bigint=False)} <> 0"), params


def end_user_usage_text(*, tenant, start: dt.date, end: dt.date, after: str | None = None,
                        limit: int | None = None) -> tuple[list[tuple], tuple] | None:
    """PostgreSQL: one tenant's usage by end user from `start` to `end` (exclusive) as the API writes it —
    rows (user_id, runs, unpriced_runs, <tokens by kind>, <cost by component, total last>) in user-id
    code-point order with money as usd_string's text, and the totals row (the same without the user id) of
    every user. With `after`, only the users after that id; with `limit`, at most that many rows and one more
    (whether another page follows): the sums are the same work, but a page formats and sends only its rows.
    The database sums and formats in one statement: at 5,000 users Python making and formatting 25,000
    Decimals cost more than the query. None on other databases: use usage_lines there."""
    if connection.vendor != "postgresql":
        return None
    counts, money = END_USER_COUNTS, END_USER_MONEY
    sources = _end_user_sources(tenant, start, end)
    if not sources:  # an empty range
        return [], (0,) * len(counts) + ("0.00",) * len(money)
    quote = connection.ops.quote_name
    units = [quote(end_user_units_column(name)) for name in money]
    line = [quote(name) for name in counts] + [units_usd_string_sql(column) for column in units]
    # The totals add the lines' units with SUM (numeric): a tenant's can go past what a bigint holds.
    total = [f"COALESCE(SUM({quote(name)}), 0)::bigint" for name in counts]
    total += [units_usd_string_sql(f"COALESCE(SUM({column}), 0)") for column in units]

    def statement(bigint_sum: bool) -> tuple[str, list]:
        # The lines keep their money as units and are formatted from them: one multiplication per amount
        # fewer, and an integer test for the amounts with nothing past the cents (issue #9).
        lines_sql, params = _signed_sums_sql(sources, counts, money, bigint_sum=bigint_sum, money_as_units=True)
        # "C": code-point order, as the Decimal path sorts in Python, whatever the database's collation; the
        # totals row (no user) sorts last.
        page_sql = f"SELECT {quote('user_id')} COLLATE \"C\", {', '.join(line)} FROM lines"
        if after is not None:
            page_sql += f" WHERE {quote('user_id')} COLLATE \"C\" > %s"
            params = [*params, after]
        if limit is not None:
            page_sql = f"({page_sql} ORDER BY 1 LIMIT %s)"
            params = [*params, limit + 1]
        return (f"WITH lines AS MATERIALIZED ({lines_sql}) {page_sql} "
                f"UNION ALL SELECT NULL, {', '.join(total)} FROM lines ORDER BY 1 NULLS LAST"), params

    rows = _read_signed_sums(statement)
    return rows, rows.pop()[1:]


def _fetch_serial(statement: str, params: list) -> list[tuple]:
    """PostgreSQL: the rows of one read, planned without parallel workers. The end-user sums read a few
    thousand rollup rows; the planner, guessing 200 users, starts two workers for a mid-size tenant, and
    starting them costs more than they save (1M bench, last 30 days: 37 ms against 25). SET LOCAL lasts
    until the transaction ends; atomic() opens one when none is open."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cursor.execute(statement, params)
        return cursor.fetchall()


def _months_of(start: dt.date, end: dt.date) -> list[dt.date]:
    """The first days of the months that [start, end) touches."""
    months, month = [], month_start(start)
    while month < end:
        months.append(month)
        month = next_month(month)
    return months


# Up to this many (user, day) pairs, EndUserCosts looks up each user's last active day key by key.
LAST_ACTIVE_PROBES = 10_000


class EndUserCosts(Sequence):
    """Rows {user_id, runs, cost_usd, last_active_day} of one tenant's end users, costliest first. A list
    the paginator can count and slice, made from (user_id, runs, cost units) tuples: a row's dict and Decimal
    are made when it is taken (a page of 10 of 5,000 users), once, and last_active_day (the last UTC day in
    the period with a run of that user) is read for the rows taken, with one query per slice."""

    def __init__(self, ranked: list[tuple[str, int, int]], *, tenant, start: dt.date, end: dt.date):
        self._ranked, self._tenant, self._start, self._end = ranked, tenant, start, end
        self._rows: list[dict | None] = [None] * len(ranked)

    def __len__(self) -> int:
        return len(self._ranked)

    def _taken(self, indexes: Sequence[int]) -> list[dict]:
        rows = []
        for index in indexes:
            row = self._rows[index]
            if row is None:
                user_id, runs, cost_units = self._ranked[index]
                row = self._rows[index] = {"user_id": user_id, "runs": runs, "cost_usd": units_to_usd(cost_units)}
            rows.append(row)
        self._fill(rows)
        return rows

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._taken(range(len(self))[index])
        return self._taken([range(len(self))[index]])[0]

    def __iter__(self):
        return iter(self._taken(range(len(self))))

    def _fill(self, rows: list[dict]) -> None:
        missing = [row for row in rows if "last_active_day" not in row]
        if not missing:
            return
        user_ids = sorted({row["user_id"] for row in missing})
        days = _days(self._start, self._end)
        active = EndUserDailyRollup.objects.for_tenant(self._tenant).filter(user_id__in=user_ids, runs__gt=0)
        if len(user_ids) * len(days) <= LAST_ACTIVE_PROBES:
            # A page of users: each day of the period named, so the (tenant, day, user_id) key is probed once per
            # day and user (~1 µs each: 2 ms for 10 users over 30 days, 8 over a year). A day range reads every
            # user's rows of every day in it: 2,500 a day for a big tenant, 23 ms for 30 days.
            active = active.filter(day__in=days)
        else:  # many users (a whole table exported): reading the period's rows once costs less than the probes
            active = active.filter(day__gte=self._start, day__lte=self._end)
        last_days = dict(active.values("user_id").order_by().annotate(last=Max("day")).values_list("user_id", "last"))
        for row in missing:
            row["last_active_day"] = last_days.get(row["user_id"])


def cost_by_end_user(*, tenant, start: dt.date, end: dt.date) -> EndUserCosts:
    """Rows {user_id, runs, cost_usd, last_active_day} per end user of one tenant (start..end inclusive),
    costliest first ("" = unknown), from the end-user rollups. last_active_day, not the last run's time: a
    rollup cannot keep an exact latest moment under deltas (a run's attribution can move to a user later)."""
    ranked = _end_user_unit_sums(tenant, start, end + dt.timedelta(days=1), counts=("runs",),
                                 money=("cost_total_usd",))
    # Costliest first, ties by user id (code-point order): two sorts on plain ints and strs, the second stable.
    ranked.sort(key=itemgetter(0))
    ranked.sort(key=itemgetter(2), reverse=True)
    return EndUserCosts(ranked, tenant=tenant, start=start, end=end)


# --- threads ------------------------------------------------------------------------------------------


def threads_with_retention(*, tenant, status: str = Thread.Status.ACTIVE) -> QuerySet:
    """A tenant's threads, those deleted soonest first (least recent activity first)."""
    threads = Thread.objects.for_tenant(tenant)
    if status:
        threads = threads.filter(status=status)
    return threads.order_by("last_activity_at", "openai_id")


def thread_retention_status(thread: Thread, *, retention_days: int, legal_hold: bool, now: dt.datetime) -> dict:
    """When the retention sweep will delete this thread: {deletes_at, days_left, state} where state is
    deleted | held | overdue | due_soon (within 7 days) | ok. Overdue, days_left counts the whole days past
    due as a negative number (-58: 58 days overdue; 0 in its first day), so the page says how late it is."""
    # The sweep's own clamped date arithmetic: a retention beyond year 9999 reads "ok", never a 500.
    if thread.status == Thread.Status.DELETED:
        return {"deletes_at": None, "days_left": None, "state": "deleted"}
    deletes_at = moment_shifted(thread.last_activity_at, days=retention_days)
    if legal_hold:
        return {"deletes_at": None, "days_left": None, "state": "held"}
    if deletes_at <= now:
        return {"deletes_at": deletes_at, "days_left": -((now - deletes_at) // dt.timedelta(days=1)), "state": "overdue"}
    # Whole days rounded up: "1 day left" until the moment it is due.
    days_left = math.ceil((deletes_at - now) / dt.timedelta(days=1))
    state = "due_soon" if deletes_at - now <= dt.timedelta(days=7) else "ok"
    return {"deletes_at": deletes_at, "days_left": days_left, "state": state}



# --- billing API (usage by period, statements, the runs list) ------------------------------------------

USAGE_GROUPINGS = ("day", "model", "feature", "user")


def usage_lines(*, tenant, start: dt.date, end: dt.date, group_by: str) -> list[dict]:
    """One tenant's usage from `start` to `end` (exclusive, UTC days) grouped by day, model, feature or
    end user: rows {key, runs, unpriced_runs, <tokens by kind>, <cost by component>} ordered by key.
    day/model/feature read the daily rollups; user the end-user rollups (_end_user_sources).

    Only groups with runs: rollup rows are never deleted, so when a later report of a run changes its model
    or feature the old key's row stays at zero runs; listed, it would be a "0 runs" line that a statement
    freezes at close."""
    if group_by not in USAGE_GROUPINGS:
        raise ValueError(f"group_by must be one of {', '.join(USAGE_GROUPINGS)}")
    if group_by == "user":
        # Ordered by user id in code-point order (the database's collation may differ; C and SQLite agree).
        totals = _end_user_totals(tenant, start, end)
        return [{"key": user_id, **totals[user_id]} for user_id in sorted(totals)]
    daily = DailyRollup.objects.for_tenant(tenant).filter(day__gte=start, day__lt=end)
    return _daily_usage_lines(daily, group_by, by_month=False).get(None, [])


def usage_lines_by_month(*, tenant, start: dt.date, end: dt.date, group_by: str) -> dict[dt.date, list[dict]]:
    """usage_lines for each month from `start` to `end` (first days of months; end exclusive), by model or
    feature: {month: lines}, months without runs left out. In one read, whatever the number of months: an open
    statement works out every closed month before it (billing.selectors.statement_data)."""
    if group_by not in ("model", "feature"):
        raise ValueError("group_by must be model or feature")
    daily = DailyRollup.objects.for_tenant(tenant).filter(day__gte=start, day__lt=end)
    return _daily_usage_lines(daily, group_by, by_month=True)


def _daily_usage_lines(daily: QuerySet, group_by: str, *, by_month: bool) -> dict[dt.date | None, list[dict]]:
    """The daily rollups' usage_lines, {None: lines} or with `by_month` {month: lines}: lines in code-point order
    of key, only groups with runs."""
    if connection.vendor != "postgresql":
        return _usage_lines_added_here(daily, group_by, by_month=by_month)
    sums = {name: Coalesce(Sum(name), 0) for name in _USAGE_COUNTS}
    sums.update({name: _sum_money(name) for name in _USAGE_MONEY})
    groups = (group_by, "month") if by_month else (group_by,)
    if by_month:
        daily = daily.annotate(month=TruncMonth("day"))
    rows = (
        daily.values(*groups).order_by()
        .annotate(runs=Coalesce(Sum("runs"), 0), unpriced_runs=Coalesce(Sum("unpriced_runs"), 0), **sums)
        .exclude(runs=0)  # HAVING: only groups with runs
    )
    lines: dict[dt.date | None, list[dict]] = defaultdict(list)
    for row in rows:
        key = row.pop(group_by)
        month = row.pop("month") if by_month else None
        lines[month].append({"key": key.isoformat() if isinstance(key, dt.date) else key, **row})
    # Sorted here, in code-point order as on SQLite and by end user: ORDER BY follows the database's collation,
    # and one created with an en_US locale (docker-compose's postgres:16) put "_x" < "chat" < "Search".
    for month_lines in lines.values():
        month_lines.sort(key=lambda line: line["key"])
    return dict(lines)


def _usage_lines_added_here(daily: QuerySet, group_by: str, *, by_month: bool) -> dict[dt.date | None, list[dict]]:
    """_daily_usage_lines on SQLite, which adds decimals up as floating point (the 10th decimal of a large sum
    was lost): the stored rows added up here, exactly, as _end_user_totals does for end users."""
    names = ("runs", "unpriced_runs", *_USAGE_COUNTS, *_USAGE_MONEY)
    totals: dict = {}
    for day, key, *values in daily.values_list("day", group_by, *names):
        group = (day.replace(day=1) if by_month else None, key)
        current = totals.get(group)
        totals[group] = values if current is None else [a + b for a, b in zip(current, values, strict=True)]
    lines: dict[dt.date | None, list[dict]] = defaultdict(list)
    for month, key in sorted(totals, key=lambda group: group[1]):
        if totals[(month, key)][0]:  # runs: only groups with runs
            lines[month].append({"key": key.isoformat() if isinstance(key, dt.date) else key,
                                 **dict(zip(names, totals[(month, key)], strict=True))})
    return dict(lines)


class ToolPriceVersionMissing(LookupError):
    """Tool use in the rollups counted against a tool price version that no longer exists: it cannot be
    priced, and billing it at any other fee would be wrong. A version is deleted only once no run names it
    (Run.tool_price is PROTECT), so the rollups disagree with the runs, or the version was removed behind
    Django's back."""

    def __init__(self, *, tenant, start: dt.date, end: dt.date, tool_price_id: int):
        self.tool_price_id = tool_price_id
        super().__init__(
            f"The tool-usage rollups of tenant {tenant.slug} from {start} to {end} (exclusive) count tool use rated "
            f"with tool price version id {tool_price_id}, which no longer exists. Compare them with the runs: "
            f"`manage.py ledger_check` (--fix rewrites them); if runs still name that version, restore it "
            f"(same id) or re-rate them with `manage.py reprice`."
        )


def tool_usage_by_kind(*, tenant, start: dt.date, end: dt.date) -> dict[str, dict]:
    """Tool use of one tenant's runs created from `start` to `end` (exclusive): per kind (code_interpreter
    sessions, file_search calls, web_search calls) the quantity (every run, priced or not, from the daily
    rollups) and its exact cost: each tool price version's billable quantity (tool-usage rollups: priced runs,
    file-search calls only under the Responses API) times that version's fee, by the same rules as rating,
    so the kinds add up to the runs' cost_tools_usd. Three small queries, none on the runs. Raises
    ToolPriceVersionMissing if tool use was rated with a version that no longer exists."""
    return _tool_usage(tenant, start, end, by_month=False)[None]


def tool_usage_by_kind_by_month(*, tenant, start: dt.date, end: dt.date) -> dict[dt.date, dict[str, dict]]:
    """tool_usage_by_kind for every month from `start` to `end` (first days of months; end exclusive), each
    month present, in the same three queries whatever the number of months."""
    kinds = _tool_usage(tenant, start, end, by_month=True)
    months, month = {}, start
    while month < end:
        months[month] = kinds.get(month) or _no_tool_use()
        month = next_month(month)
    return months


def _no_tool_use() -> dict[str, dict]:
    return {kind: {"quantity": 0, "cost_usd": ZERO} for kind in _TOOL_QUANTITIES}


def _tool_usage(tenant, start: dt.date, end: dt.date, *, by_month: bool) -> dict[dt.date | None, dict[str, dict]]:
    """tool_usage_by_kind as {None: kinds}, or with `by_month` {month: kinds} for the months with rollup rows."""
    from apps.pricing.models import ToolPrice
    from apps.pricing.rating import ONE_THOUSAND

    def grouped(queryset: QuerySet, *names: str) -> QuerySet:
        if by_month:
            return queryset.annotate(month=TruncMonth("day")).values("month", *names)
        return queryset.values(*names)

    daily = DailyRollup.objects.for_tenant(tenant).filter(day__gte=start, day__lt=end)
    quantities = {None: daily.aggregate(**_TOOL_QUANTITIES)} if not by_month else {
        row.pop("month"): row for row in grouped(daily).order_by().annotate(**_TOOL_QUANTITIES)}
    usage = {month: {kind: {"quantity": row[kind], "cost_usd": ZERO} for kind in _TOOL_QUANTITIES}
             for month, row in quantities.items()}
    billable = list(
        grouped(ToolUsageRollup.objects.for_tenant(tenant).filter(day__gte=start, day__lt=end), "tool_price_id")
        .order_by("tool_price_id")
        .annotate(sessions=Coalesce(Sum("code_interpreter_sessions"), 0),
                  file_search=Coalesce(Sum("billable_file_search_calls"), 0),
                  web_search=Coalesce(Sum("web_search_calls"), 0))
    )
    # A version whose runs were all re-rated to another keeps its rows at zero, and may since have been
    # deleted (they do not block it): nothing of its is billed, so its fees are not needed.
    billable = [row for row in billable if row["sessions"] or row["file_search"] or row["web_search"]]
    if not billable:
        return usage
    fees = ToolPrice.objects.in_bulk({row["tool_price_id"] for row in billable})
    for row in billable:
        price = fees.get(row["tool_price_id"])
        month = row.get("month")
        if price is None:  # named with the month it was found in, when read by month
            raise ToolPriceVersionMissing(tenant=tenant, start=month or start, end=next_month(month) if month else end,
                                          tool_price_id=row["tool_price_id"])
        kinds = usage.setdefault(month, _no_tool_use())
        kinds["code_interpreter"]["cost_usd"] += Decimal(row["sessions"]) * price.code_interpreter_session_usd
        kinds["file_search"]["cost_usd"] += Decimal(row["file_search"]) * price.file_search_call_usd_per_1k / ONE_THOUSAND
        kinds["web_search"]["cost_usd"] += Decimal(row["web_search"]) * price.web_search_call_usd_per_1k / ONE_THOUSAND
    return usage


_TOOL_QUANTITIES = {
    "code_interpreter": Coalesce(Sum("code_interpreter_sessions"), 0),
    "file_search": Coalesce(Sum("file_search_calls"), 0),
    "web_search": Coalesce(Sum("web_search_calls"), 0),
}


def tool_price_rated(*, tool_price_id: int) -> bool:
    """Whether any run, of any tenant, was rated with this tool price version (Run.tool_price): then the
    version's fees are what that run's cost_tools_usd was computed from and must not change in place. Reads
    across tenants but answers only about the price book. Run.tool_price has no index: this is the query
    Django's PROTECT already makes before a version is deleted (it stops at the first run found), for the
    rare price-book edit, never for a request's data."""
    return Run.objects.unscoped().filter(tool_price_id=tool_price_id).exists()


def runs_search(
    *,
    scope: TenantScope,
    tenant=None,
    status: str = "",
    model: str = "",
    feature: str | None = None,
    user_id: str | None = None,
    min_cost_usd: Decimal | None = None,
    created_from: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
    high_cost: bool | None = None,
) -> QuerySet:
    """Runs the scope may see, filtered; newest first, with what a run's API representation needs joined."""
    if tenant is not None:
        runs = Run.objects.for_tenant(tenant) if scope.allows(tenant) else Run.objects.for_tenant(tenant).none()
    else:
        runs = Run.objects.in_scope(scope)
    if status:
        runs = runs.filter(status=status)
    if model:
        runs = runs.filter(model=model)
    if feature is not None:  # "" selects the runs without a feature, as the usage lines' "" key means
        runs = runs.filter(feature=feature)
    if user_id is not None:
        runs = runs.filter(user_id=user_id)
    if min_cost_usd is not None:
        runs = runs.filter(cost_total_usd__gte=min_cost_usd)
    if created_from is not None:
        runs = runs.filter(created_at__gte=created_from)
    if created_before is not None:
        runs = runs.filter(created_at__lt=created_before)
    if high_cost is not None:
        runs = runs.filter(is_high_cost=high_cost)
    return runs.select_related("tenant", "model_price", "tool_price").order_by("-created_at", "-id")


def models_with_unpriced_runs(models: Iterable[str]) -> set[str]:
    """Those of these models that still have runs stored unpriced (from the daily rollups' unpriced counts)."""
    return set(DailyRollup.objects.unscoped().filter(model__in=list(models), unpriced_runs__gt=0)
               .values_list("model", flat=True).distinct())
