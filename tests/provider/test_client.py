"""OpenAIProvider against the sandbox: plain dicts, full pagination, retries with backoff and
Retry-After, typed errors, deletes that tell "deleted" from "already gone", and the shared rate limit."""

from __future__ import annotations

import random
import threading
import warnings

import pytest
from django.core.cache import cache

from apps.provider.client import (
    DeleteOutcome,
    OpenAIProvider,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderUnavailable,
    is_not_found,
    is_transient,
    retry_after_seconds,
)
from apps.provider.ratelimit import SharedRateLimiter

warnings.filterwarnings("ignore", category=DeprecationWarning)


def _thread_with_runs(openai_client, sandbox, runs: int) -> tuple[str, list[str]]:
    assistant = openai_client.beta.assistants.create(model="gpt-5.4")
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run_ids = []
    for _ in range(runs):
        run = openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
        sandbox.advance(5)
        run_ids.append(run.id)
    return thread.id, run_ids


class RecordingSleep:
    def __init__(self):
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def _provider(sandbox, **options) -> OpenAIProvider:
    options.setdefault("rate_limiter", None)
    return OpenAIProvider(base_url=sandbox.base_url, api_key=sandbox.api_key, admin_key=sandbox.admin_key,
                          project_id="proj_default", **options)


def test_retrieve_run_returns_a_plain_dict_with_the_raw_fields(provider, openai_client, sandbox):
    thread_id, (run_id,) = _thread_with_runs(openai_client, sandbox, 1)
    run = provider.retrieve_run(thread_id, run_id)
    assert type(run) is dict
    assert run["id"] == run_id and run["status"] == "completed"
    assert run["usage"]["total_tokens"] == run["usage"]["prompt_tokens"] + run["usage"]["completion_tokens"]


def test_list_thread_runs_follows_every_page(provider, openai_client, sandbox):
    thread_id, run_ids = _thread_with_runs(openai_client, sandbox, 105)
    listed = list(provider.list_thread_runs(thread_id))
    assert sorted(run["id"] for run in listed) == sorted(run_ids)
    assert len(listed) == 105


def test_delete_thread_reports_deleted_then_already_gone(provider, openai_client):
    thread = openai_client.beta.threads.create()
    assert provider.delete_thread(thread.id) is DeleteOutcome.DELETED
    assert provider.delete_thread(thread.id) is DeleteOutcome.ALREADY_GONE
    with pytest.raises(ProviderNotFound) as raised:
        provider.retrieve_thread(thread.id)
    assert raised.value.status_code == 404 and raised.value.request_id.startswith("req_")


def test_every_delete_distinguishes_already_gone(provider, openai_client):
    conversation = openai_client.conversations.create()
    store = openai_client.vector_stores.create(name="docs")
    container = openai_client.containers.create(name="ci")
    uploaded = openai_client.files.create(file=("notes.txt", b"hello"), purpose="assistants")
    for delete, object_id in ((provider.delete_conversation, conversation.id),
                              (provider.delete_vector_store, store.id),
                              (provider.delete_container, container.id),
                              (provider.delete_file, uploaded.id)):
        assert delete(object_id) == "deleted"
        assert delete(object_id) == "already_gone"


def test_a_files_attachment_to_a_store_is_found_or_not_found(provider, openai_client):
    attached = openai_client.files.create(file=("a.txt", b"hello"), purpose="assistants")
    loose = openai_client.files.create(file=("b.txt", b"hello"), purpose="assistants")
    store = openai_client.vector_stores.create(name="docs", file_ids=[attached.id])
    assert provider.retrieve_vector_store_file(store.id, attached.id)["id"] == attached.id
    with pytest.raises(ProviderNotFound):
        provider.retrieve_vector_store_file(store.id, loose.id)


def _status_error(status: int, headers: dict | None = None):
    import httpx2 as httpx  # the HTTP client the openai SDK (3.x) builds on
    import openai

    response = httpx.Response(status, headers=headers,
                              request=httpx.Request("DELETE", "https://api.openai.com/v1/vector_stores/vs_1"))
    return openai.APIStatusError(f"status {status}", response=response, body=None)


@pytest.mark.parametrize(("first_failure", "outcome"), [
    (503, "deleted"),  # OpenAI may have deleted it before failing: the 404 is for our own deletion
    (429, "already_gone"),  # a refusal: the 404 means someone else deleted it
])
def test_a_404_after_a_failed_delete_attempt_reads_as_ours_only_when_the_attempt_may_have_acted(
        sandbox, first_failure, outcome):
    provider = _provider(sandbox, sleep=lambda seconds: None)
    answers = [_status_error(first_failure), _status_error(404)]

    def delete():
        raise answers.pop(0)

    assert provider._delete("delete_vector_store", delete) == outcome


def test_a_delete_answered_with_an_unreadable_success_is_deleted(sandbox):
    # OpenAI carried the delete out and said so with a 2xx whose JSON body cannot be read (a proxy's page, a
    # truncated body): the unmodified SDK raises while reading it. Taken as a failure, the sweep recorded the
    # item failed, and the deletion had no audit record of its own.
    import httpx2  # the HTTP library the openai SDK is built on (requirements.lock)
    import openai

    def answer(request):
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=b"<html>deleted</html>")

    client = openai.OpenAI(api_key="sk-test", base_url="http://openai.invalid/v1", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(answer)))
    provider = _provider(sandbox, sleep=lambda seconds: None)
    assert provider._delete("delete_vector_store", lambda: client.vector_stores.delete("vs_1")) == "deleted"
    assert provider.attempts_made == 1


def test_a_delete_openai_answers_with_deleted_false_is_not_a_deletion(sandbox):
    # OpenAI's answer to a delete says whether it deleted the object. Ignored, a `deleted: false` was recorded as
    # a deletion: the audit said the conversation was deleted and the ledger stopped tracking it.
    import httpx2  # the HTTP library the openai SDK is built on (requirements.lock)
    import openai

    def answer(request):
        return httpx2.Response(200, json={"id": "conv_1", "object": "conversation.deleted", "deleted": False})

    client = openai.OpenAI(api_key="sk-test", base_url="http://openai.invalid/v1", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(answer)))
    provider = _provider(sandbox, sleep=lambda seconds: None)
    with pytest.raises(ProviderError, match="deleted: false") as raised:
        provider._delete("delete_conversation", lambda: client.conversations.delete("conv_1"))
    assert not is_not_found(raised.value) and not is_transient(raised.value)
    assert provider.attempts_made == 1


def test_429_is_retried_after_the_servers_retry_after(sandbox, openai_client):
    sleep = RecordingSleep()
    provider = _provider(sandbox, sleep=sleep)
    thread = openai_client.beta.threads.create()
    sandbox.faults.rate_limit(path=r"^/v1/threads/", times=2, retry_after=3)
    assert provider.retrieve_thread(thread.id)["id"] == thread.id
    assert sleep.calls == [3.0, 3.0]
    assert provider.retries_made == 2


def test_retry_after_ms_wins_and_is_capped(sandbox, openai_client):
    sleep = RecordingSleep()
    provider = _provider(sandbox, sleep=sleep, retry_after_cap=2.0)
    thread = openai_client.beta.threads.create()
    sandbox.faults.rate_limit(path=r"^/v1/threads/", times=1, retry_after=None, retry_after_ms=250)
    sandbox.faults.rate_limit(path=r"^/v1/threads/", times=1, retry_after=90)
    provider.retrieve_thread(thread.id)
    assert sleep.calls == [0.25, 2.0]


def test_a_retry_after_of_zero_is_no_hint_and_the_retries_back_off(sandbox, openai_client):
    # Taken as a wait of 0 s, all five attempts went at once and the call gave up within milliseconds.
    sleep = RecordingSleep()
    provider = _provider(sandbox, sleep=sleep, rng=random.Random(7), backoff_base=0.5, backoff_cap=8.0)
    thread = openai_client.beta.threads.create()
    sandbox.faults.rate_limit(path=r"^/v1/threads/", times=1, retry_after=0)
    sandbox.faults.rate_limit(path=r"^/v1/threads/", times=1, retry_after=None, retry_after_ms=0)
    assert provider.retrieve_thread(thread.id)["id"] == thread.id
    backoff = random.Random(7)
    assert sleep.calls == [backoff.uniform(0, 0.5), backoff.uniform(0, 1.0)]


def test_5xx_is_retried_with_full_jitter_backoff(sandbox, openai_client):
    sleep = RecordingSleep()
    provider = _provider(sandbox, sleep=sleep, backoff_base=0.5, backoff_cap=8.0)
    store = openai_client.vector_stores.create(name="docs")
    sandbox.faults.server_error(path=r"^/v1/vector_stores/", times=3, status=503)
    assert provider.retrieve_vector_store(store.id)["id"] == store.id
    assert len(sleep.calls) == 3
    for attempt, delay in enumerate(sleep.calls):
        assert 0 <= delay <= min(8.0, 0.5 * 2 ** attempt)


def test_persistent_429_raises_rate_limited_after_the_last_attempt(sandbox, openai_client):
    sleep = RecordingSleep()
    provider = _provider(sandbox, sleep=sleep, max_attempts=3)
    sandbox.faults.rate_limit(path=r"^/v1/files", times=None, retry_after=1)
    with pytest.raises(ProviderRateLimited) as raised:
        list(provider.list_files())
    assert raised.value.attempts == 3 and raised.value.status_code == 429
    assert sleep.calls == [1.0, 1.0]


def test_persistent_5xx_raises_unavailable(sandbox):
    provider = _provider(sandbox, sleep=RecordingSleep(), max_attempts=2)
    sandbox.faults.server_error(path=r"^/v1/containers", times=None, status=502)
    with pytest.raises(ProviderUnavailable) as raised:
        list(provider.list_containers())
    assert raised.value.status_code == 502


def test_openais_x_should_retry_header_decides_whether_a_failure_is_retried(sandbox):
    # The SDK obeys OpenAI's `x-should-retry` over its status rules; with the SDK's retries off, the provider
    # retried an answer OpenAI said not to retry (a worker sleeping through every backoff to be told the same).
    import httpx2  # the HTTP library the openai SDK is built on (requirements.lock)
    import openai

    answers = [
        httpx2.Response(429, headers={"x-should-retry": "false", "retry-after": "1"},
                        json={"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota",
                                        "param": None, "code": "insufficient_quota"}}),
        httpx2.Response(400, headers={"x-should-retry": "true"},
                        json={"error": {"message": "Try again.", "type": "invalid_request_error", "param": None,
                                        "code": None}}),
        httpx2.Response(200, json={"id": "thread_1", "object": "thread", "created_at": 1764000000, "metadata": {},
                                   "tool_resources": {}}),
    ]
    client = openai.OpenAI(api_key="sk-test", base_url="http://openai.invalid/v1", max_retries=0,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(lambda request: answers.pop(0))))
    sleep = RecordingSleep()
    provider = _provider(sandbox, sleep=sleep)
    retrieve = lambda: client.beta.threads.retrieve("thread_1")  # noqa: E731
    with pytest.raises(ProviderRateLimited, match="quota"):
        provider._call("retrieve_thread", retrieve)
    assert (provider.attempts_made, sleep.calls) == (1, [])
    assert provider._call("retrieve_thread", retrieve).id == "thread_1"
    assert provider.attempts_made == 3 and len(sleep.calls) == 1


def test_connection_refused_raises_unavailable_after_retries():
    sleep = RecordingSleep()
    provider = OpenAIProvider(base_url="http://127.0.0.1:9/v1", api_key="sk-x", rate_limiter=None, sleep=sleep,
                              max_attempts=3, backoff_base=0.01, timeout=2)
    with pytest.raises(ProviderUnavailable) as refused:
        provider.retrieve_thread("thread_x")
    assert len(sleep.calls) == 2
    # Where it looked and what to check: a sandbox on another port was the usual cause.
    assert "could not reach OpenAI at http://127.0.0.1:9/v1/" in str(refused.value)
    assert str(refused.value).endswith("check OPENAI_BASE_URL")


def test_404_is_not_retried(sandbox):
    sleep = RecordingSleep()
    provider = _provider(sandbox, sleep=sleep)
    with pytest.raises(ProviderNotFound):
        provider.retrieve_response("resp_missing")
    assert sleep.calls == [] and provider.attempts_made == 1


def test_a_404_for_a_path_openai_does_not_serve_is_not_an_object_gone(sandbox, openai_client):
    # A base URL without /v1: OpenAI answers 404 "Invalid URL (GET /conversations/…)" for every object. Read as
    # "not found", a live conversation was "already gone" and a delete of it reported so.
    conversation = openai_client.conversations.create()
    wrong = OpenAIProvider(base_url=sandbox.url, api_key=sandbox.api_key, rate_limiter=None, sleep=RecordingSleep())
    with pytest.raises(ProviderBadRequest, match="Invalid URL.*OPENAI_BASE_URL") as raised:
        wrong.retrieve_conversation(conversation.id)
    assert not is_not_found(raised.value) and not is_transient(raised.value)
    with pytest.raises(ProviderBadRequest):
        wrong.delete_conversation(conversation.id)
    assert openai_client.conversations.retrieve(conversation.id).id == conversation.id


def test_an_assistants_path_openai_no_longer_serves_is_a_thread_gone(sandbox, openai_client):
    # The Assistants API was sunset on 2026-08-26 and OpenAI answers 404 from every one of its endpoints: a
    # thread there cannot be reached or deleted any more. Failed instead of gone, every old thread would fail
    # every nightly sweep for ever. (Only the path matters here: the sandbox answers a base URL without /v1 so.)
    thread = openai_client.beta.threads.create()
    wrong = OpenAIProvider(base_url=sandbox.url, api_key=sandbox.api_key, rate_limiter=None, sleep=RecordingSleep())
    with pytest.raises(ProviderNotFound, match="Invalid URL"):
        wrong.retrieve_thread(thread.id)
    assert wrong.delete_thread(thread.id) is DeleteOutcome.ALREADY_GONE


def test_admin_calls_without_an_admin_key_fail_clearly(sandbox):
    provider = OpenAIProvider(base_url=sandbox.base_url, api_key=sandbox.api_key, rate_limiter=None)
    with pytest.raises(ProviderAuthError, match="OPENAI_ADMIN_KEY"):
        provider.costs(0, 86400)


def test_wrong_key_is_an_auth_error_not_retried(sandbox):
    provider = OpenAIProvider(base_url=sandbox.base_url, api_key="sk-wrong-key-123", rate_limiter=None,
                              sleep=RecordingSleep())
    with pytest.raises(ProviderAuthError) as raised:
        list(provider.list_vector_stores())
    assert raised.value.status_code == 401 and raised.value.attempts == 1


def test_default_provider_uses_settings(provider, sandbox, openai_client):
    store = openai_client.vector_stores.create(name="docs")
    default = OpenAIProvider.default(rate_limiter=None)
    assert [item["id"] for item in default.list_vector_stores()] == [store.id]


def test_costs_follow_next_page_to_the_end(provider, openai_client, sandbox):
    openai_client.responses.create(model="gpt-6.1-sol", input="hello", extra_body={"sandbox": {
        "input_tokens": 1000, "cached_tokens": 0, "output_tokens": 100}})
    now = int(sandbox.clock.now())
    buckets = provider.costs(now - 40 * 86400, now + 1, group_by=["line_item"], page_limit=7)
    assert len(buckets) in {40, 41}
    assert buckets == sorted(buckets, key=lambda bucket: bucket["start_time"])
    lines = {result["line_item"]: result["amount"]["value"] for bucket in buckets for result in bucket["results"]}
    assert lines == {"gpt-6.1-sol, input": pytest.approx(0.002), "gpt-6.1-sol, output": pytest.approx(0.001)}


def test_usage_endpoints_return_all_buckets(provider, openai_client, sandbox):
    openai_client.responses.create(model="gpt-6.1-sol", input="hello", tools=[
        {"type": "code_interpreter", "container": {"type": "auto"}}, {"type": "file_search", "vector_store_ids": ["vs_a"]}],
        extra_body={"sandbox": {"input_tokens": 500, "cached_tokens": 128, "output_tokens": 50}})
    now = int(sandbox.clock.now())
    completions = provider.usage_completions(now - 3 * 86400, now + 1, group_by=["model"])
    assert len(completions) >= 3
    results = [result for bucket in completions for result in bucket["results"]]
    assert results[0]["input_tokens"] == 500 and results[0]["input_cached_tokens"] == 128
    sessions = provider.usage_code_interpreter_sessions(now - 86400, now + 1)
    assert sum(result["num_sessions"] for bucket in sessions for result in bucket["results"]) == 1
    searches = provider.usage_file_search_calls(now - 86400, now + 1, group_by=["vector_store_id"])
    assert [result["vector_store_id"] for bucket in searches for result in bucket["results"]] == ["vs_a"]
    hourly = provider.usage_vector_stores(now - 3600 * 30, now + 1, bucket_width="1h")
    assert len(hourly) >= 30


# -- the provider takes the shared rate limit (the limiter itself: tests/provider/test_ratelimit.py) ----
class FakeTime:
    def __init__(self, start: float = 1_000_000.0):
        self.now = start
        self.lock = threading.Lock()

    def time(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_provider_takes_a_rate_limit_slot_per_request(sandbox, openai_client):
    cache.clear()
    fake = FakeTime()
    limiter = SharedRateLimiter(requests_per_minute=120, window_seconds=1.0, name="provider", cache=cache,
                                clock=fake.time, sleep=fake.sleep)
    provider = _provider(sandbox, rate_limiter=limiter)
    thread = openai_client.beta.threads.create()
    for _ in range(5):
        provider.retrieve_thread(thread.id)
    assert fake.time() - 1_000_000.0 >= 4 * limiter.interval > 2.0  # 5 calls at 2 per second: 4 intervals


def test_retry_after_parsing_accepts_seconds_milliseconds_and_dates():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({}) is None


def test_a_retry_after_that_is_neither_seconds_nor_a_date_is_no_hint_and_the_call_is_retried_with_backoff(sandbox):
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "Wed, 32 Foo 2026 99:99:99 GMT"}) is None
    sleep = RecordingSleep()
    provider = _provider(sandbox, sleep=sleep, backoff_base=0.5, backoff_cap=8.0)
    answers = [_status_error(429, {"retry-after": "soon"}), _status_error(503, {"retry-after": "later"})]

    def call():
        if answers:
            raise answers.pop(0)
        return {"id": "vs_1"}

    assert provider._get("retrieve_vector_store", call) == {"id": "vs_1"}
    assert len(sleep.calls) == 2 and all(0 <= delay <= 8.0 for delay in sleep.calls)


def test_an_http_date_in_utc_source_unknown_form_is_read_as_utc_whatever_the_hosts_time_zone(monkeypatch):
    import email.utils
    import time

    # A worker host on New York time read "-0000" (which parses to a naive time) as local: 4-5 hours off.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        in_a_minute = email.utils.formatdate(time.time() + 60).replace("+0000", "-0000")
        assert 55 <= retry_after_seconds({"retry-after": in_a_minute}) <= 60
    finally:
        monkeypatch.undo()
        time.tzset()
