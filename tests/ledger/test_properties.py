"""Property and concurrency tests: whatever order, duplication or interleaving of reports, the rollups
and thread totals equal what the run rows say (ledger_check finds nothing) and each run holds its latest state."""

import datetime as dt
import threading
import uuid

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.ledger.models import STATUS_RANK, DailyRollup, Run
from apps.ledger.services import ingest_events, ledger_check
from tests import builders

WHEN = dt.datetime(2026, 11, 3, 8, 0, tzinfo=dt.UTC)
FINALS = ["completed", "failed", "cancelled", "expired", "incomplete"]


def _states(run_id: str, spec: dict) -> list[dict]:
    """The successive reports of one run; the last is terminal."""
    if spec["api"] == "responses":
        statuses = ["queued", "in_progress", spec["final"] if spec["final"] != "expired" else "failed"]
        return [builders.response(response_id=run_id, created_at=WHEN + dt.timedelta(hours=spec["hour"]),
                                  status=s, model=spec["model"], input_tokens=spec["tokens"],
                                  cached_tokens=spec["tokens"] // 4, output_tokens=spec["tokens"] // 10,
                                  reasoning_tokens=spec["tokens"] // 20, web_search_calls=1,
                                  conversation_id=f"conv_{run_id}" if spec["threaded"] else None,
                                  code_interpreter_calls=2 if s == "completed" else 0)
                for s in statuses]
    statuses = ["queued", "in_progress", "requires_action", spec["final"]]
    return [builders.assistants_run(run_id=run_id, created_at=WHEN + dt.timedelta(hours=spec["hour"]), status=s,
                                    model=spec["model"], prompt_tokens=spec["tokens"],
                                    completion_tokens=spec["tokens"] // 10, thread_id=f"thread_{spec['thread']}",
                                    code_interpreter=True)
            for s in statuses]


run_specs = st.fixed_dictionaries({
    "api": st.sampled_from(["assistants", "responses"]),
    "final": st.sampled_from(FINALS),
    "model": st.sampled_from(["gpt-5.4", "gpt-5-mini", "gpt-6.1-sol", "gpt-unpriced-1"]),
    "tokens": st.integers(0, 3_000_000),
    "hour": st.integers(0, 72),
    "thread": st.integers(0, 2),
    "threaded": st.booleans(),
    "tenant": st.sampled_from(["acme", "globex"]),
    "feature": st.sampled_from([None, "chat", "search"]),
})


@st.composite
def scenarios(draw):
    specs = draw(st.lists(run_specs, min_size=1, max_size=5))
    prefix = uuid.uuid4().hex[:8]
    reports = []
    for number, spec in enumerate(specs):
        run_id = f"run_{prefix}_{number}" if spec["api"] == "assistants" else f"resp_{prefix}_{number}"
        spec["thread"] = f"{prefix}_{spec['thread']}_{spec['tenant']}"
        states = _states(run_id, spec)
        # Each run is reported some subset of its states, the terminal one at least once, some twice.
        chosen = draw(st.lists(st.integers(0, len(states) - 1), max_size=6)) + [len(states) - 1]
        for index in chosen:
            event = {"tenant": spec["tenant"], "object": states[index]}
            if spec["feature"] and draw(st.booleans()):
                event["attribution"] = {"feature": spec["feature"], "user_id": f"user_{number}"}
            reports.append(event)
    order = draw(st.permutations(range(len(reports))))
    shuffled = [reports[i] for i in order]
    cuts = sorted(draw(st.lists(st.integers(0, len(shuffled)), max_size=4)))
    batches, start = [], 0
    for cut in cuts + [len(shuffled)]:
        batches.append(shuffled[start:cut])
        start = cut
    return specs, batches, prefix


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(scenario=scenarios())
def test_random_ingest_sequences_leave_the_ledger_consistent(tenant, other_tenant, scenario):
    specs, batches, prefix = scenario
    for batch in batches:
        result = ingest_events(events=batch)
        assert result.rejected == 0, [r.error for r in result.results if r.error]
    assert ledger_check() == []
    runs = {r.openai_id: r for r in Run.objects.unscoped().filter(openai_id__contains=prefix)}
    assert len(runs) == len(specs)
    for run in runs.values():
        assert STATUS_RANK[run.status] == 4, "the terminal state always wins"
        assert run.priced == (run.model != "gpt-unpriced-1")


def _ingest_in_thread(batch, errors):
    try:
        ingest_events(events=batch)
    except Exception as exc:  # surfaced by the assertion below
        errors.append(exc)
    finally:
        connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_carrying_the_same_runs_count_each_run_once(tenant, other_tenant):
    runs = [builders.assistants_run(run_id=f"run_conc_{i}", thread_id=f"thread_conc_{i % 7}", created_at=WHEN,
                                    prompt_tokens=1000 + i) for i in range(300)]
    early = [builders.assistants_run(run_id=f"run_conc_{i}", thread_id=f"thread_conc_{i % 7}", created_at=WHEN,
                                     status="in_progress") for i in range(300)]
    batches = [
        [{"tenant": "acme", "object": obj} for obj in runs],
        [{"tenant": "acme", "object": obj} for obj in reversed(runs)],
        [{"tenant": "acme", "object": obj} for obj in early],
        [{"tenant": "acme", "object": obj} for obj in runs[100:250] + early[:100]],
    ]
    for _round in range(3):
        errors: list[Exception] = []
        workers = [threading.Thread(target=_ingest_in_thread, args=(batch, errors)) for batch in batches]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert errors == []
    assert ledger_check() == []
    assert Run.objects.for_tenant(tenant).count() == 300
    assert set(Run.objects.for_tenant(tenant).values_list("status", flat=True)) == {"completed"}
    assert sum(DailyRollup.objects.for_tenant(tenant).values_list("runs", flat=True)) == 300
