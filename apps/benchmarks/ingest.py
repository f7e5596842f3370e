"""bench ingest: runs/s through the HTTP ingest API (a real gunicorn server, concurrent clients on loopback),
through import_runs, and raw COPY of the same rows into a scratch table of the ledger's shape (the ceiling)."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from .common import BenchError, Progress, bench_tenants, child_env, ledger_truncate, require_postgres
from .generator import Traffic

SCRATCH_TABLE = "bench_copy_run"


@dataclass
class IngestFigures:
    runs: int
    events: int
    duplicates: int
    updates: int
    api_seconds: float | None = None
    import_seconds: float | None = None
    copy_seconds: float | None = None
    copy_rows: int = 0
    workers: int = 0
    clients: int = 0
    outcomes: dict = field(default_factory=dict)

    def rate(self, seconds: float | None, count: int | None = None) -> float | None:
        return None if not seconds else (count if count is not None else self.events) / seconds

    @property
    def copy_rate(self) -> float | None:
        return self.rate(self.copy_seconds, self.copy_rows)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """gunicorn serving this project on a free loopback port; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, workers: int):
        self.workers = workers
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="rl-bench-gunicorn-", suffix=".log", delete=False)

    def log_tail(self, size: int = 4000) -> str:
        return Path(self.log.name).read_text(errors="replace")[-size:]

    def __enter__(self) -> Server:
        env = child_env(DJANGO_DEBUG="false", LOG_LEVEL="WARNING", API_KEY_RATE_LIMIT="1000000/min")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(self.workers), "--timeout", "300", "--log-level", "warning", "--access-logfile", "-"
             if os.environ.get("BENCH_ACCESS_LOG") else "/dev/null"],
            cwd=settings.BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=self.log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError("gunicorn exited at start: " + self.log_tail())
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status < 500:
                    # Every worker imports Django lazily; give them a moment to come up before timing.
                    time.sleep(1.0)
                    return self
            except OSError:
                time.sleep(0.2)
        self.__exit__()
        raise BenchError("gunicorn did not answer /healthz within 60 s")

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        if not exc or exc[0] is None:
            Path(self.log.name).unlink(missing_ok=True)


def _post_all(port: int, key: str, bodies: list[bytes], clients: int, progress: Progress, counts: list[int]) -> dict:
    """POST every body from `clients` threads (one keep-alive connection each); sums the answers' outcomes."""
    work: queue.Queue = queue.Queue()
    for index, body in enumerate(bodies):
        work.put((index, body))
    totals = {"created": 0, "updated": 0, "unchanged": 0, "rejected": 0}
    errors: list[str] = []
    rejections: list[dict] = []
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while True:
            try:
                index, body = work.get_nowait()
            except queue.Empty:
                break
            try:
                conn.request("POST", "/api/v1/ingest/", body=body,
                             headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                work.put((index, body))
                continue
            with lock:
                if response.status != 200:
                    errors.append(f"HTTP {response.status}: {data[:300]!r}")
                else:
                    answer = orjson.loads(data)  # the clients share the server's cores: parse cheaply
                    for name in totals:
                        totals[name] += answer[name]
                    if answer["rejected"] and len(rejections) < 5:
                        rejections.extend(r for r in answer["results"] if r["outcome"] == "rejected")
                progress.add(counts[index])
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"{len(errors)} ingest requests failed; first: {errors[0]}")
    totals["first_rejections"] = rejections[:5]
    return totals


def _copy_ceiling(stream) -> tuple[float, int]:
    """COPY the ledger's run rows (as ingest left them) into a scratch table with the same columns and
    indexes; returns (seconds, rows). The rows are read out first, so only the COPY is timed."""
    import psycopg

    connection.ensure_connection()
    raw = connection.connection
    with psycopg.Cursor(raw) as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
        cursor.execute(f"CREATE TABLE {SCRATCH_TABLE} (LIKE ledger_run INCLUDING ALL)")
        buffer = bytearray()
        with cursor.copy("COPY ledger_run TO STDOUT") as copy:
            for chunk in copy:
                buffer += chunk
        cursor.execute("SELECT count(*) FROM ledger_run")
        rows = cursor.fetchone()[0]
    raw.commit() if not raw.autocommit else None
    try:
        progress = Progress("COPY ceiling", rows, stream)
        started = time.perf_counter()
        with psycopg.Cursor(raw) as cursor, cursor.copy(f"COPY {SCRATCH_TABLE} FROM STDIN") as copy:
            view = memoryview(buffer)
            step = 1 << 20
            for offset in range(0, len(view), step):
                copy.write(view[offset:offset + step])
        if not raw.autocommit:
            raw.commit()
        seconds = time.perf_counter() - started
        progress.add(rows)
        progress.close()
    finally:
        with psycopg.Cursor(raw) as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
        if not raw.autocommit:
            raw.commit()
    return seconds, rows


def run(*, runs: int, tenants: int, workers: int, clients: int, batch_size: int, stream, skip_api: bool = False,
        skip_import: bool = False) -> IngestFigures:
    require_postgres("ingest")
    if skip_api and skip_import:
        raise BenchError("nothing to compare with COPY: drop --skip-api or --skip-import")
    from apps.tenants.services import api_key_create

    tenant_rows = bench_tenants(tenants)
    traffic = Traffic(runs=runs, tenant_slugs=[t.slug for t in tenant_rows])
    stream.write(f"generating {runs:,} runs over {tenants:,} tenants as raw OpenAI objects...\n")
    batches = list(traffic.batches(batch_size))
    events = sum(len(b) for b in batches)
    seen: set[str] = set()
    duplicates = updates = 0
    serialized_seen: set[str] = set()
    for batch in batches:
        for event in batch:
            obj = event["object"]
            text = json.dumps(event, sort_keys=True)
            if text in serialized_seen:
                duplicates += 1
            elif obj["id"] in seen:
                updates += 1
            serialized_seen.add(text)
            seen.add(obj["id"])
    del serialized_seen
    figures = IngestFigures(runs=runs, events=events, duplicates=duplicates, updates=updates, workers=workers,
                            clients=clients)
    stream.write(f"  {events:,} events in {len(batches):,} batches of {batch_size:,}: {duplicates:,} exact duplicates "
                 f"({duplicates / events:.0%}), {updates:,} later status updates ({updates / events:.0%})\n")

    if not skip_api:
        bodies = [json.dumps({"events": b}, separators=(",", ":")).encode() for b in batches]
        _, key = api_key_create(name="bench ingest", scope="ingest")
        ledger_truncate()
        stream.write(f"HTTP ingest API: gunicorn with {workers} sync workers, {clients} concurrent clients on loopback\n")
        with Server(workers) as server:
            progress = Progress("API", events, stream, unit="events")
            started = time.perf_counter()
            try:
                figures.outcomes = _post_all(server.port, key, bodies, clients, progress, [len(b) for b in batches])
            except BenchError as exc:
                raise BenchError(f"{exc}\nserver log ({server.log.name}):\n{server.log_tail()}") from None
            figures.api_seconds = time.perf_counter() - started
            progress.close()
        del bodies
        _check_outcomes(figures.outcomes, runs, events)

    if not skip_import:
        ledger_truncate()
        with tempfile.TemporaryDirectory(prefix="rl-bench-") as directory:
            path = Path(directory) / "runs.jsonl"
            with path.open("w") as handle:
                for batch in batches:
                    for event in batch:
                        handle.write(json.dumps(event, separators=(",", ":")))
                        handle.write("\n")
            stream.write(f"import_runs {path.stat().st_size / 1e6:,.0f} MB JSONL (its default workers: one per core on PostgreSQL)\n")
            started = time.perf_counter()
            call_command("import_runs", str(path), batch_size=batch_size, stdout=open(os.devnull, "w"),
                         stderr=stream)
            figures.import_seconds = time.perf_counter() - started
        from apps.ledger.models import Run

        stored = Run.objects.unscoped().count()
        if stored != runs:
            raise BenchError(f"import_runs stored {stored:,} runs, expected {runs:,}")

    figures.copy_seconds, figures.copy_rows = _copy_ceiling(stream)
    return figures


def _check_outcomes(outcomes: dict, runs: int, events: int) -> None:
    rejections = outcomes.pop("first_rejections", [])
    if outcomes.get("created") != runs or outcomes.get("rejected"):
        raise BenchError(f"the API stored {outcomes.get('created'):,} runs of {runs:,} "
                         f"({outcomes.get('rejected'):,} rejected, e.g. {rejections}): the benchmark is not "
                         "measuring a correct ingest")
    if sum(outcomes.values()) != events:
        raise BenchError(f"the API answered for {sum(outcomes.values()):,} events of {events:,}")


def report(figures: IngestFigures, stream) -> list[tuple[str, str, str]]:
    copy_rate = figures.copy_rate
    rows = []
    if figures.api_seconds:
        api_rate = figures.rate(figures.api_seconds)
        rows.append(("ingest API (HTTP, run reports/s)", f"{api_rate:,.0f}",
                     f"{api_rate / copy_rate:.2f}x COPY" if copy_rate else ""))
        rows.append(("ingest API (distinct runs/s)", f"{figures.rate(figures.api_seconds, figures.runs):,.0f}",
                     f"{figures.workers} workers, {figures.clients} clients"))
    if figures.import_seconds:
        import_rate = figures.rate(figures.import_seconds)
        rows.append(("import_runs (run reports/s)", f"{import_rate:,.0f}",
                     f"{import_rate / copy_rate:.2f}x COPY" if copy_rate else ""))
    if copy_rate:
        rows.append(("raw COPY, same rows, same indexes (rows/s)", f"{copy_rate:,.0f}", "1.00x (ceiling)"))
    return rows
