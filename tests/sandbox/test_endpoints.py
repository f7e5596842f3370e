"""Every sandbox endpoint driven through the real openai SDK with strict response validation, so any
field the SDK requires and the sandbox omits fails here."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
import warnings

import openai
import pytest

warnings.filterwarnings("ignore", category=DeprecationWarning)

MINUTE = 60


def http_get(url: str, headers: dict | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


@pytest.fixture
def assistant(openai_client):
    return openai_client.beta.assistants.create(
        model="gpt-5.4", name="Support", instructions="Be helpful.", metadata={"tenant": "acme"},
        tools=[{"type": "code_interpreter"}, {"type": "file_search"},
               {"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}])


def test_assistants_create_list_retrieve(openai_client, assistant):
    assert openai_client.beta.assistants.retrieve(assistant.id).model == "gpt-5.4"
    assert [item.id for item in openai_client.beta.assistants.list()] == [assistant.id]


def test_thread_create_retrieve_update_and_messages(openai_client):
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "Where is my order?"}],
                                               metadata={"tenant": "acme", "user_id": "u1"})
    assert openai_client.beta.threads.retrieve(thread.id).metadata == {"tenant": "acme", "user_id": "u1"}
    updated = openai_client.beta.threads.update(thread.id, metadata={"tenant": "acme", "feature": "support"})
    assert updated.metadata == {"tenant": "acme", "feature": "support"}
    openai_client.beta.threads.messages.create(thread.id, role="user", content="Still waiting")
    texts = [message.content[0].text.value for message in openai_client.beta.threads.messages.list(thread.id, order="asc")]
    assert texts == ["Where is my order?", "Still waiting"]


def test_delete_of_a_deleted_thread_is_openais_404(openai_client, sandbox):
    thread = openai_client.beta.threads.create()
    deleted = openai_client.beta.threads.delete(thread.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (thread.id, True, "thread.deleted")
    with pytest.raises(openai.NotFoundError) as raised:
        openai_client.beta.threads.delete(thread.id)
    error = raised.value
    assert error.status_code == 404
    assert error.body == {"message": f"No thread found with id '{thread.id}'.", "type": "invalid_request_error",
                          "param": None, "code": None}
    assert str(error) == f"Error code: 404 - {{'error': {error.body!r}}}" or error.message.startswith("Error code: 404")
    assert error.request_id.startswith("req_")


def test_run_moves_from_queued_to_completed_with_usage_only_at_the_end(openai_client, sandbox, assistant):
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "Analyse my data"}])
    run = openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, metadata={"tenant": "acme"})
    assert run.status == "queued" and run.usage is None and run.expires_at == run.created_at + 600
    sandbox.advance(0.3)
    assert openai_client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "in_progress"
    sandbox.advance(5)
    done = openai_client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert done.status == "completed" and done.completed_at is not None and done.expires_at is None
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens > 0
    steps = list(openai_client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc"))
    tool_types = [call.type for step in steps if step.type == "tool_calls" for call in step.step_details.tool_calls]
    assert tool_types == ["code_interpreter", "file_search"]
    assert steps[-1].type == "message_creation"
    assert sum(step.usage.total_tokens for step in steps) == done.usage.total_tokens
    reply = openai_client.beta.threads.messages.list(thread.id, run_id=run.id).data
    assert [message.role for message in reply] == ["assistant"]


def test_runs_list_and_one_active_run_per_thread(openai_client, sandbox, assistant):
    thread = openai_client.beta.threads.create()
    first = openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    with pytest.raises(openai.BadRequestError, match="already has an active run"):
        openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    sandbox.advance(5)
    second = openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, model="gpt-5-mini")
    listed = openai_client.beta.threads.runs.list(thread.id)
    assert [run.id for run in listed.data] == [second.id, first.id]
    assert listed.has_more is False


def test_requires_action_then_submit_tool_outputs_completes(openai_client, sandbox, assistant):
    thread = openai_client.beta.threads.create()
    run = openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id,
                                                 extra_body={"sandbox": {"outcome": "requires_action"}})
    sandbox.advance(5)
    waiting = openai_client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert waiting.status == "requires_action" and waiting.usage is None
    call = waiting.required_action.submit_tool_outputs.tool_calls[0]
    assert call.function.name == "lookup_order"
    with pytest.raises(openai.BadRequestError):
        openai_client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id, tool_outputs=[])
    resumed = openai_client.beta.threads.runs.submit_tool_outputs(
        run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": '{"status":"shipped"}'}])
    assert resumed.status == "in_progress"
    sandbox.advance(2)
    assert openai_client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "completed"
    function_calls = [tool_call for step in openai_client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
                      if step.type == "tool_calls" for tool_call in step.step_details.tool_calls
                      if tool_call.type == "function"]
    assert function_calls[0].function.output == '{"status":"shipped"}'


def test_requires_action_expires_after_ten_minutes(openai_client, sandbox, assistant):
    thread = openai_client.beta.threads.create()
    run = openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id,
                                                 extra_body={"sandbox": {"outcome": "requires_action"}})
    sandbox.advance(5)
    waiting = openai_client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    sandbox.advance(9 * MINUTE)
    assert openai_client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "requires_action"
    sandbox.advance(MINUTE + 1)
    expired = openai_client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert expired.status == "expired" and expired.usage is not None
    assert waiting.expires_at - waiting.created_at <= 600 + 5


@pytest.mark.parametrize("outcome, field", [("failed", "failed_at"), ("incomplete", "incomplete_details")])
def test_failed_and_incomplete_runs_carry_usage(openai_client, sandbox, assistant, outcome, field):
    thread = openai_client.beta.threads.create()
    run = openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, extra_body={
        "sandbox": {"outcome": outcome, "prompt_tokens": 1000, "completion_tokens": 300}})
    sandbox.advance(5)
    finished = openai_client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert finished.status == outcome and getattr(finished, field) is not None
    assert finished.usage.prompt_tokens == 1000


def test_cancel_goes_through_cancelling_to_cancelled(openai_client, sandbox, assistant):
    thread = openai_client.beta.threads.create()
    run = openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    assert openai_client.beta.threads.runs.cancel(run.id, thread_id=thread.id).status == "cancelling"
    sandbox.advance(1)
    cancelled = openai_client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    with pytest.raises(openai.BadRequestError, match="Cannot cancel run"):
        openai_client.beta.threads.runs.cancel(run.id, thread_id=thread.id)


def test_unknown_model_is_openais_model_not_found(openai_client, assistant):
    thread = openai_client.beta.threads.create()
    with pytest.raises(openai.NotFoundError) as raised:
        openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, model="gpt-99")
    assert raised.value.code == "model_not_found"


def test_response_with_every_tool_call_and_detailed_usage(openai_client, sandbox):
    response = openai_client.responses.create(
        model="gpt-6.1-sol", input="Summarise the refund policy", metadata={"tenant": "acme", "feature": "doc-search"},
        tools=[{"type": "file_search", "vector_store_ids": ["vs_docs"]}, {"type": "web_search"},
               {"type": "code_interpreter", "container": {"type": "auto"}},
               {"type": "function", "name": "lookup_order", "parameters": {"type": "object", "properties": {}}, "strict": True}],
        extra_body={"sandbox": {"input_tokens": 5000, "cached_tokens": 1024, "output_tokens": 800,
                                "reasoning_tokens": 300}})
    assert response.status == "completed"
    assert response.usage.input_tokens_details.cached_tokens == 1024
    assert response.usage.output_tokens_details.reasoning_tokens == 300
    types = sorted(item.type for item in response.output)
    assert types == ["code_interpreter_call", "file_search_call", "function_call", "web_search_call"]
    container_id = next(item.container_id for item in response.output if item.type == "code_interpreter_call")
    assert openai_client.containers.retrieve(container_id).status == "running"
    assert openai_client.responses.retrieve(response.id).usage.total_tokens == 5800


def test_background_response_progresses_and_can_be_cancelled(openai_client, sandbox):
    finished = openai_client.responses.create(model="gpt-6-luna", input="hi", background=True)
    assert finished.status == "queued" and finished.usage is None
    sandbox.advance(3)
    assert openai_client.responses.retrieve(finished.id).status == "completed"
    pending = openai_client.responses.create(model="gpt-6-luna", input="hi", background=True)
    assert openai_client.responses.cancel(pending.id).status == "cancelled"
    sandbox.advance(3)
    assert openai_client.responses.retrieve(pending.id).status == "cancelled"
    foreground = openai_client.responses.create(model="gpt-6-luna", input="hi")
    with pytest.raises(openai.BadRequestError, match="background=true"):
        openai_client.responses.cancel(foreground.id)


def test_responses_are_forgotten_after_thirty_days(openai_client, sandbox):
    response = openai_client.responses.create(model="gpt-6-luna", input="hi")
    sandbox.advance(31 * 86400)
    with pytest.raises(openai.NotFoundError, match=f"Response with id '{response.id}' not found."):
        openai_client.responses.retrieve(response.id)


def test_conversation_lifecycle_and_items(openai_client, sandbox):
    conversation = openai_client.conversations.create(metadata={"tenant": "acme"}, items=[
        {"type": "message", "role": "user", "content": "hello"}])
    assert openai_client.conversations.retrieve(conversation.id).metadata == {"tenant": "acme"}
    assert openai_client.conversations.update(conversation.id, metadata={"tenant": "globex"}).metadata == {"tenant": "globex"}
    first = openai_client.responses.create(model="gpt-6.1-sol", input="first", conversation=conversation.id)
    second = openai_client.responses.create(model="gpt-6.1-sol", input="second", conversation=conversation.id)
    assert first.conversation.id == conversation.id
    assert second.usage.input_tokens_details.cached_tokens <= second.usage.input_tokens
    items = list(openai_client.conversations.items.list(conversation.id, limit=2, order="asc"))
    assert [item.type for item in items] == ["message"] * 5
    assert [item.role for item in items] == ["user", "user", "assistant", "user", "assistant"]
    deleted = openai_client.conversations.delete(conversation.id)
    assert (deleted.deleted, deleted.object) == (True, "conversation.deleted")
    with pytest.raises(openai.NotFoundError):
        openai_client.conversations.delete(conversation.id)


def test_vector_store_lifecycle_files_and_expiry(openai_client, sandbox):
    uploaded = [openai_client.files.create(file=(f"doc{index}.txt", b"x" * (1000 * (index + 1))), purpose="assistants")
                for index in range(3)]
    store = openai_client.vector_stores.create(name="docs", file_ids=[item.id for item in uploaded],
                                               expires_after={"anchor": "last_active_at", "days": 7},
                                               metadata={"tenant": "acme"})
    assert store.usage_bytes == 6000 and store.file_counts.completed == 3
    assert store.expires_at == store.last_active_at + 7 * 86400 and store.status == "completed"
    assert [item.id for item in openai_client.vector_stores.list()] == [store.id]
    renamed = openai_client.vector_stores.update(store.id, name="handbook")
    assert renamed.name == "handbook"
    files = list(openai_client.vector_stores.files.list(store.id, filter="completed"))
    assert sorted(item.id for item in files) == sorted(item.id for item in uploaded)
    removed = openai_client.vector_stores.files.delete(uploaded[0].id, vector_store_id=store.id)
    assert (removed.deleted, removed.object) == (True, "vector_store.file.deleted")
    assert openai_client.vector_stores.retrieve(store.id).usage_bytes == 5000
    assert openai_client.files.retrieve(uploaded[0].id).id == uploaded[0].id  # the File itself remains
    sandbox.advance(8 * 86400)
    assert openai_client.vector_stores.retrieve(store.id).status == "expired"
    gone = openai_client.vector_stores.delete(store.id)
    assert (gone.deleted, gone.object) == (True, "vector_store.deleted")
    with pytest.raises(openai.NotFoundError, match=f"No vector store found with id '{store.id}'."):
        openai_client.vector_stores.delete(store.id)


def test_files_upload_list_retrieve_delete(openai_client):
    uploaded = openai_client.files.create(file=("data.csv", b"a,b\n1,2\n"), purpose="user_data")
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose) == (8, "data.csv", "user_data")
    assert [item.id for item in openai_client.files.list(purpose="user_data")] == [uploaded.id]
    deleted = openai_client.files.delete(uploaded.id)
    assert (deleted.deleted, deleted.object) == (True, "file")
    with pytest.raises(openai.NotFoundError) as raised:
        openai_client.files.retrieve(uploaded.id)
    assert raised.value.body == {"message": f"No such File object: {uploaded.id}", "type": "invalid_request_error",
                                 "param": "id", "code": None}


def test_containers_list_retrieve_delete_and_idle_expiry(openai_client, sandbox):
    container = openai_client.containers.create(name="ci")
    assert [item.id for item in openai_client.containers.list()] == [container.id]
    assert openai_client.containers.retrieve(container.id).last_active_at == container.created_at
    sandbox.advance(21 * MINUTE)
    assert openai_client.containers.retrieve(container.id).status == "expired"
    openai_client.containers.delete(container.id)
    with pytest.raises(openai.NotFoundError, match="not found"):
        openai_client.containers.delete(container.id)


def test_cursor_pagination_has_more_and_after(openai_client):
    for index in range(5):
        openai_client.vector_stores.create(name=f"store {index}")
    first = openai_client.vector_stores.list(limit=2)
    assert len(first.data) == 2 and first.has_more is True
    assert len(list(openai_client.vector_stores.list(limit=2))) == 5
    with pytest.raises(openai.BadRequestError):
        openai_client.vector_stores.list(limit=101)


def test_keys_are_checked(sandbox, openai_client):
    wrong = openai.OpenAI(base_url=sandbox.base_url, api_key="sk-wrong", admin_api_key="sk-also-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.vector_stores.list()
    assert raised.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        wrong.admin.organization.usage.costs(start_time=0)
    user_key_as_admin = openai.OpenAI(base_url=sandbox.base_url, api_key=sandbox.api_key,
                                      admin_api_key=sandbox.api_key, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        user_key_as_admin.admin.organization.usage.completions(start_time=0)
    admin_key_as_user = openai.OpenAI(base_url=sandbox.base_url, api_key=sandbox.admin_key, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        admin_key_as_user.files.list()
    status, headers, body = http_get(f"{sandbox.base_url}/files")
    assert status == 401 and "didn't provide an API key" in body["error"]["message"]
    assert headers["x-request-id"].startswith("req_")


def test_unknown_url_is_openai_shaped(sandbox):
    status, _, body = http_get(f"{sandbox.base_url}/nothing-here", {"Authorization": f"Bearer {sandbox.api_key}"})
    assert status == 404
    assert body == {"error": {"message": "Invalid URL (GET /v1/nothing-here)",
                                       "type": "invalid_request_error", "param": None, "code": None}}


def test_admin_endpoints_parse_bracketed_arrays_and_validate(sandbox, openai_client):
    openai_client.responses.create(model="gpt-6.1-sol", input="hello")
    now = int(sandbox.clock.now())
    costs = openai_client.admin.organization.usage.costs(start_time=now - 86400, group_by=["project_id", "line_item"],
                                                         project_ids=["proj_default"])
    lines = [result.line_item for bucket in costs.data for result in bucket.results]
    assert sorted(lines) == ["gpt-6.1-sol, input", "gpt-6.1-sol, output"]
    other = openai_client.admin.organization.usage.costs(start_time=now - 86400, project_ids=["proj_other"])
    assert all(bucket.results == [] for bucket in other.data)
    with pytest.raises(openai.BadRequestError, match="group_by"):
        openai_client.admin.organization.usage.costs(start_time=now - 86400, group_by=["model"])
    with pytest.raises(openai.BadRequestError, match="bucket_width"):
        openai_client.admin.organization.usage.costs(start_time=now - 86400, bucket_width="1h")
    with pytest.raises(openai.BadRequestError):
        openai_client.admin.organization.usage.completions(start_time=now - 86400, limit=32)


def test_a_generated_scenario_validates_strictly_through_the_sdk(sandbox, openai_client):
    # Days before the Assistants sunset, so the scenario has threads, runs and steps as well as responses.
    sandbox.clock.set(dt.datetime(2026, 8, 20, 12, tzinfo=dt.UTC).timestamp())
    sandbox.load_scenario(tenants=2, days=5, seed=3)
    export = sandbox.export()
    threads = [row["object"]["id"] for row in export["threads"] if row["deleted_at"] is None][:30]
    assert threads and export["responses"]
    for thread_id in threads:
        for run in openai_client.beta.threads.runs.list(thread_id):
            list(openai_client.beta.threads.runs.steps.list(run.id, thread_id=thread_id))
        list(openai_client.beta.threads.messages.list(thread_id))
    for row in export["responses"][:200]:
        openai_client.responses.retrieve(row["object"]["id"])
    for row in export["conversations"][:30]:
        list(openai_client.conversations.items.list(row["object"]["id"]))
    assert len(list(openai_client.vector_stores.list())) > 0
    assert len(list(openai_client.files.list())) > 0
    assert len(list(openai_client.containers.list())) > 0
    list(openai_client.beta.assistants.list())
