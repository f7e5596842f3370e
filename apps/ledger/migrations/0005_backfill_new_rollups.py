"""Backfill the rollups added in 0004 from the runs already in the ledger: end-user rollups (daily and
monthly), prompt-size rollups and tool-usage rollups (billable tool use per tool price version). Self-contained (no app code),
so later changes to the services cannot change what this migration did.

PostgreSQL: set-based SQL, exact numeric. SQLite (development ledgers): the same sums streamed in Python
on Decimal, because SQLite's SUM over decimals is floating point."""

import datetime as dt
from decimal import Decimal

from django.db import migrations

EDGES = [0, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000]
USER_SUMS = ("runs", "unpriced_runs", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
             "cost_input_usd", "cost_cached_input_usd", "cost_output_usd", "cost_tools_usd", "cost_total_usd")


def _postgres(schema_editor):
    edges = ",".join(map(str, EDGES))
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO ledger_enduserdailyrollup (tenant_id, day, user_id, runs, unpriced_runs, input_tokens,
                cached_input_tokens, output_tokens, reasoning_tokens, cost_input_usd, cost_cached_input_usd,
                cost_output_usd, cost_tools_usd, cost_total_usd)
            SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, user_id, count(*), count(*) FILTER (WHERE NOT priced),
                   sum(input_tokens), sum(cached_input_tokens), sum(output_tokens), sum(reasoning_tokens),
                   sum(cost_input_usd), sum(cost_cached_input_usd), sum(cost_output_usd), sum(cost_tools_usd),
                   sum(cost_total_usd)
            FROM ledger_run GROUP BY 1, 2, 3""")
        cursor.execute("""
            INSERT INTO ledger_endusermonthlyrollup (tenant_id, month, user_id, runs, unpriced_runs, input_tokens,
                cached_input_tokens, output_tokens, reasoning_tokens, cost_input_usd, cost_cached_input_usd,
                cost_output_usd, cost_tools_usd, cost_total_usd)
            SELECT tenant_id, date_trunc('month', day)::date, user_id, sum(runs), sum(unpriced_runs), sum(input_tokens),
                   sum(cached_input_tokens), sum(output_tokens), sum(reasoning_tokens), sum(cost_input_usd),
                   sum(cost_cached_input_usd), sum(cost_output_usd), sum(cost_tools_usd), sum(cost_total_usd)
            FROM ledger_enduserdailyrollup GROUP BY 1, 2, 3""")
        cursor.execute(f"""
            INSERT INTO ledger_promptsizerollup (tenant_id, day, size_bin, runs, max_input_tokens)
            SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date,
                   greatest(width_bucket(input_tokens, ARRAY[{edges}]::bigint[]) - 1, 0), count(*), max(input_tokens)
            FROM ledger_run GROUP BY 1, 2, 3""")
        cursor.execute("""
            INSERT INTO ledger_toolusagerollup (tenant_id, day, tool_price_id, code_interpreter_sessions,
                                                billable_file_search_calls, web_search_calls)
            SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, tool_price_id, sum(code_interpreter_sessions),
                   sum(CASE WHEN api = 'responses' THEN file_search_calls ELSE 0 END), sum(web_search_calls)
            FROM ledger_run
            WHERE priced AND tool_price_id IS NOT NULL
              AND (code_interpreter_sessions > 0 OR web_search_calls > 0
                   OR (api = 'responses' AND file_search_calls > 0))
            GROUP BY 1, 2, 3""")


def _python(apps):
    Run = apps.get_model("ledger", "Run")
    users: dict[tuple, list] = {}
    months: dict[tuple, list] = {}
    prompts: dict[tuple, list] = {}
    tools: dict[tuple, list] = {}
    fields = ("tenant_id", "created_at", "user_id", "priced", "input_tokens", "cached_input_tokens", "output_tokens",
              "reasoning_tokens", "cost_input_usd", "cost_cached_input_usd", "cost_output_usd", "cost_tools_usd",
              "cost_total_usd", "api", "tool_price_id",
              "code_interpreter_sessions", "file_search_calls", "web_search_calls")
    for run in Run._default_manager.order_by().values(*fields).iterator(chunk_size=5000):
        day = run["created_at"].astimezone(dt.UTC).date()
        values = [1, 0 if run["priced"] else 1, run["input_tokens"], run["cached_input_tokens"], run["output_tokens"],
                  run["reasoning_tokens"], *[Decimal(run[n]) for n in USER_SUMS[6:]]]
        for bucket, key in ((users, (run["tenant_id"], day, run["user_id"])),
                            (months, (run["tenant_id"], day.replace(day=1), run["user_id"]))):
            current = bucket.setdefault(key, [0] * len(USER_SUMS))
            for index, value in enumerate(values):
                current[index] += value
        size_bin = max(0, sum(1 for edge in EDGES if edge <= run["input_tokens"]) - 1)
        prompt = prompts.setdefault((run["tenant_id"], day, size_bin), [0, 0])
        prompt[0] += 1
        prompt[1] = max(prompt[1], run["input_tokens"])
        billable = [run["code_interpreter_sessions"], run["file_search_calls"] if run["api"] == "responses" else 0,
                    run["web_search_calls"]]
        if run["priced"] and run["tool_price_id"] and any(billable):
            current = tools.setdefault((run["tenant_id"], day, run["tool_price_id"]), [0, 0, 0])
            for index, value in enumerate(billable):
                current[index] += value
    for model_name, bucket, date_field in (("EndUserDailyRollup", users, "day"),
                                           ("EndUserMonthlyRollup", months, "month")):
        model = apps.get_model("ledger", model_name)
        model._default_manager.bulk_create(
            [model(tenant_id=key[0], user_id=key[2], **{date_field: key[1]}, **dict(zip(USER_SUMS, values, strict=True)))
             for key, values in bucket.items()], batch_size=1000)
    PromptSizeRollup = apps.get_model("ledger", "PromptSizeRollup")
    PromptSizeRollup._default_manager.bulk_create(
        [PromptSizeRollup(tenant_id=key[0], day=key[1], size_bin=key[2], runs=runs, max_input_tokens=largest)
         for key, (runs, largest) in prompts.items()], batch_size=1000)
    ToolUsageRollup = apps.get_model("ledger", "ToolUsageRollup")
    ToolUsageRollup._default_manager.bulk_create(
        [ToolUsageRollup(tenant_id=key[0], day=key[1], tool_price_id=key[2], code_interpreter_sessions=values[0],
                         billable_file_search_calls=values[1], web_search_calls=values[2])
         for key, values in tools.items()], batch_size=1000)


def backfill(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        _postgres(schema_editor)
    else:
        _python(apps)


class Migration(migrations.Migration):

    dependencies = [
        ("ledger", "0004_enduser_promptsize_toolusage_rollups"),
        ("pricing", "0002_seed_price_book"),
    ]

    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
