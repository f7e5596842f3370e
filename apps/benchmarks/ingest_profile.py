"""bench ingest --profile: where an ingested run's time goes, in one process without HTTP — CPU seconds of
this Python process and of its PostgreSQL backend (read from /proc, so other load on the machine barely
moves them), in total and inside the write phase that holds the ingest lock. Batches write one at a time,
so the write phase's wall time per event bounds what any number of API workers can reach."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import orjson
from django.db import DatabaseError, connection, transaction

from apps.ledger import services

from .common import Progress, bench_tenants, ledger_truncate
from .generator import Traffic

_TICKS = os.sysconf("SC_CLK_TCK")


def _backend_cpu() -> float:
    """CPU seconds (user + system) of this connection's PostgreSQL backend."""
    pid = connection.connection.info.backend_pid
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115 - one short read
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _wal_position() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn()")
        return cursor.fetchone()[0]


def _checkpoint() -> bool:
    """A CHECKPOINT now, so that the next timed one falls after the measured run: the first change to a page
    after a checkpoint writes the whole page to the WAL, and one landing mid-run moved the figure by 10%.
    False when the role may not (PostgreSQL 15: superusers and pg_checkpoint)."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")
    except DatabaseError:
        return False
    return True


def _wal_bytes_since(position: str) -> int:
    """WAL written since `position`, by this process and anything else writing to the cluster meanwhile."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", [position])
        return int(cursor.fetchone()[0])


@dataclass
class Profile:
    events: int = 0
    wall: float = 0.0
    python_cpu: float = 0.0
    postgres_cpu: float = 0.0
    locked_wall: float = 0.0
    locked_python_cpu: float = 0.0
    locked_postgres_cpu: float = 0.0
    wal_bytes: int = 0
    checkpointed: bool = False

    def per_event(self, seconds: float) -> float:
        return seconds * 1e6 / self.events


def measure(*, runs: int, tenants: int, batch_size: int, stream, truncate_first: bool = True) -> Profile:
    """Ingest `runs` runs' reports (the bench's traffic) with ingest_events in this process, into an emptied
    ledger (or, with truncate_first=False, on top of what it holds: bench partitioning)."""
    slugs = [t.slug for t in bench_tenants(tenants)]
    if truncate_first:
        ledger_truncate()
    bodies = [orjson.dumps({"events": batch}) for batch in Traffic(runs=runs, tenant_slugs=slugs).batches(batch_size)]
    profile = Profile()
    write_phase, take_lock = services._ingest_once, services.bulk.advisory_xact_lock
    taken: list[tuple[float, float, float]] = []

    def timed_lock(*args, **kwargs):
        # The write phase starts once the lock is held (what ingest does before it runs in parallel)...
        held = take_lock(*args, **kwargs)
        taken.append((time.perf_counter(), time.process_time(), _backend_cpu()))
        return held

    def timed_write_phase(*args, **kwargs):
        taken.clear()
        try:
            return write_phase(*args, **kwargs)
        finally:
            # ... and ends when the transaction has committed and released it.
            if taken:
                wall, python, postgres = taken[0]
                profile.locked_wall += time.perf_counter() - wall
                profile.locked_python_cpu += time.process_time() - python
                profile.locked_postgres_cpu += _backend_cpu() - postgres

    connection.ensure_connection()
    progress = Progress("profile", sum(len(orjson.loads(body)["events"]) for body in bodies), stream)
    services._ingest_once = timed_write_phase  # measurement only; both restored below
    services.bulk.advisory_xact_lock = timed_lock
    try:
        profile.checkpointed = _checkpoint()
        wal_start = _wal_position()
        wall, python, postgres = time.perf_counter(), time.process_time(), _backend_cpu()
        for body in bodies:
            events = orjson.loads(body)["events"]
            services.ingest_events(events=events)
            profile.events += len(events)
            progress.add(len(events))
        profile.wall = time.perf_counter() - wall
        profile.python_cpu = time.process_time() - python
        profile.postgres_cpu = _backend_cpu() - postgres
        profile.wal_bytes = _wal_bytes_since(wal_start)
    finally:
        services._ingest_once, services.bulk.advisory_xact_lock = write_phase, take_lock
        progress.close()
    return profile


def report(profile: Profile) -> list[tuple[str, str, str]]:
    per = profile.per_event
    return [
        ("profile: run reports, one process, no HTTP", f"{profile.events:,}",
         f"{profile.events / profile.wall:,.0f}/s"),
        ("profile: CPU per report, in all (us)", f"{per(profile.python_cpu + profile.postgres_cpu):,.0f}",
         f"Python {per(profile.python_cpu):,.0f} + PostgreSQL {per(profile.postgres_cpu):,.0f}"),
        ("profile: write phase under the ingest lock (us)", f"{per(profile.locked_wall):,.0f}",
         f"Python {per(profile.locked_python_cpu):,.0f} + PostgreSQL {per(profile.locked_postgres_cpu):,.0f} CPU; "
         f"bounds serialized writes at {profile.events / profile.locked_wall:,.0f} reports/s"),
        # Unlike CPU time, which moves by a fifth between runs of the same code on a shared machine, this is
        # the same from run to run after a CHECKPOINT: the figure to compare two versions of the write path by.
        ("profile: WAL written per report (bytes)", f"{profile.wal_bytes / profile.events:,.0f}",
         "rows, index entries and row locks written; after a CHECKPOINT, the same from run to run"
         if profile.checkpointed else "no CHECKPOINT first (the role may not): varies with the server's own"),
    ]
