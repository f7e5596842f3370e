"""The sandbox's in-memory world: every object it serves, the state machines that move runs and
background responses along the clock, and the billing log that Costs/Usage are computed from."""

from __future__ import annotations

import datetime as dt
import random
import string
import threading
from dataclasses import dataclass, field

from . import objects
from .clock import SandboxClock
from .pricing import PriceBook, load_price_book

DEFAULT_PROJECT = "proj_default"
THREAD_RETENTION_SECONDS = 60 * 86400  # OpenAI deleted threads 60 days after their last activity
RESPONSE_RETENTION_SECONDS = 30 * 86400  # stored responses are kept 30 days
REQUIRES_ACTION_SECONDS = 600
_ALPHANUM = string.ascii_letters + string.digits


class SandboxError(Exception):
    """An OpenAI-shaped error: rendered as {"error": {"message","type","param","code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> SandboxError:
    return SandboxError(400, message, param=param, code=code)


@dataclass(slots=True)
class BillingEvent:
    """One billable model call series (a run or a response) as OpenAI metered it; kept even after the
    object itself is deleted, because OpenAI still bills for it."""

    at: float
    project_id: str
    api_key_id: str
    api: str  # "assistants" | "responses"
    object_id: str
    model: str
    input_tokens: int  # includes cached and cache-write tokens
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0  # includes reasoning tokens
    reasoning_tokens: int = 0
    model_requests: int = 1
    code_interpreter_sessions: int = 0
    file_search_calls: int = 0
    web_search_calls: int = 0
    vector_store_id: str | None = None
    service_tier: str = "default"


@dataclass
class VectorStoreHistory:
    """Bytes a vector store held over time, for storage billing even after it is deleted."""

    vector_store_id: str
    project_id: str
    created_at: float
    points: list[tuple[float, int]] = field(default_factory=list)  # (from time, usage_bytes)
    deleted_at: float | None = None

    def end(self, store: dict) -> float | None:
        ends = [moment for moment in (self.deleted_at, store.get("expires_at")) if moment is not None]
        return min(ends) if ends else None

    def max_bytes_between(self, start: float, stop: float, store: dict, now: float) -> int:
        """Largest usage_bytes held at any moment in [start, stop) (and not after `now`)."""
        end = self.end(store)
        if end is not None and end <= now:
            stop = min(stop, end)
        stop = min(stop, now)
        start = max(start, self.created_at)
        if start >= stop:
            return 0
        largest = 0
        for index, (since, size) in enumerate(self.points):
            until = self.points[index + 1][0] if index + 1 < len(self.points) else float("inf")
            if since < stop and until > start:
                largest = max(largest, size)
        return largest


@dataclass
class RunSim:
    """The hidden plan a run follows; timestamps come from the plan, not from when someone looks."""

    outcome: str  # completed | failed | incomplete | requires_action | expired
    start_at: float
    done_at: float
    prompt_tokens: int
    completion_tokens: int
    project_id: str
    api_key_id: str
    tool_kinds: list[str] = field(default_factory=list)  # code_interpreter / file_search calls, in order
    function_calls: list[dict] = field(default_factory=list)
    submitted_at: float | None = None
    resume_done_at: float | None = None
    cancel_at: float | None = None
    reply: str = "Here is what I found."


@dataclass
class ResponseSim:
    finish_at: float
    start_at: float
    final: dict  # the finished response body
    cancelled_at: float | None = None


class SandboxState:
    """Everything the sandbox holds. One re-entrant lock guards it all: the server is threaded."""

    def __init__(self, *, clock: SandboxClock | None = None, seed: int = 0, price_book: PriceBook | None = None,
                 default_project: str = DEFAULT_PROJECT):
        self.clock = clock or SandboxClock()
        self.price_book = price_book or load_price_book()
        self.default_project = default_project
        # The project the request being answered is made in (its OpenAI-Project header, else the default):
        # like OpenAI, the sandbox shows a request only its own project's objects, and answers 404 for
        # another project's. None outside a request (scenarios, exports, tests reading the state) sees all.
        self.viewing_project: str | None = None
        self.lock = threading.RLock()
        self.reset(seed=seed)

    # ------------------------------------------------------------------------------------------
    # bookkeeping
    def reset(self, *, seed: int | None = None) -> None:
        with self.lock:
            if seed is not None:
                self.seed = seed
            self.rng = random.Random(self.seed)
            self._id_rng = random.Random(f"ids-{self.seed}")
            self.assistants: dict[str, dict] = {}
            self.threads: dict[str, dict] = {}
            self.thread_activity: dict[str, float] = {}
            self.messages: dict[str, list[dict]] = {}
            self.runs: dict[str, dict] = {}
            self.thread_runs: dict[str, list[str]] = {}
            self.run_steps: dict[str, list[dict]] = {}
            self.run_sims: dict[str, RunSim] = {}
            self.responses: dict[str, dict] = {}
            self.response_sims: dict[str, ResponseSim] = {}
            self._response_meta: dict[str, tuple] = {}
            self.conversations: dict[str, dict] = {}
            self.conversation_items: dict[str, list[dict]] = {}
            self.vector_stores: dict[str, dict] = {}
            self.vector_store_files: dict[str, dict[str, dict]] = {}
            self.vector_store_history: dict[str, VectorStoreHistory] = {}
            self.files: dict[str, dict] = {}
            self.containers: dict[str, dict] = {}
            self.project_of: dict[str, str] = {}
            self.owner: dict[str, str | None] = {}  # tenant slug for objects without metadata
            self.deleted_at: dict[str, float] = {}
            self.graveyard: dict[str, dict] = {}  # deleted objects, still exported with deleted_at
            self.graveyard_kind: dict[str, str] = {}
            self.graveyard_steps: dict[str, list[dict]] = {}  # steps of deleted runs, for the export
            self.billing: list[BillingEvent] = []
            self.tenants: list[dict] = []
            self.scenario: dict | None = None
            self.version = 0

    def new_id(self, prefix: str, length: int = 24) -> str:
        """Deterministic per seed; OpenAI-looking (alphanumeric after the prefix)."""
        with self.lock:
            bits = self._id_rng.getrandbits(length * 6)
        chars = []
        for _ in range(length):
            bits, index = divmod(bits, 62)
            chars.append(_ALPHANUM[index])
        return prefix + "".join(chars)

    def new_hex_id(self, prefix: str, length: int = 48) -> str:
        with self.lock:
            return prefix + format(self._id_rng.getrandbits(length * 4), f"0{length}x")

    def now(self) -> float:
        return self.clock.now()

    def _touch(self) -> None:
        self.version += 1

    def _bury(self, kind: str, obj: dict, at: float) -> None:
        self.graveyard[obj["id"]] = obj
        self.graveyard_kind[obj["id"]] = kind
        self.deleted_at[obj["id"]] = at

    def record_billing(self, event: BillingEvent) -> None:
        with self.lock:
            self.billing.append(event)
            self._touch()

    def check_model(self, model: str, at: float) -> None:
        day = dt.datetime.fromtimestamp(at, tz=dt.UTC).date()
        if self.price_book.model_price(model, day) is None:
            raise SandboxError(404, f"The model `{model}` does not exist or you do not have access to it.",
                               code="model_not_found")

    def visible(self, object_id: str) -> bool:
        """Whether the request being answered may see this object (it is in the request's project)."""
        return self.viewing_project is None or self.project_of.get(object_id, self.default_project) == self.viewing_project

    def visible_values(self, objects: dict[str, dict]) -> list[dict]:
        """The objects of a listing that the request being answered may see, in their order."""
        return [obj for object_id, obj in objects.items() if self.visible(object_id)]

    # ------------------------------------------------------------------------------------------
    # lookups that answer exactly like OpenAI when the object is missing (or in another project)
    def get_assistant(self, assistant_id: str) -> dict:
        found = self.assistants.get(assistant_id)
        if found is None or not self.visible(assistant_id):
            raise SandboxError(404, f"No assistant found with id '{assistant_id}'.")
        return found

    def get_thread(self, thread_id: str) -> dict:
        found = self.threads.get(thread_id) if self.visible(thread_id) else None
        if found is not None:
            self.advance_thread(thread_id)
            if self.now() - self.thread_activity.get(thread_id, found["created_at"]) > THREAD_RETENTION_SECONDS:
                self._remove_thread(thread_id, at=self.thread_activity[thread_id] + THREAD_RETENTION_SECONDS)
                found = None
        if found is None:
            raise SandboxError(404, f"No thread found with id '{thread_id}'.")
        return found

    def get_run(self, thread_id: str, run_id: str) -> dict:
        self.get_thread(thread_id)
        found = self.runs.get(run_id)
        if found is None or found["thread_id"] != thread_id:
            raise SandboxError(404, f"No run found with id '{run_id}'.")
        self.advance_run(run_id)
        return found

    def get_vector_store(self, vector_store_id: str) -> dict:
        found = self.vector_stores.get(vector_store_id)
        if found is None or not self.visible(vector_store_id):
            raise SandboxError(404, f"No vector store found with id '{vector_store_id}'.")
        self._refresh_vector_store(found)
        return found

    def get_file(self, file_id: str) -> dict:
        found = self.files.get(file_id)
        if found is None or not self.visible(file_id):
            raise SandboxError(404, f"No such File object: {file_id}", param="id")
        return found

    def get_container(self, container_id: str) -> dict:
        found = self.containers.get(container_id)
        if found is None or not self.visible(container_id):
            raise SandboxError(404, f"Container with id '{container_id}' not found.")
        self._refresh_container(found)
        return found

    def get_conversation(self, conversation_id: str) -> dict:
        found = self.conversations.get(conversation_id)
        if found is None or not self.visible(conversation_id):
            raise SandboxError(404, f"Conversation with id '{conversation_id}' not found.")
        return found

    def get_response(self, response_id: str) -> dict:
        found = self.responses.get(response_id)
        if found is None or not self.visible(response_id) or self.now() - found["created_at"] > RESPONSE_RETENTION_SECONDS:
            raise SandboxError(404, f"Response with id '{response_id}' not found.")
        self.advance_response(response_id)
        return found

    # ------------------------------------------------------------------------------------------
    # threads, messages
    def add_thread(self, obj: dict, *, project_id: str, activity_at: float | None = None) -> dict:
        self.threads[obj["id"]] = obj
        self.messages.setdefault(obj["id"], [])
        self.thread_runs.setdefault(obj["id"], [])
        self.thread_activity[obj["id"]] = activity_at if activity_at is not None else obj["created_at"]
        self.project_of[obj["id"]] = project_id
        self._touch()
        return obj

    def add_message(self, obj: dict) -> dict:
        self.messages.setdefault(obj["thread_id"], []).append(obj)
        self.thread_activity[obj["thread_id"]] = max(self.thread_activity.get(obj["thread_id"], 0), obj["created_at"])
        return obj

    def _remove_thread(self, thread_id: str, *, at: float) -> None:
        thread = self.threads.pop(thread_id)
        self._bury("thread", thread, at)
        self.messages.pop(thread_id, None)
        for run_id in self.thread_runs.pop(thread_id, []):
            run = self.runs.pop(run_id, None)
            if run is not None:
                self._bury("run", run, at)
            steps = self.run_steps.pop(run_id, None)
            if steps:
                self.graveyard_steps[run_id] = steps
            self.run_sims.pop(run_id, None)
        self._touch()

    def delete_thread(self, thread_id: str) -> dict:
        self.get_thread(thread_id)
        self.advance_thread(thread_id)
        self._remove_thread(thread_id, at=self.now())
        return {"id": thread_id, "object": "thread.deleted", "deleted": True}

    # ------------------------------------------------------------------------------------------
    # runs
    def active_run(self, thread_id: str) -> dict | None:
        for run_id in self.thread_runs.get(thread_id, []):
            run = self.runs[run_id]
            if run["status"] in {"queued", "in_progress", "requires_action", "cancelling"}:
                return run
        return None

    def add_run(self, run: dict, sim: RunSim) -> dict:
        self.runs[run["id"]] = run
        self.run_sims[run["id"]] = sim
        self.run_steps[run["id"]] = []
        self.thread_runs.setdefault(run["thread_id"], []).append(run["id"])
        self.project_of[run["id"]] = sim.project_id
        self.thread_activity[run["thread_id"]] = max(self.thread_activity.get(run["thread_id"], 0), run["created_at"])
        self._touch()
        self.advance_run(run["id"])
        return run

    def advance_thread(self, thread_id: str) -> None:
        for run_id in self.thread_runs.get(thread_id, []):
            self.advance_run(run_id)

    def advance_all(self) -> None:
        with self.lock:
            for run_id in [run_id for run_id, sim in self.run_sims.items()]:
                self.advance_run(run_id)
            for response_id in list(self.response_sims):
                self.advance_response(response_id)

    def advance_run(self, run_id: str) -> None:
        """Move a run along its plan up to the clock's now. Idempotent; each transition happens once."""
        sim = self.run_sims.get(run_id)
        if sim is None:
            return
        run = self.runs[run_id]
        now = self.now()
        for _ in range(6):
            status = run["status"]
            if status in objects.TERMINAL_RUN_STATUSES:
                self.run_sims.pop(run_id, None)
                return
            if status == "cancelling":
                if now >= sim.cancel_at + 0.5:
                    started = run["started_at"] is not None
                    self._finish_run(run, sim, "cancelled", at=sim.cancel_at + 0.5,
                                     prompt=sim.prompt_tokens if started else 0, completion=0)
                    continue
                return
            if status == "queued":
                if now >= sim.start_at:
                    run["status"] = "in_progress"
                    run["started_at"] = int(sim.start_at)
                    continue
                return
            if status == "in_progress":
                done_at = sim.resume_done_at if sim.submitted_at is not None else sim.done_at
                if now < done_at:
                    return
                if sim.submitted_at is None and sim.outcome in {"requires_action", "expired"}:
                    self._require_action(run, sim, at=done_at)
                    continue
                outcome = "completed" if sim.submitted_at is not None else sim.outcome
                if outcome == "failed":
                    self._finish_run(run, sim, "failed", at=done_at, prompt=sim.prompt_tokens,
                                     completion=sim.completion_tokens // 3)
                elif outcome == "incomplete":
                    limit = run.get("max_completion_tokens") or sim.completion_tokens
                    self._finish_run(run, sim, "incomplete", at=done_at, prompt=sim.prompt_tokens,
                                     completion=min(limit, sim.completion_tokens))
                else:
                    self._finish_run(run, sim, "completed", at=done_at, prompt=sim.prompt_tokens,
                                     completion=sim.completion_tokens)
                continue
            if status == "requires_action":
                if now >= run["expires_at"]:
                    self._finish_run(run, sim, "expired", at=run["expires_at"], prompt=sim.prompt_tokens,
                                     completion=min(40, sim.completion_tokens))
                    continue
                return

    def _step_usage_split(self, count: int, prompt: int, completion: int) -> list[dict]:
        parts = []
        for index in range(count):
            last = index == count - 1
            share_prompt = prompt - (prompt // count) * (count - 1) if last else prompt // count
            share_completion = completion - (completion // count) * (count - 1) if last else completion // count
            parts.append(objects.usage(share_prompt, share_completion))
        return parts

    def _tool_steps(self, run: dict, sim: RunSim, at: float) -> list[dict]:
        details = []
        for kind in sim.tool_kinds:
            call_id = self.new_id("call_")
            if kind == "code_interpreter":
                details.append({"type": "tool_calls", "tool_calls": [objects.code_interpreter_call(call_id)]})
            elif kind == "file_search":
                details.append({"type": "tool_calls", "tool_calls": [objects.file_search_call(call_id, [
                    {"file_id": "file-" + call_id[5:17], "file_name": "handbook.pdf", "score": 0.82}])]})
        return details

    def _require_action(self, run: dict, sim: RunSim, *, at: float) -> None:
        tool_calls = []
        for call in sim.function_calls:
            call.setdefault("id", self.new_id("call_"))
            tool_calls.append({"id": call["id"], "type": "function",
                               "function": {"name": call["name"], "arguments": call["arguments"]}})
        run["status"] = "requires_action"
        run["required_action"] = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": tool_calls}}
        run["expires_at"] = int(at) + REQUIRES_ACTION_SECONDS
        step = objects.run_step(
            step_id=self.new_id("step_"), run=run, created_at=int(at), status="in_progress",
            step_details={"type": "tool_calls", "tool_calls": [
                objects.function_call(call["id"], call["function"]["name"], call["function"]["arguments"])
                for call in tool_calls]},
        )
        self.run_steps[run["id"]].append(step)
        self._touch()

    def _finish_run(self, run: dict, sim: RunSim, status: str, *, at: float, prompt: int, completion: int) -> None:
        stamp = int(at)
        run["status"] = status
        run["required_action"] = None
        run["expires_at"] = None
        run["usage"] = objects.usage(prompt, completion)
        if status == "completed":
            run["completed_at"] = stamp
        elif status == "failed":
            run["failed_at"] = stamp
            run["last_error"] = {"code": "server_error", "message": "Sorry, something went wrong."}
        elif status == "cancelled":
            run["cancelled_at"] = stamp
        elif status == "incomplete":
            run["incomplete_details"] = {"reason": "max_completion_tokens"}
        steps = self.run_steps.setdefault(run["id"], [])
        pending = [step for step in steps if step["status"] == "in_progress"]
        for step in pending:
            step["status"] = {"completed": "completed", "expired": "expired", "cancelled": "cancelled"}.get(status, "failed")
            step["completed_at"] = stamp if step["status"] == "completed" else None
            step["expired_at"] = stamp if step["status"] == "expired" else None
            step["cancelled_at"] = stamp if step["status"] == "cancelled" else None
            step["failed_at"] = stamp if step["status"] == "failed" else None
        ran_tools = status in {"completed", "incomplete", "failed"} or (status == "expired" and sim.tool_kinds)
        tool_details = self._tool_steps(run, sim, at) if ran_tools else []
        message_id = None
        if status in {"completed", "incomplete"}:
            message_id = self.new_id("msg_")
            self.add_message(objects.message(
                message_id=message_id, thread_id=run["thread_id"], created_at=stamp, role="assistant",
                text=sim.reply, assistant_id=run["assistant_id"], run_id=run["id"]))
        new_details = tool_details + ([{"type": "message_creation", "message_creation": {"message_id": message_id}}]
                                      if message_id else [])
        usage_parts = self._step_usage_split(max(1, len(new_details) + len(pending)), prompt, completion)
        for step, part in zip(pending, usage_parts[:len(pending)], strict=True):
            step["usage"] = part
        for index, detail in enumerate(new_details):
            step_status = "completed" if status in {"completed", "incomplete"} or index < len(new_details) - 1 else (
                "failed" if status == "failed" else "completed")
            steps.append(objects.run_step(
                step_id=self.new_id("step_"), run=run, created_at=int(sim.start_at) + index, status=step_status,
                step_details=detail, step_usage=usage_parts[len(pending) + index], completed_at=stamp))
        self.thread_activity[run["thread_id"]] = max(self.thread_activity.get(run["thread_id"], 0), stamp)
        self.run_sims.pop(run["id"], None)
        code_interpreter_used = "code_interpreter" in sim.tool_kinds and ran_tools
        self.record_billing(BillingEvent(
            at=run["created_at"], project_id=sim.project_id, api_key_id=sim.api_key_id, api="assistants",
            object_id=run["id"], model=run["model"], input_tokens=prompt, output_tokens=completion,
            model_requests=1 + (1 if sim.submitted_at is not None else 0) + len(sim.tool_kinds if ran_tools else []),
            code_interpreter_sessions=1 if code_interpreter_used else 0,
            file_search_calls=0,  # Assistants file_search calls carry no per-call fee
        ))

    def cancel_run(self, thread_id: str, run_id: str) -> dict:
        run = self.get_run(thread_id, run_id)
        if run["status"] not in {"queued", "in_progress", "requires_action"}:
            raise bad_request(f"Cannot cancel run with status '{run['status']}'.")
        sim = self.run_sims[run_id]
        sim.cancel_at = self.now()
        run["status"] = "cancelling"
        self._touch()
        return run

    def submit_tool_outputs(self, thread_id: str, run_id: str, tool_outputs: list[dict]) -> dict:
        run = self.get_run(thread_id, run_id)
        if run["status"] != "requires_action":
            raise bad_request(f"Runs in status \"{run['status']}\" do not accept tool outputs.")
        expected = {call["id"] for call in run["required_action"]["submit_tool_outputs"]["tool_calls"]}
        given = {output.get("tool_call_id") for output in tool_outputs or []}
        if given != expected:
            missing = sorted(expected - given)
            raise bad_request(f"Expected tool outputs for call_ids {sorted(expected)}, got {sorted(given - {None})}."
                              + (f" Missing: {missing}." if missing else ""), param="tool_outputs")
        outputs = {output["tool_call_id"]: output.get("output") for output in tool_outputs}
        for step in self.run_steps[run_id]:
            if step["status"] == "in_progress":
                for call in step["step_details"]["tool_calls"]:
                    if call["type"] == "function":
                        call["function"]["output"] = outputs.get(call["id"])
        sim = self.run_sims[run_id]
        now = self.now()
        sim.submitted_at = now
        sim.resume_done_at = now + 1.0
        run["status"] = "in_progress"
        run["required_action"] = None
        run["expires_at"] = int(run["created_at"]) + REQUIRES_ACTION_SECONDS + int(now - run["created_at"])
        self._touch()
        return run

    # ------------------------------------------------------------------------------------------
    # responses and conversations
    def add_response(self, obj: dict, *, project_id: str, api_key_id: str, sim: ResponseSim | None = None,
                     vector_store_id: str | None = None) -> dict:
        self.responses[obj["id"]] = obj
        self.project_of[obj["id"]] = project_id
        if sim is not None:
            self.response_sims[obj["id"]] = sim
            self._response_meta[obj["id"]] = (project_id, api_key_id, vector_store_id)
        else:
            self._bill_response(obj, project_id=project_id, api_key_id=api_key_id, vector_store_id=vector_store_id)
        self._touch()
        return obj

    def _bill_response(self, obj: dict, *, project_id: str, api_key_id: str, vector_store_id: str | None) -> None:
        usage = obj.get("usage")
        if not usage:
            return
        output = obj.get("output") or []
        containers = {item["container_id"] for item in output if item.get("type") == "code_interpreter_call"}
        self.record_billing(BillingEvent(
            at=obj["created_at"], project_id=project_id, api_key_id=api_key_id, api="responses",
            object_id=obj["id"], model=obj["model"], input_tokens=usage["input_tokens"],
            cached_tokens=usage["input_tokens_details"]["cached_tokens"],
            cache_write_tokens=usage["input_tokens_details"].get("cache_write_tokens") or 0,
            output_tokens=usage["output_tokens"], reasoning_tokens=usage["output_tokens_details"]["reasoning_tokens"],
            model_requests=1, code_interpreter_sessions=len(containers),
            file_search_calls=sum(1 for item in output if item.get("type") == "file_search_call"),
            web_search_calls=sum(1 for item in output if item.get("type") == "web_search_call"),
            vector_store_id=vector_store_id, service_tier=obj.get("service_tier") or "default",
        ))

    def advance_response(self, response_id: str) -> None:
        sim = self.response_sims.get(response_id)
        if sim is None:
            return
        obj = self.responses[response_id]
        now = self.now()
        if obj["status"] == "queued" and now >= sim.start_at:
            obj["status"] = "in_progress"
        if obj["status"] == "in_progress" and now >= sim.finish_at:
            obj.update(sim.final)
            self.response_sims.pop(response_id, None)
            project_id, api_key_id, vector_store_id = self._response_meta.pop(response_id)
            self._append_conversation_output(obj)
            self._bill_response(obj, project_id=project_id, api_key_id=api_key_id, vector_store_id=vector_store_id)

    def _append_conversation_output(self, obj: dict) -> None:
        conversation = obj.get("conversation")
        if conversation and conversation["id"] in self.conversation_items:
            self.conversation_items[conversation["id"]].extend(obj.get("output") or [])

    def cancel_response(self, response_id: str) -> dict:
        obj = self.get_response(response_id)
        if not obj.get("background"):
            raise bad_request("Only responses created with background=true can be cancelled.")
        sim = self.response_sims.get(response_id)
        if sim is None or obj["status"] in objects.TERMINAL_RESPONSE_STATUSES:
            raise bad_request(f"Cannot cancel a response with status '{obj['status']}'.")
        self.response_sims.pop(response_id)
        project_id, api_key_id, vector_store_id = self._response_meta.pop(response_id)
        obj["status"] = "cancelled"
        obj["output"] = []
        obj["usage"] = None
        self._touch()
        return obj

    def add_conversation(self, obj: dict, *, project_id: str) -> dict:
        self.conversations[obj["id"]] = obj
        self.conversation_items.setdefault(obj["id"], [])
        self.project_of[obj["id"]] = project_id
        self._touch()
        return obj

    def delete_conversation(self, conversation_id: str) -> dict:
        obj = self.get_conversation(conversation_id)
        self.conversations.pop(conversation_id)
        self.conversation_items.pop(conversation_id, None)
        self._bury("conversation", obj, self.now())
        self._touch()
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    # ------------------------------------------------------------------------------------------
    # vector stores, files, containers
    def add_vector_store(self, obj: dict, *, project_id: str, files: list[dict] = ()) -> dict:
        self.vector_stores[obj["id"]] = obj
        self.vector_store_files[obj["id"]] = {item["id"]: item for item in files}
        self.project_of[obj["id"]] = project_id
        self.vector_store_history[obj["id"]] = VectorStoreHistory(
            vector_store_id=obj["id"], project_id=project_id, created_at=obj["created_at"],
            points=[(obj["created_at"], obj["usage_bytes"])])
        self._sync_file_counts(obj)
        self._touch()
        return obj

    def _sync_file_counts(self, store: dict) -> None:
        counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0}
        for item in self.vector_store_files.get(store["id"], {}).values():
            counts[item["status"]] += 1
            counts["total"] += 1
        store["file_counts"] = counts

    def _set_vector_store_bytes(self, store: dict, usage_bytes: int) -> None:
        store["usage_bytes"] = usage_bytes
        self.vector_store_history[store["id"]].points.append((self.now(), usage_bytes))

    def _refresh_vector_store(self, store: dict) -> None:
        if store.get("expires_after"):
            store["expires_at"] = store["last_active_at"] + store["expires_after"]["days"] * 86400
            if self.now() >= store["expires_at"]:
                store["status"] = "expired"
        else:
            store["expires_at"] = None

    def touch_vector_store(self, vector_store_id: str, at: float) -> None:
        store = self.vector_stores.get(vector_store_id)
        if store is not None and store["status"] != "expired":
            store["last_active_at"] = max(store["last_active_at"], int(at))
            self._refresh_vector_store(store)

    def delete_vector_store(self, vector_store_id: str) -> dict:
        store = self.get_vector_store(vector_store_id)
        now = self.now()
        self.vector_stores.pop(vector_store_id)
        self.vector_store_files.pop(vector_store_id, None)
        self.vector_store_history[vector_store_id].deleted_at = now
        self._bury("vector_store", store, now)
        self._touch()
        return {"id": vector_store_id, "object": "vector_store.deleted", "deleted": True}

    def delete_vector_store_file(self, vector_store_id: str, file_id: str) -> dict:
        store = self.get_vector_store(vector_store_id)
        files = self.vector_store_files[vector_store_id]
        item = files.pop(file_id, None)
        if item is None:
            raise SandboxError(404, f"No file found with id '{file_id}' in vector store '{vector_store_id}'.")
        self._set_vector_store_bytes(store, max(0, store["usage_bytes"] - item["usage_bytes"]))
        self._sync_file_counts(store)
        self._touch()
        return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}

    def add_file(self, obj: dict, *, project_id: str, owner: str | None = None) -> dict:
        self.files[obj["id"]] = obj
        self.project_of[obj["id"]] = project_id
        self.owner[obj["id"]] = owner
        self._touch()
        return obj

    def delete_file(self, file_id: str) -> dict:
        obj = self.get_file(file_id)
        self.files.pop(file_id)
        self._bury("file", obj, self.now())
        self._touch()
        return {"id": file_id, "object": "file", "deleted": True}

    def add_container(self, obj: dict, *, project_id: str, owner: str | None = None) -> dict:
        self.containers[obj["id"]] = obj
        self.project_of[obj["id"]] = project_id
        self.owner[obj["id"]] = owner
        self._touch()
        return obj

    def _refresh_container(self, obj: dict) -> None:
        minutes = (obj.get("expires_after") or {}).get("minutes")
        if obj["status"] == "running" and minutes:
            if self.now() >= obj["last_active_at"] + minutes * 60:
                obj["status"] = "expired"

    def delete_container(self, container_id: str) -> dict:
        obj = self.get_container(container_id)
        self.containers.pop(container_id)
        self._bury("container", obj, self.now())
        self._touch()
        return {"id": container_id, "object": "container.deleted", "deleted": True}
