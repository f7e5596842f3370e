"""bench storage: bytes per million runs of the run table (heap + TOAST + every index), from
pg_total_relation_size on the loaded ledger, plus the thread and every rollup table (size per 1M runs)."""

from __future__ import annotations

from django.db import connection

from apps.ledger.models import Run, Thread
from apps.ledger.services import ROLLUP_TABLES

from . import loader
from .common import BenchError, require_postgres

TARGET_MB_PER_MILLION = 600
ROLLUP_MODELS = tuple(table.model for table in ROLLUP_TABLES)
MEASURED_MODELS = (Run, Thread, *ROLLUP_MODELS)


def sizes() -> dict:
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {Run._meta.db_table}")
        result = {}
        for model in MEASURED_MODELS:
            table = model._meta.db_table
            cursor.execute("SELECT pg_total_relation_size(%s), pg_relation_size(%s), pg_indexes_size(%s)",
                           [table, table, table])
            total, heap, indexes = cursor.fetchone()
            cursor.execute(f"SELECT count(*) FROM {table}")
            result[table] = {"total": total, "heap": heap, "indexes": indexes, "rows": cursor.fetchone()[0]}
        cursor.execute("SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
                       "WHERE indrelid = %s::regclass ORDER BY 2 DESC", [Run._meta.db_table])
        result["run_indexes"] = cursor.fetchall()
    return result


def run(*, runs: int, tenants: int, days: int, reuse: bool, keep: bool, stream) -> list:
    require_postgres("storage")
    if not (reuse and loader.loaded_runs() == runs):
        stream.write(f"loading {runs:,} runs for the storage measurement...\n")
        loader.load(runs=runs, tenants=tenants, days=days, stream=stream)
    measured = sizes()
    run_table = measured[Run._meta.db_table]
    if not run_table["rows"]:
        raise BenchError("no runs loaded")
    per_million = run_table["total"] / run_table["rows"] * 1_000_000 / 1e6
    rows = [
        ("storage: run table + indexes per 1M runs", f"{per_million:,.0f} MB",
         f"{'ok' if per_million < TARGET_MB_PER_MILLION else 'OVER'} (< {TARGET_MB_PER_MILLION} MB); heap+TOAST "
         f"{(run_table['total'] - run_table['indexes']) / run_table['rows']:,.0f} B/run, indexes "
         f"{run_table['indexes'] / run_table['rows']:,.0f} B/run; {run_table['rows']:,} runs"),
        ("storage: run indexes", f"{len(measured['run_indexes'])}",
         ", ".join(f"{name} {size / run_table['rows']:.0f} B/run" for name, size in measured["run_indexes"])),
    ]
    for model in (Thread, *ROLLUP_MODELS):
        table = measured[model._meta.db_table]
        rows.append((f"storage: {model._meta.db_table}", f"{table['total'] / 1e6:,.0f} MB",
                     f"{table['total'] / run_table['rows']:,.0f} B/run ({table['total'] / run_table['rows']:,.0f} MB per 1M "
                     f"runs), {table['rows']:,} rows"))
    rollups = sum(measured[model._meta.db_table]["total"] for model in ROLLUP_MODELS)
    rows.append(("storage: all rollups per 1M runs", f"{rollups / run_table['rows'] * 1_000_000 / 1e6:,.0f} MB",
                 "daily, tenant-day, end-user daily, by part of a month and monthly, prompt-size, tool usage, day "
                 "totals; not part of the run-table target"))
    return rows
