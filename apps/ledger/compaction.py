"""Rollup compaction: each period's end-user rollup rows rewritten together, tenant by tenant (issue #9).

Ingest adds an end-user rollup row when a user's first run of the day, month part or month arrives, so a
period's rows lie in arrival order, every tenant's interleaved with the others': on a 10M-run ledger of 1,000
tenants the biggest tenant's 5,000 rows of one month part sat on ~4,000 of the table's pages, and usage by end
user and the tenant page read a tenant's rows of a period, not the table's. Once a period is closed, moving
its rows in (tenant, user) order (one DELETE ... RETURNING feeding an ordered INSERT) packs each tenant's rows
onto a few dozen pages: the reads over whole months and parts took 10-15 ms less at 10M runs
(docs/benchmarks.md). Runs reported after that still land: ingest updates their row where it is, or adds one.

The open month and month part are rewritten every night too ("last 30 days" and "this month" read them, and by
the month's end most of its rows are there), and once more, for good, when they close. An open day is not: a
day's rows are read whole only by ranges that end within the last two days, and it is closed two days after
it ends.

Bounded (at most `max_rows` a pass, a few tenants per transaction), resumable and idempotent (a
RollupCompaction row per period and table records where it got to and when it finished), serialized with
ingest (each move holds the ingest lock, so no batch adds to a row being moved), newest periods first (the
most read). Only the physical order changes: every row's key and sums stay as they were. PostgreSQL only:
the order of a table's pages is PostgreSQL's concern; SQLite keeps rows in rowid order and is not compacted.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from django.db import connection
from django.utils import timezone

from apps.core.timeutils import month_start, next_month
from apps.tenants.models import Tenant

from . import bulk
from .models import (
    EndUserDailyRollup,
    EndUserMonthlyRollup,
    EndUserMonthPartRollup,
    RollupCompaction,
    TenantDailyRollup,
    month_part_start,
    month_parts,
)
from .services import END_USER_DAILY, END_USER_MONTH_PARTS, END_USER_MONTHLY, ingest_paused

logger = logging.getLogger(__name__)

# A period is compacted once this many days have passed since its last day: the runs of a day are reported
# within minutes to hours of it (the collector refreshes the unfinished ones every minute).
CLOSED_AFTER_DAYS = 2
# Tenants whose rows one transaction moves (with the ingest lock held): a few thousand rows, a fraction of a
# second of ingest waiting at 10M runs, and the unit a stopped pass resumes from.
TENANTS_PER_MOVE = 50
MAX_ROWS_PER_PASS = 3_000_000


@dataclass(frozen=True)
class CompactedTable:
    """An end-user rollup table and the field naming its period (the middle of its key, as ingest keeps it)."""

    model: type
    period_field: str

    @property
    def name(self) -> str:
        return self.model._meta.db_table

    @property
    def columns(self) -> list[str]:
        """Every column a move writes back (the surrogate id aside: moved rows take new ones)."""
        return [f.column for f in self.model._meta.concrete_fields if not f.primary_key]

    @property
    def rewritten_while_open(self) -> bool:
        return self.model is not EndUserDailyRollup

    def period_of(self, day: dt.date) -> dt.date:
        if self.model is EndUserMonthlyRollup:
            return month_start(day)
        if self.model is EndUserMonthPartRollup:
            return month_part_start(day)
        return day

    def period_end(self, period: dt.date) -> dt.date:
        """The day after the period's last day."""
        if self.model is EndUserMonthlyRollup:
            return next_month(period)
        if self.model is EndUserMonthPartRollup:
            return dict(month_parts(month_start(period)))[period]
        return period + dt.timedelta(days=1)


COMPACTED_TABLES = tuple(CompactedTable(rollup.model, rollup.key[1])  # key: (tenant_id, period, user_id)
                         for rollup in (END_USER_DAILY, END_USER_MONTH_PARTS, END_USER_MONTHLY))


class PeriodToCompact(NamedTuple):
    table: CompactedTable
    period: dt.date
    closed: bool  # False: an open month or part, rewritten each night until a pass after it closes finishes it


class PeriodMoved(NamedTuple):
    table: str
    period: dt.date
    rows: int  # moved (in a dry run: that would be)
    closed: bool


@dataclass
class CompactionResult:
    dry_run: bool
    # Every period moved (or, in a dry run, that would be), newest first.
    periods: list[PeriodMoved] = field(default_factory=list)
    rows_moved: int = 0
    # False when the pass stopped at max_rows with periods left: the next pass goes on from there.
    complete: bool = True
    skipped: str = ""

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "periods": len(self.periods), "rows_moved": self.rows_moved,
                "complete": self.complete, "skipped": self.skipped}


def periods_to_compact(*, today: dt.date) -> list[PeriodToCompact]:
    """Every closed period with runs that no pass has finished, and every open month and month part begun
    before today that no pass has rewritten today, newest first (by the period's last day, then days before
    parts before months). The days come from the tenant-day rollup: one row per tenant and day, a thousandth
    of the end-user rows."""
    closed_before = today - dt.timedelta(days=CLOSED_AFTER_DAYS)  # a period ending (exclusive) by this is closed
    days = (TenantDailyRollup.objects.unscoped().filter(day__lt=today).order_by()
            .values_list("day", flat=True).distinct())
    done = set(RollupCompaction.objects.filter(finished_at__isnull=False).values_list("table", "period"))
    # Once a day: a second pass the same day (the command run again after one that stopped at its budget) goes
    # on with the closed periods instead of rewriting the open ones again.
    rewritten_today = set(RollupCompaction.objects.filter(finished_at__isnull=True, rewritten_at__date=today)
                          .values_list("table", "period"))
    todo = set()
    for day in days:
        for table in COMPACTED_TABLES:
            period = table.period_of(day)
            if table.period_end(period) <= closed_before:
                if (table.name, period) not in done:
                    todo.add(PeriodToCompact(table, period, closed=True))
            elif table.rewritten_while_open and (table.name, period) not in rewritten_today:
                todo.add(PeriodToCompact(table, period, closed=False))
    order = {table.name: index for index, table in enumerate(COMPACTED_TABLES)}
    return sorted(todo, key=lambda item: (-item.table.period_end(item.period).toordinal(), order[item.table.name]))


def _tenant_ids() -> list[int]:
    return list(Tenant.objects.order_by("pk").values_list("pk", flat=True))


def _period_rows(table: CompactedTable) -> str:
    """FROM and WHERE for some tenants' rows of one period (parameters: the period, the tenant ids).
    tenant_id = ANY(...) probes the (tenant, period, user) key once per tenant: the tables have no index that
    leads with the period, and a day's rows of every tenant are a thousandth of the daily table."""
    quote = connection.ops.quote_name
    return f"FROM {quote(table.name)} WHERE {quote(table.period_field)} = %s AND tenant_id = ANY(%s)"


def _count(table: CompactedTable, period: dt.date, tenant_ids: list[int]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) {_period_rows(table)}", [period, tenant_ids])
        return cursor.fetchone()[0]


def _move(table: CompactedTable, period: dt.date, tenant_ids: list[int]) -> int:
    """Rewrite these tenants' rows of the period in (tenant, user) order; the rows moved. The deleted rows'
    keys free up within the statement, so the re-inserted ones take them without a conflict."""
    quote = connection.ops.quote_name
    columns = ", ".join(quote(name) for name in table.columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH moved AS (DELETE {_period_rows(table)} RETURNING {columns}) "
            f"INSERT INTO {quote(table.name)} ({columns}) SELECT {columns} FROM moved "
            f"ORDER BY tenant_id, user_id COLLATE \"C\"", [period, tenant_ids])
        return cursor.rowcount


def rollups_compact(*, today: dt.date | None = None, dry_run: bool = False, max_rows: int = MAX_ROWS_PER_PASS,
                    progress: Callable[[str, dt.date, int], None] | None = None) -> CompactionResult:
    """Compact every closed period not compacted yet and rewrite the open months and parts, newest first. Once
    `max_rows` rows have moved the pass stops, between two groups of tenants (`complete` False), and the next
    pass goes on from there. `dry_run`: the periods and their rows, nothing moved. `progress(table, period,
    rows)` after each group of tenants."""
    today = today or timezone.now().date()
    result = CompactionResult(dry_run=dry_run)
    if not bulk.is_postgres():
        result.skipped = "PostgreSQL only: SQLite keeps a table's rows in rowid order"
        return result
    tenant_ids = _tenant_ids()
    for table, period, closed in periods_to_compact(today=today):
        if dry_run:
            result.periods.append(PeriodMoved(table.name, period, _count(table, period, tenant_ids), closed))
            continue
        if result.rows_moved >= max_rows:
            result.complete = False
            break
        moved = _compact_period(table, period, closed, tenant_ids, result, max_rows, progress, today=today)
        result.periods.append(PeriodMoved(table.name, period, moved, closed))
        if not result.complete:
            break
    if not dry_run:
        logger.info("rollup compaction: %s", result.as_dict())
    return result


def _compact_period(table: CompactedTable, period: dt.date, closed: bool, tenant_ids: list[int],
                    result: CompactionResult, max_rows: int, progress, *, today: dt.date) -> int:
    record, _ = RollupCompaction.objects.get_or_create(table=table.name, period=period, defaults={
        "started_at": timezone.now(), "period_closed": closed})
    stopped_while_open = record.next_tenant_id and not record.period_closed
    if stopped_while_open and (closed or record.started_at.date() != today):
        # A pass stopped part way while the period was open, and the period has closed since or a day has
        # passed: the tenants it had done have rows added after them meanwhile, so it starts over.
        record.next_tenant_id = 0
    if not record.next_tenant_id:  # a pass begins
        record.started_at, record.period_closed = timezone.now(), closed
        record.save(update_fields=["started_at", "period_closed", "next_tenant_id"])
    moved = 0
    pending = [tenant_id for tenant_id in tenant_ids if tenant_id >= record.next_tenant_id]
    for index in range(0, len(pending), TENANTS_PER_MOVE):
        if result.rows_moved >= max_rows:
            result.complete = False
            return moved
        group = pending[index:index + TENANTS_PER_MOVE]
        # Ingest adds deltas to these rows: it waits while they move (and a batch under way finishes first).
        with ingest_paused():
            rows = _move(table, period, group)
            record.next_tenant_id = group[-1] + 1
            record.rows_moved += rows
            record.save(update_fields=["next_tenant_id", "rows_moved"])
        moved += rows
        result.rows_moved += rows
        if progress:
            progress(table.name, period, rows)
    record.rewritten_at = timezone.now()
    if closed:
        record.finished_at = record.rewritten_at
    else:
        record.next_tenant_id = 0  # tomorrow's pass rewrites it whole again
    record.save(update_fields=["rewritten_at", "finished_at", "next_tenant_id"])
    return moved
