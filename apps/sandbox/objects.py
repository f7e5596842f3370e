"""Builders for OpenAI objects exactly as the API returns them; the HTTP handlers and the scenario
generator both use them, so a generated object and a served one are the same shape."""

from __future__ import annotations

TERMINAL_RUN_STATUSES = {"completed", "failed", "cancelled", "incomplete", "expired"}
TERMINAL_RESPONSE_STATUSES = {"completed", "failed", "cancelled", "incomplete"}
REASONING_MODEL_PREFIXES = ("gpt-5", "gpt-6", "o1", "o3", "o4")


def is_reasoning_model(model: str) -> bool:
    return model.startswith(REASONING_MODEL_PREFIXES)


def assistant(*, assistant_id: str, created_at: int, model: str, name: str | None = None,
              instructions: str | None = None, tools: list | None = None, metadata: dict | None = None,
              tool_resources: dict | None = None, description: str | None = None) -> dict:
    return {
        "id": assistant_id, "object": "assistant", "created_at": created_at, "name": name,
        "description": description, "model": model, "instructions": instructions, "tools": tools or [],
        "tool_resources": tool_resources or {}, "metadata": metadata or {}, "temperature": 1.0,
        "top_p": 1.0, "response_format": "auto",
    }


def thread(*, thread_id: str, created_at: int, metadata: dict | None = None, tool_resources: dict | None = None) -> dict:
    return {"id": thread_id, "object": "thread", "created_at": created_at, "metadata": metadata or {},
            "tool_resources": tool_resources or {}}


def message(*, message_id: str, thread_id: str, created_at: int, role: str, text: str,
            assistant_id: str | None = None, run_id: str | None = None, metadata: dict | None = None) -> dict:
    return {
        "id": message_id, "object": "thread.message", "created_at": created_at, "thread_id": thread_id,
        "status": "completed", "incomplete_details": None, "completed_at": created_at, "incomplete_at": None,
        "role": role, "content": [{"type": "text", "text": {"value": text, "annotations": []}}],
        "assistant_id": assistant_id, "run_id": run_id, "attachments": [], "metadata": metadata or {},
    }


def run(*, run_id: str, thread_id: str, assistant_id: str, created_at: int, model: str, instructions: str,
        tools: list, metadata: dict | None = None, max_prompt_tokens: int | None = None,
        max_completion_tokens: int | None = None, tool_choice="auto", parallel_tool_calls: bool = True,
        temperature: float | None = 1.0, top_p: float | None = 1.0, response_format="auto",
        truncation_strategy: dict | None = None) -> dict:
    """A freshly created (queued) run; the state machine fills in the rest as it progresses."""
    return {
        "id": run_id, "object": "thread.run", "created_at": created_at, "thread_id": thread_id,
        "assistant_id": assistant_id, "status": "queued", "required_action": None, "last_error": None,
        "expires_at": created_at + 600, "started_at": None, "cancelled_at": None, "failed_at": None,
        "completed_at": None, "incomplete_details": None, "model": model, "instructions": instructions,
        "tools": tools, "metadata": metadata or {}, "usage": None, "temperature": temperature, "top_p": top_p,
        "max_prompt_tokens": max_prompt_tokens, "max_completion_tokens": max_completion_tokens,
        "truncation_strategy": truncation_strategy or {"type": "auto", "last_messages": None},
        "response_format": response_format, "tool_choice": tool_choice, "parallel_tool_calls": parallel_tool_calls,
        "reasoning_effort": None,
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def run_step(*, step_id: str, run: dict, created_at: int, step_details: dict, status: str = "completed",
             step_usage: dict | None = None, completed_at: int | None = None) -> dict:
    return {
        "id": step_id, "object": "thread.run.step", "created_at": created_at, "run_id": run["id"],
        "assistant_id": run["assistant_id"], "thread_id": run["thread_id"], "type": step_details["type"],
        "status": status, "cancelled_at": created_at if status == "cancelled" else None,
        "completed_at": completed_at if status == "completed" else None,
        "expired_at": completed_at if status == "expired" else None,
        "failed_at": completed_at if status == "failed" else None,
        "last_error": {"code": "server_error", "message": "Sorry, something went wrong."} if status == "failed" else None,
        "step_details": step_details, "usage": step_usage if status != "in_progress" else None, "metadata": {},
    }


def code_interpreter_call(call_id: str, code: str = "import pandas as pd\ndf = pd.read_csv('data.csv')\ndf.describe()") -> dict:
    return {"id": call_id, "type": "code_interpreter",
            "code_interpreter": {"input": code, "outputs": [{"type": "logs", "logs": "count 120\nmean 4.2"}]}}


def file_search_call(call_id: str, results: list[dict] | None = None) -> dict:
    return {"id": call_id, "type": "file_search",
            "file_search": {"ranking_options": {"ranker": "default_2024_08_21", "score_threshold": 0.0},
                            "results": results or []}}


def function_call(call_id: str, name: str, arguments: str, output: str | None = None) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments, "output": output}}


def vector_store(*, vector_store_id: str, created_at: int, name: str, usage_bytes: int, file_counts: dict,
                 last_active_at: int, expires_after: dict | None = None, metadata: dict | None = None,
                 status: str = "completed") -> dict:
    expires_at = last_active_at + expires_after["days"] * 86400 if expires_after else None
    return {
        "id": vector_store_id, "object": "vector_store", "created_at": created_at, "name": name,
        "description": None, "usage_bytes": usage_bytes, "file_counts": file_counts, "status": status,
        "expires_after": expires_after, "expires_at": expires_at, "last_active_at": last_active_at,
        "metadata": metadata or {},
    }


def vector_store_file(*, file_id: str, vector_store_id: str, created_at: int, usage_bytes: int,
                      status: str = "completed") -> dict:
    return {
        "id": file_id, "object": "vector_store.file", "created_at": created_at, "usage_bytes": usage_bytes,
        "vector_store_id": vector_store_id, "status": status,
        "last_error": {"code": "unsupported_file", "message": "The file type is not supported."} if status == "failed" else None,
        "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}},
        "attributes": {},
    }


def file(*, file_id: str, created_at: int, size_bytes: int, filename: str, purpose: str = "assistants",
         expires_at: int | None = None) -> dict:
    return {"id": file_id, "object": "file", "bytes": size_bytes, "created_at": created_at, "filename": filename,
            "purpose": purpose, "expires_at": expires_at, "status": "processed", "status_details": None}


def container(*, container_id: str, created_at: int, last_active_at: int, name: str = "code-interpreter",
              status: str = "running", minutes: int = 20, memory_limit: str = "1g") -> dict:
    return {"id": container_id, "object": "container", "name": name, "created_at": created_at, "status": status,
            "last_active_at": last_active_at, "expires_after": {"anchor": "last_active_at", "minutes": minutes},
            "memory_limit": memory_limit}


def conversation(*, conversation_id: str, created_at: int, metadata: dict | None = None) -> dict:
    return {"id": conversation_id, "object": "conversation", "created_at": created_at, "metadata": metadata or {}}


def input_message_item(*, item_id: str, role: str, text: str) -> dict:
    return {"id": item_id, "type": "message", "role": role, "status": "completed",
            "content": [{"type": "input_text", "text": text}]}


def output_message_item(*, item_id: str, text: str, status: str = "completed") -> dict:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def response_usage(*, input_tokens: int, cached_tokens: int, cache_write_tokens: int, output_tokens: int,
                   reasoning_tokens: int) -> dict:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": cache_write_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


def response(*, response_id: str, created_at: float, model: str, status: str, output: list, metadata: dict | None,
             usage_block: dict | None, tools: list | None = None, conversation_id: str | None = None,
             instructions: str | None = None, service_tier: str = "default", background: bool = False,
             previous_response_id: str | None = None, max_output_tokens: int | None = None,
             completed_at: float | None = None, error: dict | None = None, incomplete_reason: str | None = None,
             web_search_requests: int = 0) -> dict:
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "background": background, "completed_at": completed_at, "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": instructions, "max_output_tokens": max_output_tokens, "max_tool_calls": None,
        "model": model, "output": output, "parallel_tool_calls": True, "previous_response_id": previous_response_id,
        "reasoning": {"effort": "medium", "summary": None} if is_reasoning_model(model) else None,
        "service_tier": service_tier, "store": True, "temperature": 1.0, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": tools or [], "top_p": 1.0, "truncation": "disabled",
        "usage": usage_block, "user": None, "metadata": metadata or {},
        "conversation": {"id": conversation_id} if conversation_id else None,
        "tool_usage": {
            "image_gen": {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
                          "output_tokens": 0, "output_tokens_details": {"image_tokens": 0, "text_tokens": 0},
                          "total_tokens": 0},
            "web_search": {"num_requests": web_search_requests},
        },
    }
