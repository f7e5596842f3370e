"""Normalizers: raw OpenAI objects into ledger fields, and errors that name the field."""

import datetime as dt

import pytest

from apps.provider.normalizers import (
    MAX_STORED_DEPTH,
    NormalizationError,
    apply_attribution,
    normalize_assistants_run,
    normalize_container,
    normalize_conversation,
    normalize_file,
    normalize_resource,
    normalize_response,
    normalize_run_object,
    normalize_thread,
    normalize_vector_store,
    run_fields_fast,
)
from tests import builders

WHEN = dt.datetime(2026, 11, 10, 9, 0, 0, tzinfo=dt.UTC)


def test_assistants_run_fields_and_timestamps():
    obj = builders.assistants_run(run_id="run_1", thread_id="thread_9", created_at=WHEN, status="failed",
                                  prompt_tokens=1200, completion_tokens=80, metadata={"user_id": "u", "feature": "f",
                                                                                      "tenant": "acme"})
    record = normalize_assistants_run(obj)
    assert (record.openai_id, record.api, record.thread_openai_id, record.thread_kind) == (
        "run_1", "assistants", "thread_9", "thread")
    assert (record.input_tokens, record.output_tokens, record.status, record.error_code) == (1200, 80, "failed",
                                                                                              "server_error")
    assert record.created_at == WHEN and record.failed_at == WHEN + dt.timedelta(seconds=8)
    assert record.started_at == WHEN + dt.timedelta(seconds=1) and record.completed_at is None
    assert (record.user_id, record.feature, record.metadata_tenant) == ("u", "f", "acme")


def test_assistants_run_in_progress_has_no_usage_and_an_expiry():
    record = normalize_assistants_run(builders.assistants_run(created_at=WHEN, status="in_progress",
                                                              code_interpreter=True))
    assert not record.has_usage and record.input_tokens == 0
    assert record.expires_at == WHEN + dt.timedelta(minutes=10)
    assert record.code_interpreter_sessions == 0  # not terminal: no session counted yet


def test_assistants_code_interpreter_counts_one_session_per_run():
    record = normalize_assistants_run(builders.assistants_run(created_at=WHEN, code_interpreter=True))
    assert record.code_interpreter_sessions == 1


def test_assistants_steps_give_exact_tool_counts():
    steps = [
        {"object": "thread.run.step", "step_details": {"type": "tool_calls", "tool_calls": [
            {"id": "c1", "type": "code_interpreter", "code_interpreter": {"input": "1", "outputs": []}},
            {"id": "c2", "type": "code_interpreter", "code_interpreter": {"input": "2", "outputs": []}},
            {"id": "f1", "type": "file_search", "file_search": {}},
            {"id": "fn", "type": "function", "function": {"name": "x", "arguments": "{}", "output": None}},
        ]}},
        {"object": "thread.run.step", "step_details": {"type": "message_creation",
                                                       "message_creation": {"message_id": "m"}}},
    ]
    record = normalize_assistants_run(builders.assistants_run(created_at=WHEN, code_interpreter=True,
                                                              file_search=True), steps=steps)
    assert (record.code_interpreter_sessions, record.file_search_calls, record.function_calls) == (1, 1, 1)


def test_extra_usage_details_on_runs_are_read():
    obj = builders.assistants_run(created_at=WHEN, prompt_tokens=1000, completion_tokens=300)
    obj["usage"]["prompt_tokens_details"] = {"cached_tokens": 400}
    obj["usage"]["completion_tokens_details"] = {"reasoning_tokens": 200}
    record = normalize_assistants_run(obj)
    assert (record.cached_input_tokens, record.reasoning_tokens) == (400, 200)


def test_response_tokens_tools_and_fractional_created_at():
    obj = builders.response(created_at=WHEN + dt.timedelta(microseconds=250000), input_tokens=5000, cached_tokens=1000,
                            output_tokens=700, reasoning_tokens=300, conversation_id="conv_1", code_interpreter_calls=3,
                            file_search_calls=2, web_search_calls=1, function_calls=4, service_tier="flex")
    obj["output"][1]["container_id"] = "cntr_other"
    obj["usage"]["input_tokens_details"]["cache_write_tokens"] = 500
    record = normalize_response(obj)
    assert record.created_at == WHEN + dt.timedelta(microseconds=250000)
    assert (record.input_tokens, record.cached_input_tokens, record.cache_write_tokens) == (5000, 1000, 500)
    assert (record.output_tokens, record.reasoning_tokens) == (700, 300)
    assert record.code_interpreter_sessions == 2  # two distinct containers
    assert (record.file_search_calls, record.web_search_calls, record.function_calls) == (2, 1, 4)
    assert (record.thread_openai_id, record.thread_kind, record.service_tier) == ("conv_1", "conversation", "flex")


def test_response_incomplete_and_failed_reasons():
    assert normalize_response(builders.response(created_at=WHEN, status="incomplete")).incomplete_reason == \
        "max_output_tokens"
    assert normalize_response(builders.response(created_at=WHEN, status="failed")).error_code == "server_error"


@pytest.mark.parametrize(("mutate", "field", "message"), [
    (lambda o: o["usage"].update(prompt_tokens=-1), "object.usage.prompt_tokens", "must be a whole number from 0 to 10**12"),
    (lambda o: o["usage"].update(prompt_tokens="12"), "object.usage.prompt_tokens", "must be a whole number from 0 to 10**12"),
    # A usage object without its own counts would be billed nothing without a word.
    (lambda o: o["usage"].update(prompt_tokens=None), "object.usage.prompt_tokens",
     "is required in usage: a whole number from 0 to 10**12"),
    (lambda o: o["usage"].pop("completion_tokens"), "object.usage.completion_tokens",
     "is required in usage: a whole number from 0 to 10**12"),
    (lambda o: o.update(status="running"), "object.status", None),
    (lambda o: o.pop("id"), "object.id", "required"),
    (lambda o: o.update(created_at=1.5), "object.created_at", "must be Unix seconds (an integer)"),
    (lambda o: o.update(created_at=-3), "object.created_at", None),
    (lambda o: o.update(model=""), "object.model", None),
    (lambda o: o.update(metadata=[1]), "object.metadata", "must be an object"),
    (lambda o: o.update(thread_id=None), "object.thread_id", "required"),
    (lambda o: o.update(usage={"prompt_tokens": 5, "completion_tokens": 1,
                               "prompt_tokens_details": {"cached_tokens": 9}}), "object.usage.prompt_tokens", None),
    # Stored as text: a list or a number would be written as its Python repr.
    (lambda o: o.update(status="failed", last_error={"code": ["server_error"], "message": "x"}),
     "object.last_error.code", "must be a string"),
    (lambda o: o.update(status="incomplete", incomplete_details={"reason": 7}),
     "object.incomplete_details.reason", "must be a string"),
])
def test_invalid_runs_name_the_field(mutate, field, message):
    obj = builders.assistants_run(created_at=WHEN)
    mutate(obj)
    with pytest.raises(NormalizationError) as error:
        normalize_assistants_run(obj)
    assert error.value.field == field
    if message:
        assert str(error.value) == f"{field}: {message}"


def test_dispatch_by_object_type_and_unknown_types():
    assert normalize_run_object(builders.response(created_at=WHEN)).api == "responses"
    with pytest.raises(NormalizationError, match="object.object"):
        normalize_run_object({"object": "chat.completion"})
    with pytest.raises(NormalizationError, match="object.object"):
        normalize_resource({"object": ["list"]})


def test_attribution_overrides_metadata_and_is_validated():
    record = normalize_response(builders.response(created_at=WHEN, metadata={"user_id": "meta"}))
    apply_attribution(record, {"user_id": "explicit", "feature": "f"})
    assert (record.user_id, record.feature) == ("explicit", "f")
    with pytest.raises(NormalizationError, match="attribution.session_id"):
        apply_attribution(record, {"session_id": {"x": 1}})
    with pytest.raises(NormalizationError, match="attribution.feature: must be at most 100"):
        apply_attribution(record, {"feature": "x" * 101})


def test_resource_normalizers():
    thread = normalize_thread(builders.thread(thread_id="thread_r", created_at=WHEN, metadata={"tenant": "acme"}))
    assert (thread.kind, thread.metadata_tenant, thread.created_at) == ("thread", "acme", WHEN)
    conversation = normalize_conversation(builders.conversation(conversation_id="conv_r", created_at=WHEN))
    assert conversation.kind == "conversation" and conversation.last_active_at == WHEN
    store = normalize_vector_store(builders.vector_store(created_at=WHEN, usage_bytes=2048,
                                                         last_active_at=WHEN + dt.timedelta(days=1)))
    assert (store.usage_bytes, store.last_active_at, store.status) == (2048, WHEN + dt.timedelta(days=1), "completed")
    file = normalize_file(builders.file(created_at=WHEN, size_bytes=99, purpose="assistants", filename="a.pdf"))
    assert (file.usage_bytes, file.purpose, file.name) == (99, "assistants", "a.pdf")
    container = normalize_container(builders.container(created_at=WHEN, status="running"))
    assert (container.kind, container.status) == ("container", "running")
    with pytest.raises(NormalizationError) as error:
        normalize_vector_store({**builders.vector_store(created_at=WHEN), "usage_bytes": -1})
    assert error.value.field == "object.usage_bytes"


@pytest.mark.parametrize("key", ["input_tokens", "output_tokens"])
def test_a_response_whose_usage_lacks_its_own_counts_names_the_field(key):
    obj = builders.response(created_at=WHEN)
    obj["usage"][key] = None
    with pytest.raises(NormalizationError) as error:
        normalize_response(obj)
    assert error.value.field == f"object.usage.{key}"


def test_usage_detail_counts_may_be_absent_or_null():
    obj = builders.response(created_at=WHEN)
    obj["usage"]["input_tokens_details"] = {"cached_tokens": None}
    obj["usage"].pop("output_tokens_details", None)
    record = normalize_response(obj)
    assert (record.cached_input_tokens, record.reasoning_tokens) == (0, 0)
    assert record.input_tokens == obj["usage"]["input_tokens"]


def _nested(depth: int):
    """A list `depth` levels deep, built without recursion."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


RESOURCES = {
    "thread": lambda: builders.thread(created_at=WHEN),
    "conversation": lambda: builders.conversation(created_at=WHEN),
    "vector_store": lambda: builders.vector_store(created_at=WHEN),
    "file": lambda: builders.file(created_at=WHEN),
    "container": lambda: builders.container(created_at=WHEN),
}


@pytest.mark.parametrize("kind", RESOURCES)
def test_a_resource_nested_deeper_than_the_cap_is_refused_naming_its_field_not_a_recursion_error(kind):
    # 600 levels: orjson reads up to 1,024, Python's recursion gives out near 1,000 frames (500 levels at two each).
    obj = RESOURCES[kind]() | {"chunking_strategy": _nested(600)}
    with pytest.raises(NormalizationError) as error:
        normalize_resource(obj)
    assert (error.value.field, error.value.message) == (
        "object.chunking_strategy", f"must not be nested more than {MAX_STORED_DEPTH} levels deep")


def test_a_resource_nested_right_up_to_the_cap_is_accepted():
    # The object itself is the first level: MAX_STORED_DEPTH - 1 more fit beneath it, one more does not.
    fits = builders.vector_store(created_at=WHEN) | {"chunking_strategy": _nested(MAX_STORED_DEPTH - 1)}
    assert normalize_resource(fits).kind == "vector_store"
    too_deep = builders.vector_store(created_at=WHEN) | {"chunking_strategy": _nested(MAX_STORED_DEPTH)}
    with pytest.raises(NormalizationError, match="^object.chunking_strategy: must not be nested"):
        normalize_resource(too_deep)


@pytest.mark.parametrize(("kind", "extra", "field"), [
    ("vector_store", {"metadata": {"size": float("inf")}}, "object.metadata.size"),
    ("thread", {"metadata": {"score": float("-inf")}}, "object.metadata.score"),
    ("conversation", {"items": [{"score": 1.5}, {"score": float("inf")}]}, "object.items.1.score"),
    ("file", {"status_details": {"progress": [0.5, float("inf")]}}, "object.status_details.progress.1"),
    ("container", {"memory_limit": float("nan")}, "object.memory_limit"),
], ids=["store-metadata", "thread-metadata", "conversation-list", "file-nested", "container-nan"])
def test_a_number_no_float_holds_in_a_resource_is_refused_naming_where_it_is(kind, extra, field):
    # JSON's 1e400 reads as inf; no JSON column stores it (PostgreSQL refuses it, SQLite's JSON_VALID check too).
    with pytest.raises(NormalizationError) as error:
        normalize_resource(RESOURCES[kind]() | extra)
    assert (error.value.field, error.value.message) == (field, "must be a finite number (this one does not fit a float)")


@pytest.mark.parametrize("obj", [builders.response(created_at=WHEN, metadata={"score": float("inf")}),
                                 builders.assistants_run(created_at=WHEN, metadata={"score": float("inf")})],
                         ids=["response", "assistants-run"])
def test_a_number_no_float_holds_in_run_metadata_is_refused_naming_the_key(obj):
    assert run_fields_fast(obj) is None  # the fast path leaves it to the detailed one, which names it
    with pytest.raises(NormalizationError) as error:
        normalize_run_object(obj)
    assert error.value.field == "object.metadata.score"
    assert run_fields_fast(builders.response(created_at=WHEN, metadata={"score": 0.5}))["metadata"] == {"score": 0.5}


@pytest.mark.parametrize("normalizer", [normalize_vector_store, normalize_container])
def test_a_status_longer_than_its_20_character_column_is_refused_naming_it(normalizer):
    kind = normalizer.__name__.removeprefix("normalize_")
    assert normalizer(RESOURCES[kind]() | {"status": "s" * 20}).status == "s" * 20
    with pytest.raises(NormalizationError) as error:
        normalizer(RESOURCES[kind]() | {"status": "s" * 21})
    assert (error.value.field, error.value.message) == ("object.status", "must be at most 20 characters")
