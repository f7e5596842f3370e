"""`manage.py bench`: each subcommand runs end to end at a tiny size and prints its figures; PostgreSQL-only
benches refuse SQLite with a message that says what to do. (The timed figures live in docs/benchmarks.md.)"""

import datetime as dt
import re
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.benchmarks.generator import Traffic, TrafficMix
from apps.benchmarks.sweeps import _window_stats


def bench(*args) -> str:
    out, err = StringIO(), StringIO()
    call_command("bench", *args, stdout=out, stderr=err)
    return out.getvalue()


def test_traffic_has_every_run_once_plus_duplicates_and_later_updates():
    traffic = Traffic(runs=3000, tenant_slugs=["a", "b", "c"], mix=TrafficMix(duplicate_share=0.1, update_share=0.2))
    events = [event for batch in traffic.batches(500) for event in batch]
    ids = [event["object"]["id"] for event in events]
    assert len(set(ids)) == 3000
    in_progress = {e["object"]["id"] for e in events if e["object"]["status"] == "in_progress"}
    assert 0.15 < len(in_progress) / 3000 < 0.25
    # Every run reported in progress is also reported in a terminal state (a re-send of the older state may
    # still arrive after it, as real retries do).
    terminal = {e["object"]["id"] for e in events if e["object"]["status"] != "in_progress"}
    assert in_progress <= terminal
    assert 0.05 < (len(events) - 3000 - len(in_progress)) / len(events) < 0.15
    # The four runs of a thread belong to one tenant (a thread never spans tenants).
    owners = {}
    for event in events:
        thread = event["object"].get("thread_id")
        if thread:
            assert owners.setdefault(thread, event["object"]["metadata"]["tenant"]) == event["object"]["metadata"]["tenant"]


def test_window_stats_counts_fixed_and_sliding_windows():
    times = [0.5, 9.0, 9.5, 10.1, 10.2, 25.0]  # windows of 10 s: [0,10) has 3, [10,20) has 2, [20,30) has 1
    stats = _window_stats(times, 10.0, limit=4)
    assert stats["max_fixed"] == 3
    assert stats["max_sliding"] == 5  # 0.5 .. 10.2 fall within 10 s: over the limit across the boundary
    assert stats["full_windows"] == 1
    assert stats["utilization"] == pytest.approx(2 / 4)


@pytest.mark.django_db
@pytest.mark.parametrize("what", ["ingest", "pages", "storage", "partitioning"])
def test_postgres_benches_refuse_sqlite_with_what_to_do(what, settings):
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
        pytest.skip("checks the SQLite refusal")
    with pytest.raises(CommandError, match="createdb -h 127.0.0.1 -U postgres rl_bench"):
        bench(what, "--runs", "10")


@pytest.mark.django_db
def test_refuses_a_database_not_named_for_benchmarks(settings, monkeypatch):
    import sys

    monkeypatch.setitem(settings.DATABASES["default"], "NAME", "/srv/runledger/production.sqlite3")
    monkeypatch.delitem(sys.modules, "pytest")
    with pytest.raises(CommandError, match="must contain 'bench'"):
        bench("storage")


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_bench_ingest_runs_api_import_and_copy_at_tiny_size():
    output = bench("ingest", "--runs", "300", "--tenants", "3", "--batch-size", "100", "--workers", "1",
                   "--clients", "2")
    assert "PostgreSQL" in output and "cores" in output
    assert "ingest API (HTTP, run reports/s)" in output and "x COPY" in output
    assert "import_runs (run reports/s)" in output
    assert "raw COPY, same rows, same indexes" in output


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_bench_pages_and_storage_at_tiny_size_pass_ledger_check():
    output = bench("pages", "--runs", "3000", "--tenants", "20", "--days", "10", "--repeat", "2")
    assert "overview /" in output and "usage by end user" in output and "p95" in output
    assert "usage by end user, 30 days to mid last month" in output  # the window that does not move with the date
    assert "pages/endpoints over target" in output
    # The high-cost pages are measured with rows in them, and a run's draws are independent: failed runs fall
    # on many days (with one linear draw for everything they all fell in one band of dates).
    from apps.ledger.models import Run

    runs = Run.objects.unscoped()
    assert 0 < runs.filter(is_high_cost=True).count() < 0.1 * runs.count()
    assert runs.filter(input_tokens__gt=41_000).exists()
    assert runs.filter(status="failed").dates("created_at", "day").count() > 5
    # The alerts pages read the alerts ingest would have raised: one per high-cost run, and the wasted ones.
    from apps.alerts.models import Alert

    assert "alerts /alerts/ (open)" in output
    assert Alert.unscoped_objects.filter(kind="high_cost_run").count() == runs.filter(is_high_cost=True).count()
    assert Alert.unscoped_objects.filter(kind="wasted_spend").exists()
    # Loaded runs cost what rating makes of them, the longest prompts (past gpt-6's long-context threshold) too.
    from apps.pricing.rating import Usage, rate_tokens
    from apps.pricing.selectors import price_book_current

    book = price_book_current()
    longest = list(runs.filter(priced=True).order_by("-input_tokens", "openai_id")[:200])
    for run in longest:
        usage = Usage(input_tokens=run.input_tokens, cached_input_tokens=run.cached_input_tokens,
                      output_tokens=run.output_tokens, reasoning_tokens=run.reasoning_tokens, api=run.api,
                      service_tier=run.service_tier)
        rated = [value.quantize(Decimal("1E-10")) for value in rate_tokens(usage, book.model_rate(run.model,
                                                                                              run.created_at))]
        assert [run.cost_input_usd, run.cost_cached_input_usd, run.cost_output_usd] == rated, run.openai_id
    assert any(run.model.startswith("gpt-6") and run.input_tokens > 272_000 for run in longest)
    # The end-user rollups are compacted as the nightly task leaves a live ledger's: every closed period for
    # good, the open month and part as this morning's pass left them, then the rows of users first seen today.
    from apps.ledger.compaction import periods_to_compact
    from apps.ledger.models import RollupCompaction

    today = dt.datetime.now(dt.UTC).date()
    assert periods_to_compact(today=today) == []  # nothing left for another pass today
    assert RollupCompaction.objects.filter(finished_at__isnull=False).count() > 5
    still_open = RollupCompaction.objects.filter(finished_at__isnull=True)
    assert still_open.exists() and {record.rewritten_at.date() for record in still_open} == {today}
    if today.day > 1:  # this month began before today: its rows in (tenant, user) order, today's first after
        with connection.cursor() as cursor:
            cursor.execute("""
                WITH first_today AS (
                    SELECT tenant_id, user_id FROM ledger_enduserdailyrollup WHERE day >= %(month)s
                    GROUP BY tenant_id, user_id HAVING min(day) = %(today)s)
                SELECT m.tenant_id, m.user_id, f.user_id IS NOT NULL
                FROM ledger_endusermonthlyrollup AS m LEFT JOIN first_today AS f USING (tenant_id, user_id)
                WHERE m.month = %(month)s ORDER BY m.ctid""", {"month": today.replace(day=1), "today": today})
            rows = cursor.fetchall()
        packed = [(tenant_id, user_id) for tenant_id, user_id, late in rows if not late]
        late = [(tenant_id, user_id) for tenant_id, user_id, late in rows if late]
        assert packed and [row[:2] for row in rows] == packed + late and packed == sorted(packed)
    output = bench("storage", "--runs", "3000", "--tenants", "20", "--reuse")
    assert "run table + indexes per 1M runs" in output


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_bench_partitioning_measures_both_tables_and_leaves_the_ledger_as_it_was():
    from django.db import connection

    from apps.benchmarks import partitioning
    from apps.ledger.services import ledger_check

    try:
        output = bench("partitioning", "--runs", "3000", "--tenants", "20", "--days", "40", "--repeat", "2")
    finally:  # a failure must not leave the copy (its foreign keys would block every later test's flush)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT to_regclass('{partitioning.PARTITIONED}') IS NOT NULL")
            left_behind = cursor.fetchone()[0]
        partitioning.restore_if_swapped()
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {partitioning.PARTITIONED}")
    assert not left_behind
    assert "runs /runs/ (all tenants, by cost)" in output and "partitioned p50" in output
    assert "new runs written (rows/s, 3,000 rows)" in output and "ingest_events on top" in output
    sizes = next(line for line in output.splitlines() if "run table + indexes" in line)
    assert re.search(r"plain [1-9][\d,]* MB", sizes) and re.search(r"partitioned [1-9][\d,]* MB", sizes), sizes
    # 40 days back from today, through next month: at least three months, so the copy was really partitioned.
    assert int(re.search(r"in (\d+) monthly partitions", sizes).group(1)) >= 3
    with connection.cursor() as cursor:
        # The plain run table is back under its name with the loaded runs only (the measured writes and ingest
        # were rolled back); the copy and the aside name are gone.
        cursor.execute("SELECT relkind FROM pg_class WHERE relname = 'ledger_run'")
        assert cursor.fetchone() == ("r",)
        cursor.execute("SELECT count(*) FROM ledger_run")
        assert cursor.fetchone() == (3000,)
        cursor.execute("SELECT to_regclass(%s)", [partitioning.PLAIN_ASIDE])
        assert cursor.fetchone() == (None,)
    assert ledger_check() == []  # rollups and thread totals untouched by the rolled-back ingest


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_every_bench_command_first_undoes_a_swap_left_by_a_crash():
    from django.db import connection

    from apps.benchmarks import partitioning

    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {partitioning.PARTITIONED} (LIKE ledger_run INCLUDING DEFAULTS) "
                       "PARTITION BY RANGE (created_at)")
    partitioning._swap(partitioned_in=True)  # as if `bench partitioning` had died with its copy in place
    try:
        out, err = StringIO(), StringIO()
        call_command("bench", "storage", "--runs", "200", "--tenants", "3", "--days", "5", stdout=out, stderr=err)
        assert "put the run table back" in err.getvalue()
        with connection.cursor() as cursor:
            # The real run table (with its openai_id constraint) got the loaded runs, not the copy.
            cursor.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = 'ledger_run'::regclass AND contype = 'u'")
            assert cursor.fetchone() == (1,)
            cursor.execute("SELECT count(*) FROM ledger_run")
            assert cursor.fetchone() == (200,)
    finally:
        partitioning.restore_if_swapped()
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {partitioning.PARTITIONED}")


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_bench_sweeps_at_tiny_size_stays_inside_any_sliding_window():
    # The documented 10 s window (limit 200, margin 0.1 s) with more requests than it allows (55 items × 4).
    # Shorter windows have margins of 10–30 ms, less than the first request's connection set-up here, so the
    # sandbox could count one request more in a window than the limiter granted.
    output = bench("sweeps", "--items", "55", "--threads", "600", "--rpm", "1200", "--window", "10")
    line = next(line for line in output.splitlines() if "most requests in any sliding window" in line)
    assert "ok" in line and "OVER" not in line
    assert "sweep worker peak RSS" in output
