"""The rollup readers (end users by day and month, prompt sizes, tool fees per kind) give exactly what the runs
say: each is compared with the raw-run query it replaced (issue #9), after random ingest sequences and on
ranges that mix whole months with ragged days. Also: ledger_check covers the new rollups, the backfill
migration rebuilds them, and another tenant's rollups never show."""

from __future__ import annotations

import datetime as dt
import importlib
from decimal import Decimal
from unittest import mock

import pytest
from django.db import connection
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings

from apps.core.money import usd_string
from apps.core.timeutils import day_start
from apps.ledger import selectors
from apps.ledger.models import (
    PROMPT_TOKEN_EDGES,
    DailyRollup,
    EndUserDailyRollup,
    EndUserMonthlyRollup,
    EndUserMonthPartRollup,
    PromptSizeRollup,
    Run,
    ToolUsageRollup,
)
from apps.ledger.services import ingest_events, ledger_check, runs_reprice
from apps.pricing.rating import ONE_THOUSAND
from tests import builders
from tests.ledger.migrations import migrate_ledger_to, migrate_ledger_to_latest
from tests.ledger.test_properties import scenarios
from tests.plans import plan_of

# --- the raw-run queries the rollup readers replaced (reference implementations) -------------------


def _raw_runs(tenant, start: dt.date, end: dt.date):
    """Runs created from start to end (exclusive)."""
    return Run.objects.for_tenant(tenant).filter(created_at__gte=day_start(start), created_at__lt=day_start(end))


def raw_usage_by_user(tenant, start, end) -> list[dict]:
    """Summed in Python from each run's own values: SQLite's SUM over decimals is floating point."""
    counts = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
    money = ("cost_input_usd", "cost_cached_input_usd", "cost_output_usd", "cost_tools_usd", "cost_total_usd")
    totals: dict[str, dict] = {}
    for run in _raw_runs(tenant, start, end).values("user_id", "priced", *counts, *money):
        row = totals.setdefault(run["user_id"], {"runs": 0, "unpriced_runs": 0, **{n: 0 for n in counts},
                                                 **{n: Decimal(0) for n in money}})
        row["runs"] += 1
        row["unpriced_runs"] += 0 if run["priced"] else 1
        for name in (*counts, *money):
            row[name] += run[name]
    return [{"key": user_id, **totals[user_id]} for user_id in sorted(totals)]


def raw_histogram(tenant, start, end) -> tuple[list[int], int]:
    """(runs per bin, largest prompt) of runs created start..end inclusive."""
    counts = [0] * len(PROMPT_TOKEN_EDGES)
    tokens = list(_raw_runs(tenant, start, end + dt.timedelta(days=1)).values_list("input_tokens", flat=True))
    for value in tokens:
        counts[max(i for i, edge in enumerate(PROMPT_TOKEN_EDGES) if edge <= value)] += 1
    return counts, max(tokens, default=0)


def raw_cost_by_end_user(tenant, start, end) -> list[tuple]:
    totals: dict[str, list] = {}
    for run in _raw_runs(tenant, start, end + dt.timedelta(days=1)).values("user_id", "cost_total_usd", "created_at"):
        row = totals.setdefault(run["user_id"], [0, Decimal(0), None])
        row[0] += 1
        row[1] += run["cost_total_usd"]
        day = run["created_at"].astimezone(dt.UTC).date()
        row[2] = day if row[2] is None else max(row[2], day)
    return sorted(((user_id, *row) for user_id, row in totals.items()), key=lambda r: (-r[2], r[0]))


def raw_tool_usage_by_kind(tenant, start, end) -> dict[str, dict]:
    """The statement's tool figures as they were computed before the rollups carried them."""
    kinds = {kind: {"quantity": 0, "cost_usd": Decimal(0)} for kind in ("code_interpreter", "file_search", "web_search")}
    rows = (
        _raw_runs(tenant, start, end)
        .filter(Q(code_interpreter_sessions__gt=0) | Q(file_search_calls__gt=0) | Q(web_search_calls__gt=0))
        .values("api", "priced", "tool_price__code_interpreter_session_usd", "tool_price__file_search_call_usd_per_1k",
                "tool_price__web_search_call_usd_per_1k")
        .order_by()
        .annotate(sessions=Coalesce(Sum("code_interpreter_sessions"), 0), file_search=Coalesce(Sum("file_search_calls"), 0),
                  web_search=Coalesce(Sum("web_search_calls"), 0))
    )
    for row in rows:
        kinds["code_interpreter"]["quantity"] += row["sessions"]
        kinds["file_search"]["quantity"] += row["file_search"]
        kinds["web_search"]["quantity"] += row["web_search"]
        if not row["priced"] or row["tool_price__code_interpreter_session_usd"] is None:
            continue
        billable = row["file_search"] if row["api"] == "responses" else 0
        kinds["code_interpreter"]["cost_usd"] += Decimal(row["sessions"]) * row["tool_price__code_interpreter_session_usd"]
        kinds["file_search"]["cost_usd"] += Decimal(billable) * row["tool_price__file_search_call_usd_per_1k"] / ONE_THOUSAND
        kinds["web_search"]["cost_usd"] += Decimal(row["web_search"]) * row["tool_price__web_search_call_usd_per_1k"] / ONE_THOUSAND
    return kinds


def _assert_readers_match_runs(tenant, start: dt.date, end: dt.date) -> None:
    """end is exclusive for usage and tools, the page's inclusive end is end - 1 day."""
    lines, expected = (selectors.usage_lines(tenant=tenant, start=start, end=end, group_by="user"),
                       raw_usage_by_user(tenant, start, end))
    assert [line["key"] for line in lines] == [line["key"] for line in expected]
    for line, want in zip(lines, expected, strict=True):
        assert {k: v for k, v in line.items() if v != want[k]} == {}, (line["key"], want)
    assert selectors.tool_usage_by_kind(tenant=tenant, start=start, end=end) == raw_tool_usage_by_kind(tenant, start, end)
    last = end - dt.timedelta(days=1)
    histogram = selectors.prompt_token_histogram(tenant=tenant, start=start, end=last)
    counts, largest = raw_histogram(tenant, start, last)
    assert (histogram.counts, histogram.max_tokens, histogram.total_runs) == (counts, largest, sum(counts))
    # The last active days come key by key for a page of users and from a day range for many: both agree.
    for probes in (selectors.LAST_ACTIVE_PROBES, 0):
        with mock.patch.object(selectors, "LAST_ACTIVE_PROBES", probes):
            users = [(r["user_id"], r["runs"], r["cost_usd"], r["last_active_day"])
                     for r in selectors.cost_by_end_user(tenant=tenant, start=start, end=last)]
        assert users == raw_cost_by_end_user(tenant, start, last), probes


# --- random ingest sequences -----------------------------------------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(scenario=scenarios())
def test_rollup_readers_equal_the_runs_after_random_ingest_sequences(tenant, other_tenant, scenario):
    _specs, batches, _prefix = scenario
    for batch in batches:
        assert ingest_events(events=batch).rejected == 0
    assert ledger_check() == []  # every rollup table, the new ones included
    for owner in (tenant, other_tenant):
        _assert_readers_match_runs(owner, dt.date(2026, 11, 1), dt.date(2026, 12, 1))  # a whole month
        _assert_readers_match_runs(owner, dt.date(2026, 11, 4), dt.date(2026, 11, 6))  # ragged days


# --- whole months, month to date, ragged edges -----------------------------------------------------


def _ingest(tenant, *objects, user="u1"):
    result = ingest_events(events=[{"tenant": tenant.slug, "object": obj, "attribution": {"user_id": user}}
                                   for obj in objects])
    assert result.rejected == 0, result.as_dict()


def _at(month: int, day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, tzinfo=dt.UTC)


@pytest.fixture
def spread(tenant, other_tenant):
    """Runs on both sides of month boundaries, several users, tools of every kind."""
    _ingest(tenant, builders.response(created_at=_at(10, 30), input_tokens=150, web_search_calls=3), user="u1")
    _ingest(tenant, builders.response(created_at=_at(10, 31, 23), input_tokens=7_000, file_search_calls=4,
                                      code_interpreter_calls=1), user="u2")
    _ingest(tenant, builders.assistants_run(created_at=_at(11, 1, 0), prompt_tokens=60_000, file_search=True,
                                            code_interpreter=True), user="u2")
    _ingest(tenant, builders.response(created_at=_at(11, 3), input_tokens=900), user="")
    _ingest(tenant, builders.response(created_at=_at(11, 20), input_tokens=2_500_000, model="gpt-unpriced-1"),
            user="u3")
    _ingest(other_tenant, builders.response(created_at=_at(11, 3), input_tokens=9_999_999), user="globex-user")


@pytest.mark.parametrize(("start", "end"), [
    (dt.date(2026, 11, 1), dt.date(2026, 12, 1)),   # a whole month: monthly rows
    (dt.date(2026, 11, 1), dt.date(2026, 11, 21)),  # month to date, nothing later: monthly rows
    (dt.date(2026, 11, 1), dt.date(2026, 11, 10)),  # a run later in the month: daily rows
    (dt.date(2026, 10, 31), dt.date(2026, 11, 2)),  # ragged on both months
    (dt.date(2026, 10, 1), dt.date(2026, 12, 1)),   # two whole months
    (dt.date(2026, 9, 15), dt.date(2026, 11, 4)),   # an empty month, a whole one, a ragged one
    (dt.date(2026, 11, 3), dt.date(2026, 12, 1)),   # most of a month: monthly minus the first two days
    (dt.date(2026, 11, 2), dt.date(2026, 11, 30)),  # minus a day at each end (u2's run and u3's stay out/in)
    (dt.date(2026, 10, 5), dt.date(2026, 11, 4)),   # the last 30 days: most of October, the start of November
])
def test_readers_equal_the_runs_on_whole_and_ragged_ranges(tenant, spread, start, end):
    _assert_readers_match_runs(tenant, start, end)


def test_whole_months_read_monthly_rows_and_ragged_ones_the_fewest_rows(tenant, spread):
    def models(start, end):
        return [(source.model, sign) for source, sign in selectors._end_user_sources(tenant, start, end)]

    monthly, daily = EndUserMonthlyRollup, EndUserDailyRollup
    assert models(dt.date(2026, 11, 1), dt.date(2026, 12, 1)) == [(monthly, 1)]
    assert models(dt.date(2026, 11, 1), dt.date(2026, 11, 21)) == [(monthly, 1)]
    # 9 days in, 21 out, and no run in the rest of the second part of the month: the first two parts' rows.
    assert models(dt.date(2026, 11, 1), dt.date(2026, 11, 10)) == [(EndUserMonthPartRollup, 1)] * 2
    assert models(dt.date(2026, 10, 31), dt.date(2026, 12, 1)) == [(monthly, 1), (daily, 1)]
    # Most of November: the month minus its first two days (u2's only November run is on the 1st).
    assert models(dt.date(2026, 11, 3), dt.date(2026, 12, 1)) == [(monthly, 1), (daily, -1)]


@pytest.fixture
def every_day(tenant):
    """A run a day for three users from October 1 to November 30: every day range has rows at both ends."""
    day = dt.date(2026, 10, 1)
    while day < dt.date(2026, 12, 1):
        _ingest(tenant, builders.response(created_at=_at(day.month, day.day), input_tokens=100 + day.day),
                user=f"u{day.day % 3}")
        day += dt.timedelta(days=1)


# Month and part edges (1, 9, 16, 24), the days beside them, and days inside parts.
EDGES = [dt.date(2026, 10, d) for d in (1, 2, 4, 8, 9, 12, 15, 16, 17, 20, 23, 24, 25, 28, 31)] + [
    dt.date(2026, 11, d) for d in (1, 2, 5, 8, 9, 10, 13, 15, 16, 19, 23, 24, 27, 30)] + [dt.date(2026, 12, 1)]


def test_every_range_between_month_part_and_day_edges_sums_exactly_the_runs(tenant, every_day):
    for start in EDGES:
        for end in EDGES:
            if start < end:
                lines, expected = (selectors.usage_lines(tenant=tenant, start=start, end=end, group_by="user"),
                                   raw_usage_by_user(tenant, start, end))
                assert lines == expected, (start, end)


def test_a_range_from_mid_month_to_mid_month_reads_rows_of_parts_of_months(tenant, every_day):
    def plan(start, end):
        return [(source.model, sign) for source, sign in selectors._end_user_sources(tenant, start, end)]

    part, daily, monthly = EndUserMonthPartRollup, EndUserDailyRollup, EndUserMonthlyRollup
    # The 30 days to mid November: October's last two parts and November's first two, no daily rows.
    assert plan(dt.date(2026, 10, 16), dt.date(2026, 11, 16)) == [(part, 1)] * 4
    # One day short at the end: November's second part minus its last day.
    assert plan(dt.date(2026, 10, 16), dt.date(2026, 11, 15)) == [(part, 1)] * 4 + [(daily, -1)]
    # Four days into a part: its four days (October 20-23), not its row minus four; November 1-3 likewise.
    assert plan(dt.date(2026, 10, 20), dt.date(2026, 11, 4)) == [(part, 1), (daily, 1)]
    # Near the start of a month the monthly row minus a few days stays the cheapest.
    assert plan(dt.date(2026, 10, 4), dt.date(2026, 11, 1)) == [(monthly, 1), (daily, -1)]
    # Near the end: the monthly row minus the last part and the two days before it.
    assert plan(dt.date(2026, 10, 1), dt.date(2026, 10, 22)) == [(monthly, 1), (part, -1), (daily, -1)]


def test_tool_fees_per_kind_add_up_to_the_runs_tool_cost_and_assistants_file_search_is_free(tenant, spread):
    for start, end in ((dt.date(2026, 10, 1), dt.date(2026, 11, 1)), (dt.date(2026, 11, 1), dt.date(2026, 12, 1))):
        kinds = selectors.tool_usage_by_kind(tenant=tenant, start=start, end=end)
        tools_cost = _raw_runs(tenant, start, end).aggregate(total=Sum("cost_tools_usd"))["total"]
        assert sum((kind["cost_usd"] for kind in kinds.values()), Decimal(0)) == tools_cost
    assert all(kinds["cost_usd"] > 0 for kinds in selectors.tool_usage_by_kind(
        tenant=tenant, start=dt.date(2026, 10, 1), end=dt.date(2026, 11, 1)).values())
    # An Assistants run's file-search calls carry no fee, so they are not billable tool use.
    assert ToolUsageRollup.objects.for_tenant(tenant).filter(day=dt.date(2026, 11, 1)).get().billable_file_search_calls == 0


def _mistaken_tool_price(effective_from: dt.date):
    from apps.pricing.models import ToolPrice

    return ToolPrice.objects.create(
        effective_from=effective_from, code_interpreter_session_usd=Decimal("0.03"),
        file_search_call_usd_per_1k=Decimal("2.50"), web_search_call_usd_per_1k=Decimal("99.00"),
        vector_storage_usd_per_gb_day=Decimal("0.10"), vector_storage_free_gb=Decimal("1"))


def test_tool_fees_leave_out_a_removed_version_whose_runs_were_all_re_rated_away(tenant):
    mistaken = _mistaken_tool_price(dt.date(2026, 11, 10))
    _ingest(tenant, builders.response(created_at=_at(11, 12), web_search_calls=2))
    assert Run.objects.for_tenant(tenant).get().tool_price_id == mistaken.pk
    # Replaced as docs/pricing.md says: moved out of the way, the period re-rated, then deleted; its rollup
    # row stays behind at zero.
    mistaken.effective_from = dt.date(2027, 6, 1)
    mistaken.save()
    runs_reprice(start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30), actor_label="test")
    mistaken_id = mistaken.pk
    mistaken.delete()
    assert ToolUsageRollup.objects.for_tenant(tenant).filter(tool_price_id=mistaken_id, web_search_calls=0).exists()

    kinds = selectors.tool_usage_by_kind(tenant=tenant, start=dt.date(2026, 11, 1), end=dt.date(2026, 12, 1))

    assert kinds["web_search"] == {"quantity": 2, "cost_usd": Decimal("0.02")}  # at the 2024 version's $10 per 1k
    assert kinds["web_search"]["cost_usd"] == Run.objects.for_tenant(tenant).get().cost_tools_usd
    assert ledger_check() == []


def test_tool_use_rated_with_a_version_that_no_longer_exists_is_a_clear_error_naming_it(tenant):
    ToolUsageRollup.objects.create(tenant=tenant, day=dt.date(2026, 11, 5), tool_price_id=987_654, web_search_calls=3)

    with pytest.raises(selectors.ToolPriceVersionMissing, match="tool price version id 987654, which no longer "
                                                                "exists.*manage.py ledger_check") as missing:
        selectors.tool_usage_by_kind(tenant=tenant, start=dt.date(2026, 11, 1), end=dt.date(2026, 12, 1))
    assert missing.value.tool_price_id == 987_654 and "tenant acme from 2026-11-01 to 2026-12-01" in str(missing.value)
    # Read month by month (an open statement's closed months), the error names the month it was found in.
    with pytest.raises(selectors.ToolPriceVersionMissing) as missing:
        selectors.tool_usage_by_kind_by_month(tenant=tenant, start=dt.date(2026, 6, 1), end=dt.date(2027, 1, 1))
    assert "tenant acme from 2026-11-01 to 2026-12-01" in str(missing.value)


def test_largest_prompt_survives_a_run_growing_into_a_bigger_bin(tenant):
    run = builders.response(created_at=_at(11, 3), input_tokens=150, status="in_progress")
    _ingest(tenant, run)
    _ingest(tenant, {**builders.response(response_id=run["id"], created_at=_at(11, 3), input_tokens=30_000)})
    histogram = selectors.prompt_token_histogram(tenant=tenant, start=dt.date(2026, 11, 3), end=dt.date(2026, 11, 3))
    assert histogram.total_runs == 1 and histogram.max_tokens == 30_000
    assert ledger_check() == []


def test_ledger_check_finds_tampered_new_rollups_and_fix_rebuilds_them(tenant, spread):
    EndUserMonthlyRollup.objects.for_tenant(tenant).filter(user_id="u2").update(runs=9)
    EndUserDailyRollup.objects.for_tenant(tenant).filter(user_id="u1").delete()
    PromptSizeRollup.objects.for_tenant(tenant).update(max_input_tokens=1)
    ToolUsageRollup.objects.for_tenant(tenant).update(web_search_calls=77)
    fields = {(d.key[0] if isinstance(d.key[0], str) else "DailyRollup", d.field) for d in ledger_check()}
    assert {("EndUserMonthlyRollup", "runs"), ("EndUserDailyRollup", "runs"),
            ("PromptSizeRollup", "largest max_input_tokens"), ("ToolUsageRollup", "web_search_calls")} <= fields
    ledger_check(fix=True)
    assert ledger_check() == []


def test_repricing_moves_tool_fees_and_end_user_costs_with_the_runs(tenant, spread):
    from apps.pricing.models import ToolPrice

    ToolPrice.objects.update(web_search_call_usd_per_1k=Decimal("99"))
    runs_reprice(actor_label="test")
    assert ledger_check() == []
    _assert_readers_match_runs(tenant, dt.date(2026, 10, 1), dt.date(2026, 12, 1))


@pytest.mark.django_db(transaction=True)  # migrations change the schema: SQLite refuses inside a transaction
def test_backfill_migrations_rebuild_the_new_rollups_from_the_runs(tenant, spread):
    # 0005's backfill runs against the schema it was written for (money in numeric columns); migrating on, 0010
    # turns the end-user rollups' money into ledger units and 0011 sums the parts of months from the daily
    # rows. The result must be what ingest keeps.
    historical = migrate_ledger_to("0009_enduser_half_month_rollup")
    try:
        for name in ("EndUserDailyRollup", "EndUserMonthlyRollup", "PromptSizeRollup", "ToolUsageRollup"):
            historical.get_model("ledger", name)._default_manager.all().delete()
        with connection.schema_editor() as schema_editor:
            importlib.import_module("apps.ledger.migrations.0005_backfill_new_rollups").backfill(historical, schema_editor)
    finally:
        migrate_ledger_to_latest()
    assert ledger_check() == []


# --- tenancy and query counts ----------------------------------------------------------------------


def test_another_tenants_rollups_never_show(tenant, other_tenant, spread):
    start, end = dt.date(2026, 10, 1), dt.date(2026, 12, 1)
    keys = {line["key"] for line in selectors.usage_lines(tenant=tenant, start=start, end=end, group_by="user")}
    assert "globex-user" not in keys and keys == {"", "u1", "u2", "u3"}
    users = {row["user_id"] for row in selectors.cost_by_end_user(tenant=tenant, start=start, end=end)}
    assert "globex-user" not in users
    histogram = selectors.prompt_token_histogram(tenant=tenant, start=start, end=end)
    assert histogram.max_tokens == 2_500_000 and histogram.total_runs == 5  # globex's 9,999,999 is not here
    theirs = selectors.usage_lines(tenant=other_tenant, start=start, end=end, group_by="user")
    assert [line["key"] for line in theirs] == ["globex-user"]


def test_end_user_readers_use_a_bounded_number_of_queries(tenant):
    for number in range(30):
        _ingest(tenant, builders.response(created_at=_at(11, 1 + number % 20), input_tokens=100 * number),
                user=f"user-{number:02d}")
    # Ragged: an exists() for the rest of the month and one for the rest of its second part, then the first
    # part's rows and the 9th's daily rows (one statement on PostgreSQL, one read per source on SQLite, which
    # sums them in Python).
    start, end = dt.date(2026, 11, 1), dt.date(2026, 11, 10)
    reads = 3 if connection.vendor == "postgresql" else 4
    with CaptureQueriesContext(connection) as queries:
        lines = selectors.usage_lines(tenant=tenant, start=start, end=end, group_by="user")
    assert len(lines) == 18 and len(_reads(queries)) == reads
    with CaptureQueriesContext(connection) as queries:
        rows = selectors.cost_by_end_user(tenant=tenant, start=start, end=end)
        page = rows[0:10]
    assert len(page) == 10 and all(row["last_active_day"] for row in page) and len(_reads(queries)) == reads + 1


def test_end_user_costs_make_each_row_once_when_it_is_taken(tenant):
    # 5,000 users ranked for a page of 10: rows stay (user_id, runs, units) tuples until taken; a row taken
    # twice (the table's page, then the chart beside it) is the same dict, with its last active day.
    rows = selectors.EndUserCosts([("b", 2, 30_000_000_000), ("a", 1, 5)], tenant=tenant,
                                  start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30))
    first = rows[0]
    assert first == {"user_id": "b", "runs": 2, "cost_usd": Decimal("3.0000000000"), "last_active_day": None}
    assert rows[0:1][0] is first and rows[-1]["cost_usd"] == Decimal("0.0000000005")
    assert [row["user_id"] for row in rows] == ["b", "a"] and len(rows) == 2
    with pytest.raises(IndexError):
        rows[2]


def _reads(queries) -> list[str]:
    # Not the savepoints and SET LOCAL around a PostgreSQL read that must not start parallel workers.
    return [query["sql"] for query in queries.captured_queries
            if query["sql"].lstrip().upper().startswith(("SELECT", "WITH"))]


@pytest.mark.postgres
def test_postgres_end_user_sums_are_read_without_parallel_workers(tenant):
    # Two workers cost more to start than they save on a few thousand rollup rows (1M bench: 37 → 25 ms).
    _ingest(tenant, builders.response(created_at=_at(11, 3)), user="someone")
    for read in (lambda: selectors.end_user_usage_text(tenant=tenant, start=dt.date(2026, 10, 20), end=dt.date(2026, 11, 10)),
                 lambda: selectors.cost_by_end_user(tenant=tenant, start=dt.date(2026, 10, 20), end=dt.date(2026, 11, 9))):
        with CaptureQueriesContext(connection) as queries:
            read()
        statements = [query["sql"] for query in queries.captured_queries]
        setting = next(i for i, sql in enumerate(statements) if "max_parallel_workers_per_gather = 0" in sql)
        summing = next(i for i, sql in enumerate(statements) if "ledger_bigint_sum(" in sql)
        assert setting < summing


@pytest.mark.postgres
def test_end_user_sums_fall_back_to_sum_when_the_aggregate_is_missing(tenant, spread):
    """Code deployed before `migrate` (or a database built without migrations) still answers, with SUM."""
    start, end = dt.date(2026, 10, 20), dt.date(2026, 11, 10)
    expected = raw_usage_by_user(tenant, start, end)
    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute("DROP AGGREGATE ledger_bigint_sum(bigint)")
    lines = selectors.usage_lines(tenant=tenant, start=start, end=end, group_by="user")
    assert [line["key"] for line in lines] == [line["key"] for line in expected]
    rows, _ = selectors.end_user_usage_text(tenant=tenant, start=start, end=end)
    assert [row[0] for row in rows] == [line["key"] for line in expected]


def test_an_end_user_past_what_a_bigint_sum_holds_over_two_months_still_reads_exactly(tenant):
    """ledger_bigint_sum raises past bigint (PostgreSQL); the read is made again with SUM. Each month stays
    under the ~922 million USD an end user's month holds, the two together do not."""
    from apps.pricing.models import ModelPrice

    ModelPrice.objects.create(model="gpt-huge", effective_from=dt.date(2026, 1, 1), input_usd_per_1m=Decimal("1"),
                              output_usd_per_1m=Decimal("1000"))
    for when in (_at(10, 31), _at(11, 1)):  # half a billion USD each, one in each month
        _ingest(tenant, builders.response(created_at=when, model="gpt-huge", input_tokens=1, output_tokens=5 * 10**11),
                user="u_big")
    _ingest(tenant, builders.response(created_at=_at(11, 2), input_tokens=100), user="u_small")
    start, end = dt.date(2026, 10, 20), dt.date(2026, 11, 10)  # ragged in both months

    _assert_readers_match_runs(tenant, start, end)
    [big, small] = selectors.usage_lines(tenant=tenant, start=start, end=end, group_by="user")
    assert (big["key"], big["runs"], big["cost_total_usd"]) == ("u_big", 2, Decimal("1000000000.000002"))
    assert small["key"] == "u_small"
    if connection.vendor == "postgresql":
        with CaptureQueriesContext(connection) as queries:
            rows, totals = selectors.end_user_usage_text(tenant=tenant, start=start, end=end)
        summing = [query["sql"] for query in queries.captured_queries if "GROUP BY" in query["sql"]]
        assert ["ledger_bigint_sum(" in sql for sql in summing] == [True, False]  # overflowed, then SUM
        assert [(row[0], row[1], row[-1]) for row in rows] == [("u_big", 2, "1000000000.000002"),
                                                               ("u_small", 1, usd_string(small["cost_total_usd"]))]
        assert totals[0] == 3


@pytest.mark.parametrize("group_by", ["day", "model", "feature"])
def test_usage_lines_add_money_exactly_on_every_database(tenant, group_by):
    """SQLite's SUM adds decimals as floating point, which lost the 10th decimal of large sums."""
    values = [Decimal("12345.6789012345"), Decimal("0.0000000001"), Decimal("98765.4321098765")]
    for day, value in enumerate(values, start=1):
        DailyRollup.objects.create(tenant=tenant, day=dt.date(2026, 1, day), model="gpt-5.4", feature="chat", runs=1,
                                   cost_input_usd=value, cost_total_usd=value)
    lines = selectors.usage_lines(tenant=tenant, start=dt.date(2026, 1, 1), end=dt.date(2026, 2, 1), group_by=group_by)
    assert sum(line["cost_total_usd"] for line in lines) == sum(values) == Decimal("111111.1110111111")
    assert sum(line["runs"] for line in lines) == 3


def _rollup_row(tenant, day: dt.date, model: str, feature: str, runs: int = 1) -> None:
    DailyRollup.objects.create(tenant=tenant, day=day, model=model, feature=feature, runs=runs)


@pytest.fixture
def models_over_time(tenant, other_tenant):
    """Pairs seen in and out of a period, by one tenant or the other, and a pair whose runs all moved away."""
    _rollup_row(tenant, dt.date(2026, 11, 3), "gpt-5.4", "chat")
    _rollup_row(tenant, dt.date(2026, 11, 3), "gpt-5.4", "")  # no feature: a model, no feature choice
    _rollup_row(tenant, dt.date(2026, 8, 1), "gpt-4o", "legacy")  # only before the period
    _rollup_row(tenant, dt.date(2026, 11, 30), "gpt-5.4-mini", "search")  # only after it
    _rollup_row(tenant, dt.date(2026, 11, 10), "gpt-4.1", "trial", runs=0)  # moved to another model
    _rollup_row(other_tenant, dt.date(2026, 11, 5), "gpt-5.4-nano", "globex-only")
    _rollup_row(other_tenant, dt.date(2026, 11, 29), "gpt-5.4-nano", "chat")  # the period's last day


@pytest.mark.parametrize("every_tenant", [True, False])
def test_models_and_features_are_those_with_runs_in_the_period_and_the_scope(tenant, other_tenant, models_over_time,
                                                                              every_tenant):
    from apps.tenants.scoping import TenantScope

    scope = TenantScope.every_tenant() if every_tenant else TenantScope.of([tenant])
    models, features = selectors.models_and_features(scope=scope, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 29))
    if every_tenant:
        assert (models, features) == (["gpt-5.4", "gpt-5.4-nano"], ["chat", "globex-only"])
    else:
        assert (models, features) == (["gpt-5.4"], ["chat"])
    assert selectors.models_and_features(scope=scope, start=dt.date(2026, 7, 1), end=dt.date(2026, 8, 31)) == (
        ["gpt-4o"], ["legacy"])
    assert selectors.models_and_features(scope=scope, start=dt.date(2026, 9, 1), end=dt.date(2026, 10, 31)) == ([], [])


@pytest.mark.postgres
def test_every_tenants_models_and_features_skip_through_the_pairs_instead_of_reading_the_periods_rows(tenant):
    """At 10M runs DISTINCT over 90 days of rollup rows read ~770,000 of them (~250 ms); the skip scan reads
    the (model, feature, day) index a few dozen probes at a time."""
    from apps.tenants.scoping import TenantScope

    for day in range(1, 29):
        for model, feature in (("gpt-5.4", "chat"), ("gpt-5.4-mini", "search"), ("gpt-5.4", "")):
            _rollup_row(tenant, dt.date(2026, 11, day), model, feature)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ledger_dailyrollup")
    with CaptureQueriesContext(connection) as queries:
        models, features = selectors.models_and_features(scope=TenantScope.every_tenant(), start=dt.date(2026, 11, 1),
                                                         end=dt.date(2026, 11, 30))
    assert (models, features) == (["gpt-5.4", "gpt-5.4-mini"], ["chat", "search"])
    (statement,) = _reads(queries)
    assert statement.lstrip().startswith("WITH RECURSIVE")
    assert "rollup_model_feature_day" in plan_of(statement, switched_off=("seqscan",))
