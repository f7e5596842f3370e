"""The one place that talks to OpenAI: a wrapper around the official SDK that returns plain dicts,
retries with capped exponential backoff and full jitter (honouring Retry-After), and shares a
requests-per-minute limit on management calls across every worker process."""

from __future__ import annotations

import datetime as dt
import email.utils
import enum
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai

from .ratelimit import SharedRateLimiter

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = {408, 409, 429}
# The calls of the Assistants API (sunset on 2026-08-26: OpenAI answers its paths 404), named as _call names them.
_ASSISTANTS_OPERATIONS = frozenset({
    "retrieve_assistant", "list_assistants", "retrieve_run", "list_thread_runs", "list_run_steps", "retrieve_thread",
    "delete_thread", "list_thread_messages",
})
_USE_SETTINGS = object()


class ProviderError(Exception):
    """OpenAI could not do what was asked. `status_code`, `code` and `request_id` come from OpenAI's answer
    (None for connection problems); `attempts` is how many tries were made. `maybe_carried_out` (deletes):
    an earlier try failed in a way that does not say OpenAI did nothing (a 5xx, a timeout, a dropped
    connection), so the object may be deleted though the last answer (a 429, say) refused it."""

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None,
                 request_id: str | None = None, attempts: int = 1, operation: str = ""):
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.attempts = attempts
        self.operation = operation
        self.maybe_carried_out = False


class ProviderNotFound(ProviderError):
    """The object does not exist at OpenAI (never created, deleted, or expired)."""


class ProviderRateLimited(ProviderError):
    """Still rate limited (429) after every retry."""


class ProviderUnavailable(ProviderError):
    """5xx, timeouts or connection failures after every retry."""


class ProviderAuthError(ProviderError):
    """401/403, or an admin call made without an admin key: check the configured keys."""


class ProviderBadRequest(ProviderError):
    """OpenAI rejected the request itself (400/422/other 4xx): retrying will not help."""


class ProviderConflict(ProviderError):
    """409 after every retry."""


# How callers read an error from the provider, or from the SDK or a stand-in raising its own classes: by the
# HTTP status it carries (as `status_code`, `status` or `response.status_code`), else by its class name.
def error_status(exc: BaseException) -> int | None:
    for attr in ("status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status_code", None)
    return value if isinstance(value, int) else None


def is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, ProviderError):
        # The provider has already read OpenAI's answer: a 404 for a path OpenAI does not serve is no word on
        # the object (see _classify_status), so its class, not its status, says whether the object is gone.
        return isinstance(exc, ProviderNotFound)
    return error_status(exc) == 404 or type(exc).__name__ in ("NotFoundError", "NotFound", "ResourceNotFound")


def is_transient(exc: BaseException) -> bool:
    """A rate limit, a timeout, a conflict or OpenAI down: asking again later may succeed."""
    code = error_status(exc)
    if code is not None:
        return code in (408, 409, 429) or code >= 500
    name = type(exc).__name__
    return any(word in name for word in ("RateLimit", "Timeout", "Connection", "Transient", "Unavailable"))


class DeleteOutcome(enum.StrEnum):
    DELETED = "deleted"
    ALREADY_GONE = "already_gone"  # OpenAI answered 404: someone (or OpenAI's own retention) got there first


def _as_dict(model: Any) -> dict:
    if model is None:
        return {}
    if isinstance(model, dict):
        return model
    return model.to_dict()


def retry_after_seconds(headers) -> float | None:
    """OpenAI's retry hints: `retry-after-ms` (milliseconds) wins over `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        # Neither seconds nor an HTTP date ("soon"): no hint, so the usual backoff. parsedate_to_datetime raises
        # for it, and raised here it escaped the retry loop as a ValueError in place of the 429 or 503.
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)  # "-0000" (RFC 5322's "UTC, source unknown") parses naive
    return max(0.0, parsed.timestamp() - time.time())


class OpenAIProvider:
    """OpenAI for one project and key. Every method returns plain dicts (or iterators of them).

    The SDK's own retries are off (`max_retries=0`); `_call` retries 408/409/429/5xx, timeouts and connection
    errors (or what OpenAI's `x-should-retry` header says, as the SDK does) up to `max_attempts` tries, sleeping min(Retry-After, `retry_after_cap`) when OpenAI says how long
    (more than 0), else a full-jitter backoff uniform(0, min(`backoff_cap`, `backoff_base` × 2^attempt))."""

    def __init__(self, *, base_url: str | None = None, api_key: str, admin_key: str | None = None,
                 project_id: str | None = None, timeout: float = 30.0, max_attempts: int = 5,
                 backoff_base: float = 0.5, backoff_cap: float = 8.0, retry_after_cap: float = 60.0,
                 rate_limiter: SharedRateLimiter | None | object = _USE_SETTINGS,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None):
        if rate_limiter is _USE_SETTINGS:
            from django.conf import settings

            rate_limiter = SharedRateLimiter(requests_per_minute=settings.OPENAI_MANAGEMENT_RPM)
        self.base_url = base_url or None
        self.project_id = project_id
        self.has_admin_key = bool(admin_key)
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        self.rate_limiter = rate_limiter
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.attempts_made = 0
        self.retries_made = 0
        self.client = openai.OpenAI(base_url=self.base_url, api_key=api_key, admin_api_key=admin_key or None,
                                    project=project_id or None, timeout=timeout, max_retries=0)

    @classmethod
    def default(cls, **overrides) -> OpenAIProvider:
        """The default project's provider, configured from settings (OPENAI_*)."""
        from django.conf import settings

        options = {
            "base_url": settings.OPENAI_BASE_URL or None, "api_key": settings.OPENAI_API_KEY,
            "admin_key": settings.OPENAI_ADMIN_KEY or None, "project_id": settings.OPENAI_PROJECT_ID or None,
            "timeout": settings.OPENAI_TIMEOUT_SECONDS,
        }
        options.update(overrides)
        if not options["api_key"]:
            raise ProviderAuthError("OPENAI_API_KEY is not set: configure it (or OPENAI_BASE_URL + key for the sandbox).")
        return cls(**options)

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------------------------------
    # retries
    def _backoff(self, attempt: int) -> float:
        return self.rng.uniform(0, min(self.backoff_cap, self.backoff_base * (2 ** attempt)))

    def _call(self, operation: str, fn: Callable[[], Any]) -> Any:
        for attempt in range(1, self.max_attempts + 1):
            if self.rate_limiter is not None:
                self.rate_limiter.acquire()
            self.attempts_made += 1
            try:
                return fn()
            except openai.APIStatusError as error:
                failure, retryable, hint = self._classify_status(error, operation, attempt)
                # OpenAI's own word wins over the status rules, as the SDK obeys it (its retries are off here): a
                # 429 for an exhausted quota says "false", and retrying it only spent the item's lease sleeping.
                should_retry = error.response.headers.get("x-should-retry") if error.response is not None else None
                if should_retry in ("true", "false"):
                    retryable = should_retry == "true"
            except openai.APITimeoutError as error:
                failure, retryable, hint = ProviderUnavailable(
                    f"{operation}: OpenAI timed out ({error})", attempts=attempt, operation=operation), True, None
            except openai.APIConnectionError as error:
                # Named: a sandbox on another port (make run SANDBOX_PORT=...) or a mistyped OPENAI_BASE_URL is
                # the usual cause, and "Connection error." alone did not say where it looked.
                failure, retryable, hint = ProviderUnavailable(
                    f"{operation}: could not reach OpenAI at {self.client.base_url} ({error}); check OPENAI_BASE_URL",
                    attempts=attempt, operation=operation), True, None
            if not retryable or attempt == self.max_attempts:
                raise failure
            # A Retry-After of 0 (or a date already past) is no wait at all: taken as it came, every attempt
            # went within milliseconds and the call gave up at once. As the SDK does, only a positive hint wins.
            delay = min(hint, self.retry_after_cap) if hint else self._backoff(attempt - 1)
            logger.info("openai %s failed (%s), retry %d/%d in %.2fs", operation, failure,
                        attempt, self.max_attempts - 1, delay)
            self.retries_made += 1
            self.sleep(delay)
        raise AssertionError("unreachable")

    def _classify_status(self, error: openai.APIStatusError, operation: str, attempt: int):
        status = error.status_code
        body = error.body if isinstance(error.body, dict) else {}
        message = f"{operation}: OpenAI answered {status}: {body.get('message') or error.message}"
        common = {"status_code": status, "code": getattr(error, "code", None), "request_id": error.request_id,
                  "attempts": attempt, "operation": operation}
        hint = retry_after_seconds(error.response.headers if error.response is not None else None)
        if status == 404:
            if str(body.get("message") or "").startswith("Invalid URL") and operation not in _ASSISTANTS_OPERATIONS:
                # OpenAI answers a path it does not serve (OPENAI_BASE_URL without /v1, a proxy, an endpoint that
                # is gone) with 404 "Invalid URL (…)". That says nothing about the object: read as "not found", a
                # sweep recorded every live conversation it asked about as already gone, and conversations
                # cannot be listed, so the ledger row was the only way to find one again to delete it.
                # The Assistants API's paths are the exception: it was sunset on 2026-08-26 and answers 404 from
                # every endpoint, so a thread there cannot be reached or deleted any more. Failing it instead
                # would fail every old thread in every nightly sweep, for ever. A wrong base URL still shows,
                # on conversations, vector stores and files, and `recheck_gone` brings such threads back.
                return ProviderBadRequest(f"{message} (OpenAI does not serve this path: check OPENAI_BASE_URL and "
                                          "the project's base URL)", **common), False, None
            return ProviderNotFound(message, **common), False, None
        if status == 429:
            return ProviderRateLimited(message, **common), True, hint
        if status == 409:
            return ProviderConflict(message, **common), True, hint
        if status == 408 or status >= 500:
            return ProviderUnavailable(message, **common), True, hint
        if status in {401, 403}:
            return ProviderAuthError(message, **common), False, None
        return ProviderBadRequest(message, **common), False, None

    def _get(self, operation: str, fn: Callable[[], Any]) -> dict:
        return _as_dict(self._call(operation, fn))

    def _delete(self, operation: str, fn: Callable[[], Any]) -> DeleteOutcome:
        # A timeout, a dropped connection or a 5xx may come after OpenAI deleted the object: the retry then
        # answers 404 for our own deletion, which is "deleted", not "someone else deleted it" (the audit and
        # the money saved depend on which). A 429 is a refusal, so a 404 after it still means already gone.
        maybe_done = False

        def attempt():
            nonlocal maybe_done
            try:
                return fn()
            except openai.APIStatusError as error:
                maybe_done = maybe_done or error.status_code == 408 or error.status_code >= 500
                raise
            except openai.APIConnectionError:  # timeouts included
                maybe_done = True
                raise
            except json.JSONDecodeError:
                # The SDK reads a 2xx's JSON body after OpenAI carried the delete out: an unreadable one is
                # still the success it answered, not a failure to record (and a delete without its audit).
                return None

        try:
            answer = self._call(operation, attempt)
        except ProviderNotFound:
            return DeleteOutcome.DELETED if maybe_done else DeleteOutcome.ALREADY_GONE
        except ProviderError as error:
            error.maybe_carried_out = maybe_done  # a last 429 does not undo an earlier try that may have deleted it
            raise
        if getattr(answer, "deleted", None) is False:
            # OpenAI says in its answer whether it deleted the object: "deleted": false is a refusal, not a
            # deletion to audit (the ledger would stop tracking an object that is still there).
            error = ProviderError(f"{operation}: OpenAI answered deleted: false (the object was not deleted)",
                                  request_id=getattr(answer, "_request_id", None), operation=operation)
            error.maybe_carried_out = maybe_done
            raise error
        return DeleteOutcome.DELETED

    def _paginate(self, operation: str, fetch: Callable[[str | None], Any], *, use_last_id: bool = False) -> Iterator[dict]:
        """Every item of a cursor-paginated list, one page per request (each page retried on its own)."""
        after: str | None = None
        while True:
            page = self._call(operation, lambda cursor=after: fetch(cursor))
            items = list(page.data)
            for item in items:
                yield _as_dict(item)
            if not items or not getattr(page, "has_more", False):
                return
            after = getattr(page, "last_id", None) if use_last_id else None
            after = after or getattr(items[-1], "id", None)
            if after is None:
                return

    @staticmethod
    def _given(**params) -> dict:
        return {key: value for key, value in params.items() if value is not None}

    # ------------------------------------------------------------------------------------------
    # Assistants (threads, runs, messages)
    def retrieve_assistant(self, assistant_id: str) -> dict:
        return self._get("retrieve_assistant", lambda: self.client.beta.assistants.retrieve(assistant_id))

    def list_assistants(self) -> Iterator[dict]:
        return self._paginate("list_assistants", lambda after: self.client.beta.assistants.list(
            **self._given(after=after, limit=100)))

    def retrieve_run(self, thread_id: str, run_id: str) -> dict:
        return self._get("retrieve_run", lambda: self.client.beta.threads.runs.retrieve(run_id, thread_id=thread_id))

    def list_thread_runs(self, thread_id: str) -> Iterator[dict]:
        return self._paginate("list_thread_runs", lambda after: self.client.beta.threads.runs.list(
            thread_id, **self._given(after=after, limit=100)))

    def list_run_steps(self, thread_id: str, run_id: str) -> Iterator[dict]:
        return self._paginate("list_run_steps", lambda after: self.client.beta.threads.runs.steps.list(
            run_id, thread_id=thread_id, **self._given(after=after, limit=100)))

    def retrieve_thread(self, thread_id: str) -> dict:
        return self._get("retrieve_thread", lambda: self.client.beta.threads.retrieve(thread_id))

    def delete_thread(self, thread_id: str) -> DeleteOutcome:
        return self._delete("delete_thread", lambda: self.client.beta.threads.delete(thread_id))

    def list_thread_messages(self, thread_id: str) -> Iterator[dict]:
        return self._paginate("list_thread_messages", lambda after: self.client.beta.threads.messages.list(
            thread_id, **self._given(after=after, limit=100)))

    # ------------------------------------------------------------------------------------------
    # Responses and Conversations
    def retrieve_response(self, response_id: str) -> dict:
        return self._get("retrieve_response", lambda: self.client.responses.retrieve(response_id))

    def retrieve_conversation(self, conversation_id: str) -> dict:
        return self._get("retrieve_conversation", lambda: self.client.conversations.retrieve(conversation_id))

    def delete_conversation(self, conversation_id: str) -> DeleteOutcome:
        return self._delete("delete_conversation", lambda: self.client.conversations.delete(conversation_id))

    def list_conversation_items(self, conversation_id: str) -> Iterator[dict]:
        return self._paginate("list_conversation_items", lambda after: self.client.conversations.items.list(
            conversation_id, **self._given(after=after, limit=100)), use_last_id=True)

    # ------------------------------------------------------------------------------------------
    # Vector stores, files, containers
    def list_vector_stores(self) -> Iterator[dict]:
        return self._paginate("list_vector_stores", lambda after: self.client.vector_stores.list(
            **self._given(after=after, limit=100)))

    def retrieve_vector_store(self, vector_store_id: str) -> dict:
        return self._get("retrieve_vector_store", lambda: self.client.vector_stores.retrieve(vector_store_id))

    def delete_vector_store(self, vector_store_id: str) -> DeleteOutcome:
        return self._delete("delete_vector_store", lambda: self.client.vector_stores.delete(vector_store_id))

    def list_vector_store_files(self, vector_store_id: str) -> Iterator[dict]:
        return self._paginate("list_vector_store_files", lambda after: self.client.vector_stores.files.list(
            vector_store_id, **self._given(after=after, limit=100)))

    def retrieve_vector_store_file(self, vector_store_id: str, file_id: str) -> dict:
        """The file's attachment to the store (ProviderNotFound when it is not attached, or the store is gone)."""
        return self._get("retrieve_vector_store_file",
                         lambda: self.client.vector_stores.files.retrieve(file_id, vector_store_id=vector_store_id))

    def list_files(self) -> Iterator[dict]:
        return self._paginate("list_files", lambda after: self.client.files.list(
            **self._given(after=after, limit=10000)))

    def retrieve_file(self, file_id: str) -> dict:
        return self._get("retrieve_file", lambda: self.client.files.retrieve(file_id))

    def delete_file(self, file_id: str) -> DeleteOutcome:
        return self._delete("delete_file", lambda: self.client.files.delete(file_id))

    def list_containers(self) -> Iterator[dict]:
        if hasattr(self.client, "containers"):
            return self._paginate("list_containers", lambda after: self.client.containers.list(
                **self._given(after=after, limit=100)))
        return self._paginate_raw("list_containers", "/containers")

    def retrieve_container(self, container_id: str) -> dict:
        if hasattr(self.client, "containers"):
            return self._get("retrieve_container", lambda: self.client.containers.retrieve(container_id))
        return self._get("retrieve_container", lambda: self.client.get(f"/containers/{container_id}", cast_to=object))

    def delete_container(self, container_id: str) -> DeleteOutcome:
        if hasattr(self.client, "containers"):
            return self._delete("delete_container", lambda: self.client.containers.delete(container_id))
        return self._delete("delete_container", lambda: self.client.delete(f"/containers/{container_id}", cast_to=object))

    def _paginate_raw(self, operation: str, path: str) -> Iterator[dict]:
        """Cursor pagination through the SDK's generic client, for endpoints an older SDK lacks."""
        after = None
        while True:
            query = self._given(after=after, limit=100)
            page = self._call(operation, lambda params=query: self.client.get(path, cast_to=object,
                                                                               options={"params": params}))
            yield from page.get("data", [])
            if not page.get("data") or not page.get("has_more"):
                return
            after = page["data"][-1]["id"]

    # ------------------------------------------------------------------------------------------
    # Organization costs and usage (admin key)
    def _admin_buckets(self, operation: str, fetch: Callable[[str | None], Any]) -> list[dict]:
        if not self.has_admin_key:
            raise ProviderAuthError(f"{operation}: no admin key configured (OPENAI_ADMIN_KEY); the Costs and Usage "
                                    "API needs one.", operation=operation)
        buckets: list[dict] = []
        page_token: str | None = None
        while True:
            page = self._call(operation, lambda token=page_token: fetch(token))
            buckets.extend(_as_dict(bucket) for bucket in page.data)
            if not page.has_more or not page.next_page:
                return buckets
            page_token = page.next_page

    def costs(self, start_time: int, end_time: int | None = None, group_by: list[str] | None = None,
              project_ids: list[str] | None = None, *, page_limit: int = 180) -> list[dict]:
        """Every daily cost bucket in [start_time, end_time) (Unix seconds), following next_page to the end."""
        usage = self.client.admin.organization.usage
        return self._admin_buckets("costs", lambda page: usage.costs(**self._given(
            start_time=int(start_time), end_time=int(end_time) if end_time is not None else None, bucket_width="1d",
            group_by=group_by or None, project_ids=project_ids or None, limit=page_limit, page=page)))

    def _usage(self, operation: str, start_time: int, end_time: int | None, group_by, bucket_width: str,
               project_ids, page_limit: int | None) -> list[dict]:
        endpoint = getattr(self.client.admin.organization.usage, operation)
        limit = page_limit or {"1d": 31, "1h": 168, "1m": 1440}[bucket_width]
        return self._admin_buckets(f"usage_{operation}", lambda page: endpoint(**self._given(
            start_time=int(start_time), end_time=int(end_time) if end_time is not None else None,
            bucket_width=bucket_width, group_by=group_by or None, project_ids=project_ids or None,
            limit=limit, page=page)))

    def usage_completions(self, start_time: int, end_time: int | None = None, group_by: list[str] | None = None,
                          bucket_width: str = "1d", project_ids: list[str] | None = None,
                          *, page_limit: int | None = None) -> list[dict]:
        return self._usage("completions", start_time, end_time, group_by, bucket_width, project_ids, page_limit)

    def usage_vector_stores(self, start_time: int, end_time: int | None = None, group_by: list[str] | None = None,
                            bucket_width: str = "1d", project_ids: list[str] | None = None,
                            *, page_limit: int | None = None) -> list[dict]:
        return self._usage("vector_stores", start_time, end_time, group_by, bucket_width, project_ids, page_limit)

    def usage_code_interpreter_sessions(self, start_time: int, end_time: int | None = None,
                                        group_by: list[str] | None = None, bucket_width: str = "1d",
                                        project_ids: list[str] | None = None, *, page_limit: int | None = None) -> list[dict]:
        return self._usage("code_interpreter_sessions", start_time, end_time, group_by, bucket_width, project_ids,
                           page_limit)

    def usage_file_search_calls(self, start_time: int, end_time: int | None = None, group_by: list[str] | None = None,
                                bucket_width: str = "1d", project_ids: list[str] | None = None,
                                *, page_limit: int | None = None) -> list[dict]:
        return self._usage("file_search_calls", start_time, end_time, group_by, bucket_width, project_ids, page_limit)
