"""The ingest fast path (run_fields_fast) against the detailed normalizers: for any object it accepts, the
same ledger fields; for anything doubtful it declines (None) so the detailed path can answer. Also the
thread rows the batch now updates at its end rather than upserting at its start."""

import copy
import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.benchmarks.generator import Traffic
from apps.ledger.models import Thread
from apps.ledger.services import ingest_events, ledger_check
from apps.provider.normalizers import (
    NormalizationError,
    apply_attribution,
    normalize_run_object,
    run_fields_fast,
)
from tests import builders

WHEN = dt.datetime(2026, 11, 10, 9, 0, 0, tzinfo=dt.UTC)
FIELDS = (
    "openai_id", "api", "thread_openai_id", "assistant_id", "prompt_id", "model", "service_tier", "status",
    "created_at", "started_at", "completed_at", "failed_at", "cancelled_at", "expires_at", "error_code",
    "incomplete_reason", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens", "code_interpreter_sessions", "file_search_calls", "web_search_calls", "function_calls",
    "user_id", "session_id", "feature", "metadata", "metadata_tenant",
)

BASES = [
    builders.assistants_run(run_id="run_a", created_at=WHEN, metadata={"tenant": "acme", "user_id": "u1"},
                            code_interpreter=True),
    builders.assistants_run(run_id="run_b", created_at=WHEN, status="in_progress"),
    builders.assistants_run(run_id="run_c", created_at=WHEN, status="failed", file_search=True),
    builders.response(response_id="resp_a", created_at=WHEN, conversation_id="conv_1", code_interpreter_calls=2,
                      web_search_calls=1, function_calls=1, file_search_calls=1, cached_tokens=10,
                      reasoning_tokens=5, metadata={"feature": "chat"}),
    builders.response(response_id="resp_b", created_at=WHEN, status="in_progress"),
]
PATHS = [
    ("id",), ("object",), ("model",), ("status",), ("created_at",), ("thread_id",), ("assistant_id",),
    ("started_at",), ("completed_at",), ("failed_at",), ("cancelled_at",), ("expires_at",), ("last_error",),
    ("incomplete_details",), ("error",), ("metadata",), ("metadata", "user_id"), ("metadata", "tenant"),
    ("metadata", "feature"), ("usage",), ("usage", "prompt_tokens"), ("usage", "completion_tokens"),
    ("usage", "input_tokens"), ("usage", "output_tokens"), ("usage", "input_tokens_details"),
    ("usage", "input_tokens_details", "cached_tokens"), ("usage", "output_tokens_details"),
    ("usage", "prompt_tokens_details"), ("tools",), ("output",), ("conversation",), ("prompt",),
    ("service_tier",), ("tool_usage",), ("tool_usage", "web_search"),
]
ODD_VALUES = [
    None, "", " ", "x" * 101, "x" * 17, "ok", -1, 0, 1, 1.5, 2.0, float("inf"), True, False, [], {}, 10**13,
    10**11, 32_503_680_001, 1_764_000_000, "\x00", "\ud800", {"id": "c_1"}, {"id": 5}, {"code": "boom"},
    {"code": None}, {"reason": "max_tokens"}, [{"type": "code_interpreter"}], ["x"], [{"type": "web_search_call"}],
    {"num_requests": 3}, {"web_search": {"num_requests": 4}}, {"cached_tokens": 10**6}, {"k": [1]},
    {"reasoning_tokens": 10**6},
]
VALUES = st.sampled_from(ODD_VALUES)
ATTRIBUTION = st.one_of(st.none(), st.just({"feature": "f"}), st.just({"user_id": 7}), st.just([]),
                        st.just({"session_id": "s" * 201}), st.just({"user_id": True}))


def _detailed(obj, attribution):
    try:
        record = normalize_run_object(obj)
        apply_attribution(record, attribution)
    except (NormalizationError, TypeError, ValueError, AttributeError, KeyError, OverflowError):
        return None
    return {name: getattr(record, name) for name in FIELDS}


def _set(obj, path, value):
    target = obj
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value


def test_fast_path_takes_realistic_objects_with_the_detailed_fields():
    traffic = Traffic(runs=300, tenant_slugs=["t1", "t2"])
    events = [event for batch in traffic.batches(100) for event in batch]
    assert len(events) >= 300
    for event in [*events, *({"object": obj} for obj in BASES)]:
        fast = run_fields_fast(event["object"], attribution=event.get("attribution"))
        assert fast is not None, event["object"]["id"]
        assert fast == _detailed(event["object"], event.get("attribution"))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(BASES), changes=st.lists(st.tuples(st.sampled_from(PATHS), VALUES), max_size=3),
       attribution=ATTRIBUTION)
def test_fast_path_never_accepts_what_the_detailed_path_refuses_nor_differs(base, changes, attribution):
    obj = copy.deepcopy(base)
    for path, value in changes:
        _set(obj, path, copy.deepcopy(value))
    fast = run_fields_fast(obj, attribution=attribution)
    if fast is not None:
        assert fast == _detailed(obj, attribution)


def test_every_single_odd_field_is_either_declined_or_read_the_same():
    for base in BASES:
        for path in PATHS:
            for value in ODD_VALUES:
                for attribution in (None, {"user_id": 7}, {"feature": "f" * 101}):
                    obj = copy.deepcopy(base)
                    _set(obj, path, copy.deepcopy(value))
                    fast = run_fields_fast(obj, attribution=attribution)
                    if fast is not None:
                        assert fast == _detailed(obj, attribution), (path, value, attribution)


def test_run_steps_go_to_the_detailed_path():
    assert run_fields_fast(BASES[0], steps=[]) is None


@pytest.mark.django_db
def test_existing_threads_keep_earliest_creation_latest_activity_and_non_empty_metadata(tenant):
    # Thread rows are no longer upserted at the start of a batch but updated at its end: same rules.
    later = WHEN + dt.timedelta(hours=5)
    ingest_events(events=[{"tenant": "acme", "object": builders.thread(thread_id="thread_k", created_at=later,
                                                                       metadata={"a": "1"})}])
    ingest_events(events=[
        {"tenant": "acme", "object": builders.assistants_run(run_id="run_k1", thread_id="thread_k", created_at=WHEN)},
        {"tenant": "acme", "object": builders.thread(thread_id="thread_k", created_at=later)},
    ])
    row = Thread.objects.for_tenant(tenant).get(openai_id="thread_k")
    assert row.created_at == WHEN and row.metadata == {"a": "1"} and row.run_count == 1
    assert row.last_activity_at == later
    ingest_events(events=[
        {"tenant": "acme", "object": builders.assistants_run(run_id="run_k2", thread_id="thread_k",
                                                             created_at=later + dt.timedelta(hours=1))},
        {"tenant": "acme", "object": builders.thread(thread_id="thread_k", created_at=later, metadata={"b": "2"})},
    ])
    row = Thread.objects.for_tenant(tenant).get(openai_id="thread_k")
    assert row.created_at == WHEN and row.metadata == {"b": "2"} and row.run_count == 2
    assert row.last_activity_at == later + dt.timedelta(hours=1, seconds=8)
    assert ledger_check() == []
