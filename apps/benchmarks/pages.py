"""bench pages: p50/p95 server time of every dashboard page and every billing API endpoint on a large ledger
(loaded by loader.py), measured in-process through Django's full request stack (middleware, auth, templates)."""

from __future__ import annotations

import datetime as dt
import statistics
import time

from django.db import connection
from django.test import Client

from apps.core.startup import load_views_and_freeze_startup_objects

from . import loader
from .common import BenchError, Progress, require_postgres

PAGE_TARGET_MS = 150
USAGE_TARGET_MS = 50


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def prepare(*, runs: int, tenants: int, days: int, reuse: bool, stream) -> dict:
    """The ledger to measure on: loaded now unless `reuse` and it already holds `runs` runs."""
    require_postgres("pages")
    if reuse and loader.loaded_runs() == runs:
        stream.write(f"reusing the loaded ledger ({runs:,} runs)\n")
        return {}
    stream.write(f"loading {runs:,} runs over {tenants:,} tenants and {days} days (SQL generate_series)...\n")
    started = time.perf_counter()
    timings = loader.load(runs=runs, tenants=tenants, days=days, stream=stream)
    timings["total"] = time.perf_counter() - started
    stream.write(f"  loaded in {timings['total']:,.0f} s ({runs / timings['total']:,.0f} runs/s incl. indexes, "
                 "rollups and thread totals)\n")
    differences = loader.check_sample()
    if differences:
        raise BenchError(f"ledger_check found {differences} differences on the sampled tenants: the loader is wrong")
    stream.write("  ledger_check on a sample of tenants (the 2 biggest + 3 others): no differences\n")
    return timings


def _targets() -> dict:
    """The biggest tenant (worst case for per-tenant pages), one of its runs, a month with data."""
    from apps.ledger.models import Run
    from apps.tenants.models import Tenant

    with connection.cursor() as cursor:
        cursor.execute("SELECT tenant_id, sum(runs) FROM ledger_dailyrollup GROUP BY 1 ORDER BY 2 DESC LIMIT 1")
        row = cursor.fetchone()
    if row is None:
        raise BenchError("the ledger is empty: run without --reuse to load it")
    tenant = Tenant.objects.get(pk=row[0])
    run = Run.objects.for_tenant(tenant).order_by("-created_at").only("openai_id").first()
    today = dt.datetime.now(dt.UTC).date()
    return {"tenant": tenant, "tenant_runs": row[1], "run": run.openai_id, "month": f"{today:%Y-%m}",
            "last_month": f"{(today.replace(day=1) - dt.timedelta(days=1)):%Y-%m}", "today": today}


def endpoints(targets: dict) -> list[tuple[str, str, str]]:
    """(kind, label, url): kind 'page' (staff session) or 'api' (admin API key)."""
    slug, run, month = targets["tenant"].slug, targets["run"], targets["month"]
    start = (targets["today"] - dt.timedelta(days=29)).isoformat()
    mid_last_month = (targets["today"].replace(day=1) - dt.timedelta(days=1)).replace(day=15)
    week_into_half = mid_last_month.replace(day=23)
    return [
        ("page", "overview /", "/"),
        ("page", "overview, 90 days", "/?days=90"),
        ("page", "tenants /tenants/", "/tenants/"),
        ("page", "tenant detail (biggest tenant)", f"/tenants/{slug}/"),
        ("page", "runs /runs/ (all tenants, by cost)", "/runs/"),
        ("page", "runs, newest first", "/runs/?sort=-created"),
        ("page", "runs of the biggest tenant", f"/runs/?tenant={slug}"),
        ("page", "runs, failed, last 30 days", f"/runs/?status=failed&start={start}"),
        ("page", "run detail", f"/runs/{run}/"),
        ("page", "alerts /alerts/ (open)", "/alerts/"),
        ("page", "alerts of the biggest tenant, all", f"/alerts/?state=all&tenant={slug}"),
        ("page", "prices", "/prices/"),
        ("page", "lifecycle overview", "/lifecycle/"),
        ("page", "lifecycle audit", "/lifecycle/audit/"),
        ("page", "reconciliation", "/reconciliation/"),
        ("api", "GET /api/v1/tenants/", "/api/v1/tenants/"),
        ("api", "GET /api/v1/tenants/{slug}/", f"/api/v1/tenants/{slug}/"),
        ("usage", "usage by day (this month)", f"/api/v1/tenants/{slug}/usage/"),
        ("usage", "usage by model, 90 days", f"/api/v1/tenants/{slug}/usage/?group_by=model&start="
         f"{(targets['today'] - dt.timedelta(days=89)).isoformat()}"),
        ("usage", "usage by feature", f"/api/v1/tenants/{slug}/usage/?group_by=feature"),
        ("usage", "usage by end user", f"/api/v1/tenants/{slug}/usage/?group_by=user"),
        # Month to date holds 1 to 31 days depending on when the bench runs: these two do not.
        ("usage", "usage by end user, last month", f"/api/v1/tenants/{slug}/usage/?group_by=user&start="
         f"{targets['last_month']}-01"),
        ("usage", "usage by end user, last 30 days", f"/api/v1/tenants/{slug}/usage/?group_by=user&start={start}"
         f"&end={(targets['today'] + dt.timedelta(days=1)).isoformat()}"),
        # The last 30 days cost more mid-month than early in it (more ragged days to read): this window is
        # ragged in both months whatever day the bench runs, so its figure does not depend on the date.
        ("usage", "usage by end user, 30 days to mid last month",
         f"/api/v1/tenants/{slug}/usage/?group_by=user&start={(mid_last_month - dt.timedelta(days=29)).isoformat()}"
         f"&end={(mid_last_month + dt.timedelta(days=1)).isoformat()}"),
        # Ends a week into a half-month in both months: the most daily rows any 30 days read (about a week's at
        # each end, next to half-month and monthly rows).
        ("usage", "usage by end user, 30 days to the 23rd of last month",
         f"/api/v1/tenants/{slug}/usage/?group_by=user&start={(week_into_half - dt.timedelta(days=29)).isoformat()}"
         f"&end={(week_into_half + dt.timedelta(days=1)).isoformat()}"),
        # The same, a page of 1,000 end users at a time (`limit`, opt-in): the same sums, a fifth of the lines
        # formatted and sent.
        ("usage", "usage by end user, 30 days to the 23rd of last month, pages of 1,000",
         f"/api/v1/tenants/{slug}/usage/?group_by=user&start={(week_into_half - dt.timedelta(days=29)).isoformat()}"
         f"&end={(week_into_half + dt.timedelta(days=1)).isoformat()}&limit=1000"),
        ("api", "statement JSON (this month)", f"/api/v1/tenants/{slug}/statements/{month}/"),
        ("api", "statement JSON (last month)", f"/api/v1/tenants/{slug}/statements/{targets['last_month']}/"),
        ("api", "statement CSV", f"/api/v1/tenants/{slug}/statements/{month}.csv"),
        ("api", "GET /api/v1/runs/ (all)", "/api/v1/runs/"),
        ("api", "GET /api/v1/runs/?tenant=", f"/api/v1/runs/?tenant={slug}"),
        ("api", "GET /api/v1/runs/?min_cost=0.25", "/api/v1/runs/?min_cost=0.25"),  # ~0.45% of the runs
        ("api", "GET /api/v1/runs/{id}/", f"/api/v1/runs/{run}/"),
        ("api", "GET /api/v1/prices/", "/api/v1/prices/"),
    ]


def _clients() -> tuple[Client, dict]:
    from django.contrib.auth import get_user_model

    from apps.tenants.services import api_key_create

    user, _ = get_user_model().objects.get_or_create(username="bench-staff", defaults={"is_staff": True,
                                                                                       "is_superuser": True})
    if not user.is_staff:
        user.is_staff = user.is_superuser = True
        user.save()
    page_client = Client()
    page_client.force_login(user)
    _, key = api_key_create(name="bench pages", scope="admin")
    return page_client, {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def measure(*, repeat: int, stream) -> list[dict]:
    targets = _targets()
    page_client, api_headers = _clients()
    # Requests are served as config/wsgi.py serves them: views loaded, startup's objects frozen.
    load_views_and_freeze_startup_objects()
    api_client = Client()
    results = []
    plan = endpoints(targets)
    progress = Progress("requests", len(plan) * (repeat + 1), stream, unit="requests")
    for kind, label, url in plan:
        client, headers = (page_client, {}) if kind == "page" else (api_client, api_headers)
        queries = []
        # Counted with an execute wrapper: Django clears connection.queries at each request start.
        with connection.execute_wrapper(lambda execute, sql, *args, log=queries: log.append(sql) or execute(sql, *args)):
            response = client.get(url, **headers)  # warm-up (templates, caches) and the query count
        if response.status_code != 200:
            raise BenchError(f"{url} answered {response.status_code}: {response.content[:300]!r}")
        progress.add(1)
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(url, **headers)
            if hasattr(response, "streaming_content"):
                b"".join(response.streaming_content)
            times.append((time.perf_counter() - started) * 1000)
            progress.add(1)
        target = USAGE_TARGET_MS if kind == "usage" else PAGE_TARGET_MS
        results.append({"kind": kind, "label": label, "url": url, "p50": statistics.median(times),
                        "p95": _percentile(times, 0.95), "queries": len(queries), "target": target})
    progress.close()
    return results


def ledger_label(runs: int) -> str:
    """How the figures name the ledger they were taken on: "10M", "1M", "3,000"."""
    return f"{runs / 1e6:g}M" if runs >= 100_000 else f"{runs:,}"


def run(*, runs: int, tenants: int, days: int, repeat: int, reuse: bool, keep: bool, stream) -> list:
    prepare(runs=runs, tenants=tenants, days=days, reuse=reuse, stream=stream)
    results = measure(repeat=repeat, stream=stream)
    size = ledger_label(runs)
    rows = [(f"[{size} runs] {r['label']}", f"p50 {r['p50']:6.1f} ms  p95 {r['p95']:6.1f} ms",
             f"{r['queries']:>3} queries  {'ok' if r['p95'] < r['target'] else 'OVER'} (< {r['target']} ms)")
            for r in results]
    over = [r for r in results if r["p95"] >= r["target"]]
    rows.append((f"[{size} runs] pages/endpoints over target", f"{len(over)} of {len(results)}",
                 ", ".join(r["label"] for r in over)))
    if not keep and not reuse:
        pass  # the loaded ledger stays for `--reuse` runs and the storage bench; `bench storage` reports its size
    return rows
