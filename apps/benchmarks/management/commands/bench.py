"""`manage.py bench ingest|pages|sweeps|storage|partitioning|all`: the performance figures of issue #9
(docs/benchmarks.md). `all` runs the first four; partitioning is an experiment, run on its own."""

from __future__ import annotations

import argparse
import datetime as dt
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from apps.benchmarks import common
from apps.benchmarks.common import BenchError

SUBCOMMANDS = ("ingest", "pages", "sweeps", "storage", "partitioning", "all")


class Command(BaseCommand):
    help = ("Measure RunLedger on this machine: ingest throughput vs COPY, page and API latency on a large ledger, "
            "sweep rate and memory, storage per million runs. Empties the ledger of the database it runs on: use a "
            "scratch PostgreSQL database (its name must contain 'bench').")

    def add_arguments(self, parser):
        parser.add_argument("what", choices=SUBCOMMANDS)
        parser.add_argument("--runs", type=int, default=None,
                            help="runs to ingest (ingest: 100,000) or to load (pages/storage: 1,000,000)")
        parser.add_argument("--tenants", type=int, default=None, help="tenants (ingest: 100; pages: 1,000)")
        parser.add_argument("--days", type=int, default=90, help="days of history the loaded runs span (pages)")
        parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for the API (ingest)")
        parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients (ingest)")
        parser.add_argument("--batch-size", type=int, default=1000, help="events per request / import batch")
        parser.add_argument("--skip-api", action="store_true", help="ingest: leave out the HTTP API")
        parser.add_argument("--skip-import", action="store_true", help="ingest: leave out import_runs")
        parser.add_argument("--profile", type=int, default=0, metavar="RUNS",
                            help="ingest: also ingest RUNS runs in this process and print the CPU per report "
                                 "(Python, PostgreSQL) in all and under the ingest lock")
        parser.add_argument("--repeat", type=int, default=20, help="requests per page/endpoint (pages)")
        parser.add_argument("--reuse", action="store_true",
                            help="pages/storage/partitioning: keep the loaded ledger if it already holds --runs runs")
        parser.add_argument("--threads", type=int, default=None, help="threads in the ledger for the sweep (sweeps: 1,000,000)")
        parser.add_argument("--items", type=int, default=None, help="items the rate-limited sweep deletes (sweeps: 250)")
        parser.add_argument("--rpm", type=int, default=None, help="OpenAI requests per minute allowed (sweeps: 1,200)")
        parser.add_argument("--window", type=float, default=10.0,
                            help="rate-limiter window in seconds for the sweep (default 10; production uses 60)")
        parser.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
        parser.add_argument("--child-tenant", help=argparse.SUPPRESS)
        parser.add_argument("--keep", action="store_true",
                            help="leave the loaded ledger in place at the end (partitioning: also its partitioned "
                                 "copy, which holds foreign keys to threads and tenants; drop it when done)")
        parser.add_argument("--allow-any-database", action="store_true",
                            help="run even if the database name does not contain 'bench' (it gets emptied)")

    def handle(self, *args, what, **options):
        if options["child_memory"]:
            from apps.benchmarks import sweeps

            sweeps.child_memory(tenant_slug=options["child_tenant"], max_items=options["items"], stdout=self.stdout)
            return
        try:
            common.require_scratch_database(options["allow_any_database"])
            if connection.vendor == "postgresql":
                from apps.benchmarks import partitioning

                # A crash in `bench partitioning` can leave its copy in the run table's place: every bench
                # would then measure (or load into) the copy.
                if partitioning.restore_if_swapped():
                    self.stderr.write("note: an earlier `bench partitioning` left its copy in place of the run "
                                      "table; put the run table back")
            if settings.DEBUG:
                # DEBUG logs every query and renders debug templates: not what production serves.
                settings.DEBUG = False
                self.stderr.write("note: DEBUG switched off for the measurement (set DJANGO_DEBUG=false to silence)")
            self.stdout.write(f"RunLedger bench {what} — {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
            self.stdout.write(common.machine_line())
            started = time.perf_counter()
            rows: list[tuple[str, str, str]] = []
            for name in (("ingest", "pages", "sweeps", "storage") if what == "all" else (what,)):
                rows += getattr(self, f"_bench_{name}")(**options)
            self.stdout.write("")
            self._table(rows)
            self.stdout.write(f"\n(total {time.perf_counter() - started:,.0f} s)")
        except BenchError as exc:
            raise CommandError(str(exc)) from None

    def _table(self, rows: list[tuple[str, str, str]]) -> None:
        width = max((len(r[0]) for r in rows), default=10)
        value_width = max((len(r[1]) for r in rows), default=5)
        for label, value, note in rows:
            self.stdout.write(f"{label:<{width}}  {value:>{value_width}}  {note}")

    def _bench_ingest(self, **options) -> list:
        from apps.benchmarks import ingest

        figures = ingest.run(
            runs=options["runs"] or 100_000, tenants=options["tenants"] or 100, workers=options["workers"],
            clients=options["clients"], batch_size=options["batch_size"], stream=self.stderr,
            skip_api=options["skip_api"], skip_import=options["skip_import"],
        )
        rows = ingest.report(figures, self.stderr)
        if options["profile"]:
            from apps.benchmarks import ingest_profile

            rows += ingest_profile.report(ingest_profile.measure(
                runs=options["profile"], tenants=options["tenants"] or 100, batch_size=options["batch_size"],
                stream=self.stderr))
        if not options["keep"]:
            common.ledger_truncate()
        return rows

    def _bench_pages(self, **options) -> list:
        from apps.benchmarks import pages

        return pages.run(runs=options["runs"] or 1_000_000, tenants=options["tenants"] or 1000, days=options["days"],
                         repeat=options["repeat"], reuse=options["reuse"], keep=options["keep"], stream=self.stderr)

    def _bench_storage(self, **options) -> list:
        from apps.benchmarks import storage

        return storage.run(runs=options["runs"] or 1_000_000, tenants=options["tenants"] or 1000, days=options["days"],
                           reuse=options["reuse"], keep=options["keep"], stream=self.stderr)

    def _bench_partitioning(self, **options) -> list:
        from apps.benchmarks import partitioning

        return partitioning.run(runs=options["runs"] or 1_000_000, tenants=options["tenants"] or 1000,
                                days=options["days"], repeat=options["repeat"], reuse=options["reuse"],
                                keep=options["keep"], stream=self.stderr)

    def _bench_sweeps(self, **options) -> list:
        from apps.benchmarks import sweeps

        return sweeps.run(threads=options["threads"] or 1_000_000, items=options["items"] or 250,
                          rpm=options["rpm"] or 1200, window=options["window"], keep=options["keep"], stream=self.stderr)
