"""The collector against a misbehaving OpenAI (the sandbox): 429 storms with Retry-After, 5xx, slow
answers and client timeouts. It backs off, completes on a later pass, and never stores a partial run.
(Sweeps under the same faults: tests/lifecycle/test_sweeps_sandbox.py; reconciliation:
tests/reconciliation/test_against_sandbox.py; `manage.py drill openai-faults` runs all of them.)"""

from apps.ledger.collector import collect_runs_refresh
from apps.ledger.models import Run
from apps.ledger.services import ingest_events, ledger_check
from apps.provider.client import OpenAIProvider


def _start_runs(openai_client, count):
    assistant = openai_client.beta.assistants.create(model="gpt-5.4", tools=[])
    runs = []
    for _ in range(count):
        thread = openai_client.beta.threads.create()
        runs.append(openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id))
    ingest_events(events=[{"tenant": "acme", "object": run.to_dict()} for run in runs])
    return [run.id for run in runs]


def _snapshot(tenant):
    return {r["openai_id"]: r for r in Run.objects.for_tenant(tenant).values(
        "openai_id", "status", "input_tokens", "output_tokens", "cost_total_usd", "priced")}


def _provider(sandbox, timeout=10.0):
    return OpenAIProvider(base_url=sandbox.base_url, api_key=sandbox.api_key, admin_key=sandbox.admin_key,
                          project_id="proj_default", backoff_base=0.01, backoff_cap=0.05, retry_after_cap=0.05,
                          rate_limiter=None, timeout=timeout, max_attempts=4)


def test_collector_backs_off_through_429s_and_5xx_and_completes_every_run(tenant, sandbox, openai_client, provider):
    ids = _start_runs(openai_client, 8)
    sandbox.advance(30)
    sandbox.faults.add("rate_limit", path="/runs/", times=6, retry_after=0.01)
    sandbox.faults.add("server_error", path="/runs/", times=3, status=502)
    sandbox.faults.add("latency", path="/runs/", latency_ms=50, fraction=0.5)
    passes = 0
    while Run.objects.for_tenant(tenant).exclude(status="completed").exists() and passes < 6:
        collect_runs_refresh(provider=_provider(sandbox))
        passes += 1
    stored = _snapshot(tenant)
    assert set(stored) == set(ids)
    assert all(r["status"] == "completed" and r["input_tokens"] > 0 and r["priced"] for r in stored.values())
    assert ledger_check() == []


def test_timeouts_and_a_500_storm_leave_runs_exactly_as_they_were(tenant, sandbox, openai_client, provider):
    _start_runs(openai_client, 4)
    before = _snapshot(tenant)
    sandbox.advance(30)
    # Every answer is slower than the client waits, then every answer is a 500: nothing may change.
    sandbox.faults.add("latency", path="/runs/", latency_ms=400)
    result = collect_runs_refresh(provider=_provider(sandbox, timeout=0.1))
    assert result.errors > 0 and _snapshot(tenant) == before
    sandbox.faults.clear_faults()
    sandbox.faults.add("server_error", path="/runs/")
    collect_runs_refresh(provider=_provider(sandbox))
    assert _snapshot(tenant) == before
    assert ledger_check() == []
    # The storm passes: the next pass completes them.
    sandbox.faults.clear_faults()
    collect_runs_refresh(provider=_provider(sandbox))
    assert all(r["status"] == "completed" for r in _snapshot(tenant).values())
