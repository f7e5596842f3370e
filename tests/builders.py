"""Raw OpenAI objects exactly as the API returns them (Assistants runs, Responses responses, threads,
conversations, vector stores, files, containers), for tests that feed the ledger through its real
ingest path instead of writing rows by hand."""

from __future__ import annotations

import datetime as dt
import itertools

_counter = itertools.count(1)


def _unix(moment: dt.datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def assistants_run(
    *,
    run_id: str | None = None,
    thread_id: str = "thread_test",
    created_at: dt.datetime,
    model: str = "gpt-5.4",
    status: str = "completed",
    prompt_tokens: int = 1000,
    completion_tokens: int = 100,
    metadata: dict | None = None,
    assistant_id: str = "asst_test",
    code_interpreter: bool = False,
    file_search: bool = False,
) -> dict:
    """A `thread.run`. `usage` is null until the run is terminal, as at OpenAI."""
    terminal = status in {"completed", "failed", "cancelled", "incomplete", "expired"}
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    if code_interpreter:
        tools.append({"type": "code_interpreter"})
    if file_search:
        tools.append({"type": "file_search"})
    started = created_at + dt.timedelta(seconds=1) if status != "queued" else None
    ended = created_at + dt.timedelta(seconds=8) if terminal else None
    return {
        "id": run_id or f"run_{next(_counter):06d}",
        "object": "thread.run",
        "created_at": _unix(created_at),
        "thread_id": thread_id,
        "assistant_id": assistant_id,
        "status": status,
        "required_action": None,
        "last_error": {"code": "server_error", "message": "boom"} if status == "failed" else None,
        "expires_at": None if terminal else _unix(created_at + dt.timedelta(minutes=10)),
        "started_at": _unix(started),
        "cancelled_at": _unix(ended) if status == "cancelled" else None,
        "failed_at": _unix(ended) if status == "failed" else None,
        "completed_at": _unix(ended) if status == "completed" else None,
        "incomplete_details": {"reason": "max_completion_tokens"} if status == "incomplete" else None,
        "model": model,
        "instructions": "You are a helpful assistant.",
        "tools": tools,
        "metadata": metadata or {},
        "usage": (
            {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
            if terminal else None
        ),
        "temperature": 1.0,
        "top_p": 1.0,
        "max_prompt_tokens": None,
        "max_completion_tokens": None,
        "truncation_strategy": {"type": "auto", "last_messages": None},
        "response_format": "auto",
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }


def response(
    *,
    response_id: str | None = None,
    created_at: dt.datetime,
    model: str = "gpt-6.1-sol",
    status: str = "completed",
    input_tokens: int = 1000,
    cached_tokens: int = 0,
    output_tokens: int = 100,
    reasoning_tokens: int = 0,
    conversation_id: str | None = None,
    metadata: dict | None = None,
    code_interpreter_calls: int = 0,
    file_search_calls: int = 0,
    web_search_calls: int = 0,
    function_calls: int = 0,
    service_tier: str = "default",
    container_id: str = "cntr_test",
) -> dict:
    """A Responses `response`; tool calls appear as output items, as at OpenAI."""
    output: list[dict] = []
    for index in range(code_interpreter_calls):
        output.append({"type": "code_interpreter_call", "id": f"ci_{index}", "status": "completed",
                       "container_id": container_id, "code": "print(1)", "outputs": []})
    for index in range(file_search_calls):
        output.append({"type": "file_search_call", "id": f"fs_{index}", "status": "completed",
                       "queries": ["q"], "results": None})
    for index in range(web_search_calls):
        output.append({"type": "web_search_call", "id": f"ws_{index}", "status": "completed",
                       "action": {"type": "search", "query": "q"}})
    for index in range(function_calls):
        output.append({"type": "function_call", "id": f"fc_{index}", "call_id": f"call_{index}",
                       "name": "lookup", "arguments": "{}", "status": "completed"})
    if status == "completed":
        output.append({"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": "Done.", "annotations": []}]})
    done = status in {"completed", "failed", "cancelled", "incomplete"}
    return {
        "id": response_id or f"resp_{next(_counter):06d}",
        "object": "response",
        "created_at": created_at.timestamp(),
        "status": status,
        "model": model,
        "service_tier": service_tier,
        "conversation": {"id": conversation_id} if conversation_id else None,
        "metadata": metadata or {},
        "output": output,
        "error": {"code": "server_error", "message": "boom"} if status == "failed" else None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "usage": (
            {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": cached_tokens},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
                "total_tokens": input_tokens + output_tokens,
            }
            if done else None
        ),
        "tools": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
    }


def thread(*, thread_id: str | None = None, created_at: dt.datetime, metadata: dict | None = None) -> dict:
    return {"id": thread_id or f"thread_{next(_counter):06d}", "object": "thread",
            "created_at": _unix(created_at), "metadata": metadata or {}, "tool_resources": {}}


def conversation(*, conversation_id: str | None = None, created_at: dt.datetime, metadata: dict | None = None) -> dict:
    return {"id": conversation_id or f"conv_{next(_counter):06d}", "object": "conversation",
            "created_at": _unix(created_at), "metadata": metadata or {}}


def vector_store(*, vector_store_id: str | None = None, created_at: dt.datetime, usage_bytes: int = 0,
                 last_active_at: dt.datetime | None = None, metadata: dict | None = None) -> dict:
    return {
        "id": vector_store_id or f"vs_{next(_counter):06d}", "object": "vector_store",
        "created_at": _unix(created_at), "name": "docs", "usage_bytes": usage_bytes,
        "file_counts": {"in_progress": 0, "completed": 1, "failed": 0, "cancelled": 0, "total": 1},
        "status": "completed", "expires_after": None, "expires_at": None,
        "last_active_at": _unix(last_active_at or created_at), "metadata": metadata or {},
    }


def file(*, file_id: str | None = None, created_at: dt.datetime, size_bytes: int = 1024,
         purpose: str = "assistants", filename: str = "doc.pdf") -> dict:
    return {"id": file_id or f"file-{next(_counter):06d}", "object": "file", "bytes": size_bytes,
            "created_at": _unix(created_at), "filename": filename, "purpose": purpose,
            "expires_at": None, "status": "processed", "status_details": None}


def container(*, container_id: str | None = None, created_at: dt.datetime,
              last_active_at: dt.datetime | None = None, status: str = "running") -> dict:
    return {"id": container_id or f"cntr_{next(_counter):06d}", "object": "container", "name": "ci",
            "created_at": _unix(created_at), "status": status,
            "last_active_at": _unix(last_active_at or created_at),
            "expires_after": {"anchor": "last_active_at", "minutes": 20}}


def storage_meter(**fields):
    """A tenant's (or, with tenant=None, the unassigned stores') storage meter row of a day, written as the
    nightly meter writes it: with the day's total over every tenant refreshed (StorageDailyTotal)."""
    from apps.lifecycle.models import StorageMeter
    from apps.lifecycle.services import storage_daily_total_refresh

    meter = StorageMeter.objects.create(**fields)
    storage_daily_total_refresh(day=meter.day)
    return meter
