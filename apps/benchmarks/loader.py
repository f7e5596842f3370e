"""Fast synthetic ledger for the page and storage benchmarks: runs, threads and rollups generated inside
PostgreSQL (INSERT ... SELECT generate_series, ~1M rows per statement), the run table's secondary indexes
dropped during the load and rebuilt after it, rollups and thread totals computed from the runs in SQL so they
agree by construction (and `ledger_check` on a sample of tenants proves it)."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

from django.db import connection
from django.utils import timezone

from apps.core.money import usd_as_units_sql
from apps.ledger.models import (
    END_USER_MONEY,
    MONTH_PART_FIRST_DAYS,
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
)
from apps.ledger.services import END_USER_SUMS, ROLLUP_TABLES
from apps.pricing.rating import LongContextRate
from apps.tenants.models import Tenant

from .common import Progress, bench_tenants, ledger_truncate, require_postgres

CHUNK = 1_000_000
RUNS_PER_THREAD = 8
# A tail of long prompts (retrieval-heavy agent runs): 2% of runs carry 8x the input tokens (up to ~320K), so
# the prompt-size histogram has a tail. With them and independent draws, ~5% of runs cost past the bench
# tenants' $0.10 high-cost threshold; the high-cost run pages list real rows (before session 20 no run
# reached $0.07 and those pages were measured empty).
LONG_PROMPT_SHARE = 0.02
# A product's features are each wired to a model, chosen per customer (plan, region): 97% of a tenant's runs of
# a feature use its model, the rest any model (fallbacks, trials). The daily rollup then holds a few rows per
# tenant and day, as real traffic makes, where independent draws made up to 36 (6 models x 6 features).
FEATURE_MODEL_SHARE = 0.97
LONG_PROMPT_FACTOR = 8
MODELS = ("gpt-5.4", "gpt-5-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-6.1-sol", "gpt-5-nano")
FEATURES = ("doc-qa", "chat", "summarize", "search", "agent", "")
END_USERS = 5000  # of the biggest tenant (the ingest bench's traffic: 5,000 per tenant)
# u(x, salt): a deterministic pseudo-random number in [0, 1) from an integer, so a reload gives the same ledger;
# PostgreSQL's own integer hash, seeded by the salt, so draws with different salts are independent. (Until
# session 20 it was a linear congruence with one multiplier: u(x, a) and u(x, b) were the same sequence shifted,
# and a run's model, tokens, status, cached share and day were all functions of one another — every failed run
# in the last 15 days, two models per 15 days, the costliest runs all in one band of dates.)
_U = "((hashint8extended(({x})::bigint, {salt}) & 2147483647)::float8 / 2147483648)"


def _u(x: str, salt: int) -> str:
    return _U.format(x=x, salt=salt)


def _user_draw(x: str, tenant_position: str) -> str:
    """The run's end user: a number below its tenant's user count, drawn independently of the tenant (when _u
    was a linear congruence, a draw from the run number correlated with the tenant's draw from the thread
    number, run / 4: the biggest tenant saw ~1,400 users a month instead of 5,000). Users scale with the
    tenant's traffic — the biggest has END_USERS, the smallest at least 20 — so every tenant's users make
    about the same number of runs a month."""
    users = f"greatest(20, round({END_USERS} * (sqrt(({tenant_position}) + 1) - sqrt({tenant_position}))))::bigint"
    hashed = f"hashint8extended(({x})::bigint, 9)"
    return f"mod(mod({hashed}, {users}) + {users}, {users})"  # mod keeps the sign: shift negatives


def loaded_runs() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {Run._meta.db_table}")
        return cursor.fetchone()[0]


def _price_rows() -> str:
    """VALUES (position, model, price id, input, cached input, output USD per 1M, long-context threshold and
    input and output multipliers) from today's price book; a version without long-context pricing gets a
    threshold no prompt passes and multipliers of 1."""
    from apps.pricing.pricebook import PriceBook

    book = PriceBook.load()
    today = dt.datetime.now(dt.UTC).date()
    rows = []
    for position, model in enumerate(MODELS):
        rate = book.model_rate(model, today)
        if rate is None:
            raise RuntimeError(f"no price for {model}: load the price book (python manage.py migrate)")
        long = rate.long_context or LongContextRate(above_input_tokens=2**62, input_multiplier=Decimal(1),
                                                    output_multiplier=Decimal(1))
        rows.append(f"({position}, '{model}', {rate.price_id}, {rate.input_usd_per_1m}::numeric, "
                    f"{rate.cached_input_usd_per_1m or rate.input_usd_per_1m}::numeric, {rate.output_usd_per_1m}::numeric, "
                    f"{long.above_input_tokens}::bigint, {long.input_multiplier}::numeric, "
                    f"{long.output_multiplier}::numeric)")
    return ", ".join(rows)


def load(*, runs: int, tenants: int, days: int, stream) -> dict:
    """Empty the ledger and load `runs` runs over `tenants` tenants and the last `days` days; returns timings."""
    require_postgres("pages")
    tenant_ids = [t.pk for t in bench_tenants(tenants)]
    ledger_truncate()
    run_table, thread_table, rollup_table = Run._meta.db_table, Thread._meta.db_table, DailyRollup._meta.db_table
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    threads = (runs + RUNS_PER_THREAD - 1) // RUNS_PER_THREAD
    timings: dict[str, float] = {}
    ids = "ARRAY[" + ",".join(map(str, tenant_ids)) + "]::bigint[]"
    # Tenant sizes are skewed (a few big customers, a long tail): index = floor(T * u^2).
    def tenant_position(th: str) -> str:  # 0 = the biggest tenant
        return f"floor({len(tenant_ids)} * power({_u(th, 1)}, 2))::int"

    def tenant_of_thread(th: str) -> str:
        return f"({ids})[1 + {tenant_position(th)}]"

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
            "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)", [run_table, run_table])
        secondary = cursor.fetchall()
        for name, _ in secondary:
            cursor.execute(f'DROP INDEX "{name}"')
        try:
            started = time.perf_counter()
            cursor.execute(f"""
                INSERT INTO {thread_table} (id, tenant_id, openai_id, kind, openai_project, created_at, last_activity_at,
                                            run_count, cost_usd, metadata, status, deletion_reason, recorded_at)
                SELECT th + 1, {tenant_of_thread('th')}, 'thread_load' || lpad(th::text, 10, '0'),
                       CASE WHEN th %% 2 = 0 THEN 'thread' ELSE 'conversation' END, 'proj_default',
                       %s::timestamptz - make_interval(secs => {_u('th', 2)} * {days} * 86400), %s, 0, 0, '{{}}'::jsonb,
                       'active', '', %s
                FROM generate_series(0, {threads - 1}) AS th""", [now, now, now])
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{thread_table}', 'id'), {threads + 1})")
            timings["threads"] = time.perf_counter() - started
            progress = Progress("runs", runs, stream)
            started = time.perf_counter()
            prices = _price_rows()
            for low in range(0, runs, CHUNK):
                high = min(runs, low + CHUNK) - 1
                cursor.execute(f"""
                    WITH p(position, model, price_id, rate_in, rate_cached, rate_out, long_above, long_in, long_out)
                         AS (VALUES {prices}),
                    base AS (
                        SELECT i, i / {RUNS_PER_THREAD} AS th,
                               CASE WHEN {_u('i', 3)} < {FEATURE_MODEL_SHARE}
                                    THEN mod(i %% {len(FEATURES)} + {tenant_position(f'i / {RUNS_PER_THREAD}')},
                                             {len(MODELS)})
                                    ELSE floor({_u('i', 10)} * {len(MODELS)})::int END AS model_position,
                               (200 + floor({_u('i', 4)} * 40000)::bigint)
                                   * CASE WHEN {_u('i', 9)} < {LONG_PROMPT_SHARE}
                                          THEN {LONG_PROMPT_FACTOR} ELSE 1 END
                                   AS input_tokens,
                               20 + floor({_u('i', 5)} * 3000)::bigint AS output_tokens,
                               {_u('i', 6)} AS status_draw,
                               %s::timestamptz - make_interval(secs => {_u('i', 7)} * {days} * 86400) AS created_at
                        FROM generate_series({low}, {high}) AS i
                    ),
                    t AS (
                        SELECT b.*, (b.input_tokens * {_u('i', 8)} * 0.5)::bigint AS cached_tokens,
                               CASE WHEN b.status_draw < 0.03 THEN 'failed' WHEN b.status_draw < 0.05 THEN 'cancelled'
                                    WHEN b.status_draw < 0.06 THEN 'incomplete' ELSE 'completed' END AS status,
                               p.model, p.price_id,
                               -- A prompt past the version's long-context threshold bills at its multiples.
                               p.rate_in * CASE WHEN b.input_tokens > p.long_above THEN p.long_in ELSE 1 END AS rate_in,
                               p.rate_cached * CASE WHEN b.input_tokens > p.long_above THEN p.long_in ELSE 1 END
                                   AS rate_cached,
                               p.rate_out * CASE WHEN b.input_tokens > p.long_above THEN p.long_out ELSE 1 END
                                   AS rate_out
                        FROM base b JOIN p ON p.position = b.model_position
                    ),
                    c AS (
                        SELECT t.*,
                               round((input_tokens - cached_tokens) * rate_in / 1000000, 10) AS cost_input,
                               round(cached_tokens * rate_cached / 1000000, 10) AS cost_cached,
                               round(output_tokens * rate_out / 1000000, 10) AS cost_output
                        FROM t
                    )
                    INSERT INTO {run_table} (
                        tenant_id, openai_id, api, openai_project, thread_id, thread_openai_id, assistant_id, prompt_id,
                        model, service_tier, status, status_rank, created_at, started_at, completed_at, failed_at,
                        cancelled_at, expires_at, error_code, incomplete_reason, input_tokens, cached_input_tokens,
                        cache_write_tokens, output_tokens, reasoning_tokens, code_interpreter_sessions, file_search_calls,
                        web_search_calls, function_calls, user_id, session_id, feature, metadata, cost_input_usd,
                        cost_cached_input_usd, cost_output_usd, cost_tools_usd, cost_total_usd, priced, model_price_id,
                        tool_price_id, is_high_cost, recorded_at, updated_at)
                    SELECT {tenant_of_thread('c.th')},
                           CASE WHEN c.th %% 2 = 0 THEN 'run_load' ELSE 'resp_load' END || lpad(c.i::text, 10, '0'),
                           CASE WHEN c.th %% 2 = 0 THEN 'assistants' ELSE 'responses' END, 'proj_default', c.th + 1,
                           'thread_load' || lpad(c.th::text, 10, '0'),
                           CASE WHEN c.th %% 2 = 0 THEN 'asst_load' ELSE '' END, '', c.model, 'default', c.status, 4,
                           c.created_at, c.created_at + interval '1 second',
                           CASE WHEN c.status = 'completed' THEN c.created_at + interval '8 seconds' END,
                           CASE WHEN c.status = 'failed' THEN c.created_at + interval '8 seconds' END,
                           CASE WHEN c.status = 'cancelled' THEN c.created_at + interval '8 seconds' END, NULL,
                           CASE WHEN c.status = 'failed' THEN 'server_error' ELSE '' END,
                           CASE WHEN c.status = 'incomplete' THEN 'max_output_tokens' ELSE '' END,
                           c.input_tokens, c.cached_tokens, 0, c.output_tokens, c.output_tokens / 10,
                           0, 0, 0, (c.i %% 3), 'u_' || {_user_draw('c.i', tenant_position('c.th'))},
                           's_' || (c.i / 4), (ARRAY{list(FEATURES)!r})[1 + c.i %% {len(FEATURES)}],
                       -- The metadata ingest keeps (what the app put on the run), so rows are as wide as real ones.
                       jsonb_build_object('user_id', 'u_' || {_user_draw('c.i', tenant_position('c.th'))}, 'session_id',
                                          's_' || (c.i / 4), 'feature',
                                          (ARRAY{list(FEATURES)!r})[1 + c.i %% {len(FEATURES)}]),
                           c.cost_input, c.cost_cached, c.cost_output, 0, c.cost_input + c.cost_cached + c.cost_output,
                           true, c.price_id, NULL, c.cost_input + c.cost_cached + c.cost_output > 0.10, %s, %s
                    FROM c""", [now, now, now])
                progress.add(high - low + 1)
            progress.close()
            timings["runs"] = time.perf_counter() - started
        finally:
            # Never leave the ledger without its indexes, even when the load is interrupted.
            started = time.perf_counter()
            for name, definition in secondary:
                stream.write(f"  index {name}...\n")
                cursor.execute(definition.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1))
        timings["indexes"] = time.perf_counter() - started
        started = time.perf_counter()
        stream.write("  rollups and thread totals...\n")
        cursor.execute(f"""
            INSERT INTO {rollup_table} (tenant_id, day, openai_project, model, feature, runs, unpriced_runs,
                high_cost_runs, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
                code_interpreter_sessions, file_search_calls, web_search_calls, cost_input_usd, cost_cached_input_usd,
                cost_output_usd, cost_tools_usd, cost_total_usd, wasted_cost_usd)
            SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, openai_project, model, feature, count(*),
                   count(*) FILTER (WHERE NOT priced), count(*) FILTER (WHERE is_high_cost), sum(input_tokens),
                   sum(cached_input_tokens), sum(cache_write_tokens), sum(output_tokens), sum(reasoning_tokens),
                   sum(code_interpreter_sessions), sum(file_search_calls), sum(web_search_calls), sum(cost_input_usd),
                   sum(cost_cached_input_usd), sum(cost_output_usd), sum(cost_tools_usd), sum(cost_total_usd),
                   coalesce(sum(cost_total_usd) FILTER (WHERE status IN ('cancelled', 'failed', 'expired')), 0)
            FROM {run_table} GROUP BY 1, 2, 3, 4, 5""")
        _other_rollups(cursor)
        storage_meters_load(cursor)
        cursor.execute(f"""
            UPDATE {thread_table} AS t SET run_count = s.runs, cost_usd = s.cost, last_activity_at = s.last
            FROM (SELECT thread_id, count(*) AS runs, sum(cost_total_usd) AS cost, max(created_at) AS last
                  FROM {run_table} GROUP BY thread_id) AS s
            WHERE t.id = s.thread_id""")
        timings["rollups"] = time.perf_counter() - started
        started = time.perf_counter()
        stream.write("  alerts ingest would have raised...\n")
        _alerts_load(cursor, run_table)
        timings["alerts"] = time.perf_counter() - started
        started = time.perf_counter()
        compact_periods(cursor, stream)
        timings["compaction"] = time.perf_counter() - started
        # VACUUM, as autovacuum does a table that takes inserts (PostgreSQL 13+): it marks the runs' pages visible
        # to all, so the high-cost indexes answer the runs pages without visiting the table. Without it the first
        # `bench pages` after a load read the runs pages at 112-158 ms p50 at 10M runs, and after `bench storage`
        # (which vacuums) 36-38 ms: the figures depended on the order the benches ran in.
        cursor.execute(f"VACUUM ANALYZE {run_table}")
        # The 1,000 tenants were made in one statement just now: without statistics the planner took the table
        # for ~100 rows and joined the runs page's costliest runs tenant by tenant (82 ms for "failed" at 10M
        # runs, 26 once analyzed). Autovacuum would have analyzed it on a live ledger.
        cursor.execute(f"ANALYZE {Tenant._meta.db_table}")
        # VACUUM, not only ANALYZE: the thread-totals UPDATE above left a dead version of every thread row, which
        # autovacuum would clear on a live ledger; without it the tenant page's thread count visits the heap
        # (~200 ms for the biggest tenant at 10M runs instead of ~3 ms index-only).
        cursor.execute(f"VACUUM ANALYZE {thread_table}")
        for table in ROLLUP_TABLES:
            cursor.execute(f"ANALYZE {table.model._meta.db_table}")
    return timings


def _alerts_load(cursor, run_table: str) -> None:
    """The alerts ingest raises for these runs (apps/alerts/services.alerts_for_run_changes): one per high-cost
    run and one per run that failed or was cancelled after spending WASTED_SPEND_ALERT_MIN_USD or more, raised
    when the run was. The pages that list alerts (the overview's, the alerts page) read a realistic table."""
    from django.conf import settings

    from apps.alerts.models import Alert

    cursor.execute(f"""
        INSERT INTO {Alert._meta.db_table} (tenant_id, kind, severity, cause_key, title, message, data, created_at,
                                            opened_at, delivery_attempts)
        SELECT tenant_id, 'high_cost_run', 'warning', 'high_cost_run:' || openai_id,
               'High-cost run ' || openai_id || ': $' || round(cost_total_usd, 2), '',
               jsonb_build_object('run', openai_id, 'cost_usd', cost_total_usd::text, 'model', model), created_at,
               created_at, 0
        FROM {run_table} WHERE is_high_cost
        UNION ALL
        SELECT tenant_id, 'wasted_spend', 'info', 'wasted_spend:' || openai_id,
               'Run ' || openai_id || ' ' || status || ' after spending $' || round(cost_total_usd, 2), '',
               jsonb_build_object('run', openai_id, 'status', status, 'cost_usd', cost_total_usd::text), created_at,
               created_at, 0
        FROM {run_table} WHERE status IN ('cancelled', 'failed', 'expired') AND cost_total_usd > 0
                               AND cost_total_usd >= %s""", [settings.WASTED_SPEND_ALERT_MIN_USD])
    cursor.execute(f"VACUUM ANALYZE {Alert._meta.db_table}")


def storage_meters_load(cursor) -> None:
    """A vector-storage meter row for every tenant-day with runs, as the nightly meter would have written:
    the dashboard's spend, tenants list and budgets add storage to the runs' cost. 0.1 to 5 GiB a tenant,
    at $0.10 per GiB-day (the free GB left out: it changes the amounts, not the work)."""
    from apps.lifecycle.models import StorageDailyTotal, StorageMeter

    gib = 1024**3
    cursor.execute(f"""
        INSERT INTO {StorageMeter._meta.db_table} (tenant_id, day, usage_bytes, store_count, gb_days, free_gb_share,
                                                   cost_usd, saved_usd, price_version, rule, metered_at)
        SELECT tenant_id, day, bytes, 1 + tenant_id % 5, round(bytes::numeric / {gib}, 10), 0,
               round(bytes::numeric / {gib} * 0.10, 10), 0, 'bench', '', now()
        FROM (SELECT tenant_id, day, ((tenant_id * 7919) % 50 + 1)::bigint * {gib // 10} AS bytes
              FROM {TenantDailyRollup._meta.db_table}) AS tenant_days
        ORDER BY day, tenant_id""")
    cursor.execute(f"""
        INSERT INTO {StorageDailyTotal._meta.db_table} (day, cost_usd)
        SELECT day, sum(cost_usd) FROM {StorageMeter._meta.db_table} WHERE tenant_id IS NOT NULL
        GROUP BY day ORDER BY day""")
    # VACUUM too, as autovacuum does to a table that only takes inserts: the pages sum the meters from their
    # (day, tenant) index alone once the rows are marked visible to all.
    cursor.execute(f"VACUUM ANALYZE {StorageMeter._meta.db_table}")


# The order ingest adds a period's end-user rows in: as each user's first run of the period arrives, every
# tenant's interleaved. A hash of the key stands for it. In a GROUP BY's order instead (tenant by tenant), a
# tenant's rows of a day sat on 50 pages where a live ledger spreads them over ~2,000.
_ARRIVAL = "md5(tenant_id::text || user_id)"


def compact_periods(cursor, stream) -> None:
    """What the nightly compaction (apps/ledger/compaction.py) has left a live ledger as by this morning: its
    closed periods compacted, its open months and month parts rewritten at 05:00. The rows ingest has added to
    those since (users whose first run of the period came today) then go after them in arrival order, and
    VACUUM FULL stands for the pages a night's moves leave free, which the next days' rows fill (one pass over
    a whole history here would otherwise double the tables)."""
    from apps.ledger.compaction import COMPACTED_TABLES, rollups_compact

    progress = Progress("compacting end-user rollups as last night's pass left them", sum(
        period.rows for period in rollups_compact(dry_run=True).periods), stream)
    while not rollups_compact(progress=lambda table, period, rows: progress.add(rows)).complete:
        pass
    progress.close()
    today = timezone.now().date()
    daily = EndUserDailyRollup._meta.db_table
    for table in COMPACTED_TABLES:
        period = table.period_of(today)
        if table.rewritten_while_open and period < today:
            columns = ", ".join(table.columns)
            returned = ", ".join(f"t.{column}" for column in table.columns)
            cursor.execute(f"""
                WITH first_today AS (
                    SELECT tenant_id, user_id FROM {daily} WHERE day >= %(period)s AND day <= %(today)s
                    GROUP BY tenant_id, user_id HAVING min(day) = %(today)s
                ), moved AS (
                    DELETE FROM {table.name} AS t USING first_today AS f
                    WHERE t.{table.period_field} = %(period)s AND t.tenant_id = f.tenant_id AND t.user_id = f.user_id
                    RETURNING {returned}
                )
                INSERT INTO {table.name} ({columns}) SELECT {columns} FROM moved ORDER BY {_ARRIVAL}""",
                {"period": period, "today": today})
            stream.write(f"  {table.name} {period}: {cursor.rowcount:,} rows first reported today put after the "
                         f"compacted ones\n")
    for table in COMPACTED_TABLES:
        cursor.execute(f"VACUUM FULL ANALYZE {table.name}")


def _other_rollups(cursor) -> None:
    """The rollups beside DailyRollup, computed from the runs (or from it) as ingest would have added them:
    tenant-days, end-user rollups by day and by month, prompt-size rollups (bins = PROMPT_TOKEN_EDGES),
    billable tool use per tool price version (none in the generated ledger today, but computed the same way
    as everything else)."""
    run_table = Run._meta.db_table
    # Day by day, as a live ledger writes them (a tenant's row appears with its first run of the day, the
    # storage meter meters one day at a time): in the order a GROUP BY happened to give, a 30-day read of every
    # tenant touched a third of the table's pages instead of the month's (overview: 1,352 pages for 30,000 rows).
    cursor.execute(f"""
        INSERT INTO {TenantDailyRollup._meta.db_table} (tenant_id, day, runs, unpriced_runs, cost_total_usd)
        SELECT tenant_id, day, sum(runs), sum(unpriced_runs), sum(cost_total_usd)
        FROM {DailyRollup._meta.db_table} GROUP BY 1, 2 ORDER BY day, tenant_id""")
    cursor.execute(f"""
        INSERT INTO {EveryTenantDailyRollup._meta.db_table} (day, runs, unpriced_runs, cost_total_usd)
        SELECT day, sum(runs), sum(unpriced_runs), sum(cost_total_usd)
        FROM {TenantDailyRollup._meta.db_table} GROUP BY day ORDER BY day""")
    sums = ", ".join(END_USER_SUMS)  # the end-user rollups' money is whole ledger units
    # Days from the month's first day to the first day of the day's part (MONTH_PART_FIRST_DAYS).
    part_offset = "CASE " + " ".join(f"WHEN extract(day FROM day) >= {first} THEN {first - 1}"
                                     for first in reversed(MONTH_PART_FIRST_DAYS[1:])) + " ELSE 0 END"
    cursor.execute(f"""
        INSERT INTO {ToolUsageRollup._meta.db_table} (tenant_id, day, tool_price_id, code_interpreter_sessions,
                                                      billable_file_search_calls, web_search_calls)
        SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, tool_price_id, sum(code_interpreter_sessions),
               sum(CASE WHEN api = 'responses' THEN file_search_calls ELSE 0 END), sum(web_search_calls)
        FROM {run_table}
        WHERE priced AND tool_price_id IS NOT NULL
          AND (code_interpreter_sessions > 0 OR web_search_calls > 0 OR (api = 'responses' AND file_search_calls > 0))
        GROUP BY 1, 2, 3""")
    cursor.execute(f"""
        INSERT INTO {EndUserDailyRollup._meta.db_table} (tenant_id, day, user_id, {sums})
        SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, user_id, count(*), count(*) FILTER (WHERE NOT priced),
               sum(input_tokens), sum(cached_input_tokens), sum(output_tokens), sum(reasoning_tokens),
               {", ".join(usd_as_units_sql(f"sum({name})") for name in END_USER_MONEY)}
        FROM {run_table} GROUP BY 1, 2, 3 ORDER BY 2, {_ARRIVAL}""")
    cursor.execute(f"""
        INSERT INTO {EndUserMonthlyRollup._meta.db_table} (tenant_id, month, user_id, {sums})
        SELECT tenant_id, date_trunc('month', day)::date, user_id, {", ".join(f"sum({name})" for name in sums.split(", "))}
        FROM {EndUserDailyRollup._meta.db_table} GROUP BY 1, 2, 3 ORDER BY 2, {_ARRIVAL}""")
    cursor.execute(f"""
        INSERT INTO {EndUserMonthPartRollup._meta.db_table} (tenant_id, part, user_id, {sums})
        SELECT tenant_id, date_trunc('month', day)::date + {part_offset}, user_id, {", ".join(f"sum({name})" for name in sums.split(", "))}
        FROM {EndUserDailyRollup._meta.db_table} GROUP BY 1, 2, 3 ORDER BY 2, {_ARRIVAL}""")
    edges = ",".join(map(str, PROMPT_TOKEN_EDGES))
    cursor.execute(f"""
        INSERT INTO {PromptSizeRollup._meta.db_table} (tenant_id, day, size_bin, runs, max_input_tokens)
        SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date,
               greatest(width_bucket(input_tokens, ARRAY[{edges}]::bigint[]) - 1, 0), count(*), max(input_tokens)
        FROM {run_table} GROUP BY 1, 2, 3""")


def check_sample(*, tenants: int = 5) -> int:
    """ledger_check restricted to a few tenants (the biggest and some others; the day totals over every
    tenant against the tenant-days and meters they add up): differences found."""
    from apps.ledger.services import ledger_check

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tenant_id FROM {Run._meta.db_table} GROUP BY 1 ORDER BY count(*) DESC LIMIT 2")
        big = [row[0] for row in cursor.fetchall()]
        cursor.execute(f"SELECT DISTINCT tenant_id FROM {DailyRollup._meta.db_table} ORDER BY 1 DESC LIMIT %s",
                       [max(0, tenants - len(big))])
        others = [row[0] for row in cursor.fetchall()]
    return len(ledger_check(tenant_ids=sorted(set(big + others))))
