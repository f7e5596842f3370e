"""bench sweeps: a real thread sweep against the OpenAI sandbox through a rate-limited provider (items/s,
share of the allowed request rate used, the most requests seen in any window), and the peak memory of a
worker process planning and processing a sweep over a very large ledger (1M threads by default)."""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
import threading
import time
import uuid

from django.conf import settings
from django.db import connection

from .common import BenchError, bench_tenants, child_env

WINDOW_SECONDS = 10.0


class _RequestLog:
    """WSGI wrapper around the sandbox that records when each request arrived."""

    def __init__(self, app):
        self.app = app
        self.times: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            self.times.append(time.time())
        return self.app(environ, start_response)


def _sandbox_server(app):
    from apps.sandbox.server import _QuietHandler, _ThreadingWSGIServer, make_server

    httpd = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return httpd


def _old_threads(tenant, count: int, prefix: str, sandbox=None) -> None:
    """`count` threads idle for 45 days (past the tenant's 30-day retention, inside OpenAI's own), in the
    ledger (and in the sandbox, when given)."""
    from apps.ledger.models import Thread

    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=45)
    rows = []
    for index in range(count):
        openai_id = f"thread_{prefix}{index:08d}"
        rows.append(Thread(tenant=tenant, openai_id=openai_id, kind="thread", openai_project="proj_default",
                           created_at=old, last_activity_at=old))
        if sandbox is not None:
            sandbox.state.add_thread({"id": openai_id, "object": "thread", "created_at": int(old.timestamp()),
                                      "metadata": {"tenant": tenant.slug}, "tool_resources": {}},
                                     project_id="proj_default", activity_at=old.timestamp())
    Thread.objects.bulk_create(rows, batch_size=2000)


def _window_stats(times: list[float], window: float, limit: int) -> dict:
    """Requests per aligned window (for the share of the rate used over full windows) and the most requests
    in any sliding window of the same length, wherever it starts (the limit the limiter guarantees)."""
    if not times:
        return {"full_windows": 0, "utilization": 0.0, "max_fixed": 0, "max_sliding": 0}
    times = sorted(times)
    buckets: dict[int, int] = {}
    for moment in times:
        buckets[math.floor(moment / window)] = buckets.get(math.floor(moment / window), 0) + 1
    first, last = min(buckets), max(buckets)
    full = [buckets.get(b, 0) for b in range(first + 1, last)]  # the first and last windows are partial
    span = times[-1] - times[0]
    if full:
        utilization = sum(full) / (len(full) * limit)
    else:
        utilization = len(times) / max(span, 1e-9) / (limit / window)
    max_sliding, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        max_sliding = max(max_sliding, end - start + 1)
    return {"full_windows": len(full), "utilization": utilization, "max_fixed": max(buckets.values()),
            "max_sliding": max_sliding, "span": span}


def measure_rate(*, items: int, rpm: int, window: float, stream) -> dict:
    from apps.lifecycle.models import Sweep
    from apps.lifecycle.services import sweep_create, sweep_run_to_completion
    from apps.provider.client import OpenAIProvider
    from apps.provider.ratelimit import SharedRateLimiter
    from apps.sandbox.server import Sandbox

    tenant = bench_tenants(1, prefix="bench-sweep-")[0]
    tenant.thread_retention_days = 30
    tenant.legal_hold = False
    tenant.save(update_fields=["thread_retention_days", "legal_hold"])
    sandbox = Sandbox(seed=9)
    log = _RequestLog(sandbox)
    httpd = _sandbox_server(log)
    prefix = uuid.uuid4().hex[:8]
    try:
        _old_threads(tenant, items, prefix, sandbox)
        class RecordingLimiter(SharedRateLimiter):
            """Notes the moment each grant was decided (on the limiter's clock), free of network skew."""

            granted: list[float] = []

            def _attempt(self):
                decision = super()._attempt()
                if decision.granted:
                    self.granted.append(decision.now)
                return decision

        limiter = RecordingLimiter(requests_per_minute=rpm, window_seconds=window, name=f"bench-{prefix}")
        base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        provider = OpenAIProvider(base_url=base_url, api_key=sandbox.api_key, admin_key=sandbox.admin_key,
                                  project_id="proj_default", rate_limiter=limiter)
        Sweep.objects.unscoped().filter(kind="threads", dry_run=False, status__in=["pending", "running"]).update(
            status="failed")
        sweep = sweep_create(kind="threads", tenant=tenant, requested_label="bench")
        stream.write(f"sweep of {items:,} idle threads at {rpm:,} requests/min ({limiter.limit} per "
                     f"{window:g} s window) against the sandbox\n")
        done = [0]

        def progress(result):
            done[0] += result.processed
            stream.write(f"\r  swept {done[0]:,}/{items:,}   ")
            stream.flush()

        log.times.clear()
        started = time.perf_counter()
        result = sweep_run_to_completion(sweep_id=sweep.pk, provider=provider, progress=progress)
        seconds = time.perf_counter() - started
        stream.write("\n")
    finally:
        httpd.shutdown()
        httpd.server_close()
    if result.status != "finished" or result.counts.get("deleted", 0) != items:
        raise BenchError(f"the sweep ended {result.status} with {result.counts}; expected {items} deleted")
    stats = _window_stats(limiter.granted, window, limiter.limit)
    arrivals = _window_stats(log.times, window, limiter.limit)
    return {"items": items, "seconds": seconds, "requests": len(log.times), "granted": len(limiter.granted),
            "rpm": rpm, "window": window, "limit": limiter.limit, **stats,
            "max_sliding_arrivals": arrivals["max_sliding"], "max_fixed_arrivals": arrivals["max_fixed"]}


def measure_memory(*, threads: int, max_items: int, stream) -> dict:
    """Load `threads` idle threads, then let a separate worker process plan the whole sweep and process
    `max_items` items; the worker reports its RSS after every batch."""
    from apps.ledger.models import Thread

    tenant = bench_tenants(1, prefix="bench-sweepmem-")[0]
    tenant.thread_retention_days = 30
    tenant.save(update_fields=["thread_retention_days"])
    stream.write(f"loading {threads:,} idle threads for the memory sweep...\n")
    table = Thread._meta.db_table
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=365)
    prefix = uuid.uuid4().hex[:8]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (tenant_id, openai_id, kind, openai_project, created_at, last_activity_at, run_count, "
            "cost_usd, metadata, status, deletion_reason, recorded_at) "
            f"SELECT %s, 'thread_{prefix}' || lpad(i::text, 9, '0'), 'thread', 'proj_default', %s, %s, 0, 0, "
            f"'{{}}', 'active', '', %s FROM generate_series(0, {threads - 1}) AS i" if connection.vendor == "postgresql"
            else f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {threads - 1}) "
            f"INSERT INTO {table} (tenant_id, openai_id, kind, openai_project, created_at, last_activity_at, run_count, "
            "cost_usd, metadata, status, deletion_reason, recorded_at) "
            f"SELECT %s, 'thread_{prefix}' || printf('%%09d', i), 'thread', 'proj_default', %s, %s, 0, 0, '{{}}', "
            "'active', '', %s FROM s",
            [tenant.pk, old, old, old])
    command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "bench", "sweeps", "--child-memory",
               "--child-tenant", tenant.slug, "--items", str(max_items), "--allow-any-database"]
    stream.write(f"worker process: dry-run sweep over {threads:,} threads (plans all, re-checks {max_items:,})\n")
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=child_env(DJANGO_DEBUG="false"))
    samples = []
    for line in process.stdout:
        if line.startswith("{"):
            sample = json.loads(line)
            samples.append(sample)
            stream.write(f"\r  planned {sample['planned']:,}, processed {sample['processed']:,}, "
                         f"RSS {sample['rss_mb']:.0f} MB   ")
            stream.flush()
    try:
        stderr = process.stderr.read()
        process.wait()
        stream.write("\n")
        if process.returncode != 0 or not samples:
            raise BenchError(f"the sweep worker failed ({process.returncode}): {stderr[-2000:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE tenant_id = %s", [tenant.pk])
            if connection.vendor == "postgresql" and not connection.in_atomic_block:
                # As autovacuum would (off on this server): a million dead thread rows left the planner reading
                # dead index entries, ~15 ms of planning on every run-detail query of a `bench pages` after this.
                cursor.execute(f"VACUUM ANALYZE {table}")
    rss = [s["rss_mb"] for s in samples]
    planning = next((s["planning_seconds"] for s in samples if s.get("planning_seconds") is not None), None)
    # Re-checks per second once the items are planned (the sandbox unthrottled): what claiming an item costs
    # in a sweep of this size, from the last batch that only planned to the last batch.
    planned_only = [s for s in samples if s["processed"] == 0]
    checking = None
    if planned_only and samples[-1]["processed"] and samples[-1]["at"] > planned_only[-1]["at"]:
        checking = samples[-1]["processed"] / (samples[-1]["at"] - planned_only[-1]["at"])
    return {"threads": threads, "seconds": time.perf_counter() - started, "peak_mb": samples[-1]["peak_mb"],
            "planning_seconds": planning, "checking_per_second": checking,
            "first_mb": rss[0], "median_mb": sorted(rss)[len(rss) // 2], "last_mb": rss[-1],
            "planned": samples[-1]["planned"], "processed": samples[-1]["processed"], "samples": len(samples)}


def _rss() -> tuple[float, float]:
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def child_memory(*, tenant_slug: str, max_items: int, stdout) -> None:
    """The worker side of measure_memory: one dry-run sweep, RSS printed as JSON after every batch."""
    from apps.lifecycle.models import Sweep, SweepItem
    from apps.lifecycle.services import sweep_create, sweep_run_batch, worker_id
    from apps.provider.client import OpenAIProvider
    from apps.sandbox.server import Sandbox
    from apps.tenants.models import Tenant

    tenant = Tenant.objects.get(slug=tenant_slug)
    sandbox = Sandbox(seed=9)
    httpd = _sandbox_server(sandbox)
    provider = OpenAIProvider(base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", api_key=sandbox.api_key,
                              admin_key=sandbox.admin_key, project_id="proj_default", rate_limiter=None)
    sweep = sweep_create(kind="threads", tenant=tenant, dry_run=True, requested_label="bench")
    worker = worker_id()  # one worker throughout, as a Celery worker resuming its own sweep
    processed = 0
    try:
        while True:
            result = sweep_run_batch(sweep_id=sweep.pk, worker=worker, provider=provider, batch_size=500)
            processed += result.processed
            sweep.refresh_from_db()
            planned = sweep.planned_count if sweep.planned_at else SweepItem.objects.unscoped().filter(sweep=sweep).count()
            rss, peak = _rss()
            # Planning time on the sweep's own clock: from the first claim to the end of the last planning step.
            planning = (sweep.planned_at - sweep.started_at).total_seconds() if sweep.planned_at else None
            stdout.write(json.dumps({"planned": planned, "processed": processed, "rss_mb": rss, "peak_mb": peak,
                                     "planning_seconds": planning, "at": time.perf_counter()}) + "\n")
            stdout.flush()
            if result.status in ("finished", "failed", "missing") or processed >= max_items:
                break
    finally:
        httpd.shutdown()
        httpd.server_close()
        # In SQL: the ORM's delete would load every item (a million model instances) to null the archive's
        # references, of which a dry run made none.
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {SweepItem._meta.db_table} WHERE sweep_id = %s", [sweep.pk])
        Sweep.objects.unscoped().filter(pk=sweep.pk).delete()
        if connection.vendor == "postgresql" and not connection.in_atomic_block:
            # As autovacuum would (it is off on some servers, this one included): a million dead item rows
            # otherwise slow whatever reads sweep items next — the audit page took ~90 ms instead of ~3 ms
            # in a `bench pages` run after this bench.
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM ANALYZE {SweepItem._meta.db_table}")


def run(*, threads: int, items: int, rpm: int, window: float, keep: bool, stream) -> list:
    rate = measure_rate(items=items, rpm=rpm, window=window, stream=stream)
    allowed = rate["limit"] / rate["window"]
    rows = [
        ("sweep: items/s (threads deleted, rate-limited)", f"{rate['items'] / rate['seconds']:.1f}",
         f"{rate['requests']:,} OpenAI requests for {rate['items']:,} items in {rate['seconds']:.0f} s"),
        ("sweep: share of the allowed rate used", f"{rate['utilization']:.0%}",
         f"{'ok' if rate['utilization'] >= 0.9 else 'UNDER'} (>= 90%); {rate['limit']} per {rate['window']:g} s "
         f"window = {allowed:.1f}/s; {rate['full_windows']} full windows"),
        ("sweep: most requests in any sliding window", f"{max(rate['max_sliding'], rate['max_sliding_arrivals'])}",
         f"{'ok' if max(rate['max_sliding'], rate['max_sliding_arrivals']) <= rate['limit'] else 'OVER'} (limit "
         f"{rate['limit']} in any {rate['window']:g} s, wherever the window starts: {rate['max_sliding']} of "
         f"{rate['granted']:,} grants, {rate['max_sliding_arrivals']} of the {rate['requests']:,} requests the "
         f"sandbox saw; most in one aligned window {rate['max_fixed_arrivals']})"),
    ]
    memory = measure_memory(threads=threads, max_items=max(500, min(items * 4, 2000)), stream=stream)
    if memory["planning_seconds"]:
        rows.append(("sweep planning: items/s", f"{memory['planned'] / memory['planning_seconds']:,.0f}",
                     f"{memory['planned']:,} items planned in {memory['planning_seconds']:.1f} s (set-based: one "
                     f"INSERT ... SELECT per page of threads)"))
    if memory["checking_per_second"]:
        rows.append(("sweep re-checks/s, unthrottled", f"{memory['checking_per_second']:,.0f}",
                     f"{memory['processed']:,} items claimed and re-checked against the sandbox without a rate limit "
                     f"in a sweep of {memory['planned']:,} items (the rate-limited sweep needs "
                     f"{rate['limit'] / rate['window'] * rate['items'] / max(rate['requests'], 1):.1f} items/s)"))
    rows += [
        (f"sweep worker peak RSS ({threads:,} threads)", f"{memory['peak_mb']:.0f} MB",
         f"{'ok' if memory['peak_mb'] < 300 else 'OVER'} (< 300 MB); RSS first/median/last batch "
         f"{memory['first_mb']:.0f}/{memory['median_mb']:.0f}/{memory['last_mb']:.0f} MB over {memory['samples']} "
         f"batches, {memory['processed']:,} items re-checked, {memory['seconds']:.0f} s"),
    ]
    return rows
