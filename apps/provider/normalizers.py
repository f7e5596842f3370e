"""The one place that turns raw OpenAI objects (as the API returns them, as dicts) into ledger fields.

Runs (`thread.run`) and responses (`response`) become a RunRecord; threads, conversations, vector stores,
files and containers become a ResourceRecord. Anything malformed raises NormalizationError naming the
field, e.g. "object.usage.prompt_tokens: must be a whole number from 0 to 10**12".
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any

from apps.core.timeutils import from_unix

RUN_STATUSES = frozenset(
    {"queued", "in_progress", "requires_action", "cancelling", "cancelled", "failed", "completed", "incomplete", "expired"}
)
RESPONSE_STATUSES = frozenset({"queued", "in_progress", "completed", "failed", "cancelled", "incomplete"})
TERMINAL = frozenset({"cancelled", "failed", "completed", "incomplete", "expired"})
ATTRIBUTION_KEYS = ("user_id", "session_id", "feature")
# Unix seconds before 2015 (before OpenAI existed: a zeroed field) or after 3000 (milliseconds sent as
# seconds, for instance) are certainly a mistake.
_MIN_UNIX = 1_420_070_400  # 2015-01-01T00:00:00Z
_MAX_UNIX = 32_503_680_000
_MAX_ID = 100
# A model name can be longer than an id: a fine-tuned model is "ft:<base>:<organization>:<suffix of up to 64
# characters>:<job id>", past 100 characters with a long suffix. Its runs must not be refused.
_MAX_MODEL = 255
_MAX_TOKENS = 10**12  # far above any real run; keeps rollup sums inside BIGINT
_MAX_MINUTES = 2_147_483_647  # a container's expiry is stored in an integer column
_MAX_RESOURCE_STATUS = 20  # a vector store's or container's status is stored whole in a 20-character column
# Metadata keys read as attribution, with the length each is kept to (its column), and the tenant slug's.
_ATTRIBUTION_LIMITS = (("user_id", 200), ("session_id", 200), ("feature", 100))
_ATTRIBUTION_KEYS = frozenset(key for key, _ in _ATTRIBUTION_LIMITS)
_MAX_METADATA_TENANT = 63
_METADATA_READ = (*_ATTRIBUTION_LIMITS, ("tenant", _MAX_METADATA_TENANT))
# The integers the ledger's JSON encoder (orjson, bulk._json_text) writes: a signed or unsigned 64-bit one. A
# larger one only arrives when a body is read by Python's json (orjson itself reads it as a float), and would
# fail the whole batch at its write.
_MIN_JSON_INT = -(2**63)
_MAX_JSON_INT = 2**64 - 1
_TOO_BIG = "must be a number that fits 64 bits (this one does not fit the stored JSON)"


class NormalizationError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class RunRecord:
    """Ledger fields of one run or response (everything but tenant and cost)."""

    openai_id: str
    api: str  # assistants | responses
    model: str
    status: str
    created_at: dt.datetime
    thread_openai_id: str = ""  # the thread (Assistants) or conversation (Responses), if any
    thread_kind: str = ""  # thread | conversation
    assistant_id: str = ""
    prompt_id: str = ""
    service_tier: str = ""
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    failed_at: dt.datetime | None = None
    cancelled_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    error_code: str = ""
    incomplete_reason: str = ""
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    has_usage: bool = False
    code_interpreter_sessions: int = 0
    file_search_calls: int = 0
    web_search_calls: int = 0
    function_calls: int = 0
    user_id: str = ""
    session_id: str = ""
    feature: str = ""
    metadata_tenant: str = ""
    metadata: dict = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass
class ResourceRecord:
    """A thread, conversation, vector store, file or container, generic enough for every lifecycle use."""

    openai_id: str
    kind: str  # thread | conversation | vector_store | file | container
    created_at: dt.datetime
    last_active_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    status: str = ""
    name: str = ""
    metadata: dict = field(default_factory=dict)
    metadata_tenant: str = ""
    usage_bytes: int | None = None
    purpose: str = ""
    file_ids: list[str] = field(default_factory=list)
    vector_store_ids: list[str] = field(default_factory=list)
    thread_ids: list[str] = field(default_factory=list)
    expires_after_minutes: int | None = None
    raw: dict = field(default_factory=dict)


# --- field readers ---------------------------------------------------------------------------------


def _get(obj: dict, key: str, prefix: str, *, required: bool = False):
    if key not in obj or obj[key] is None:
        if required:
            raise NormalizationError(f"{prefix}.{key}", "required")
        return None
    return obj[key]


def _string(obj: dict, key: str, prefix: str, *, required: bool = False, max_length: int = _MAX_ID) -> str:
    value = _get(obj, key, prefix, required=required)
    if value is None:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise NormalizationError(f"{prefix}.{key}", "must be a non-empty string" if required else "must be a string")
    if len(value) > max_length:
        raise NormalizationError(f"{prefix}.{key}", f"must be at most {max_length} characters")
    return value


# OpenAI ids go into page URLs (/runs/<id>/) and export file names, and none holds a "/" or a control character:
# an id with one is refused per event instead of breaking every page that links to it.
_NOT_IN_IDS = re.compile(r"[/\x00-\x1f\x7f]")


def _id(obj: dict, key: str, prefix: str, *, required: bool = False) -> str:
    value = _string(obj, key, prefix, required=required)
    if _NOT_IN_IDS.search(value):
        raise NormalizationError(f"{prefix}.{key}", "must be an OpenAI id: no '/' and no control characters")
    return value


def _fast_id(value):
    """The fast path's id check: None sends the event to the detailed path, which names the problem."""
    value = _req_str(value)
    return None if value is None or _NOT_IN_IDS.search(value) else value


def unstorable_text(text: str) -> bool:
    """Whether PostgreSQL refuses this text: it holds a NUL character or a lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return "\x00" in text


# Far deeper than any object OpenAI returns (a vector store's chunking_strategy is two levels) and far below the
# ~1,000 frames at which Python's recursion (json encoding the stored row, for one) gives out: orjson reads JSON
# nested up to 1,024 levels, so the depth is capped here, not left to a RecursionError.
MAX_STORED_DEPTH = 32


def _unstorable_number(item) -> str | None:
    """Why a number cannot go into a JSON column, or None. JSON's 1e400 reads as inf, which no JSON column takes
    (PostgreSQL refuses it, orjson writes null); an integer past 64 bits the ledger's JSON encoder refuses."""
    if isinstance(item, float) and not math.isfinite(item):
        return "must be a finite number (this one does not fit a float)"
    if isinstance(item, int) and not _MIN_JSON_INT <= item <= _MAX_JSON_INT:
        return _TOO_BIG
    return None


def _unstorable_value(value: dict, prefix: str) -> NormalizationError | None:
    """The first thing in `value` (a resource object, stored whole as JSON) that its column cannot hold, naming
    where it is, or None: text PostgreSQL refuses (unstorable_text, keys included), a number no float holds
    (JSON's 1e400 reads as inf, which no JSON column takes), or nesting deeper than MAX_STORED_DEPTH. An
    explicit stack, not recursion: the depth is the sender's to choose."""
    stack = [(value, prefix, 1, "")]
    while stack:
        node, path, depth, top_field = stack.pop()
        for key, item in node.items() if isinstance(node, dict) else enumerate(node):
            if isinstance(key, str) and unstorable_text(key):
                return NormalizationError(path, "must not contain NUL characters or invalid Unicode (in a key)")
            if isinstance(item, str):
                if unstorable_text(item):
                    return NormalizationError(f"{path}.{key}", "must not contain NUL characters or invalid Unicode")
            elif isinstance(item, int | float):
                if problem := _unstorable_number(item):
                    return NormalizationError(f"{path}.{key}", problem)
            elif isinstance(item, dict | list):
                item_path = f"{path}.{key}"
                if depth >= MAX_STORED_DEPTH:
                    # Names the field the sender nested, not a path of dozens of ".0".
                    return NormalizationError(top_field or item_path,
                                              f"must not be nested more than {MAX_STORED_DEPTH} levels deep")
                stack.append((item, item_path, depth + 1, top_field or item_path))
    return None


def _count(obj: dict | None, key: str, prefix: str, *, required: bool = False) -> int:
    """A token count; absent or null is 0 unless `required` (a usage object's own input and output counts:
    stored as 0, a run sent with them missing would be billed nothing without a word)."""
    if obj is None:
        return 0
    value = obj.get(key)
    if value is None:
        if required:
            raise NormalizationError(f"{prefix}.{key}", "is required in usage: a whole number from 0 to 10**12")
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > _MAX_TOKENS:
        raise NormalizationError(f"{prefix}.{key}", "must be a whole number from 0 to 10**12")
    return value


def _timestamp(obj: dict, key: str, prefix: str, *, required: bool = False, allow_float: bool = False):
    value = _get(obj, key, prefix, required=required)
    if value is None:
        return None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or (isinstance(value, float) and not allow_float and not value.is_integer()):
        raise NormalizationError(f"{prefix}.{key}", "must be Unix seconds (an integer)")
    if isinstance(value, float) and not math.isfinite(value) or not _MIN_UNIX <= value < _MAX_UNIX:
        raise NormalizationError(f"{prefix}.{key}", "must be Unix seconds between 2015 and 3000")
    return from_unix(value)


def _object(obj: dict, key: str, prefix: str) -> dict | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise NormalizationError(f"{prefix}.{key}", "must be an object")
    return value


def _list(obj: dict, key: str, prefix: str) -> list:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise NormalizationError(f"{prefix}.{key}", "must be an array")
    return value


def _metadata(obj: dict, prefix: str) -> dict:
    value = _object(obj, "metadata", prefix) or {}
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool) and item is not None:
            raise NormalizationError(f"{prefix}.metadata.{key}", "must be a string")
        if problem := _unstorable_number(item):
            raise NormalizationError(f"{prefix}.metadata.{key}", problem)
    return value


def _meta_str(metadata: dict, key: str, max_length: int) -> str:
    value = metadata.get(key)
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value)[:max_length]


def _expect_object_type(obj: Any, expected: str, prefix: str) -> dict:
    if not isinstance(obj, dict):
        raise NormalizationError(prefix, "must be an object")
    if obj.get("object") != expected:
        raise NormalizationError(f"{prefix}.object", f"must be '{expected}'")
    return obj


def _status(obj: dict, allowed: frozenset[str], prefix: str) -> str:
    status = _get(obj, "status", prefix, required=True)
    if type(status) is not str or status not in allowed:  # a list or dict is no status (nor hashable)
        raise NormalizationError(f"{prefix}.status", f"must be one of {', '.join(sorted(allowed))}")
    return status


def metadata_attribution(metadata: dict) -> dict[str, str]:
    """The attribution (user_id, session_id, feature) a run's metadata gives, cut to its columns: what a run
    carries unless `attribution` was sent beside the object."""
    return {key: _meta_str(metadata, key, limit) for key, limit in _ATTRIBUTION_LIMITS}


def _apply_metadata_attribution(record: RunRecord, metadata: dict) -> None:
    record.metadata = metadata
    for key, value in metadata_attribution(metadata).items():
        setattr(record, key, value)
    record.metadata_tenant = _meta_str(metadata, "tenant", _MAX_METADATA_TENANT)


def _check_token_consistency(record: RunRecord, prefix: str, input_key: str, output_key: str) -> None:
    if record.cached_input_tokens + record.cache_write_tokens > record.input_tokens:
        raise NormalizationError(f"{prefix}.{input_key}", "must include the cached and cache-write tokens")
    if record.reasoning_tokens > record.output_tokens:
        raise NormalizationError(f"{prefix}.{output_key}", "must include the reasoning tokens")


# --- runs and responses ----------------------------------------------------------------------------


def _short_code(obj: dict, key: str, prefix: str) -> str:
    """An error code or incomplete reason: a string (or absent), kept to the column's 64 characters."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise NormalizationError(f"{prefix}.{key}", "must be a string")
    return value[:64]


def _apply_outcome_and_usage(record: RunRecord, obj: dict, prefix: str, *, error_key: str,
                             input_key: str, output_key: str) -> None:
    """Error code, incomplete reason, metadata attribution and token usage: the same shape in a run and a
    response, under different names (`prompt_tokens` / `input_tokens`, their `*_details` objects). Cached and
    reasoning tokens are not in the Assistants SDK type but are read when a server sends them."""
    error = _object(obj, error_key, prefix)
    if error:
        record.error_code = _short_code(error, "code", f"{prefix}.{error_key}")
    incomplete = _object(obj, "incomplete_details", prefix)
    if incomplete:
        record.incomplete_reason = _short_code(incomplete, "reason", f"{prefix}.incomplete_details")
    _apply_metadata_attribution(record, _metadata(obj, prefix))

    usage = _object(obj, "usage", prefix)
    if usage is None:
        return
    usage_prefix = f"{prefix}.usage"
    input_details_key, output_details_key = f"{input_key}_details", f"{output_key}_details"
    record.has_usage = True
    record.input_tokens = _count(usage, input_key, usage_prefix, required=True)
    record.output_tokens = _count(usage, output_key, usage_prefix, required=True)
    input_details = _object(usage, input_details_key, usage_prefix)
    output_details = _object(usage, output_details_key, usage_prefix)
    record.cached_input_tokens = _count(input_details, "cached_tokens", f"{usage_prefix}.{input_details_key}")
    record.cache_write_tokens = _count(input_details, "cache_write_tokens", f"{usage_prefix}.{input_details_key}")
    record.reasoning_tokens = _count(output_details, "reasoning_tokens", f"{usage_prefix}.{output_details_key}")
    _check_token_consistency(record, usage_prefix, input_key, output_key)


def normalize_assistants_run(obj: dict, *, steps: list[dict] | None = None, prefix: str = "object") -> RunRecord:
    """A `thread.run`. Tool use comes from the run's steps when given (exact); without them a run that
    had code_interpreter enabled and reached a terminal state counts one session (the seed's rule: one
    session per run), and file-search / function calls are unknown (0)."""
    obj = _expect_object_type(obj, "thread.run", prefix)
    record = RunRecord(
        openai_id=_id(obj, "id", prefix, required=True),
        api="assistants",
        model=_string(obj, "model", prefix, required=True, max_length=_MAX_MODEL),
        status=_status(obj, RUN_STATUSES, prefix),
        created_at=_timestamp(obj, "created_at", prefix, required=True),
        thread_openai_id=_id(obj, "thread_id", prefix, required=True),
        thread_kind="thread",
        assistant_id=_string(obj, "assistant_id", prefix),
        started_at=_timestamp(obj, "started_at", prefix),
        completed_at=_timestamp(obj, "completed_at", prefix),
        failed_at=_timestamp(obj, "failed_at", prefix),
        cancelled_at=_timestamp(obj, "cancelled_at", prefix),
        expires_at=_timestamp(obj, "expires_at", prefix),
    )
    _apply_outcome_and_usage(record, obj, prefix, error_key="last_error",
                             input_key="prompt_tokens", output_key="completion_tokens")

    tool_types = set()
    for index, tool in enumerate(_list(obj, "tools", prefix)):
        if not isinstance(tool, dict):
            raise NormalizationError(f"{prefix}.tools.{index}", "must be an object")
        tool_types.add(tool.get("type"))
    if steps is not None:
        _count_step_tools(record, steps, "steps")
    elif "code_interpreter" in tool_types and record.is_terminal and record.has_usage:
        record.code_interpreter_sessions = 1
    return record


def _count_step_tools(record: RunRecord, steps: list, prefix: str) -> None:
    if not isinstance(steps, list):
        raise NormalizationError(prefix, "must be an array of run steps")
    used_code_interpreter = False
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            raise NormalizationError(f"{prefix}.{index}", "must be a run step object")
        details = step.get("step_details") or {}
        if not isinstance(details, dict) or details.get("type") != "tool_calls":
            continue
        calls = details.get("tool_calls") or []
        if not isinstance(calls, list):
            raise NormalizationError(f"{prefix}.{index}.step_details.tool_calls", "must be an array")
        for call in calls:
            kind = call.get("type") if isinstance(call, dict) else None
            if kind == "code_interpreter":
                used_code_interpreter = True
            elif kind == "file_search":
                record.file_search_calls += 1
            elif kind == "function":
                record.function_calls += 1
    # One session per run however many times code ran in it.
    record.code_interpreter_sessions = 1 if used_code_interpreter else 0


def normalize_response(obj: dict, *, prefix: str = "object") -> RunRecord:
    """A Responses `response`. `created_at` may be fractional; tool calls are counted from output items."""
    obj = _expect_object_type(obj, "response", prefix)
    record = RunRecord(
        openai_id=_id(obj, "id", prefix, required=True),
        api="responses",
        model=_string(obj, "model", prefix, required=True, max_length=_MAX_MODEL),
        status=_status(obj, RESPONSE_STATUSES, prefix),
        created_at=_timestamp(obj, "created_at", prefix, required=True, allow_float=True),
        service_tier=_string(obj, "service_tier", prefix, max_length=16),
        completed_at=_timestamp(obj, "completed_at", prefix, allow_float=True),
    )
    conversation = obj.get("conversation")
    if isinstance(conversation, dict):
        record.thread_openai_id = _id(conversation, "id", f"{prefix}.conversation")
    elif isinstance(conversation, str):
        record.thread_openai_id = _id(obj, "conversation", prefix)
    elif conversation is not None:
        raise NormalizationError(f"{prefix}.conversation", "must be an object with an id")
    if record.thread_openai_id:
        record.thread_kind = "conversation"
    prompt = obj.get("prompt")
    if isinstance(prompt, dict):
        record.prompt_id = _string(prompt, "id", f"{prefix}.prompt")
    _apply_outcome_and_usage(record, obj, prefix, error_key="error",
                             input_key="input_tokens", output_key="output_tokens")

    containers: set[str] = set()
    anonymous_code_interpreter = False
    for index, item in enumerate(_list(obj, "output", prefix)):
        if not isinstance(item, dict):
            raise NormalizationError(f"{prefix}.output.{index}", "must be an object")
        kind = item.get("type")
        if kind == "code_interpreter_call":
            container_id = item.get("container_id")
            if isinstance(container_id, str) and container_id:
                containers.add(container_id)
            else:
                anonymous_code_interpreter = True
        elif kind == "file_search_call":
            record.file_search_calls += 1
        elif kind == "web_search_call":
            record.web_search_calls += 1
        elif kind == "function_call":
            record.function_calls += 1
    # One session per distinct container; calls that name none share one session.
    record.code_interpreter_sessions = len(containers) + (1 if anonymous_code_interpreter else 0)
    tool_usage = _object(obj, "tool_usage", prefix)
    if tool_usage:
        web_search = _object(tool_usage, "web_search", f"{prefix}.tool_usage")
        reported = _count(web_search, "num_requests", f"{prefix}.tool_usage.web_search")
        record.web_search_calls = max(record.web_search_calls, reported)
    return record


def normalize_run_object(obj: Any, *, steps: list | None = None, prefix: str = "object") -> RunRecord:
    """A run or a response, whichever `obj.object` says."""
    if not isinstance(obj, dict):
        raise NormalizationError(prefix, "must be an object")
    kind = obj.get("object") if isinstance(obj.get("object"), str) else None
    if kind == "thread.run":
        return normalize_assistants_run(obj, steps=steps, prefix=prefix)
    if kind == "response":
        return normalize_response(obj, prefix=prefix)
    raise NormalizationError(f"{prefix}.object", "must be 'thread.run' or 'response'")


def apply_attribution(record: RunRecord, attribution: Any, prefix: str = "attribution") -> None:
    """Fields sent beside the object override the object's metadata."""
    if attribution is None:
        return
    if not isinstance(attribution, dict):
        raise NormalizationError(prefix, "must be an object")
    # Ignored, a misspelt key (`feture`) stored the run without the attribution its sender meant to give it.
    unknown = sorted(str(key) for key in attribution if key not in _ATTRIBUTION_KEYS)
    if unknown:
        raise NormalizationError(f"{prefix}.{unknown[0]}", "unknown field; attribution takes user_id, session_id "
                                 "and feature")
    for key, limit in _ATTRIBUTION_LIMITS:
        value = attribution.get(key)
        if value is None:
            continue
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise NormalizationError(f"{prefix}.{key}", "must be a string")
        value = str(value)
        if len(value) > limit:
            raise NormalizationError(f"{prefix}.{key}", f"must be at most {limit} characters")
        setattr(record, key, value)


# --- other resources -------------------------------------------------------------------------------


def resource_id_list(obj: dict, key: str, prefix: str = "object") -> list[str] | None:
    """The ids a resource says it is attached to (a file's `vector_store_ids`, the `thread_ids` of a store or
    file: fields an application adds to what OpenAI returns), None when not sent. The lifecycle app reads
    them with this same function, so ingest rejects exactly what it could not store."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(item, str) and 0 < len(item) <= _MAX_ID and item.isprintable() for item in value
    ):
        raise NormalizationError(f"{prefix}.{key}", f"must be an array of ids (strings of at most {_MAX_ID} characters)")
    return value


def container_expiry_minutes(obj: dict, prefix: str = "object") -> int | None:
    """A container's `expires_after.minutes`, None when not sent (read like resource_id_list)."""
    expires_after = _object(obj, "expires_after", prefix)
    minutes = expires_after.get("minutes") if expires_after is not None else None
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 0 <= minutes <= _MAX_MINUTES:
        raise NormalizationError(f"{prefix}.expires_after.minutes", f"must be a whole number from 0 to {_MAX_MINUTES}")
    return minutes


def _resource(obj: Any, kind: str, prefix: str, *, allow_float: bool = False) -> tuple[dict, ResourceRecord]:
    obj = _expect_object_type(obj, kind, prefix)
    metadata = _metadata(obj, prefix) if "metadata" in obj else {}
    record = ResourceRecord(
        openai_id=_id(obj, "id", prefix, required=True),
        kind=kind,
        created_at=_timestamp(obj, "created_at", prefix, required=True, allow_float=allow_float),
        metadata=metadata,
        metadata_tenant=_meta_str(metadata, "tenant", _MAX_METADATA_TENANT),
        raw=obj,
    )
    return obj, record


def thread_tool_resource_ids(obj: dict, prefix: str = "object") -> tuple[list[str], list[str]]:
    """(vector store ids, file ids) a thread's tool_resources name (file_search, code_interpreter). The
    sweeps keep those stores and files for the thread (ledger.ThreadToolResource), so ids that could not be
    stored are refused naming them, not dropped (nor a string read as its characters). Ingest and the
    lifecycle's re-check of a thread both read them here."""
    resources = _object(obj, "tool_resources", prefix) or {}
    tools = f"{prefix}.tool_resources"
    file_search = _object(resources, "file_search", tools) or {}
    code_interpreter = _object(resources, "code_interpreter", tools) or {}
    return (resource_id_list(file_search, "vector_store_ids", f"{tools}.file_search") or [],
            resource_id_list(code_interpreter, "file_ids", f"{tools}.code_interpreter") or [])


def normalize_thread(obj: dict, *, prefix: str = "object") -> ResourceRecord:
    obj, record = _resource(obj, "thread", prefix)
    record.vector_store_ids, record.file_ids = thread_tool_resource_ids(obj, prefix)
    record.last_active_at = record.created_at
    return record


def normalize_conversation(obj: dict, *, prefix: str = "object") -> ResourceRecord:
    _, record = _resource(obj, "conversation", prefix, allow_float=True)
    record.last_active_at = record.created_at
    return record


def normalize_vector_store(obj: dict, *, prefix: str = "object") -> ResourceRecord:
    obj, record = _resource(obj, "vector_store", prefix)
    record.name = _string(obj, "name", prefix, max_length=512)
    record.status = _string(obj, "status", prefix, max_length=_MAX_RESOURCE_STATUS)
    record.usage_bytes = _count(obj, "usage_bytes", prefix)
    record.last_active_at = _timestamp(obj, "last_active_at", prefix) or record.created_at
    record.expires_at = _timestamp(obj, "expires_at", prefix)
    record.thread_ids = resource_id_list(obj, "thread_ids", prefix) or []
    return record


def normalize_file(obj: dict, *, prefix: str = "object") -> ResourceRecord:
    obj, record = _resource(obj, "file", prefix)
    record.name = _string(obj, "filename", prefix, max_length=512)
    record.purpose = _string(obj, "purpose", prefix, max_length=32)
    record.status = _string(obj, "status", prefix, max_length=32)
    record.usage_bytes = _count(obj, "bytes", prefix)
    record.expires_at = _timestamp(obj, "expires_at", prefix)
    record.last_active_at = record.created_at
    record.vector_store_ids = resource_id_list(obj, "vector_store_ids", prefix) or []
    record.thread_ids = resource_id_list(obj, "thread_ids", prefix) or []
    return record


def normalize_container(obj: dict, *, prefix: str = "object") -> ResourceRecord:
    obj, record = _resource(obj, "container", prefix)
    record.name = _string(obj, "name", prefix, max_length=512)
    record.status = _string(obj, "status", prefix, max_length=_MAX_RESOURCE_STATUS)
    record.last_active_at = _timestamp(obj, "last_active_at", prefix) or record.created_at
    record.expires_after_minutes = container_expiry_minutes(obj, prefix)
    return record


RESOURCE_NORMALIZERS = {
    "thread": normalize_thread,
    "conversation": normalize_conversation,
    "vector_store": normalize_vector_store,
    "file": normalize_file,
    "container": normalize_container,
}


def normalize_resource(obj: Any, *, prefix: str = "object") -> ResourceRecord:
    if not isinstance(obj, dict):
        raise NormalizationError(prefix, "must be an object")
    kind = obj.get("object")
    normalizer = RESOURCE_NORMALIZERS.get(kind) if isinstance(kind, str) else None
    if normalizer is None:
        raise NormalizationError(f"{prefix}.object", f"must be one of {', '.join(RESOURCE_NORMALIZERS)}")
    record = normalizer(obj, prefix=prefix)
    # A resource is stored whole (its `raw` JSON): what no JSON column holds, at any depth, is refused for this
    # event, not a failed batch. Checked after the fields, so a field's own error names it.
    error = _unstorable_value(obj, prefix)
    if error is not None:
        raise error
    return record


# --- the ingest fast path --------------------------------------------------------------------------
#
# The functions above build a detailed error for every field they read. Ingest reads ~1,000 objects per
# request, nearly all of them well formed, so it first tries `run_fields_fast`: plain dict access and
# exact type checks, no exceptions, no intermediate record. On anything unusual it answers None and the
# caller runs the detailed path, which gives the same result for a good object and the precise error for a
# bad one. The fast path only ever accepts a subset of what the detailed path accepts, with equal fields
# (tests/ledger/test_fast_parse.py compares the two).

# Metadata values the fast path takes as they are; a float is taken only when finite (JSON's 1e400 reads as inf)
# and an int only within 64 bits, checked apart so that string values, nearly all of them, cost one set lookup.
_SCALARS = frozenset({str, int, bool, type(None)})


def _opt_str(value, max_length: int = _MAX_ID):
    """The string, "" for None, or None when the detailed path must judge it."""
    if value is None:
        return ""
    if type(value) is str and len(value) <= max_length:
        return value
    return None


def _req_str(value, max_length: int = _MAX_ID):
    if type(value) is str and len(value) <= max_length and value.strip():
        return value
    return None


def _tokens(container, key: str):
    """A token count; -1 when the detailed path must judge it."""
    if container is None:
        return 0
    value = container.get(key)
    if value is None:
        return 0
    if type(value) is int and 0 <= value <= _MAX_TOKENS:
        return value
    return -1


def _unix_ok(value, allow_float: bool) -> bool:
    if type(value) is int:
        return _MIN_UNIX <= value < _MAX_UNIX
    return allow_float and type(value) is float and math.isfinite(value) and _MIN_UNIX <= value < _MAX_UNIX


def run_fields_fast(obj: dict, *, steps=None, attribution=None) -> dict | None:
    """Ledger fields of a well-formed `thread.run` or `response` (metadata attribution and the event's
    `attribution` applied), with `metadata_tenant`; None whenever the detailed path must decide."""
    if steps is not None:
        return None
    kind = obj.get("object")
    if kind == "thread.run":
        fields = _assistants_fast(obj)
    elif kind == "response":
        fields = _response_fast(obj)
    else:
        return None
    if fields is None:
        return None
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = {}
    elif type(metadata) is not dict:
        return None
    for value in metadata.values():
        kind = type(value)
        if kind not in _SCALARS:
            if kind is not float or not math.isfinite(value):
                return None
        elif kind is int and not _MIN_JSON_INT <= value <= _MAX_JSON_INT:
            return None
    get = metadata.get
    for key, limit in _METADATA_READ:
        value = get(key)
        fields["metadata_tenant" if key == "tenant" else key] = "" if value is None else str(value)[:limit]
    fields["metadata"] = metadata
    if attribution is not None:
        if type(attribution) is not dict or not attribution.keys() <= _ATTRIBUTION_KEYS:
            return None
        for key, limit in _ATTRIBUTION_LIMITS:
            value = attribution.get(key)
            if value is None:
                continue
            if type(value) is not str or len(value) > limit:
                return None
            fields[key] = value
    return fields


def _usage_fast(fields: dict, usage, input_key: str, output_key: str, input_details: str, output_details: str) -> bool:
    if usage is None:
        return True
    if type(usage) is not dict:
        return False
    prompt = usage.get(input_details)
    completion = usage.get(output_details)
    if (prompt is not None and type(prompt) is not dict) or (completion is not None and type(completion) is not dict):
        return False
    if usage.get(input_key) is None or usage.get(output_key) is None:
        return False  # required: the detailed path names the field
    counts = (_tokens(usage, input_key), _tokens(usage, output_key), _tokens(prompt, "cached_tokens"),
              _tokens(prompt, "cache_write_tokens"), _tokens(completion, "reasoning_tokens"))
    if -1 in counts:
        return False
    input_tokens, output_tokens, cached, cache_write, reasoning = counts
    if cached + cache_write > input_tokens or reasoning > output_tokens:
        return False
    fields["input_tokens"] = input_tokens
    fields["output_tokens"] = output_tokens
    fields["cached_input_tokens"] = cached
    fields["cache_write_tokens"] = cache_write
    fields["reasoning_tokens"] = reasoning
    return True


def _code(details, key: str):
    """error_code / incomplete_reason from an optional object; None when the detailed path must judge it."""
    if not details:
        return "" if details is None or type(details) is dict else None
    if type(details) is not dict:
        return None
    value = details.get(key)
    if value is None:
        return ""
    # A code is a string (OpenAI's are short words); anything else goes to the detailed path, which refuses it.
    return value[:64] if type(value) is str else None


def _base_fields() -> dict:
    return {
        "thread_openai_id": "", "assistant_id": "", "prompt_id": "", "service_tier": "", "started_at": None,
        "completed_at": None, "failed_at": None, "cancelled_at": None, "expires_at": None, "error_code": "",
        "incomplete_reason": "", "input_tokens": 0, "cached_input_tokens": 0, "cache_write_tokens": 0,
        "output_tokens": 0, "reasoning_tokens": 0, "code_interpreter_sessions": 0, "file_search_calls": 0,
        "web_search_calls": 0, "function_calls": 0,
    }


def _assistants_fast(obj: dict) -> dict | None:
    get = obj.get
    openai_id, model, thread_id = _fast_id(get("id")), _req_str(get("model"), _MAX_MODEL), _fast_id(get("thread_id"))
    status, created = get("status"), get("created_at")
    assistant_id = _opt_str(get("assistant_id"))
    if (openai_id is None or model is None or thread_id is None or assistant_id is None
            or type(status) is not str or status not in RUN_STATUSES or not _unix_ok(created, False)):
        return None
    fields = _base_fields()
    fields.update(openai_id=openai_id, api="assistants", model=model, status=status, created_at=from_unix(created),
                  thread_openai_id=thread_id, assistant_id=assistant_id)
    for key in ("started_at", "completed_at", "failed_at", "cancelled_at", "expires_at"):
        value = get(key)
        if value is not None:
            if not _unix_ok(value, False):
                return None
            fields[key] = from_unix(value)
    error_code, incomplete = _code(get("last_error"), "code"), _code(get("incomplete_details"), "reason")
    if error_code is None or incomplete is None:
        return None
    fields["error_code"], fields["incomplete_reason"] = error_code, incomplete
    usage = get("usage")
    if not _usage_fast(fields, usage, "prompt_tokens", "completion_tokens", "prompt_tokens_details",
                       "completion_tokens_details"):
        return None
    tools = get("tools")
    code_interpreter = False
    if tools is not None:
        if type(tools) is not list:
            return None
        for tool in tools:
            if type(tool) is not dict:
                return None
            if tool.get("type") == "code_interpreter":
                code_interpreter = True
    if code_interpreter and status in TERMINAL and usage is not None:
        fields["code_interpreter_sessions"] = 1
    return fields


def _response_fast(obj: dict) -> dict | None:
    get = obj.get
    openai_id, model = _fast_id(get("id")), _req_str(get("model"), _MAX_MODEL)
    status, created, completed = get("status"), get("created_at"), get("completed_at")
    service_tier = _opt_str(get("service_tier"), 16)
    if (openai_id is None or model is None or service_tier is None or type(status) is not str
            or status not in RESPONSE_STATUSES or not _unix_ok(created, True)
            or (completed is not None and not _unix_ok(completed, True))):
        return None
    fields = _base_fields()
    fields.update(openai_id=openai_id, api="responses", model=model, status=status, created_at=from_unix(created),
                  service_tier=service_tier, completed_at=from_unix(completed))
    conversation = get("conversation")
    if type(conversation) is dict:
        thread_id = _opt_str(conversation.get("id"))
    elif conversation is None or type(conversation) is str:
        thread_id = _opt_str(conversation)
    else:
        return None
    prompt = get("prompt")
    prompt_id = _opt_str(prompt.get("id")) if type(prompt) is dict else ""
    if thread_id is None or prompt_id is None or _NOT_IN_IDS.search(thread_id):
        return None
    fields["thread_openai_id"], fields["prompt_id"] = thread_id, prompt_id
    error_code, incomplete = _code(get("error"), "code"), _code(get("incomplete_details"), "reason")
    if error_code is None or incomplete is None:
        return None
    fields["error_code"], fields["incomplete_reason"] = error_code, incomplete
    if not _usage_fast(fields, get("usage"), "input_tokens", "output_tokens", "input_tokens_details",
                       "output_tokens_details"):
        return None
    output = get("output")
    if output is not None:
        if type(output) is not list:
            return None
        containers: set[str] = set()
        anonymous = False
        file_search = web_search = function = 0
        for item in output:
            if type(item) is not dict:
                return None
            item_kind = item.get("type")
            if item_kind == "code_interpreter_call":
                container_id = item.get("container_id")
                if isinstance(container_id, str) and container_id:
                    containers.add(container_id)
                else:
                    anonymous = True
            elif item_kind == "file_search_call":
                file_search += 1
            elif item_kind == "web_search_call":
                web_search += 1
            elif item_kind == "function_call":
                function += 1
        fields["code_interpreter_sessions"] = len(containers) + (1 if anonymous else 0)
        fields["file_search_calls"], fields["web_search_calls"], fields["function_calls"] = (
            file_search, web_search, function)
    tool_usage = get("tool_usage")
    if tool_usage is not None and type(tool_usage) is not dict:
        return None
    if tool_usage:
        web = tool_usage.get("web_search")
        if web is not None and type(web) is not dict:
            return None
        reported = _tokens(web, "num_requests")
        if reported < 0:
            return None
        fields["web_search_calls"] = max(fields["web_search_calls"], reported)
    return fields
