"""A bounded loopback load generator for the ingest API (threads + http.client, no dependency), and the
check that afterwards every acknowledged run is in the ledger exactly once, in its latest state.

Each client sends batches of Responses-API `response` objects: new runs (half of them first reported
`in_progress`), status updates of its earlier in-progress runs (now `completed` with usage), and exact
duplicates of events it already sent. A 503 (database unavailable) or a dropped connection is retried after
a short pause, as a real SDK would; every status code is counted."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

RUN_PREFIX = "resp_drill"
MODELS = ("gpt-5.4", "gpt-5.4-mini")
FEATURES = ("chat", "search", "summarize")


def response_object(*, run_id: str, created_at: float, status: str, input_tokens: int, output_tokens: int,
                    model: str) -> dict:
    """A Responses `response` as OpenAI returns it; usage only once it is done."""
    done = status == "completed"
    return {
        "id": run_id, "object": "response", "created_at": created_at, "status": status, "model": model,
        "service_tier": "default", "conversation": None, "metadata": {}, "error": None,
        "incomplete_details": None, "tools": [], "parallel_tool_calls": True, "tool_choice": "auto",
        "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": "Done.", "annotations": []}]}] if done else [],
        "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": input_tokens + output_tokens} if done else None,
    }


@dataclass
class SentRun:
    tenant: str
    final_status: str = "in_progress"
    input_tokens: int = 0
    output_tokens: int = 0
    acknowledged: bool = False  # some request carrying it got a 200 naming it stored
    acknowledged_status: str = ""  # the most advanced state acknowledged


@dataclass
class LoadReport:
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    events_sent: int = 0
    duplicates_sent: int = 0
    updates_sent: int = 0
    retries: int = 0
    connection_errors: int = 0
    seconds: float = 0.0
    runs: dict[str, SentRun] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        """5xx other than the retryable 503 (the drill's fault windows expect 503s; the load drill none)."""
        return sum(n for code, n in self.statuses.items() if code >= 500 and code != 503)

    @property
    def unavailable(self) -> int:
        return self.statuses.get(503, 0)

    @property
    def acknowledged(self) -> dict[str, SentRun]:
        return {run_id: run for run_id, run in self.runs.items() if run.acknowledged}


class _Client:
    def __init__(self, index: int, base_url: str, key: str, tenants: list[str], report: LoadReport,
                 lock: threading.Lock, batch_size: int, seed: int):
        self.index = index
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.key = key
        self.tenants = tenants
        self.report = report
        self.lock = lock
        self.batch_size = batch_size
        self.random = random.Random(seed * 1000 + index)
        self.counter = 0
        self.sent_events: list[dict] = []  # events this client sent, for exact duplicates
        self.in_progress: list[dict] = []  # its runs still in progress, to be completed later
        self.conn: http.client.HTTPConnection | None = None

    def _new_event(self) -> dict:
        self.counter += 1
        run_id = f"{RUN_PREFIX}_{self.index:03d}_{self.counter:07d}"
        tenant = self.random.choice(self.tenants)
        created = time.time() - self.random.randint(0, 3 * 86400)
        model = self.random.choice(MODELS)
        tokens_in, tokens_out = self.random.randint(10, 50_000), self.random.randint(1, 5_000)
        status = "in_progress" if self.random.random() < 0.5 else "completed"
        event = {"tenant": tenant, "attribution": {"feature": self.random.choice(FEATURES), "user_id": f"u{self.index}"},
                 "object": response_object(run_id=run_id, created_at=created, status=status,
                                           input_tokens=tokens_in, output_tokens=tokens_out, model=model)}
        with self.lock:
            self.report.runs[run_id] = SentRun(tenant=tenant)
        if status == "in_progress":
            self.in_progress.append({**event, "object": response_object(
                run_id=run_id, created_at=created, status="completed", input_tokens=tokens_in,
                output_tokens=tokens_out, model=model)})
        return event

    def _batch(self) -> tuple[list[dict], int, int]:
        events, duplicates, updates = [], 0, 0
        for _ in range(self.batch_size):
            roll = self.random.random()
            if roll < 0.15 and self.sent_events:
                events.append(self.random.choice(self.sent_events))
                duplicates += 1
            elif roll < 0.35 and self.in_progress:
                events.append(self.in_progress.pop(self.random.randrange(len(self.in_progress))))
                updates += 1
            else:
                events.append(self._new_event())
        return events, duplicates, updates

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        return self.conn

    def _post(self, body: bytes) -> tuple[int, dict | None, float]:
        conn = self._connection()
        try:
            conn.request("POST", "/api/v1/ingest/", body=body, headers={
                "Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            retry_after = float(response.getheader("Retry-After") or 0)
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                self.conn = None
        except (OSError, http.client.HTTPException):
            conn.close()
            self.conn = None
            raise
        try:
            return response.status, json.loads(payload), retry_after
        except ValueError:
            return response.status, None, retry_after

    def send(self, events: list[dict], deadline: float, retry_until: float) -> None:
        """POST one batch; retry 503s and dropped connections (never 4xx) until `retry_until`."""
        body = json.dumps({"events": events}).encode()
        while True:
            try:
                status, payload, retry_after = self._post(body)
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    self.report.connection_errors += 1
                if time.monotonic() > retry_until:
                    with self.lock:
                        self.report.errors.append(f"client {self.index}: gave up after {exc!r}")
                    return
                time.sleep(0.2)
                continue
            with self.lock:
                self.report.requests += 1
                self.report.statuses[status] += 1
            if status == 503 and time.monotonic() < retry_until:
                with self.lock:
                    self.report.retries += 1
                time.sleep(min(retry_after or 0.2, 0.5))
                continue
            if status != 200:
                with self.lock:
                    if len(self.report.errors) < 20:
                        self.report.errors.append(f"client {self.index}: HTTP {status}: {str(payload)[:300]}")
                return
            self._acknowledge(events, payload)
            return

    def _acknowledge(self, events: list[dict], payload: dict) -> None:
        with self.lock:
            for event, result in zip(events, payload["results"], strict=True):
                obj = event["object"]
                if result["outcome"] == "rejected":
                    self.report.errors.append(f"{obj['id']} rejected: {result.get('error')}")
                    continue
                run = self.report.runs[obj["id"]]
                run.acknowledged = True
                if obj["status"] == "completed":
                    run.acknowledged_status = "completed"
                    run.input_tokens = obj["usage"]["input_tokens"]
                    run.output_tokens = obj["usage"]["output_tokens"]
                elif not run.acknowledged_status:
                    run.acknowledged_status = obj["status"]
        self.sent_events.extend(events)
        del self.sent_events[:-200]

    def run(self, deadline: float, retry_until: float) -> None:
        try:
            while time.monotonic() < deadline:
                events, duplicates, updates = self._batch()
                with self.lock:
                    self.report.events_sent += len(events)
                    self.report.duplicates_sent += duplicates
                    self.report.updates_sent += updates
                self.send(events, deadline, retry_until)
            # Finish what this client started: every in-progress run gets its completed state.
            while self.in_progress:
                chunk, self.in_progress = self.in_progress[:self.batch_size], self.in_progress[self.batch_size:]
                with self.lock:
                    self.report.events_sent += len(chunk)
                    self.report.updates_sent += len(chunk)
                self.send(chunk, deadline, retry_until)
        except Exception as exc:  # noqa: BLE001 - a client bug is reported, not swallowed
            with self.lock:
                self.report.errors.append(f"client {self.index} crashed: {exc!r}")
        finally:
            if self.conn is not None:
                self.conn.close()


def run_load(*, base_url: str, key: str, tenants: list[str], clients: int = 50, seconds: float = 60.0,
             batch_size: int = 20, seed: int = 1, retry_grace: float = 60.0, progress=None) -> LoadReport:
    """Run `clients` concurrent clients for `seconds`; failed batches are retried up to `retry_grace` more."""
    report = LoadReport()
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + seconds
    retry_until = deadline + retry_grace
    workers = [_Client(i, base_url, key, tenants, report, lock, batch_size, seed) for i in range(clients)]
    threads = [threading.Thread(target=w.run, args=(deadline, retry_until), name=f"load-{w.index}", daemon=True)
               for w in workers]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        time.sleep(1.0)
        if progress:
            with lock:
                progress(f"  {time.monotonic() - started:5.1f}s  requests {report.requests}  "
                         f"events {report.events_sent}  statuses {dict(report.statuses)}")
    report.seconds = time.monotonic() - started
    return report


@dataclass
class LedgerVerdict:
    runs_sent: int
    runs_acknowledged: int
    runs_stored: int
    duplicates: int
    missing: list[str]
    unexpected: list[str]
    wrong_state: list[str]
    rollup_input_tokens: int
    expected_input_tokens: int
    rollups_match: bool

    @property
    def ok(self) -> bool:
        return (not self.missing and not self.unexpected and not self.wrong_state and self.duplicates == 0
                and self.rollups_match and self.rollup_input_tokens == self.expected_input_tokens)


def verify_ledger(*, database_url: str, report: LoadReport, ledger_check_ok: bool,
                  require_all_sent: bool = True) -> LedgerVerdict:
    """Read the drill's database directly (psycopg): each acknowledged run stored once, in the latest state
    acknowledged; with require_all_sent, every run sent at all (the load drill: nothing may fail)."""
    import psycopg

    with psycopg.connect(database_url.replace("postgres://", "postgresql://", 1)) as conn:
        rows = conn.execute(
            "SELECT openai_id, status, input_tokens, output_tokens FROM ledger_run WHERE openai_id LIKE %s",
            (f"{RUN_PREFIX}_%",),
        ).fetchall()
        (rollup_tokens,) = conn.execute(
            "SELECT COALESCE(SUM(r.input_tokens), 0) FROM ledger_dailyrollup r "
            "JOIN tenants_tenant t ON t.id = r.tenant_id WHERE t.slug LIKE %s", ("drill-%",)
        ).fetchone()
    stored: dict[str, tuple] = {}
    duplicates = 0
    for openai_id, status, tokens_in, tokens_out in rows:
        if openai_id in stored:
            duplicates += 1
        stored[openai_id] = (status, tokens_in, tokens_out)
    must_have = report.runs if require_all_sent else report.acknowledged
    missing = sorted(run_id for run_id in must_have if run_id not in stored)
    unexpected = sorted(run_id for run_id in stored if run_id not in report.runs)
    wrong_state = []
    for run_id, run in report.acknowledged.items():
        if run_id not in stored:
            continue
        status, tokens_in, tokens_out = stored[run_id]
        if run.acknowledged_status == "completed" and (status, tokens_in, tokens_out) != (
                "completed", run.input_tokens, run.output_tokens):
            wrong_state.append(f"{run_id}: stored {status}/{tokens_in}/{tokens_out}, acknowledged completed/"
                               f"{run.input_tokens}/{run.output_tokens}")
    # What the clients know: the tokens of every run acknowledged completed (in-progress runs carry none).
    expected_tokens = sum(run.input_tokens for run in report.acknowledged.values()
                          if run.acknowledged_status == "completed")
    return LedgerVerdict(
        runs_sent=len(report.runs), runs_acknowledged=len(report.acknowledged), runs_stored=len(stored),
        duplicates=duplicates, missing=missing, unexpected=unexpected, wrong_state=wrong_state,
        rollup_input_tokens=int(rollup_tokens), expected_input_tokens=int(expected_tokens),
        rollups_match=ledger_check_ok,
    )
