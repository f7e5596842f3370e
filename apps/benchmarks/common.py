"""What every benchmark shares: the machine description, the PostgreSQL guard, bench tenants and progress."""

from __future__ import annotations

import os
import platform
import sys
import time

from django.conf import settings
from django.db import connection


class BenchError(Exception):
    """A benchmark cannot run here; the message says what to do."""


def machine() -> dict:
    info = {
        "cores": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "python": platform.python_version(),
        "db_engine": connection.vendor,
        "db_name": settings.DATABASES["default"].get("NAME"),
    }
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            info["postgresql"] = cursor.fetchone()[0]
            cursor.execute("SELECT inet_server_addr() IS NULL OR host(inet_server_addr()) IN ('127.0.0.1', '::1')")
            info["db_local"] = cursor.fetchone()[0]
    return info


def _ram_gb() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine_line() -> str:
    info = machine()
    database = f"PostgreSQL {info['postgresql']}" if "postgresql" in info else info["db_engine"]
    return (f"machine: {info['cores']} cores, {info['ram_gb']} GB RAM, Python {info['python']}, "
            f"{database} (database {info['db_name']})")


def child_env(**extra: str) -> dict:
    """Environment for a process the bench starts (gunicorn, the sweep worker): the same settings module
    and the same database this process is connected to (under pytest, the test database)."""
    from urllib.parse import quote

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.local")}
    db = settings.DATABASES["default"]
    if connection.vendor == "postgresql":
        auth = quote(db.get("USER") or "")
        if db.get("PASSWORD"):
            auth += ":" + quote(db["PASSWORD"])
        env["DATABASE_URL"] = (f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/"
                               f"{quote(str(db['NAME']))}")
    env.update(extra)
    return env


def require_postgres(what: str) -> None:
    if connection.vendor != "postgresql":
        raise BenchError(
            f"bench {what} measures PostgreSQL (COPY, pg_total_relation_size, concurrent writers) and this "
            f"database is {connection.vendor}. Run it against a scratch PostgreSQL database, e.g.\n"
            "  createdb -h 127.0.0.1 -U postgres rl_bench\n"
            "  DATABASE_URL=postgres://postgres@127.0.0.1:5432/rl_bench python manage.py migrate\n"
            "  DATABASE_URL=postgres://postgres@127.0.0.1:5432/rl_bench python manage.py bench " + what
        )


def require_scratch_database(allow_any: bool) -> None:
    """Benchmarks empty the ledger tables; refuse a database whose name does not say it is for that."""
    name = str(settings.DATABASES["default"].get("NAME") or "")
    if allow_any or "bench" in name or connection.vendor == "sqlite" and name.startswith(("file:", ":memory:")):
        return
    if "test" in os.path.basename(name) and "pytest" in sys.modules:
        return
    raise BenchError(
        f"bench empties and reloads the ledger tables; database '{name}' does not look like a scratch database "
        "(its name must contain 'bench'). Use DATABASE_URL=postgres://postgres@127.0.0.1:5432/rl_bench, or pass "
        "--allow-any-database if you really mean it."
    )


def bench_tenants(count: int, prefix: str = "bench-") -> list:
    """`count` tenants named bench-0000..., created in one statement when missing; ordered by slug."""
    from apps.tenants.models import Tenant

    slugs = [f"{prefix}{i:04d}" for i in range(count)]
    existing = set(Tenant.objects.filter(slug__in=slugs).values_list("slug", flat=True))
    Tenant.objects.bulk_create([Tenant(slug=s, name=f"Bench tenant {s[len(prefix):]}") for s in slugs
                                if s not in existing], batch_size=1000)
    return list(Tenant.objects.filter(slug__in=slugs).order_by("slug"))


def ledger_truncate() -> None:
    """Empty the ledger (runs, threads, rollups and what compaction recorded of them), the storage meters (and
    their day totals) beside it and the alerts ingest raised: each measurement starts clean."""
    from apps.alerts.models import Alert
    from apps.ledger.models import RollupCompaction, Run, Thread
    from apps.ledger.services import ROLLUP_TABLES
    from apps.lifecycle.models import StorageDailyTotal, StorageMeter

    tables = [Run._meta.db_table, Thread._meta.db_table, *(t.model._meta.db_table for t in ROLLUP_TABLES),
              RollupCompaction._meta.db_table, StorageMeter._meta.db_table, StorageDailyTotal._meta.db_table,
              Alert._meta.db_table]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")


class Progress:
    """One line on stderr, rewritten at most every half second: done / total, rate, elapsed."""

    def __init__(self, label: str, total: int, stream=None, unit: str = "rows"):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = time.perf_counter()
        self._last = 0.0

    def add(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if now - self._last >= 0.5 or self.done >= self.total:
            self._last = now
            elapsed = now - self.started
            rate = self.done / elapsed if elapsed else 0
            self.stream.write(f"\r  {self.label}: {self.done:,}/{self.total:,} {self.unit} "
                              f"({rate:,.0f}/s, {elapsed:,.1f}s)   ")
            self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
