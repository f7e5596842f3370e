"""Rollup compaction (apps/ledger/compaction.py): a period's end-user rollup rows end up together tenant by
tenant with every key and sum unchanged; closed periods move once, open months and parts every night until
they close; a pass stops at its row budget and the next goes on from the tenant it reached (or starts over, when
the period has closed since); it waits for an ingest batch under way; the readers and ledger_check read the
same before and after."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from unittest import mock

import pytest
from django.core.management import call_command
from django.db import connection

from apps.ledger import compaction, selectors
from apps.ledger.compaction import rollups_compact
from apps.ledger.models import (
    EndUserDailyRollup,
    EndUserMonthlyRollup,
    EndUserMonthPartRollup,
    RollupCompaction,
    TenantDailyRollup,
    month_part_start,
)
from apps.ledger.services import ingest_events, ingest_paused, ledger_check
from apps.tenants.models import Tenant
from tests import builders

TODAY = dt.date(2026, 11, 20)
CLOSED_DAY = dt.date(2026, 10, 5)  # its day, its part (Oct 1-8) and its month all ended weeks before TODAY
TABLES = ((EndUserDailyRollup, "day", CLOSED_DAY), (EndUserMonthPartRollup, "part", dt.date(2026, 10, 1)),
          (EndUserMonthlyRollup, "month", dt.date(2026, 10, 1)))
SUMS = ("runs", "unpriced_runs", "input_tokens", "output_tokens", "cost_total_units")


def _interleaved_rows(tenants, *, users: int, day: dt.date = CLOSED_DAY) -> None:
    """The end-user rows of `day` (and its part and month) of several tenants, inserted user by user with the
    tenants taking turns, as ingest adds them when each user's first run arrives; the tenant-day rows that say
    which days hold runs."""
    for tenant in tenants:
        TenantDailyRollup.objects.create(tenant=tenant, day=day, runs=users)
    for model, field, _ in TABLES:
        period = {"day": day, "part": month_part_start(day), "month": day.replace(day=1)}[field]
        model.objects.bulk_create(ignore_conflicts=True, objs=(
            model(tenant=tenant, user_id=f"user-{user:04d}", runs=user + 1, input_tokens=user * 7,
                  cost_total_units=user * 1_000_003 + tenant.pk, **{field: period})
            for user, tenant in itertools.product(range(users), tenants)))
        # (a second day of the same part or month finds its users' rows there already)


def _pages(model, field: str, period: dt.date, tenant=None) -> int:
    """The heap pages holding a tenant's rows of a period, or every tenant's (from each row's ctid: page, item)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(DISTINCT (ctid::text::point)[0]) FROM {model._meta.db_table} "
                       f"WHERE {field} = %s AND (%s::bigint IS NULL OR tenant_id = %s)",
                       [period, tenant and tenant.pk, tenant and tenant.pk])
        return cursor.fetchone()[0]


def _rows(model) -> set[tuple]:
    return set(model.objects.unscoped().values_list("tenant_id", "user_id", *SUMS,
                                                    *(f for f in ("day", "part", "month") if hasattr(model, f))))


@pytest.fixture
def tenants(tenant, other_tenant):
    return [tenant, other_tenant, Tenant.objects.create(slug="initech", name="Initech")]


@pytest.mark.postgres
def test_a_closed_periods_rows_end_up_together_tenant_by_tenant_with_every_key_and_sum_unchanged(tenants):
    _interleaved_rows(tenants, users=600)
    before = {model: _rows(model) for model, _, _ in TABLES}
    # Interleaved, each tenant's rows are on (nearly) every page the period's rows fill.
    assert all(_pages(model, field, period, tenants[0]) > 20 for model, field, period in TABLES)

    result = rollups_compact(today=TODAY)

    assert result.complete and result.rows_moved == 3 * 3 * 600
    assert {(moved.table, moved.period) for moved in result.periods} == {
        (model._meta.db_table, period) for model, field, period in TABLES}
    for model, field, period in TABLES:
        assert _rows(model) == before[model]
        packed = _pages(model, field, period) / len(tenants)  # each tenant's share of the period's pages
        for tenant in tenants:
            # Its share, and a page shared with the tenant before or after it at each end.
            assert _pages(model, field, period, tenant) <= packed + 2, (model.__name__, tenant.slug)


@pytest.mark.postgres
def test_closed_periods_move_once_and_open_months_and_parts_every_night_until_they_close(tenants):
    open_day = TODAY - dt.timedelta(days=compaction.CLOSED_AFTER_DAYS)  # ended yesterday: runs may still come
    closed_day = open_day - dt.timedelta(days=1)
    _interleaved_rows(tenants[:2], users=5, day=open_day)
    _interleaved_rows(tenants[:2], users=5, day=closed_day)

    planned = rollups_compact(today=TODAY, dry_run=True)
    # Nov 17 is closed; the part of Nov 16-23 and November are open, and rewritten; the open day Nov 18 is not.
    assert planned.periods == [
        ("ledger_endusermonthlyrollup", dt.date(2026, 11, 1), 10, False),
        ("ledger_endusermonthpartrollup", dt.date(2026, 11, 16), 10, False),
        ("ledger_enduserdailyrollup", closed_day, 10, True),
    ]
    assert not RollupCompaction.objects.exists()  # a dry run moves and records nothing

    assert rollups_compact(today=TODAY).periods == planned.periods
    records = {(record.table, record.period): record for record in RollupCompaction.objects.all()}
    day = records["ledger_enduserdailyrollup", closed_day]
    assert day.rows_moved == 10 and day.period_closed and day.finished_at is not None
    assert day.rewritten_at == day.finished_at
    for open_period in (("ledger_endusermonthlyrollup", dt.date(2026, 11, 1)),
                        ("ledger_endusermonthpartrollup", dt.date(2026, 11, 16))):
        record = records[open_period]
        assert record.rows_moved == 10 and record.rewritten_at is not None and record.finished_at is None
        assert not record.period_closed and record.next_tenant_id == 0  # the next night starts over

    # The next night: the day stays done, Nov 18 has closed, and the open part and month are rewritten whole,
    # with the rows added to them since.
    _interleaved_rows(tenants[2:], users=5, day=TODAY - dt.timedelta(days=1))
    next_night = rollups_compact(today=TODAY + dt.timedelta(days=1))
    assert next_night.periods == [
        ("ledger_endusermonthlyrollup", dt.date(2026, 11, 1), 15, False),
        ("ledger_endusermonthpartrollup", dt.date(2026, 11, 16), 15, False),
        ("ledger_enduserdailyrollup", open_day, 10, True),
    ]
    # Days later the part and the month close too: each is moved once more, for good.
    later = rollups_compact(today=dt.date(2026, 12, 3))
    assert later.periods == [
        ("ledger_endusermonthlyrollup", dt.date(2026, 11, 1), 15, True),
        ("ledger_endusermonthpartrollup", dt.date(2026, 11, 16), 15, True),
        ("ledger_enduserdailyrollup", dt.date(2026, 11, 19), 5, True),
    ]
    assert not RollupCompaction.objects.filter(finished_at__isnull=True).exists()
    assert RollupCompaction.objects.get(table="ledger_endusermonthlyrollup").rows_moved == 10 + 15 + 15
    assert rollups_compact(today=dt.date(2026, 12, 3)).periods == []  # done once


@pytest.mark.postgres
def test_open_periods_are_rewritten_once_a_day_and_a_second_pass_goes_on_with_the_closed_ones(tenants):
    _interleaved_rows(tenants, users=2)  # October: closed
    _interleaved_rows(tenants, users=2, day=dt.date(2026, 11, 18))  # November and its part of Nov 16-23: open
    at_five = dt.datetime.combine(TODAY, dt.time(5), tzinfo=dt.UTC)
    with mock.patch("apps.ledger.compaction.timezone.now", return_value=at_five):
        first = rollups_compact(today=TODAY, max_rows=12)  # the open month and part, then the budget is spent
        assert not first.complete
        assert [(moved.period, moved.rows, moved.closed) for moved in first.periods] == [
            (dt.date(2026, 11, 1), 6, False), (dt.date(2026, 11, 16), 6, False)]
        again = rollups_compact(today=TODAY)
    assert again.complete and again.rows_moved == 3 * 6 and all(moved.closed for moved in again.periods)
    next_day = rollups_compact(today=TODAY + dt.timedelta(days=1))
    assert [(moved.table, moved.closed) for moved in next_day.periods] == [
        ("ledger_endusermonthlyrollup", False), ("ledger_endusermonthpartrollup", False),
        ("ledger_enduserdailyrollup", True)]  # Nov 18 has closed


@pytest.mark.postgres
def test_a_pass_stopped_in_an_open_period_goes_on_the_same_day_and_starts_over_on_a_later_one(tenants):
    """A later day's pass finds rows added after the tenants the stopped pass had done."""
    _interleaved_rows(tenants, users=2, day=dt.date(2026, 11, 18))  # November: open until Dec 3

    def night(day: dt.date, hour: int, **budget) -> list:
        with mock.patch("apps.ledger.compaction.timezone.now",
                        return_value=dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)):
            return [(moved.period, moved.rows) for moved in rollups_compact(today=day, **budget).periods]

    with mock.patch.object(compaction, "TENANTS_PER_MOVE", 1):
        assert night(TODAY, 5, max_rows=2) == [(dt.date(2026, 11, 1), 2)]  # the month's first tenant
        assert night(TODAY, 6, max_rows=2) == [(dt.date(2026, 11, 1), 2)]  # the same day: its second
        record = RollupCompaction.objects.get(table="ledger_endusermonthlyrollup")
        assert record.next_tenant_id == tenants[1].pk + 1 and record.rewritten_at is None
        next_day = TODAY + dt.timedelta(days=1)
        assert night(next_day, 5)[0] == (dt.date(2026, 11, 1), 6)  # started over: every tenant's rows
    record.refresh_from_db()
    assert record.rows_moved == 2 + 2 + 6 and record.next_tenant_id == 0 and record.finished_at is None
    assert record.started_at.date() == record.rewritten_at.date() == next_day


@pytest.mark.postgres
def test_a_pass_stopped_part_way_through_an_open_period_starts_it_over_once_it_has_closed(tenants):
    """The tenants it had done have rows added after them while the period was open."""
    _interleaved_rows(tenants, users=2, day=dt.date(2026, 11, 18))
    with mock.patch.object(compaction, "TENANTS_PER_MOVE", 1):
        first = rollups_compact(today=TODAY, max_rows=2)  # the open month's first tenant, then the budget is spent
        assert not first.complete
        assert first.periods == [("ledger_endusermonthlyrollup", dt.date(2026, 11, 1), 2, False)]
        record = RollupCompaction.objects.get()
        assert record.next_tenant_id == tenants[0].pk + 1 and not record.period_closed
        assert record.rewritten_at is None

        later = rollups_compact(today=dt.date(2026, 12, 3))  # November has closed

    assert later.complete
    assert [period for period in later.periods if period.table == "ledger_endusermonthlyrollup"] == [
        ("ledger_endusermonthlyrollup", dt.date(2026, 11, 1), 6, True)]  # the first tenant's rows again
    record.refresh_from_db()
    assert record.period_closed and record.finished_at is not None and record.rows_moved == 2 + 6


@pytest.mark.postgres
def test_a_pass_stops_at_its_row_budget_and_the_next_goes_on_from_the_tenant_it_reached(tenants):
    _interleaved_rows(tenants, users=4)
    before = _rows(EndUserDailyRollup)
    with mock.patch.object(compaction, "TENANTS_PER_MOVE", 1):
        first = rollups_compact(today=TODAY, max_rows=4)
        assert not first.complete and first.rows_moved == 4
        record = RollupCompaction.objects.get()
        assert record.finished_at is None and record.next_tenant_id == tenants[0].pk + 1 and record.rows_moved == 4
        rest = rollups_compact(today=TODAY)
    assert rest.complete and rest.rows_moved == 3 * 3 * 4 - 4
    assert RollupCompaction.objects.get(table="ledger_enduserdailyrollup").rows_moved == 12
    assert RollupCompaction.objects.filter(finished_at__isnull=True).count() == 0
    assert _rows(EndUserDailyRollup) == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_move_waits_for_the_ingest_batch_under_way(tenant):
    """Ingest adds deltas to these rows: a row moved while a batch adds to it would lose the delta."""
    _interleaved_rows([tenant], users=3)
    paused, release, done = threading.Event(), threading.Event(), threading.Event()

    def ingest_batch():
        try:
            with ingest_paused():
                paused.set()
                release.wait(10)
        finally:
            connection.close()

    def compact():
        try:
            rollups_compact(today=TODAY)
            done.set()
        finally:
            connection.close()

    batch = threading.Thread(target=ingest_batch)
    batch.start()
    assert paused.wait(10)
    mover = threading.Thread(target=compact)
    mover.start()
    assert not done.wait(1.5)  # blocked on the ingest lock
    release.set()
    batch.join(10)
    mover.join(10)
    assert done.is_set() and RollupCompaction.objects.filter(finished_at__isnull=False).count() == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("today", "periods"), [
    (TODAY, 28 + 4 + 1),  # October all closed: 28 days, 4 parts, the month
    (dt.date(2026, 10, 29), 26 + 3 + 2),  # Oct 27-28 open days, left alone; the last part and the month open
], ids=["closed", "open"])
def test_runs_reported_while_their_period_moves_are_all_counted(tenant, other_tenant, today, periods):
    """Ingest batches of runs for the periods being compacted (late ones for closed periods, the month's own
    for the open month and part), from another connection, for as long as the compaction runs: not one delta
    may be lost or counted twice (ledger_check recomputes every rollup from the runs)."""
    with mock.patch.object(compaction, "TENANTS_PER_MOVE", 1):  # many short moves, so batches land between them
        for day in range(1, 29):
            for owner in (tenant, other_tenant):
                ingest_events(events=[
                    {"tenant": owner.slug, "attribution": {"user_id": f"u{user}"},
                     "object": builders.response(created_at=dt.datetime(2026, 10, day, 9, tzinfo=dt.UTC))}
                    for user in range(6)])
        stop, errors, sent = threading.Event(), [], []

        def late_runs():
            try:
                for index in itertools.count():
                    if stop.is_set():
                        return
                    sent.append(index)
                    owner = (tenant, other_tenant)[index % 2]
                    result = ingest_events(events=[
                        {"tenant": owner.slug, "attribution": {"user_id": f"u{index % 9}"},
                         "object": builders.response(created_at=dt.datetime(2026, 10, 1 + index % 28, 18,
                                                                            tzinfo=dt.UTC))}])
                    assert result.rejected == 0
            except Exception as error:  # noqa: BLE001 (reported by the main thread)
                errors.append(error)
            finally:
                connection.close()

        batches = threading.Thread(target=late_runs)
        batches.start()
        try:
            result = rollups_compact(today=today)
        finally:
            stop.set()
            batches.join(30)
    assert not errors, errors
    assert len(sent) > 20  # batches landed between the moves
    assert result.complete and len(result.periods) == periods
    assert ledger_check() == []


def _ingest(tenant, created_at, user):
    result = ingest_events(events=[{"tenant": tenant.slug, "attribution": {"user_id": user},
                                    "object": builders.response(created_at=created_at)}])
    assert result.rejected == 0, result.as_dict()


@pytest.mark.postgres
def test_the_readers_and_ledger_check_read_the_same_before_and_after(tenant, other_tenant):
    for day, hour, user in itertools.product((1, 8, 9, 30), (3, 15), ("ann", "bob", "cy")):
        for owner in (tenant, other_tenant):
            _ingest(owner, dt.datetime(2026, 10, day, hour, tzinfo=dt.UTC), user)
    _ingest(tenant, dt.datetime(2026, 11, 19, 9, tzinfo=dt.UTC), "ann")  # an open day, part and month

    def readings():
        ranges = ((dt.date(2026, 10, 1), dt.date(2026, 11, 1)), (dt.date(2026, 10, 2), dt.date(2026, 10, 31)),
                  (dt.date(2026, 10, 9), dt.date(2026, 11, 20)))
        return [(selectors.usage_lines(tenant=tenant, start=start, end=end, group_by="user"),
                 selectors.end_user_usage_text(tenant=tenant, start=start, end=end),
                 list(selectors.cost_by_end_user(tenant=tenant, start=start, end=end - dt.timedelta(days=1))))
                for start, end in ranges]

    before = readings()
    result = rollups_compact(today=TODAY)
    assert result.complete and result.rows_moved > 0
    assert readings() == before
    assert ledger_check() == []
    # A run reported late for a compacted day adds to its rows like any other.
    _ingest(tenant, dt.datetime(2026, 10, 8, 23, tzinfo=dt.UTC), "ann")
    assert ledger_check() == []
    # ledger_check --fix rewrites every rollup in its own order: the next passes compact them again.
    EndUserDailyRollup.objects.unscoped().filter(tenant=tenant, day=dt.date(2026, 10, 8)).update(runs=99)
    assert ledger_check(fix=True) and not RollupCompaction.objects.exists()
    assert rollups_compact(today=TODAY).rows_moved == result.rows_moved


def test_sqlite_is_left_as_it_is(tenant):
    _interleaved_rows([tenant], users=2)
    with mock.patch.object(compaction.bulk, "is_postgres", return_value=False):
        result = rollups_compact(today=TODAY)
    assert result.skipped.startswith("PostgreSQL only") and result.periods == [] and result.rows_moved == 0
    assert not RollupCompaction.objects.exists()


@pytest.mark.postgres
def test_the_command_lists_a_dry_run_then_compacts(tenants, capsys):
    _interleaved_rows(tenants[:2], users=3)
    with mock.patch("apps.ledger.compaction.timezone.now",
                    return_value=dt.datetime.combine(TODAY, dt.time(5), tzinfo=dt.UTC)):
        call_command("compact_rollups", "--dry-run")
        dry = capsys.readouterr().out
        assert "ledger_endusermonthlyrollup       2026-10-01             6 rows" in dry
        assert "Dry run: 3 periods to compact, 18 rows. Nothing was moved" in dry
        assert not RollupCompaction.objects.exists()
        call_command("compact_rollups")
        assert "Compacted 3 periods, 18 rows moved." in capsys.readouterr().out
        call_command("compact_rollups")
        assert "Nothing to do: every closed period is compacted" in capsys.readouterr().out
        _interleaved_rows(tenants[:1], users=1, day=TODAY - dt.timedelta(days=1))
        call_command("compact_rollups")
        out = capsys.readouterr().out
        assert "ledger_endusermonthpartrollup     2026-11-16             1 rows  (open)" in out
        assert "Compacted 2 periods, 2 rows moved." in out


@pytest.mark.postgres
def test_the_nightly_task_compacts(tenants):
    from apps.ledger.tasks import compact_rollups

    _interleaved_rows(tenants[:1], users=2)
    outcome = compact_rollups.apply().get()
    assert outcome["rows_moved"] == 6 and outcome["complete"]


@pytest.mark.postgres
def test_staff_see_what_each_pass_did_in_the_admin_and_cannot_change_it(client, staff_user, tenants):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    _interleaved_rows(tenants[:1], users=2)
    with mock.patch.object(compaction, "TENANTS_PER_MOVE", 1):
        rollups_compact(today=TODAY, max_rows=1)  # stops after the first period's first tenant
    response = client.get("/admin/ledger/rollupcompaction/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "ledger_endusermonthlyrollup" in html and "Oct. 1, 2026" in html
    record = RollupCompaction.objects.get()
    assert client.get(f"/admin/ledger/rollupcompaction/{record.pk}/change/").status_code == 200
    assert client.post(f"/admin/ledger/rollupcompaction/{record.pk}/delete/", {"post": "yes"}).status_code == 403
    assert RollupCompaction.objects.filter(pk=record.pk).exists()
