"""The /v1 endpoints: request parsing, auth, routing, OpenAI envelopes and the per-resource handlers."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from . import billing, objects
from .faults import FaultInjector
from .state import REQUIRES_ACTION_SECONDS, ResponseSim, RunSim, SandboxError, SandboxState, bad_request

# The Responses API's service tiers, as a Response object names the one that served it (reference: openai-api.md).
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast", "ultrafast")
MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're "
    "accessing the API from your browser and are prompted for a username and password. You can obtain an API "
    "key from https://platform.openai.com/account/api-keys."
)


def api_key_id(key: str) -> str:
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _masked(key: str) -> str:
    return key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 8 else "*" * len(key)


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict = field(default_factory=dict)
    raw_body: bytes = b""
    api_key: str = ""
    project_id: str = "proj_default"

    def arg(self, name: str, default=None):
        values = self.query.get(name)
        return values[-1] if values else default

    def args(self, name: str) -> list[str]:
        return self.query.get(name, [])

    def int_arg(self, name: str, default: int | None, low: int, high: int) -> int | None:
        raw = self.arg(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise bad_request(f"Invalid '{name}': expected an integer, got '{raw}'.", param=name) from None
        if not low <= value <= high:
            raise bad_request(f"Invalid '{name}': integer {value} is out of range ({low}..{high}).", param=name,
                              code="integer_out_of_range")
        return value

    @property
    def api_key_id(self) -> str:
        return api_key_id(self.api_key)


def parse_request(environ) -> Request:
    query: dict[str, list[str]] = {}
    for key, values in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items():
        # The SDK sends arrays as group_by[]=a&group_by[]=b; plain repeated keys are accepted too.
        query.setdefault(key[:-2] if key.endswith("[]") else key, []).extend(values)
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    request = Request(method=environ["REQUEST_METHOD"].upper(), path=environ.get("PATH_INFO", "/"), query=query,
                      headers=headers, raw_body=raw)
    content_type = headers.get("content-type", "")
    if raw and "multipart/form-data" in content_type:
        request.body = _parse_multipart(raw, content_type)
    elif raw:
        try:
            request.body = json.loads(raw)
        except ValueError:
            raise bad_request("We could not parse the JSON body of your request. (HINT: This likely means you "
                              "aren't using your HTTP library correctly.)") from None
        if not isinstance(request.body, dict):
            raise bad_request("The request body must be a JSON object.")
    authorization = headers.get("authorization", "")
    request.api_key = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
    return request


def _parse_multipart(raw: bytes, content_type: str) -> dict:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    body: dict = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        body[name] = {"filename": filename, "content": payload} if filename else payload.decode()
    return body


# ----------------------------------------------------------------------------------------------
# list envelopes
def cursor_page(items: list[dict], request: Request, *, default_limit: int = 20, max_limit: int = 100,
                default_order: str = "desc", allow_before: bool = True) -> dict:
    limit = request.int_arg("limit", default_limit, 1, max_limit)
    order = request.arg("order", default_order)
    if order not in {"asc", "desc"}:
        raise bad_request(f"Invalid value for 'order': expected one of asc, desc, got '{order}'.", param="order")
    ordered = sorted(items, key=lambda item: item.get("created_at") or 0, reverse=order == "desc")
    if order == "desc":
        # Same created_at: newest insertion first, as a stable reverse of insertion order.
        ordered = sorted(reversed(items), key=lambda item: item.get("created_at") or 0, reverse=True)
    start, stop = 0, len(ordered)
    after, before = request.arg("after"), request.arg("before") if allow_before else None
    ids = [item["id"] for item in ordered]
    if after:
        if after not in ids:
            raise bad_request(f"Invalid 'after': no object with id '{after}' in this list.", param="after")
        start = ids.index(after) + 1
    if before:
        if before not in ids:
            raise bad_request(f"Invalid 'before': no object with id '{before}' in this list.", param="before")
        stop = ids.index(before)
        start = max(start, stop - limit) if not after else start
    page = ordered[start:min(stop, start + limit)]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": start + limit < stop}


def _metadata(body: dict, param: str = "metadata") -> dict:
    metadata = body.get(param)
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or len(metadata) > 16:
        raise bad_request("Invalid 'metadata': expected an object with at most 16 keys.", param=param)
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise bad_request("Invalid 'metadata': keys must be at most 64 characters and values strings of at "
                              "most 512 characters.", param=param)
    return dict(metadata)


def _message_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


# ----------------------------------------------------------------------------------------------
class SandboxApi:
    """Routes /v1 requests to handlers; every handler runs under the state lock."""

    def __init__(self, state: SandboxState, faults: FaultInjector, *, api_keys: set[str], admin_keys: set[str]):
        self.state = state
        self.faults = faults
        self.api_keys = api_keys
        self.admin_keys = admin_keys
        # Project keys: an API key that belongs to one project, as OpenAI's project keys do (the sandbox's
        # own key works in any project, like a user key with the OpenAI-Project header).
        self.key_projects: dict[str, str] = {}
        self.routes: list[tuple[str, re.Pattern, str, str]] = []
        for method, pattern, handler, auth in ROUTES:
            regex = re.compile("^/v1" + re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", pattern) + "$")
            self.routes.append((method, regex, handler, auth))

    def resolve(self, method: str, path: str):
        allowed = False
        for route_method, regex, handler, auth in self.routes:
            match = regex.match(path)
            if match:
                if route_method == method:
                    return getattr(self, handler), auth, match.groupdict()
                allowed = True
        if allowed:
            raise SandboxError(405, f"Invalid method for URL ({method} {path})")
        raise SandboxError(404, f"Invalid URL ({method} {path})")

    def authenticate(self, request: Request, auth: str) -> None:
        if not request.api_key:
            raise SandboxError(401, MISSING_KEY_MESSAGE)
        keys = self.admin_keys if auth == "admin" else self.api_keys
        if request.api_key not in keys:
            if auth == "admin" and request.api_key in self.api_keys:
                raise SandboxError(401, "You have insufficient permissions for this operation: the organization "
                                   "usage and costs endpoints need an admin API key.", code="invalid_api_key")
            raise SandboxError(401, f"Incorrect API key provided: {_masked(request.api_key)}. You can find your API "
                               "key at https://platform.openai.com/account/api-keys.", code="invalid_api_key")

    def handle(self, request: Request) -> tuple[int, dict, dict]:
        handler, auth, params = self.resolve(request.method, request.path)
        self.authenticate(request, auth)
        header, bound = request.headers.get("openai-project"), self.key_projects.get(request.api_key)
        if bound and header and header != bound:
            raise SandboxError(401, f"OpenAI-Project header should match project for API key (the key belongs to "
                               f"{bound}, the header names {header}).", code="mismatched_project")
        request.project_id = header or bound or self.state.default_project
        rule = self.faults.match(request.method, request.path)
        if rule is not None:
            if rule.latency_ms:
                time.sleep(rule.latency_ms / 1000)
            if rule.kind == "rate_limit":
                headers = {"x-ratelimit-limit-requests": "5000", "x-ratelimit-remaining-requests": "0"}
                if rule.retry_after is not None:
                    headers["retry-after"] = f"{rule.retry_after:g}"
                if rule.retry_after_ms is not None:
                    headers["retry-after-ms"] = str(rule.retry_after_ms)
                raise SandboxError(429, "Rate limit reached for requests. Please try again later.", type="requests",
                                   code="rate_limit_exceeded", headers=headers)
            if rule.kind == "server_error":
                raise SandboxError(rule.status, "The server had an error while processing your request. Sorry about "
                                   "that!", type="server_error")
            if rule.kind == "not_found":
                raise not_found_for_path(request.path)
        with self.state.lock:
            self.state.viewing_project = request.project_id
            try:
                result = handler(request, **params)
            finally:
                self.state.viewing_project = None
        return 200, result, {}

    # -- assistants ---------------------------------------------------------------------------
    def list_assistants(self, request):
        return cursor_page(self.state.visible_values(self.state.assistants), request)

    def retrieve_assistant(self, request, assistant_id):
        return self.state.get_assistant(assistant_id)

    def create_assistant(self, request):
        body = request.body
        if not body.get("model"):
            raise bad_request("Missing required parameter: 'model'.", param="model")
        now = self.state.now()
        obj = objects.assistant(
            assistant_id=self.state.new_id("asst_"), created_at=int(now), model=body["model"], name=body.get("name"),
            instructions=body.get("instructions"), tools=body.get("tools") or [], metadata=_metadata(body),
            tool_resources=body.get("tool_resources"), description=body.get("description"))
        self.state.assistants[obj["id"]] = obj
        self.state.project_of[obj["id"]] = request.project_id
        return obj

    # -- threads and messages -----------------------------------------------------------------
    def create_thread(self, request):
        body = request.body
        now = self.state.now()
        obj = objects.thread(thread_id=self.state.new_id("thread_"), created_at=int(now), metadata=_metadata(body),
                             tool_resources=body.get("tool_resources"))
        self.state.add_thread(obj, project_id=request.project_id)
        for message in body.get("messages") or []:
            self._add_user_message(obj["id"], message, int(now))
        return obj

    def _add_user_message(self, thread_id: str, message: dict, created_at: int) -> dict:
        role = message.get("role", "user")
        if role not in {"user", "assistant"}:
            raise bad_request(f"Invalid value: '{role}'. Supported values are: 'user' and 'assistant'.", param="role")
        return self.state.add_message(objects.message(
            message_id=self.state.new_id("msg_"), thread_id=thread_id, created_at=created_at, role=role,
            text=_message_text(message.get("content")), metadata=_metadata(message)))

    def retrieve_thread(self, request, thread_id):
        return self.state.get_thread(thread_id)

    def update_thread(self, request, thread_id):
        obj = self.state.get_thread(thread_id)
        if "metadata" in request.body:
            obj["metadata"] = _metadata(request.body)
        if "tool_resources" in request.body:
            obj["tool_resources"] = request.body["tool_resources"] or {}
        return obj

    def delete_thread(self, request, thread_id):
        return self.state.delete_thread(thread_id)

    def list_messages(self, request, thread_id):
        self.state.get_thread(thread_id)
        items = self.state.messages.get(thread_id, [])
        run_id = request.arg("run_id")
        if run_id:
            items = [item for item in items if item.get("run_id") == run_id]
        return cursor_page(items, request)

    def create_message(self, request, thread_id):
        self.state.get_thread(thread_id)
        active = self.state.active_run(thread_id)
        if active is not None:
            raise bad_request(f"Can't add messages to {thread_id} while a run {active['id']} is active.")
        if "content" not in request.body:
            raise bad_request("Missing required parameter: 'content'.", param="content")
        return self._add_user_message(thread_id, request.body, int(self.state.now()))

    # -- runs ---------------------------------------------------------------------------------
    def create_run(self, request, thread_id):
        state = self.state
        body = dict(request.body)
        hint = body.pop("sandbox", None) or {}
        thread = state.get_thread(thread_id)
        if not body.get("assistant_id"):
            raise bad_request("Missing required parameter: 'assistant_id'.", param="assistant_id")
        assistant = state.get_assistant(body["assistant_id"])
        active = state.active_run(thread_id)
        if active is not None:
            raise bad_request(f"Thread {thread_id} already has an active run {active['id']}.")
        now = state.now()
        model = body.get("model") or assistant["model"]
        state.check_model(model, now)
        for message in body.get("additional_messages") or []:
            self._add_user_message(thread_id, message, int(now))
        tools = body.get("tools") if body.get("tools") is not None else assistant["tools"]
        instructions = body.get("instructions") or assistant.get("instructions") or ""
        if body.get("additional_instructions"):
            instructions = f"{instructions}\n{body['additional_instructions']}".strip()
        history = sum(estimate_tokens(_message_text(m["content"][0]["text"]["value"])) + 4
                      for m in state.messages.get(thread_id, []))
        prompt_tokens = int(hint.get("prompt_tokens") or (180 + estimate_tokens(instructions) + 60 * len(tools) + history))
        completion_tokens = int(hint.get("completion_tokens") or state.rng.randint(40, 400))
        tool_types = [tool.get("type") for tool in tools]
        tool_kinds = hint.get("tool_calls")
        if tool_kinds is None:
            tool_kinds = [kind for kind in ("code_interpreter", "file_search") if kind in tool_types]
        outcome = hint.get("outcome", "completed")
        if outcome not in {"completed", "failed", "incomplete", "requires_action", "expired"}:
            raise bad_request(f"Unknown sandbox outcome '{outcome}'.", param="sandbox.outcome")
        function_names = [tool["function"]["name"] for tool in tools if tool.get("type") == "function"]
        function_calls = [{"name": call["name"], "arguments": call.get("arguments", "{}")}
                          for call in hint.get("function_calls", [])] or \
            [{"name": (function_names or ["lookup"])[0], "arguments": "{}"}]
        start_at = now + float(hint.get("queued_seconds", 0.2))
        sim = RunSim(outcome=outcome, start_at=start_at,
                     done_at=start_at + float(hint.get("in_progress_seconds", round(state.rng.uniform(0.5, 2.0), 3))),
                     prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, project_id=request.project_id,
                     api_key_id=request.api_key_id, tool_kinds=list(tool_kinds), function_calls=function_calls,
                     reply=hint.get("reply", "Here is what I found."))
        run = objects.run(
            run_id=state.new_id("run_"), thread_id=thread_id, assistant_id=assistant["id"], created_at=int(now),
            model=model, instructions=instructions, tools=tools, metadata=_metadata(body),
            max_prompt_tokens=body.get("max_prompt_tokens"), max_completion_tokens=body.get("max_completion_tokens"),
            tool_choice=body.get("tool_choice") or "auto", parallel_tool_calls=body.get("parallel_tool_calls", True),
            temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0),
            response_format=body.get("response_format") or "auto", truncation_strategy=body.get("truncation_strategy"))
        for store_id in (thread.get("tool_resources") or {}).get("file_search", {}).get("vector_store_ids", []):
            state.touch_vector_store(store_id, now)
        return state.add_run(run, sim)

    def list_runs(self, request, thread_id):
        self.state.get_thread(thread_id)
        return cursor_page([self.state.runs[run_id] for run_id in self.state.thread_runs.get(thread_id, [])], request)

    def retrieve_run(self, request, thread_id, run_id):
        return self.state.get_run(thread_id, run_id)

    def cancel_run(self, request, thread_id, run_id):
        return self.state.cancel_run(thread_id, run_id)

    def submit_tool_outputs(self, request, thread_id, run_id):
        return self.state.submit_tool_outputs(thread_id, run_id, request.body.get("tool_outputs") or [])

    def list_run_steps(self, request, thread_id, run_id):
        self.state.get_run(thread_id, run_id)
        return cursor_page(self.state.run_steps.get(run_id, []), request)

    # -- responses and conversations ----------------------------------------------------------
    def create_response(self, request):
        state = self.state
        body = dict(request.body)
        hint = body.pop("sandbox", None) or {}
        model = body.get("model")
        if not model:
            raise bad_request("Missing required parameter: 'model'.", param="model")
        service_tier = body.get("service_tier") or "default"
        if service_tier not in SERVICE_TIERS:
            # Costs scale by the tier each response was served on: one that is not a tier OpenAI offers (5, a
            # list) was accepted here and made every Costs request over its day a 500.
            raise bad_request(f"Invalid value: {json.dumps(service_tier)}. Supported values are: "
                              f"{', '.join(repr(tier) for tier in SERVICE_TIERS)}.", param="service_tier",
                              code="invalid_value")
        now = state.now()
        state.check_model(model, now)
        conversation = body.get("conversation")
        conversation_id = conversation.get("id") if isinstance(conversation, dict) else conversation
        history_tokens = 0
        if conversation_id:
            state.get_conversation(conversation_id)
            history_tokens = sum(estimate_tokens(json.dumps(item)) for item in state.conversation_items[conversation_id])
        previous_id = body.get("previous_response_id")
        if previous_id:
            previous = state.get_response(previous_id)
            history_tokens += (previous.get("usage") or {}).get("total_tokens", 0)
        raw_input = body.get("input") or ""
        input_messages = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else [
            item for item in raw_input if isinstance(item, dict)]
        input_text = " ".join(_message_text(item.get("content")) for item in input_messages)
        instructions = body.get("instructions")
        input_tokens = int(hint.get("input_tokens") or (history_tokens + estimate_tokens(input_text)
                                                        + estimate_tokens(instructions or "") + 12))
        cached_tokens = int(hint.get("cached_tokens", (history_tokens // 128) * 128 if history_tokens else 0))
        cache_write_tokens = int(hint.get("cache_write_tokens", 0))
        if cached_tokens + cache_write_tokens > input_tokens:
            raise bad_request("sandbox hint: cached_tokens + cache_write_tokens exceed input_tokens.", param="sandbox")
        output_tokens = int(hint.get("output_tokens") or state.rng.randint(30, 600))
        reasoning_tokens = int(hint.get("reasoning_tokens", output_tokens * 3 // 10 if objects.is_reasoning_model(model) else 0))
        tools = body.get("tools") or []
        counts = hint.get("tool_calls")
        if counts is None:
            counts = {tool.get("type"): 1 for tool in tools}
        output, vector_store_id = self._response_tool_items(tools, counts, input_text, now, request)
        status = hint.get("status", "completed")
        function_pending = any(item["type"] == "function_call" for item in output)
        if status == "completed" and not function_pending:
            output.append(objects.output_message_item(item_id=state.new_hex_id("msg_"),
                                                      text=hint.get("reply", "Here is what I found.")))
        if status == "failed":
            output_tokens, reasoning_tokens = 0, 0
        usage_block = objects.response_usage(input_tokens=input_tokens, cached_tokens=cached_tokens,
                                             cache_write_tokens=cache_write_tokens, output_tokens=output_tokens,
                                             reasoning_tokens=reasoning_tokens)
        response_id = state.new_hex_id("resp_")
        background = bool(body.get("background"))
        web_searches = sum(1 for item in output if item["type"] == "web_search_call")
        final = objects.response(
            response_id=response_id, created_at=round(now, 3), model=model, status=status, output=output,
            metadata=_metadata(body), usage_block=usage_block, tools=tools, conversation_id=conversation_id,
            instructions=instructions, service_tier=service_tier, background=background,
            previous_response_id=previous_id, max_output_tokens=body.get("max_output_tokens"),
            completed_at=round(now + 1.0, 3) if status == "completed" else None,
            error={"code": "server_error", "message": "The model failed to generate a response."} if status == "failed" else None,
            incomplete_reason="max_output_tokens" if status == "incomplete" else None, web_search_requests=web_searches)
        if conversation_id:
            for message in input_messages:
                state.conversation_items[conversation_id].append(objects.input_message_item(
                    item_id=state.new_hex_id("msg_"), role=message.get("role", "user"),
                    text=_message_text(message.get("content"))))
        if background:
            pending = dict(final, status="queued", output=[], usage=None, completed_at=None, error=None,
                           incomplete_details=None, tool_usage=None)
            sim = ResponseSim(start_at=now + float(hint.get("queued_seconds", 0.2)),
                              finish_at=now + float(hint.get("in_progress_seconds", 1.5)),
                              final={key: final[key] for key in ("status", "output", "usage", "completed_at", "error",
                                                                  "incomplete_details", "tool_usage")})
            state.add_response(pending, project_id=request.project_id, api_key_id=request.api_key_id, sim=sim,
                               vector_store_id=vector_store_id)
            state.advance_response(response_id)
            return pending
        state.add_response(final, project_id=request.project_id, api_key_id=request.api_key_id,
                           vector_store_id=vector_store_id)
        state._append_conversation_output(final)
        return final

    def _response_tool_items(self, tools: list, counts: dict, query: str, now: float, request) -> tuple[list, str | None]:
        state = self.state
        output: list[dict] = []
        vector_store_id = None
        by_type = {}
        for tool in tools:
            by_type.setdefault("web_search" if str(tool.get("type", "")).startswith("web_search") else tool.get("type"), tool)
        for kind, count in counts.items():
            kind = "web_search" if str(kind).startswith("web_search") else kind
            for _ in range(int(count)):
                if kind == "file_search":
                    store_ids = by_type.get("file_search", {}).get("vector_store_ids") or []
                    vector_store_id = vector_store_id or (store_ids[0] if store_ids else None)
                    for store_id in store_ids:
                        state.touch_vector_store(store_id, now)
                    output.append({"id": state.new_hex_id("fs_"), "type": "file_search_call", "status": "completed",
                                   "queries": [query[:80] or "search"], "results": None})
                elif kind == "code_interpreter":
                    container_id = self._container_for(by_type.get("code_interpreter", {}), now, request)
                    output.append({"id": state.new_hex_id("ci_"), "type": "code_interpreter_call", "status": "completed",
                                   "container_id": container_id, "code": "print(sum(range(10)))",
                                   "outputs": [{"type": "logs", "logs": "45"}]})
                elif kind == "web_search":
                    output.append({"id": state.new_hex_id("ws_"), "type": "web_search_call", "status": "completed",
                                   "action": {"type": "search", "query": query[:80] or "search"}})
                elif kind == "function":
                    tool = by_type.get("function", {})
                    output.append({"id": state.new_hex_id("fc_"), "type": "function_call", "status": "completed",
                                   "call_id": state.new_id("call_"), "name": tool.get("name", "lookup"),
                                   "arguments": "{}"})
        return output, vector_store_id

    def _container_for(self, tool: dict, now: float, request) -> str:
        state = self.state
        container = tool.get("container")
        if isinstance(container, str):
            existing = state.get_container(container)
            existing["last_active_at"] = int(now)
            return container
        # {"type": "auto"} (or nothing): one new container per response, as OpenAI does.
        obj = objects.container(container_id=state.new_hex_id("cntr_"), created_at=int(now), last_active_at=int(now),
                                name="auto", memory_limit=(container or {}).get("memory_limit", "1g")
                                if isinstance(container, dict) else "1g")
        state.add_container(obj, project_id=request.project_id)
        return obj["id"]

    def retrieve_response(self, request, response_id):
        return self.state.get_response(response_id)

    def cancel_response(self, request, response_id):
        return self.state.cancel_response(response_id)

    def create_conversation(self, request):
        now = self.state.now()
        obj = objects.conversation(conversation_id=self.state.new_hex_id("conv_"), created_at=int(now),
                                   metadata=_metadata(request.body))
        self.state.add_conversation(obj, project_id=request.project_id)
        for item in request.body.get("items") or []:
            self.state.conversation_items[obj["id"]].append(objects.input_message_item(
                item_id=self.state.new_hex_id("msg_"), role=item.get("role", "user"),
                text=_message_text(item.get("content"))))
        return obj

    def retrieve_conversation(self, request, conversation_id):
        return self.state.get_conversation(conversation_id)

    def update_conversation(self, request, conversation_id):
        obj = self.state.get_conversation(conversation_id)
        obj["metadata"] = _metadata(request.body)
        return obj

    def delete_conversation(self, request, conversation_id):
        return self.state.delete_conversation(conversation_id)

    def list_conversation_items(self, request, conversation_id):
        self.state.get_conversation(conversation_id)
        items = self.state.conversation_items[conversation_id]
        # Items have no created_at: order is insertion order (asc) or its reverse (desc, the default).
        numbered = [dict(item, created_at=index) for index, item in enumerate(items)]
        page = cursor_page(numbered, request, allow_before=False)
        for item in page["data"]:
            item.pop("created_at")
        return page

    # -- vector stores --------------------------------------------------------------------------
    def create_vector_store(self, request):
        state = self.state
        body = request.body
        now = int(state.now())
        store_id = state.new_id("vs_")
        files = []
        for file_id in body.get("file_ids") or []:
            source = state.get_file(file_id)
            files.append(objects.vector_store_file(file_id=file_id, vector_store_id=store_id, created_at=now,
                                                   usage_bytes=source["bytes"]))
        expires_after = body.get("expires_after")
        if expires_after is not None and (expires_after.get("anchor") != "last_active_at"
                                          or not 1 <= int(expires_after.get("days", 0)) <= 365):
            raise bad_request("Invalid 'expires_after': anchor must be 'last_active_at' and days 1..365.",
                              param="expires_after")
        obj = objects.vector_store(vector_store_id=store_id, created_at=now, name=body.get("name") or "",
                                   usage_bytes=sum(item["usage_bytes"] for item in files), file_counts={},
                                   last_active_at=now, expires_after=expires_after, metadata=_metadata(body))
        return state.add_vector_store(obj, project_id=request.project_id, files=files)

    def list_vector_stores(self, request):
        stores = self.state.visible_values(self.state.vector_stores)
        for store in stores:
            self.state._refresh_vector_store(store)
        return cursor_page(stores, request)

    def retrieve_vector_store(self, request, vector_store_id):
        return self.state.get_vector_store(vector_store_id)

    def update_vector_store(self, request, vector_store_id):
        store = self.state.get_vector_store(vector_store_id)
        body = request.body
        if "name" in body:
            store["name"] = body["name"] or ""
        if "metadata" in body:
            store["metadata"] = _metadata(body)
        if "expires_after" in body:
            store["expires_after"] = body["expires_after"]
        store["last_active_at"] = int(self.state.now())
        self.state._refresh_vector_store(store)
        return store

    def delete_vector_store(self, request, vector_store_id):
        return self.state.delete_vector_store(vector_store_id)

    def list_vector_store_files(self, request, vector_store_id):
        self.state.get_vector_store(vector_store_id)
        items = list(self.state.vector_store_files[vector_store_id].values())
        status = request.arg("filter")
        if status:
            if status not in {"in_progress", "completed", "failed", "cancelled"}:
                raise bad_request(f"Invalid value for 'filter': '{status}'.", param="filter")
            items = [item for item in items if item["status"] == status]
        return cursor_page(items, request)

    def retrieve_vector_store_file(self, request, vector_store_id, file_id):
        self.state.get_vector_store(vector_store_id)
        item = self.state.vector_store_files[vector_store_id].get(file_id)
        if item is None:
            raise SandboxError(404, f"No file found with id '{file_id}' in vector store '{vector_store_id}'.")
        return item

    def delete_vector_store_file(self, request, vector_store_id, file_id):
        return self.state.delete_vector_store_file(vector_store_id, file_id)

    # -- files and containers -------------------------------------------------------------------
    def list_files(self, request):
        items = self.state.visible_values(self.state.files)
        purpose = request.arg("purpose")
        if purpose:
            items = [item for item in items if item["purpose"] == purpose]
        return cursor_page(items, request, default_limit=10000, max_limit=10000, allow_before=False)

    def create_file(self, request):
        upload = request.body.get("file")
        purpose = request.body.get("purpose")
        if not isinstance(upload, dict):
            raise bad_request("Missing required parameter: 'file'.", param="file")
        if purpose not in {"assistants", "batch", "fine-tune", "vision", "user_data"}:
            raise bad_request(f"Invalid value for 'purpose': '{purpose}'.", param="purpose")
        obj = objects.file(file_id=self.state.new_id("file-", 22), created_at=int(self.state.now()),
                           size_bytes=len(upload["content"]), filename=upload["filename"] or "upload", purpose=purpose)
        return self.state.add_file(obj, project_id=request.project_id)

    def retrieve_file(self, request, file_id):
        return self.state.get_file(file_id)

    def delete_file(self, request, file_id):
        return self.state.delete_file(file_id)

    def create_container(self, request):
        now = int(self.state.now())
        expires = request.body.get("expires_after") or {}
        obj = objects.container(container_id=self.state.new_hex_id("cntr_"), created_at=now, last_active_at=now,
                                name=request.body.get("name") or "container", minutes=int(expires.get("minutes", 20)),
                                memory_limit=request.body.get("memory_limit") or "1g")
        return self.state.add_container(obj, project_id=request.project_id)

    def list_containers(self, request):
        containers = self.state.visible_values(self.state.containers)
        for container in containers:
            self.state._refresh_container(container)
        return cursor_page(containers, request)

    def retrieve_container(self, request, container_id):
        return self.state.get_container(container_id)

    def delete_container(self, request, container_id):
        return self.state.delete_container(container_id)

    # -- organization costs and usage -----------------------------------------------------------
    def costs(self, request):
        return billing.costs_page(self.state, self.faults, request)

    def usage_completions(self, request):
        return billing.usage_page(self.state, request, "completions")

    def usage_vector_stores(self, request):
        return billing.usage_page(self.state, request, "vector_stores")

    def usage_code_interpreter_sessions(self, request):
        return billing.usage_page(self.state, request, "code_interpreter_sessions")

    def usage_file_search_calls(self, request):
        return billing.usage_page(self.state, request, "file_search_calls")


_NOT_FOUND_PATTERNS = [
    (re.compile(r"/runs/([^/]+)"), lambda found: f"No run found with id '{found}'."),
    (re.compile(r"/threads/([^/]+)"), lambda found: f"No thread found with id '{found}'."),
    (re.compile(r"/vector_stores/([^/]+)"), lambda found: f"No vector store found with id '{found}'."),
    (re.compile(r"/files/([^/]+)"), lambda found: f"No such File object: {found}"),
    (re.compile(r"/containers/([^/]+)"), lambda found: f"Container with id '{found}' not found."),
    (re.compile(r"/conversations/([^/]+)"), lambda found: f"Conversation with id '{found}' not found."),
    (re.compile(r"/responses/([^/]+)"), lambda found: f"Response with id '{found}' not found."),
    (re.compile(r"/assistants/([^/]+)"), lambda found: f"No assistant found with id '{found}'."),
]


def not_found_for_path(path: str) -> SandboxError:
    """An injected 404 reads exactly like the real one for that resource."""
    for pattern, message in _NOT_FOUND_PATTERNS:
        found = pattern.search(path)
        if found:
            return SandboxError(404, message(found.group(1)), param="id" if "/files/" in path and "vector" not in path else None)
    return SandboxError(404, f"Invalid URL ({path})")


ROUTES = [
    ("GET", "/assistants", "list_assistants", "api"),
    ("POST", "/assistants", "create_assistant", "api"),
    ("GET", "/assistants/{assistant_id}", "retrieve_assistant", "api"),
    ("POST", "/threads", "create_thread", "api"),
    ("GET", "/threads/{thread_id}", "retrieve_thread", "api"),
    ("POST", "/threads/{thread_id}", "update_thread", "api"),
    ("DELETE", "/threads/{thread_id}", "delete_thread", "api"),
    ("GET", "/threads/{thread_id}/messages", "list_messages", "api"),
    ("POST", "/threads/{thread_id}/messages", "create_message", "api"),
    ("GET", "/threads/{thread_id}/runs", "list_runs", "api"),
    ("POST", "/threads/{thread_id}/runs", "create_run", "api"),
    ("GET", "/threads/{thread_id}/runs/{run_id}", "retrieve_run", "api"),
    ("POST", "/threads/{thread_id}/runs/{run_id}/cancel", "cancel_run", "api"),
    ("POST", "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", "submit_tool_outputs", "api"),
    ("GET", "/threads/{thread_id}/runs/{run_id}/steps", "list_run_steps", "api"),
    ("POST", "/responses", "create_response", "api"),
    ("GET", "/responses/{response_id}", "retrieve_response", "api"),
    ("POST", "/responses/{response_id}/cancel", "cancel_response", "api"),
    ("POST", "/conversations", "create_conversation", "api"),
    ("GET", "/conversations/{conversation_id}", "retrieve_conversation", "api"),
    ("POST", "/conversations/{conversation_id}", "update_conversation", "api"),
    ("DELETE", "/conversations/{conversation_id}", "delete_conversation", "api"),
    ("GET", "/conversations/{conversation_id}/items", "list_conversation_items", "api"),
    ("GET", "/vector_stores", "list_vector_stores", "api"),
    ("POST", "/vector_stores", "create_vector_store", "api"),
    ("GET", "/vector_stores/{vector_store_id}", "retrieve_vector_store", "api"),
    ("POST", "/vector_stores/{vector_store_id}", "update_vector_store", "api"),
    ("DELETE", "/vector_stores/{vector_store_id}", "delete_vector_store", "api"),
    ("GET", "/vector_stores/{vector_store_id}/files", "list_vector_store_files", "api"),
    ("GET", "/vector_stores/{vector_store_id}/files/{file_id}", "retrieve_vector_store_file", "api"),
    ("DELETE", "/vector_stores/{vector_store_id}/files/{file_id}", "delete_vector_store_file", "api"),
    ("GET", "/files", "list_files", "api"),
    ("POST", "/files", "create_file", "api"),
    ("GET", "/files/{file_id}", "retrieve_file", "api"),
    ("DELETE", "/files/{file_id}", "delete_file", "api"),
    ("GET", "/containers", "list_containers", "api"),
    ("POST", "/containers", "create_container", "api"),
    ("GET", "/containers/{container_id}", "retrieve_container", "api"),
    ("DELETE", "/containers/{container_id}", "delete_container", "api"),
    ("GET", "/organization/costs", "costs", "admin"),
    ("GET", "/organization/usage/completions", "usage_completions", "admin"),
    ("GET", "/organization/usage/vector_stores", "usage_vector_stores", "admin"),
    ("GET", "/organization/usage/code_interpreter_sessions", "usage_code_interpreter_sessions", "admin"),
    ("GET", "/organization/usage/file_search_calls", "usage_file_search_calls", "admin"),
]

__all__ = ["ROUTES", "REQUIRES_ACTION_SECONDS", "Request", "SandboxApi", "api_key_id", "parse_request"]
