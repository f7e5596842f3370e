"""bench partitioning: would monthly range partitioning of the run table help (issue #9: "if it measurably
helps")? On the loaded ledger it builds a copy of the run table partitioned by month of `created_at` — the
same rows, columns and indexes, except that PostgreSQL requires the partition key in every unique index, so
the primary key becomes a unique index on (id, created_at) and the OpenAI id's uniqueness (openai_id,
created_at); the same foreign keys — and then measures, on the plain table and on the partitioned copy
swapped in under the run table's name:

- every page and endpoint of `bench pages` (the same requests through the full Django stack);
- writing new runs of the current month (INSERT … SELECT of staged rows, as ingest does; rolled back);
- ingest_events on top of the loaded ledger (the ingest bench's traffic, in this process, in one transaction
  rolled back);
- the size of each table with its indexes.

The swap is undone however the measurement ends, and by the next bench command if a crash left it."""

from __future__ import annotations

import contextlib
import datetime as dt
import time

from django.db import connection, transaction

from apps.core.timeutils import month_start, next_month
from apps.ledger.models import Run

from . import ingest_profile, pages, storage
from .common import BenchError, Progress, require_postgres

PARTITIONED = "bench_run_partitioned"
PLAIN_ASIDE = "bench_run_plain"  # the run table's name while the partitioned copy stands in for it
WRITE_ROWS = 100_000
INGEST_RUNS = 20_000
INGEST_TENANTS = 100
COPY_CHUNK = 1_000_000


def _exists(cursor, table: str) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
    return cursor.fetchone()[0]


def _swap(*, partitioned_in: bool) -> None:
    """Put the partitioned copy under the run table's name (or the plain table back) in one transaction."""
    run_table = Run._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        if partitioned_in:
            cursor.execute(f"ALTER TABLE {run_table} RENAME TO {PLAIN_ASIDE}")
            cursor.execute(f"ALTER TABLE {PARTITIONED} RENAME TO {run_table}")
        else:
            cursor.execute(f"ALTER TABLE {run_table} RENAME TO {PARTITIONED}")
            cursor.execute(f"ALTER TABLE {PLAIN_ASIDE} RENAME TO {run_table}")


@contextlib.contextmanager
def _partitioned_in_place():
    """The partitioned copy under the run table's name for the block; the plain table back however it ends."""
    _swap(partitioned_in=True)
    try:
        yield
    finally:
        _swap(partitioned_in=False)


def restore_if_swapped() -> bool:
    """A crash between the swaps leaves the plain run table aside and the partitioned copy in its place: put
    them back (every bench subcommand does this first). True if it did."""
    with connection.cursor() as cursor:
        if not _exists(cursor, PLAIN_ASIDE):
            return False
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [Run._meta.db_table])
        standing_in = cursor.fetchone()
    if standing_in != ("p",):
        raise BenchError(f"{PLAIN_ASIDE} exists but {Run._meta.db_table} is not the partitioned copy: look at both "
                         f"tables and rename {PLAIN_ASIDE} back to {Run._meta.db_table} by hand")
    _swap(partitioned_in=False)
    return True


def _months(cursor) -> list[dt.date]:
    cursor.execute(f"SELECT min(created_at), max(created_at) FROM {Run._meta.db_table}")
    first, last = cursor.fetchone()
    if first is None:
        raise BenchError("the ledger is empty: run without --reuse to load it")
    months, month = [], month_start(first.astimezone(dt.UTC).date())
    # Through the month after the later of the last run and today: the measured writes and ingest date their
    # runs up to now, and a ledger reused for weeks must still have a partition for them.
    newest = max(last.astimezone(dt.UTC).date(), dt.datetime.now(dt.UTC).date())
    while month <= next_month(month_start(newest)):
        months.append(month)
        month = next_month(month)
    return months


def _partitioned_index(definition: str, name: str) -> str:
    """The run table's index definition for the partitioned copy: its own name, and the partition key added
    to a unique index (PostgreSQL cannot enforce uniqueness across partitions otherwise)."""
    run_table = Run._meta.db_table
    target = f" INDEX {name} ON public.{run_table} "
    if target not in definition:
        raise BenchError(f"unexpected index definition, not copied to the partitioned table: {definition}")
    statement = definition.replace(target, f" INDEX bench_part_{name} ON {PARTITIONED} ")
    if statement.startswith("CREATE UNIQUE INDEX"):
        # The key's column list is the first parenthesis after USING <method>; add created_at at its end.
        opening = statement.index("(", statement.index(" USING "))
        depth, position = 0, opening
        for position in range(opening, len(statement)):
            depth += {"(": 1, ")": -1}.get(statement[position], 0)
            if depth == 0:
                break
        if "created_at" not in statement[opening:position].replace(",", " ").split():
            statement = f"{statement[:position]}, created_at{statement[position:]}"
    return statement


def build(*, stream) -> dict:
    """The partitioned copy of the loaded run table (rebuilt every time: the ledger may have changed)."""
    run_table = Run._meta.db_table
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {PARTITIONED}")
        months = _months(cursor)
        cursor.execute(f"CREATE TABLE {PARTITIONED} (LIKE {run_table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                       "INCLUDING IDENTITY) PARTITION BY RANGE (created_at)")
        for month in months:
            cursor.execute(f"CREATE TABLE {PARTITIONED}_{month:%Y_%m} PARTITION OF {PARTITIONED} "
                           f"FOR VALUES FROM ('{month.isoformat()}T00:00:00Z') TO ('{next_month(month).isoformat()}T00:00:00Z')")
        cursor.execute(f"SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0) FROM {run_table}")
        total, low, high = cursor.fetchone()
        progress = Progress("partitioned copy", total, stream)
        # In primary-key ranges (the loader writes ids in heap order): one pass over the table, with progress.
        for first in range(low, high + 1, COPY_CHUNK):
            cursor.execute(f"INSERT INTO {PARTITIONED} SELECT * FROM {run_table} WHERE id >= %s AND id < %s",
                           [first, first + COPY_CHUNK])
            progress.add(cursor.rowcount)
        progress.close()
        # Its own identity sequence: new runs continue after the copied ids, as they would in the run table.
        cursor.execute(f"SELECT setval(pg_get_serial_sequence('{PARTITIONED}', 'id'), greatest(%s, 1))", [high])
        cursor.execute("SET maintenance_work_mem = '512MB'")
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s "
                       "ORDER BY indexname", [run_table])
        indexes = cursor.fetchall()
        for name, definition in indexes:
            stream.write(f"  index {name}...\n")
            cursor.execute(_partitioned_index(definition, name))
        cursor.execute("SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass", [PARTITIONED])
        if not indexes or cursor.fetchone()[0] != len(indexes):
            raise BenchError(f"the partitioned copy did not get the run table's {len(indexes)} indexes")
        # The run table's foreign keys too (deferred: each inserted row queues its check), so that writes
        # compare like with like.
        cursor.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
                       "AND contype = 'f' ORDER BY conname", [run_table])
        for name, definition in cursor.fetchall():
            stream.write(f"  foreign key {name}...\n")
            cursor.execute(f"ALTER TABLE {PARTITIONED} ADD CONSTRAINT bench_part_{name[:40]} {definition}")
        cursor.execute("RESET maintenance_work_mem")
        stream.write("  VACUUM ANALYZE...\n")
        cursor.execute(f"VACUUM ANALYZE {PARTITIONED}")  # autovacuum may be off: statistics and visibility map
    return {"rows": total, "partitions": len(months), "seconds": time.perf_counter() - started}


def _size(cursor, table: str) -> int:
    """Table + TOAST + indexes; a partitioned table holds nothing itself, so sum its partitions."""
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [table])
    if cursor.fetchone() == ("p",):
        cursor.execute("SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree(%s::regclass)",
                       [table])
    else:
        cursor.execute("SELECT pg_total_relation_size(%s::regclass)", [table])
    return int(cursor.fetchone()[0])


def _write_seconds(cursor, table: str, stage: str) -> float:
    """Seconds to insert the staged rows into `table` (rolled back, like a write that never happened)."""
    cursor.execute("SAVEPOINT bench_write")
    started = time.perf_counter()
    cursor.execute(f"INSERT INTO {table} SELECT * FROM {stage}")
    seconds = time.perf_counter() - started
    cursor.execute("ROLLBACK TO SAVEPOINT bench_write")
    return seconds


def measure_writes(*, rows: int = WRITE_ROWS, repeat: int = 3) -> dict[str, float]:
    """Rows/s inserting runs of the current month into each table: copies of the newest runs (up to `rows`)
    with new ids, staged once in a temp table (ingest inserts its new runs from a staged table the same way).
    Best of `repeat`, alternating tables, all rolled back; the rows staged under "rows"."""
    run_table = Run._meta.db_table
    best = {"plain": float("inf"), "partitioned": float("inf")}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE bench_new_runs ON COMMIT DROP AS SELECT * FROM {run_table} "
                       "ORDER BY created_at DESC LIMIT %s", [rows])
        cursor.execute("UPDATE bench_new_runs SET id = id + 1000000000000, openai_id = openai_id || '-new'")
        staged = cursor.rowcount
        for _ in range(repeat):
            best["plain"] = min(best["plain"], _write_seconds(cursor, run_table, "bench_new_runs"))
            best["partitioned"] = min(best["partitioned"], _write_seconds(cursor, PARTITIONED, "bench_new_runs"))
        transaction.set_rollback(True)
    return {"rows": staged, **{name: staged / seconds for name, seconds in best.items()}}


def _vacuum_ledger() -> None:
    """Clear the dead rows a rolled-back measurement leaves (autovacuum may be off on a bench server): the
    next measurement would read past them (the overview read 2x slower), and sizes would count them."""
    with connection.cursor() as cursor:
        for table in (*(model._meta.db_table for model in storage.MEASURED_MODELS), PARTITIONED):
            cursor.execute(f"VACUUM {table}")


def measure_ingest(*, runs: int, tenants: int, stream) -> float:
    """Run reports/s of ingest_events in this process on top of the loaded ledger (the bench's traffic over
    INGEST_TENANTS of its tenants and the last 30 days). All batches in one transaction, rolled back so the
    ledger keeps its rows (sequences advance): no batch commits, so COMMIT and the deferred foreign-key checks
    are not counted, on either table."""
    with transaction.atomic():
        profile = ingest_profile.measure(runs=runs, tenants=min(tenants, INGEST_TENANTS), batch_size=1000,
                                         stream=stream, truncate_first=False)
        transaction.set_rollback(True)
    return profile.events / profile.wall


def _change(plain: float, partitioned: float) -> str:
    return f"{(partitioned / plain - 1) * 100:+.0f}%"


def run(*, runs: int, tenants: int, days: int, repeat: int, reuse: bool, keep: bool, stream) -> list:
    require_postgres("partitioning")
    pages.prepare(runs=runs, tenants=tenants, days=days, reuse=reuse, stream=stream)
    stream.write("building the run table's partitioned copy (monthly range partitions)...\n")
    built = build(stream=stream)
    stream.write(f"  {built['rows']:,} runs in {built['partitions']} partitions, {built['seconds']:,.0f} s\n")
    writes = measure_writes()
    _vacuum_ledger()
    # Ingest itself, twice on each table, alternating (the first pass warms what both read); each pass
    # starts from a VACUUMed ledger.
    ingest = {"plain": 0.0, "partitioned": 0.0}
    ingest_runs = min(INGEST_RUNS, runs)
    for _ in range(2):
        stream.write("ingest on the plain run table...\n")
        ingest["plain"] = max(ingest["plain"], measure_ingest(runs=ingest_runs, tenants=tenants, stream=stream))
        _vacuum_ledger()
        with _partitioned_in_place():
            stream.write("ingest on the partitioned copy...\n")
            ingest["partitioned"] = max(ingest["partitioned"], measure_ingest(runs=ingest_runs, tenants=tenants, stream=stream))
        _vacuum_ledger()
    with connection.cursor() as cursor:
        sizes = {"plain": _size(cursor, Run._meta.db_table), "partitioned": _size(cursor, PARTITIONED)}
    stream.write("pages and endpoints on the plain run table...\n")
    plain = pages.measure(repeat=repeat, stream=stream)
    with _partitioned_in_place():
        stream.write("pages and endpoints on the partitioned copy...\n")
        partitioned = pages.measure(repeat=repeat, stream=stream)
    if not keep:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {PARTITIONED}")
    size = pages.ledger_label(runs)
    rows = []
    for before, after in zip(plain, partitioned, strict=True):
        rows.append((f"[{size} runs] {before['label']}",
                     f"plain p50 {before['p50']:6.1f} / p95 {before['p95']:6.1f} ms",
                     f"partitioned p50 {after['p50']:6.1f} / p95 {after['p95']:6.1f} ms  "
                     f"({_change(before['p50'], after['p50'])} p50)"))
    rows.append((f"[{size} runs] new runs written (rows/s, {writes['rows']:,} rows)", f"plain {writes['plain']:,.0f}",
                 f"partitioned {writes['partitioned']:,.0f}  ({_change(writes['plain'], writes['partitioned'])})"))
    rows.append((f"[{size} runs] ingest_events on top, no COMMIT (run reports/s, {ingest_runs:,} runs)",
                 f"plain {ingest['plain']:,.0f}",
                 f"partitioned {ingest['partitioned']:,.0f}  ({_change(ingest['plain'], ingest['partitioned'])})"))
    rows.append((f"[{size} runs] run table + indexes", f"plain {sizes['plain'] / 1e6:,.0f} MB",
                 f"partitioned {sizes['partitioned'] / 1e6:,.0f} MB in {built['partitions']} monthly partitions"))
    return rows
