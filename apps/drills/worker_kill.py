"""The worker-kill drill: a real Celery worker on a real broker is SIGKILLed (its whole process group) in the
middle of a retention sweep and of a reconciliation, a new worker is started, and the work must finish with no
thread deleted twice, none skipped and no partial reconciliation day, judged from the sandbox's request log.

Two set-ups share one code path: `fast` (SQLite file database + kombu's SQLAlchemy broker in a temp dir, no
servers; the killed message is gone, so the sweep resumes through the reaper and the reconciliation through a
copy with the same task id, as a broker redelivers it) and full (private PostgreSQL + private redis-server,
whose visibility timeout really redelivers the killed message). The sandbox runs in this process; everything
that reads or writes the drill's database runs as `manage.py drill worker-kill-step` in the drill's
environment (`run_step`)."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

DAY = 86400
TENANT = "drill-worker-kill"
RETENTION_DAYS = 30
THREAD_PATH = re.compile(r"^/v1/threads/(thread_[A-Za-z0-9]+)$")


# --- the sandbox's request log --------------------------------------------------------------------------


class RequestLog:
    """Wraps the sandbox's WSGI app and records every request when it ARRIVES (before any injected latency),
    so a DELETE the killed worker sent but never saw answered is counted too."""

    def __init__(self, app):
        self.app = app
        self.sandbox = app
        self._lock = threading.Lock()
        self.entries: list[tuple[float, str, str]] = []

    def __call__(self, environ, start_response):
        with self._lock:
            self.entries.append((time.time(), environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")))
        return self.app(environ, start_response)

    def matching(self, method: str, pattern: str, since: float = 0.0) -> list[tuple[float, str, str]]:
        regex = re.compile(pattern)
        with self._lock:
            return [e for e in self.entries if e[1] == method and e[0] >= since and regex.search(e[2])]

    def thread_deletes(self) -> Counter:
        with self._lock:
            return Counter(m.group(1) for _t, method, path in self.entries
                           if method == "DELETE" and (m := THREAD_PATH.match(path)))


def _post(url: str, key: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json", "OpenAI-Beta": "assistants=v2"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def seed_sandbox(sandbox, base_url: str, *, threads: int, recent: int, end_day: dt.date, days: int) -> dict:
    """Threads idle past retention (and a few inside it) and a few responses per reconciled day, served at
    the sandbox as OpenAI would have at those moments; returns the raw objects for the ledger."""
    key = sandbox.api_key
    now = time.time()
    objects = {"old": [], "recent": [], "responses": []}
    sandbox.clock.set(now - (RETENTION_DAYS + 10) * DAY)
    for index in range(threads):
        objects["old"].append(_post(f"{base_url}/threads", key, {
            "messages": [{"role": "user", "content": f"old {index}"}], "metadata": {"tenant": TENANT}}))
    sandbox.clock.set(now - (RETENTION_DAYS - 1) * DAY)
    for index in range(recent):
        objects["recent"].append(_post(f"{base_url}/threads", key, {
            "messages": [{"role": "user", "content": f"recent {index}"}], "metadata": {"tenant": TENANT}}))
    for offset in range(days):
        day = end_day - dt.timedelta(days=offset)
        for index, model in enumerate(("gpt-5.4", "gpt-5.4", "gpt-5.5")):
            sandbox.clock.set(dt.datetime(day.year, day.month, day.day, 8 + index * 4, tzinfo=dt.UTC).timestamp())
            objects["responses"].append(_post(f"{base_url}/responses", key, {
                "model": model, "input": f"question {offset}-{index}", "metadata": {"tenant": TENANT},
                "sandbox": {"input_tokens": 20_000 + offset * 101 + index, "output_tokens": 2_000 + offset * 7}}))
    sandbox.clock.set(time.time())
    return objects


# --- steps run inside the drill's environment (its database, cache and broker) ---------------------------


def run_step(name: str, data: dict) -> dict:
    return STEPS[name](data)


def _step_setup(data: dict) -> dict:
    from apps.core.broker import broker_queues_declare
    from apps.ledger.services import ingest_events
    from apps.tenants.models import Tenant

    # Before any worker starts: a worker and the next step's send declaring the queue at once raced on the
    # SQLAlchemy broker's queue table (apps/core/broker.py).
    broker_queues_declare()

    tenant, _ = Tenant.objects.get_or_create(slug=TENANT, defaults={"name": "Worker-kill drill"})
    tenant.thread_retention_days = RETENTION_DAYS
    tenant.save(update_fields=["thread_retention_days"])
    objects = json.loads(Path(data["objects"]).read_text())
    events = [{"tenant": TENANT, "object": obj} for obj in objects["old"] + objects["recent"]]
    events += [{"tenant": TENANT, "object": obj, "openai_project": "proj_default"} for obj in objects["responses"]]
    result = ingest_events(events=events)
    rejected = [r.as_dict() for r in result.results if r.outcome == "rejected"]
    return {"events": len(events), "created": result.created, "rejected": rejected[:3]}


def _step_send(data: dict) -> dict:
    from config.celery import app

    sent = app.send_task(data["task"], args=data.get("args") or [], kwargs=data.get("kwargs") or {},
                         task_id=data.get("task_id"))
    return {"task_id": sent.id}


def _latest_sweep():
    from apps.lifecycle.models import Sweep

    return Sweep.objects.unscoped().filter(kind="threads", dry_run=False).order_by("-pk").first()


def _step_sweep_wait(data: dict) -> dict:
    """Wait for the threads sweep to finish, sending `lifecycle.sweep_reap` every `reap_every` seconds the
    way beat would (compressed). The killed worker's batch is found by the reaper or redelivered."""
    from config.celery import app

    deadline = time.monotonic() + data["timeout"]
    reaps, next_reap = 0, 0.0
    while time.monotonic() < deadline:
        sweep = _latest_sweep()
        if sweep is not None and sweep.status in ("finished", "failed"):
            return {"status": sweep.status, "reaps_sent": reaps}
        if data.get("reap_every") and time.monotonic() >= next_reap:
            app.send_task("lifecycle.sweep_reap")
            reaps += 1
            next_reap = time.monotonic() + data["reap_every"]
        time.sleep(0.25)
    sweep = _latest_sweep()
    return {"status": sweep.status if sweep else "missing", "reaps_sent": reaps, "timed_out": True}


def _step_sweep_report(data: dict) -> dict:
    from django.core.cache import cache

    from apps.ledger.models import Thread
    from apps.lifecycle import services
    from apps.lifecycle.models import SweepItem

    sweep = _latest_sweep()
    if sweep is None:
        return {"sweep": None}
    items = list(SweepItem.objects.unscoped().filter(sweep=sweep).values("openai_id", "state", "outcome", "claimed_by"))
    ids = data.get("ids") or []
    return {
        "sweep": {"id": sweep.pk, "status": sweep.status, "counts": sweep.counts, "planned_count": sweep.planned_count,
                  "claimed_by": sweep.claimed_by, "errors": sweep.errors},
        "live_counts": services.sweep_counts(sweep),
        "items": items,
        "kind_lock_holder": cache.get(services._lock_key("threads")),
        "ledger_deleted": Thread.objects.unscoped().filter(openai_id__in=ids, status=Thread.Status.DELETED).count(),
    }


def _step_recon_report(data: dict) -> dict:
    from apps.reconciliation.models import ReconciliationLine, ReconciliationRun
    from apps.reconciliation.services import reconciliation_lock_owner

    runs = []
    for run in ReconciliationRun.objects.filter(openai_project="proj_default").order_by("day", "started_at", "pk"):
        lines = sorted(ReconciliationLine.objects.filter(run=run).values_list("line", flat=True))
        runs.append({"id": run.pk, "day": run.day.isoformat(), "status": run.status, "current": run.is_current,
                     "started_at": run.started_at.timestamp(), "line_count": run.line_count, "lines": lines,
                     "error": run.error[:120]})
    return {"runs": runs, "lock_owner": reconciliation_lock_owner(project_id="proj_default")}


def _step_recon_wait(data: dict) -> dict:
    """Wait until every day has a complete current run that started after `since`."""
    from apps.reconciliation.models import ReconciliationRun

    days = [dt.date.fromisoformat(day) for day in data["days"]]
    since = dt.datetime.fromtimestamp(data["since"], tz=dt.UTC)
    deadline = time.monotonic() + data["timeout"]
    while time.monotonic() < deadline:
        done = ReconciliationRun.objects.filter(
            openai_project="proj_default", day__in=days, is_current=True, status="complete", started_at__gte=since,
        ).count()
        if done == len(days):
            return {"done": True}
        time.sleep(0.25)
    return {"done": False, "timed_out": True}


STEPS = {"setup": _step_setup, "send": _step_send, "sweep-wait": _step_sweep_wait,
         "sweep-report": _step_sweep_report, "recon-report": _step_recon_report, "recon-wait": _step_recon_wait}


# --- the drill -------------------------------------------------------------------------------------------


class _Drill:
    def __init__(self, stack, env: dict, say):
        self.stack = stack
        self.env = env
        self.say = say
        self.workers: list = []

    def step(self, name: str, **data) -> dict:
        result = self.stack.manage("drill", "worker-kill-step", name, "--data", json.dumps(data), env=self.env)
        lines = [line for line in result.stdout.strip().splitlines() if line.startswith("{")]
        if not lines:
            from .infra import DrillError

            raise DrillError(f"step {name} printed no result:\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}")
        return json.loads(lines[-1])

    def worker(self):
        """A new `celery -A config worker` (one prefork child) in its own process group."""
        worker = self.stack.celery_worker(f"worker-{len(self.workers) + 1}", env=self.env)
        self.workers.append(worker)
        return worker


def _wait(check, seconds: float, what: str, worker=None) -> None:
    from .infra import DrillError

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        if worker is not None and not worker.alive():
            raise DrillError(f"{worker.name} exited before {what}:\n{worker.tail()}")
        time.sleep(0.02)
    raise DrillError(f"timed out after {seconds:.0f}s waiting for {what}"
                     + (f"; {worker.name} log:\n{worker.tail()}" if worker is not None else ""))


def drill_worker_kill(*, fast: bool = False, threads: int | None = None, say=print) -> dict:
    """Run both kills; returns the result (ok, deletions_duplicated, items_skipped, partial_days, details)."""
    from apps.sandbox.server import Sandbox, SandboxServer

    from .infra import DrillStack

    threads = threads or (12 if fast else 40)
    # The drill's compressed clock: a worker silent for `stale` seconds is dead; its item claims lapse after
    # `lease`; a reconciliation lock lapses after `recon_lock` seconds without a heartbeat. The sweep's kind
    # lock keeps production's 300 s: the resume must not wait for it. The reconciliation lock must outlive the
    # at-kill report (a fresh manage.py process, several seconds on a slow machine) or the drill cannot see who
    # held it; 4 s was too short on CI's slowest machine.
    stale, lease = (3, 4) if fast else (5, 6)
    recon_lock = 10
    latency_ms = 100 if fast else 200
    end_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    recon_days = 3 if fast else 8
    day_list = [(end_day - dt.timedelta(days=offset)).isoformat() for offset in range(recon_days)][::-1]
    started = time.monotonic()
    with DrillStack("worker-kill", say=say) as stack:
        sandbox = Sandbox()
        log = RequestLog(sandbox)
        server = SandboxServer(log).start()
        stack._stack.callback(server.stop)
        if fast:
            say("  database: SQLite file; broker: kombu SQLAlchemy transport (both in the drill's temp dir)")
            stack.database_url = f"sqlite:///{stack.workdir / 'drill.sqlite3'}"
        else:
            stack.with_redis()
            say("  broker and cache: the private redis-server (visibility timeout 8 s)")
        env = stack.env(
            OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY=sandbox.api_key, OPENAI_ADMIN_KEY=sandbox.admin_key,
            OPENAI_PROJECT_ID="proj_default", LIFECYCLE_SWEEP_STALE_SECONDS=stale, LIFECYCLE_ITEM_LEASE_SECONDS=lease,
            LIFECYCLE_SWEEP_LOCK_SECONDS=300, LIFECYCLE_SWEEP_BATCH_SIZE=5, LIFECYCLE_TRANSIENT_RETRY_SECONDS=1,
            RECONCILIATION_LOCK_SECONDS=recon_lock, CELERY_VISIBILITY_TIMEOUT=8, OPENAI_MANAGEMENT_RPM=100000,
        )
        if fast:
            stack.manage("migrate", "--noinput", env=env)
            stack.manage("createcachetable", env=env)
        else:
            stack.with_postgres()
            env["DATABASE_URL"] = stack.database_url
        drill = _Drill(stack, env, say)

        say(f"  seeding the sandbox: {threads} threads {RETENTION_DAYS + 10} days idle, 3 inside retention, "
            f"{recon_days} days of responses")
        objects = seed_sandbox(sandbox, server.base_url, threads=threads, recent=3, end_day=end_day, days=recon_days)
        objects_file = stack.workdir / "objects.json"
        objects_file.write_text(json.dumps(objects))
        setup = drill.step("setup", objects=str(objects_file))
        old_ids = [obj["id"] for obj in objects["old"]]
        recent_ids = [obj["id"] for obj in objects["recent"]]

        sweep = _sweep_phase(drill, sandbox, log, old_ids, recent_ids, latency_ms=latency_ms, stale=stale, fast=fast)
        recon = _reconciliation_phase(drill, sandbox, log, day_list, end_day=end_day, recon_lock=recon_lock, fast=fast)
    result = {
        "setup": {"database": "sqlite" if fast else "postgresql", "broker": "sqlalchemy" if fast else "redis",
                  "threads_past_retention": threads, "threads_inside_retention": 3, "reconciled_days": recon_days,
                  "ingested": setup},
        "deletions_duplicated": sweep["deletions_duplicated"],
        "items_skipped": sweep["items_skipped"],
        "partial_days": recon["partial_days"],
        "sweep": sweep,
        "reconciliation": recon,
        "seconds": round(time.monotonic() - started, 1),
    }
    result["ok"] = bool(sweep["ok"] and recon["ok"])
    return result


def _sweep_phase(drill, sandbox, log, old_ids, recent_ids, *, latency_ms: int, stale: int, fast: bool) -> dict:
    say = drill.say
    kill_after = max(1, len(old_ids) // 3)
    sandbox.faults.latency(latency_ms=latency_ms, path="^/v1/threads")
    first = drill.worker()
    sent_at = time.time()
    drill.step("send", task="lifecycle.sweep_start", args=["threads"])
    say(f"  sweep: started through the broker; SIGKILL worker-1 when DELETE #{kill_after} arrives at the sandbox")
    _wait(lambda: len(log.matching("DELETE", r"^/v1/threads/", since=sent_at)) >= kill_after, 120,
          f"{kill_after} thread DELETEs", worker=first)
    first.kill()
    killed_at = time.time()
    deletes_at_kill = sum(log.thread_deletes().values())
    at_kill = drill.step("sweep-report", ids=old_ids)
    claimed = [item["openai_id"] for item in at_kill["items"] if item["state"] == "claimed"]
    say(f"  sweep: killed after {deletes_at_kill} DELETEs; {len(claimed)} item(s) left claimed by the dead worker, "
        f"kind lock held by {at_kill['kind_lock_holder']!r}")
    drill.worker()
    waited = drill.step("sweep-wait", reap_every=max(1, stale / 2), timeout=180)
    resumed_seconds = round(time.time() - killed_at, 1)
    final = drill.step("sweep-report", ids=old_ids)
    deletes = log.thread_deletes()
    outcomes = {item["openai_id"]: item["outcome"] for item in final["items"]}
    audit_rows = Counter(item["openai_id"] for item in final["items"])
    at_sandbox = set(sandbox.state.threads)
    duplicated = sum(count - 1 for count in deletes.values() if count > 1)
    skipped = [tid for tid in old_ids
               if tid in at_sandbox or deletes[tid] == 0 or outcomes.get(tid) not in ("deleted", "already_gone")]
    counts = final["sweep"]["counts"] if final["sweep"] else {}
    checks = {
        "killed mid-sweep": 0 < deletes_at_kill < len(old_ids),
        "sweep finished": waited["status"] == "finished" and (final["sweep"] or {}).get("status") == "finished",
        "counts: deleted + already_gone = eligible": counts.get("deleted", 0) + counts.get("already_gone", 0) == len(old_ids)
        and sum(counts.values()) == len(old_ids),
        "one audit row per item": sorted(audit_rows) == sorted(old_ids) and set(audit_rows.values()) == {1},
        "ledger marks every eligible thread deleted": final["ledger_deleted"] == len(old_ids),
        "threads inside retention untouched": all(tid in at_sandbox and deletes[tid] == 0 for tid in recent_ids),
        "kind lock released": final["kind_lock_holder"] is None,
    }
    failed = [name for name, ok in checks.items() if not ok]
    say(f"  sweep: finished {resumed_seconds}s after the kill ({waited.get('reaps_sent')} reaps sent); "
        f"counts {counts}; deletions duplicated = {duplicated}, items skipped = {len(skipped)}"
        + (f"; FAILED checks: {failed}" if failed else ""))
    return {
        "ok": not failed and duplicated == 0 and not skipped,
        "deletions_duplicated": duplicated, "items_skipped": len(skipped), "skipped_ids": skipped[:10],
        "deletes_before_kill": deletes_at_kill, "claimed_at_kill": len(claimed),
        "dead_worker_held_kind_lock": bool(at_kill["kind_lock_holder"]),
        "finished_seconds_after_kill": resumed_seconds, "reaps_sent": waited.get("reaps_sent"),
        "counts": counts, "failed_checks": failed,
        "delete_requests_per_thread": dict(Counter(deletes[tid] for tid in old_ids)),
    }


def _reconciliation_phase(drill, sandbox, log, day_list, *, end_day: dt.date, recon_lock: int, fast: bool) -> dict:
    say = drill.say
    sandbox.faults.clear_faults()
    kwargs = {"end_day": end_day.isoformat(), "days": len(day_list)}
    baseline_at = time.time() - 1
    drill.step("send", task="reconciliation.reconcile_daily", kwargs=kwargs)
    if not drill.step("recon-wait", days=day_list, since=baseline_at, timeout=120)["done"]:
        return {"ok": False, "partial_days": len(day_list), "error": "the baseline reconciliation did not finish"}
    baseline = drill.step("recon-report")
    expected = {run["day"]: run["lines"] for run in baseline["runs"] if run["current"]}
    say(f"  reconciliation: baseline complete for {len(expected)} days "
        f"({sum(len(v) for v in expected.values())} lines)")

    # Slow Costs/Usage pages, so the kill lands while the attempt is fetching (its rows say 'running').
    sandbox.faults.latency(latency_ms=1500, path="^/v1/organization/")
    task_id = f"drill-reconcile-{uuid.uuid4().hex[:12]}"
    sent_at = time.time()
    drill.step("send", task="reconciliation.reconcile_daily", kwargs=kwargs, task_id=task_id)
    worker = drill.workers[-1]
    _wait(lambda: log.matching("GET", r"^/v1/organization/", since=sent_at), 60, "the first Costs request",
          worker=worker)
    time.sleep(0.3)
    worker.kill()
    killed_at = time.time()
    sandbox.faults.clear_faults()
    at_kill = drill.step("recon-report")
    report_seconds = round(time.time() - killed_at, 1)
    running_at_kill = sum(1 for run in at_kill["runs"] if run["status"] == "running")
    partial_at_kill = _partial_days(at_kill, expected, day_list)
    say(f"  reconciliation: {worker.name} killed mid-fetch; {running_at_kill} attempt(s) left running, lock owner "
        f"{at_kill['lock_owner']!r} {report_seconds}s after the kill, partial days right after the kill = "
        f"{len(partial_at_kill)}")

    drill.worker()
    if fast:
        # kombu's SQLAlchemy transport dropped the unacked message with the worker; redeliver it as a broker
        # with a visibility timeout does: the same task id.
        drill.step("send", task="reconciliation.reconcile_daily", kwargs=kwargs, task_id=task_id)
        say("  reconciliation: the killed task re-sent with its task id (a redelivery)")
    else:
        say("  reconciliation: waiting for redis to redeliver the unacked task (visibility timeout)")
    done = drill.step("recon-wait", days=day_list, since=killed_at, timeout=180)["done"]
    recovered_seconds = round(time.time() - killed_at, 1)
    final = drill.step("recon-report")
    partial = _partial_days(final, expected, day_list)
    by_day: dict[str, list[dict]] = {}
    for run in final["runs"]:
        by_day.setdefault(run["day"], []).append(run)
    checks = {
        "killed mid-reconciliation": running_at_kill == len(day_list),
        "no partial day right after the kill (the baseline stayed current)": not partial_at_kill,
        "rerun completed (not skipped)": done,
        "history kept (baseline run of each day still stored)": all(
            sum(1 for r in by_day.get(day, []) if r["status"] == "complete") >= 2 for day in day_list),
        "killed attempts marked failed, none left running": all(r["status"] != "running" for r in final["runs"])
        and sum(1 for r in final["runs"] if r["status"] == "failed") >= len(day_list),
        "lock released": final["lock_owner"] is None,
    }
    failed = [name for name, ok in checks.items() if not ok]
    say(f"  reconciliation: rerun complete {recovered_seconds}s after the kill (lock TTL {recon_lock}s); "
        f"partial days = {len(partial)}" + (f"; FAILED checks: {failed}" if failed else ""))
    return {"ok": not failed and not partial, "partial_days": len(partial), "partial": partial[:5],
            "attempts_running_at_kill": running_at_kill, "dead_lock_owner": at_kill["lock_owner"],
            "completed_seconds_after_kill": recovered_seconds, "failed_checks": failed,
            "runs_per_day": {day: [r["status"] + ("*" if r["current"] else "") for r in runs]
                             for day, runs in by_day.items()}}


def _partial_days(report: dict, expected: dict[str, list[str]], day_list: list[str]) -> list[dict]:
    """Days whose current result is missing, not complete, or lacks (or adds) lines against the baseline."""
    partial = []
    current = {run["day"]: run for run in report["runs"] if run["current"]}
    for day in day_list:
        run = current.get(day)
        if run is None or run["status"] != "complete" or run["lines"] != expected.get(day) \
                or len(run["lines"]) != run["line_count"]:
            partial.append({"day": day, "run": run and {k: run[k] for k in ("id", "status", "line_count")}})
    return partial
