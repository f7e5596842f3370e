"""Realistic ingest traffic for the benchmarks: raw OpenAI objects shaped exactly as the API returns them
(the same shapes as tests/builders.py), with duplicates and later status updates at a configured share."""

from __future__ import annotations

import datetime as dt
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

MODELS_ASSISTANTS = ("gpt-5.4", "gpt-5-mini", "gpt-4.1", "gpt-4.1-mini")
MODELS_RESPONSES = ("gpt-5.4", "gpt-5-mini", "gpt-6.1-sol", "gpt-4.1-mini", "gpt-5-nano")
FEATURES = ("doc-qa", "chat", "summarize", "search", "agent", "")


def _unix(moment: dt.datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def assistants_run(*, run_id: str, thread_id: str, created_at: dt.datetime, model: str, status: str,
                   prompt_tokens: int, completion_tokens: int, metadata: dict, code_interpreter: bool) -> dict:
    terminal = status in {"completed", "failed", "cancelled", "incomplete", "expired"}
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Look a record up.",
                                               "parameters": {"type": "object", "properties": {}}}}]
    if code_interpreter:
        tools.append({"type": "code_interpreter"})
    started = created_at + dt.timedelta(seconds=1) if status != "queued" else None
    ended = created_at + dt.timedelta(seconds=8) if terminal else None
    return {
        "id": run_id, "object": "thread.run", "created_at": _unix(created_at), "thread_id": thread_id,
        "assistant_id": "asst_bench0001", "status": status, "required_action": None,
        "last_error": {"code": "server_error", "message": "The server had an error."} if status == "failed" else None,
        "expires_at": None if terminal else _unix(created_at + dt.timedelta(minutes=10)),
        "started_at": _unix(started), "cancelled_at": None,
        "failed_at": _unix(ended) if status == "failed" else None,
        "completed_at": _unix(ended) if status == "completed" else None,
        "incomplete_details": None, "model": model,
        "instructions": "You are a helpful assistant for the customer's documents. Answer briefly.",
        "tools": tools, "tool_resources": {}, "metadata": metadata,
        "usage": ({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                   "total_tokens": prompt_tokens + completion_tokens} if terminal else None),
        "temperature": 1.0, "top_p": 1.0, "max_prompt_tokens": None, "max_completion_tokens": None,
        "truncation_strategy": {"type": "auto", "last_messages": None}, "response_format": "auto",
        "tool_choice": "auto", "parallel_tool_calls": True,
    }


def response(*, response_id: str, created_at: dt.datetime, model: str, status: str, input_tokens: int,
             cached_tokens: int, output_tokens: int, reasoning_tokens: int, conversation_id: str | None,
             metadata: dict, web_search_calls: int) -> dict:
    output: list[dict] = []
    for index in range(web_search_calls):
        output.append({"type": "web_search_call", "id": f"ws_{response_id[5:]}_{index}", "status": "completed",
                       "action": {"type": "search", "query": "latest pricing"}})
    if status == "completed":
        output.append({"type": "message", "id": f"msg_{response_id[5:]}", "role": "assistant", "status": "completed",
                       "content": [{"type": "output_text", "text": "Here is the summary you asked for.",
                                    "annotations": []}]})
    done = status in {"completed", "failed", "cancelled", "incomplete"}
    return {
        "id": response_id, "object": "response", "created_at": created_at.timestamp(), "status": status,
        "background": False, "model": model, "service_tier": "default",
        "conversation": {"id": conversation_id} if conversation_id else None, "metadata": metadata,
        "output": output, "error": None, "incomplete_details": None, "instructions": None,
        "max_output_tokens": None, "previous_response_id": None, "reasoning": {"effort": "medium", "summary": None},
        "store": True, "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "top_p": 1.0, "truncation": "disabled", "user": None,
        "usage": ({"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": cached_tokens},
                   "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
                   "total_tokens": input_tokens + output_tokens} if done else None),
        "tools": [{"type": "web_search"}] if web_search_calls else [], "parallel_tool_calls": True,
        "tool_choice": "auto",
    }


@dataclass
class TrafficMix:
    """Shares of the event stream: `duplicate_share` are exact re-sends of an earlier event, and
    `update_share` of the runs are first reported in progress and later again when terminal."""

    duplicate_share: float = 0.10
    update_share: float = 0.20


class Traffic:
    """Deterministic event stream of `runs` distinct runs over `tenants` tenants and the last `days` days."""

    def __init__(self, *, runs: int, tenant_slugs: list[str], days: int = 30, seed: int = 9, prefix: str = "bench",
                 mix: TrafficMix | None = None, now: dt.datetime | None = None):
        self.runs = runs
        self.tenant_slugs = tenant_slugs
        self.days = days
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.mix = mix or TrafficMix()
        self.now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)

    def _event(self, number: int, *, final: bool) -> tuple[dict, bool]:
        """The event for run `number` (in progress unless final); whether the run gets a later update."""
        rng = random.Random(number * 7919 + 17)
        # Runs share a thread (or conversation) in fours, so the four belong to one tenant.
        tenant = self.tenant_slugs[(number // 4) % len(self.tenant_slugs)]
        created = self.now - dt.timedelta(seconds=rng.randrange(self.days * 86400))
        gets_update = rng.random() < self.mix.update_share
        status = rng.choices(("completed", "failed", "cancelled", "incomplete"), (90, 4, 3, 3))[0]
        if gets_update and not final:
            status = "in_progress"
        metadata = {"tenant": tenant, "user_id": f"u_{rng.randrange(5000)}", "session_id": f"s_{rng.randrange(10**6)}",
                    "feature": rng.choice(FEATURES)}
        attribution = None
        if number % 2 == 0:
            if status == "incomplete":
                status = "expired"
            obj = assistants_run(
                run_id=f"run_{self.prefix}{number:09d}", thread_id=f"thread_{self.prefix}{number // 4:08d}",
                created_at=created, model=rng.choice(MODELS_ASSISTANTS), status=status,
                prompt_tokens=rng.randrange(200, 40_000), completion_tokens=rng.randrange(20, 2_000),
                metadata=metadata, code_interpreter=rng.random() < 0.1,
            )
        else:
            input_tokens = rng.randrange(200, 60_000)
            output_tokens = rng.randrange(20, 4_000)
            obj = response(
                response_id=f"resp_{self.prefix}{number:09d}", created_at=created,
                model=rng.choice(MODELS_RESPONSES), status=status, input_tokens=input_tokens,
                cached_tokens=rng.randrange(0, input_tokens // 2), output_tokens=output_tokens,
                reasoning_tokens=rng.randrange(0, min(500, output_tokens)), metadata=metadata,
                conversation_id=f"conv_{self.prefix}{number // 4:08d}" if number % 3 == 0 else None,
                web_search_calls=1 if rng.random() < 0.1 else 0,
            )
            attribution = {"feature": metadata["feature"]} if number % 5 == 0 else None
        event = {"object": obj}
        if attribution:
            event["attribution"] = attribution
        return event, gets_update and not final

    def final_events(self) -> Iterator[dict]:
        """Every run once, in its final state (what a COPY of the finished ledger would hold)."""
        for number in range(self.runs):
            yield self._event(number, final=True)[0]

    def batches(self, size: int = 1000) -> Iterator[list[dict]]:
        """The live stream, `size` events a batch: new runs (some in progress), exact re-sends of recent
        events (`duplicate_share`), and the terminal state of in-progress runs from two batches earlier."""
        waiting: deque[tuple[int, int]] = deque()  # (first batch it may appear in, run number)
        recent: list[dict] = []
        number = 0
        batch_number = 0
        while number < self.runs or waiting:
            batch: list[dict] = []
            while len(batch) < size and (number < self.runs or waiting):
                draw = self.rng.random()
                ready = waiting and (waiting[0][0] <= batch_number or number >= self.runs)
                if ready and (draw < self.mix.update_share * 1.25 or number >= self.runs):
                    batch.append(self._event(waiting.popleft()[1], final=True)[0])
                elif recent and draw > 1 - self.mix.duplicate_share:
                    batch.append(self.rng.choice(recent))
                elif number < self.runs:
                    event, later = self._event(number, final=False)
                    if later:
                        waiting.append((batch_number + 2, number))
                    batch.append(event)
                    recent.append(event)
                    if len(recent) > 4000:
                        del recent[:2000]
                    number += 1
            batch_number += 1
            yield batch
