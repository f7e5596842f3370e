"""Drills against a real ingest server (gunicorn + a private PostgreSQL): load, Redis outage, PostgreSQL
restart. Each returns a result dict whose `ok` says whether every expected outcome held."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import Counter

from .infra import DrillStack, wait_for
from .load import LedgerVerdict, LoadReport, run_load, verify_ledger


def _setup_fixture(stack: DrillStack, *, tenants: int, high_cost_usd: str = "1000") -> tuple[list[str], str]:
    out = stack.manage("drill", "fixture", "--tenants", str(tenants), "--high-cost-usd", high_cost_usd)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return data["tenants"], data["ingest_key"]


def _ledger_check(stack: DrillStack) -> tuple[bool, str]:
    result = stack.manage("ledger_check", check=False)
    return result.returncode == 0, (result.stdout + result.stderr).strip()[-500:]


def _summary(report: LoadReport, verdict: LedgerVerdict, check_output: str) -> dict:
    return {
        "runs_sent": verdict.runs_sent, "runs_acknowledged": verdict.runs_acknowledged,
        "runs_stored": verdict.runs_stored, "duplicates": verdict.duplicates,
        "missing": len(verdict.missing), "wrong_state": len(verdict.wrong_state),
        "unexpected": len(verdict.unexpected),
        "requests": report.requests, "events_sent": report.events_sent,
        "duplicate_events_sent": report.duplicates_sent, "status_updates_sent": report.updates_sent,
        "status_codes": {str(code): n for code, n in sorted(report.statuses.items())},
        "http_5xx": report.server_errors, "http_503": report.unavailable, "retries": report.retries,
        "connection_errors": report.connection_errors,
        "requests_per_second": round(report.requests / report.seconds, 1) if report.seconds else 0,
        "events_per_second": round(report.events_sent / report.seconds, 1) if report.seconds else 0,
        "rollup_input_tokens": verdict.rollup_input_tokens, "expected_input_tokens": verdict.expected_input_tokens,
        "ledger_check": "match" if verdict.rollups_match else check_output,
        "client_errors": report.errors[:10], "examples_missing": verdict.missing[:5],
        "examples_wrong_state": verdict.wrong_state[:5],
    }


def drill_load(*, clients: int = 50, seconds: float = 60, batch_size: int = 20, workers: int = 3,
               say=print) -> dict:
    """50 clients x 60 s of ingest with duplicates and status updates; then: every run once, rollups match,
    no 5xx at all (not even 503: nothing failed)."""
    with DrillStack("load", say) as stack:
        stack.with_postgres()
        tenants, key = _setup_fixture(stack, tenants=5)
        _, base = stack.gunicorn(workers=workers)
        say(f"  {clients} clients x {seconds:.0f}s against {base} (gunicorn, {workers} workers)")
        report = run_load(base_url=base, key=key, tenants=tenants, clients=clients, seconds=seconds,
                          batch_size=batch_size, progress=say)
        check_ok, check_output = _ledger_check(stack)
        verdict = verify_ledger(database_url=stack.database_url, report=report, ledger_check_ok=check_ok)
        result = _summary(report, verdict, check_output)
        result["ok"] = bool(verdict.ok and report.server_errors == 0 and report.unavailable == 0
                            and verdict.runs_stored == verdict.runs_sent and not report.errors)
        return result


class _WebhookReceiver:
    """Collects alert webhooks the worker POSTs, by alert id (a receiver that dedupes by id, as documented)."""

    def __init__(self):
        received: Counter = Counter()
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received[json.loads(body)["id"]] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _alert_rows(database_url: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(database_url.replace("postgres://", "postgresql://", 1)) as conn:
        return conn.execute("SELECT id, webhook_delivered_at IS NOT NULL FROM alerts_alert ORDER BY id").fetchall()


def drill_redis_outage(*, clients: int = 10, seconds: float = 20, outage_at: float = 5, outage_seconds: float = 8,
                       say=print) -> dict:
    """Redis (cache + broker) stops while clients ingest: ingest keeps answering 200 and storing runs; alerts
    raised meanwhile stay in the outbox and are delivered once Redis is back (worker reconnects, catch-up)."""
    receiver = _WebhookReceiver()
    try:
        with DrillStack("redis-outage", say) as stack:
            stack.with_postgres()
            redis = stack.with_redis()
            # Every completed run is "high cost", so the load raises a stream of alerts to deliver.
            tenants, key = _setup_fixture(stack, tenants=3, high_cost_usd="0")
            env = stack.env(ALERT_WEBHOOK_URL=receiver.url, ALERT_WEBHOOK_SECRET="drill",
                            ALERTS_PENDING_GRACE_SECONDS=0)
            _, base = stack.gunicorn(workers=2, env=env)
            worker = stack.celery_worker(env=env)
            timeline: list[str] = []
            outage = {}

            def fault():
                time.sleep(outage_at)
                say(f"  >>> redis-cli -p {redis.port} shutdown (private redis)")
                timeline.append(f"{outage_at:.0f}s redis stopped")
                outage["before"] = len(_alert_rows(stack.database_url))
                redis.shutdown()
                time.sleep(outage_seconds)
                outage["during"] = len(_alert_rows(stack.database_url)) - outage["before"]
                redis.start()
                timeline.append(f"{outage_at + outage_seconds:.0f}s redis back")
                say("  <<< redis is back")

            fault_thread = threading.Thread(target=fault, daemon=True)
            fault_thread.start()
            report = run_load(base_url=base, key=key, tenants=tenants, clients=clients, seconds=seconds,
                              batch_size=10, retry_grace=30, progress=say)
            fault_thread.join()
            say("  enqueueing alerts.deliver_pending (as beat does every 5 minutes)")
            stack.manage("drill", "enqueue", "alerts.deliver_pending", env=env)

            def caught_up() -> bool:
                rows = _alert_rows(stack.database_url)
                return bool(rows) and all(delivered for _, delivered in rows) and \
                    set(receiver.received) >= {pk for pk, _ in rows}

            try:
                wait_for(caught_up, 90, "alert delivery catch-up", interval=1)
                caught = True
            except Exception as exc:  # noqa: BLE001 - reported in the result
                say(f"  !! {exc}\n{worker.tail()}")
                caught = False
            rows = _alert_rows(stack.database_url)
            check_ok, check_output = _ledger_check(stack)
            verdict = verify_ledger(database_url=stack.database_url, report=report, ledger_check_ok=check_ok)
            result = _summary(report, verdict, check_output)
            result.update({
                "timeline": timeline, "alerts_raised": len(rows), "alerts_raised_during_outage": outage.get("during"),
                "alerts_delivered": sum(1 for _, delivered in rows if delivered),
                "alerts_received_by_webhook": len(receiver.received),
                "alert_deliveries_duplicated": sum(n - 1 for n in receiver.received.values() if n > 1),
                "worker_alive": worker.alive(),
            })
            result["ok"] = bool(
                verdict.ok and report.server_errors == 0 and report.unavailable == 0 and caught
                and verdict.runs_stored == verdict.runs_sent and (outage.get("during") or 0) > 0 and not report.errors
            )
            return result
    finally:
        receiver.close()


def drill_postgres_restart(*, clients: int = 20, seconds: float = 20, down_at: float = 6, down_seconds: float = 3,
                           say=print) -> dict:
    """The (private) PostgreSQL stops under load and comes back: clients get 503 + Retry-After, never a 500;
    they retry; every acknowledged run is stored, in its acknowledged state."""
    with DrillStack("postgres-restart", say) as stack:
        stack.with_postgres(private=True)
        tenants, key = _setup_fixture(stack, tenants=4)
        _, base = stack.gunicorn(workers=3)
        timeline: list[str] = []

        def fault():
            time.sleep(down_at)
            say("  >>> pg_ctl stop -m fast (private PostgreSQL)")
            stack.postgres.stop(mode="fast")
            timeline.append(f"{down_at:.0f}s postgres stopped")
            time.sleep(down_seconds)
            stack.postgres._pg_ctl("start")
            timeline.append(f"{down_at + down_seconds:.0f}s postgres started")
            say("  <<< postgres is back")
            time.sleep(3)
            say("  >>> pg_ctl restart -m immediate (crash-restart)")
            stack.postgres.restart(mode="immediate")
            timeline.append("crash-restart")

        fault_thread = threading.Thread(target=fault, daemon=True)
        fault_thread.start()
        report = run_load(base_url=base, key=key, tenants=tenants, clients=clients, seconds=seconds,
                          batch_size=10, retry_grace=60, progress=say)
        fault_thread.join()
        check_ok, check_output = _ledger_check(stack)
        verdict = verify_ledger(database_url=stack.database_url, report=report, ledger_check_ok=check_ok,
                                require_all_sent=False)
        result = _summary(report, verdict, check_output)
        result["timeline"] = timeline
        result["ok"] = bool(verdict.ok and report.server_errors == 0 and report.unavailable > 0
                            and verdict.runs_stored >= verdict.runs_acknowledged)
        return result
