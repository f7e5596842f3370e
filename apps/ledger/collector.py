"""What the collector tasks do, callable without Celery: refresh runs that are not terminal yet, and list
the runs of recorded Assistants threads so runs nobody reported are recorded too (with the thread's
tenant). Everything goes through the provider wrapper and is stored through ingest_events."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from apps.provider.client import (
    OpenAIProvider,
    ProviderError,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderUnavailable,
)
from apps.provider.projects import (
    ProjectKeyMissing,
    ProjectProviders,
    not_found_unasked,
    other_projects,
    project_holding,
)

from .models import TERMINAL_STATUSES, Api, Run, Thread, ThreadKind
from .services import IngestResult, ingest_events

logger = logging.getLogger(__name__)

REFRESH_MAX_AGE = dt.timedelta(days=7)
THREAD_RUNS_PER_THREAD = 100
DISCOVER_CURSOR_KEY = "ledger:collect_thread_runs:cursor"
# Server-side failures in a row (5xx, timeouts, connection errors, each after the provider's retries) that stop a
# pass: OpenAI is down, and asking about the rest of the batch would only spend requests (and minutes) for nothing.
OUTAGE_STOP_AFTER = 3


@dataclass
class CollectResult:
    checked: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    not_found: int = 0
    errors: int = 0
    # Runs or threads of a project RunLedger has no key for (asked with another project's, OpenAI says 404).
    unreachable: int = 0
    # Runs or threads not found in the project recorded for them but in another one (reported without their
    # project, say): read there, and reported with that project.
    found_elsewhere: int = 0
    stopped_early: str = ""
    errors_sample: list[str] = field(default_factory=list)

    def add(self, ingest: IngestResult) -> None:
        self.created += ingest.created
        self.updated += ingest.updated
        self.unchanged += ingest.unchanged
        self.rejected += ingest.rejected
        for result in ingest.results:
            if result.outcome == "rejected" and len(self.errors_sample) < 5:
                self.errors_sample.append(f"{result.id}: {result.error}")

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


class _OutageWatch:
    """Counts server-side failures in a row (ProviderUnavailable) so that a pass stops once OpenAI looks down,
    as it already stops on a rate limit. Any other answer from OpenAI (the object, a 404, a refused key, a bad
    request) shows it is up and starts the count again; a project without a key asks nothing and changes
    nothing. Only the server side counts: a refused or missing key is one project's setup, and its items keep
    being passed over one by one."""

    def __init__(self, result: CollectResult, what: str):
        self.result = result
        self.what = what
        self.in_a_row = 0

    def answered(self) -> None:
        self.in_a_row = 0

    def failed(self, exc: ProviderError) -> bool:
        """Count `exc` (already counted in `errors` by the caller); True when the pass must stop, with
        `stopped_early` saying why (logged once, here)."""
        if not isinstance(exc, ProviderUnavailable):
            self.answered()
            return False
        self.in_a_row += 1
        if self.in_a_row < OUTAGE_STOP_AFTER:
            return False
        self.result.stopped_early = (f"OpenAI unavailable: {self.in_a_row} server errors or timeouts in a row "
                                     f"(last: {exc})")
        logger.warning("%s stopped early, the rest left for the next pass: %s", self.what, self.result.stopped_early)
        return True


def _wants_steps(run: dict) -> bool:
    tools = {tool.get("type") for tool in run.get("tools") or [] if isinstance(tool, dict)}
    return run.get("status") in TERMINAL_STATUSES and bool(tools & {"code_interpreter", "file_search"})


def _run_event(provider: OpenAIProvider, obj: dict, tenant_slug: str, project: str) -> dict:
    event = {"tenant": tenant_slug, "object": obj, "openai_project": project}
    if obj.get("object") == "thread.run" and _wants_steps(obj):
        try:
            event["steps"] = list(provider.list_run_steps(obj["thread_id"], obj["id"]))
        except ProviderError as exc:
            logger.info("steps of %s unavailable (%s); counting tools from the run", obj["id"], exc)
    return event


def _fetch_anywhere(providers: ProjectProviders, project_id: str, fetch: Callable, result: CollectResult
                    ) -> tuple[OpenAIProvider, str, object]:
    """(provider, project, what `fetch(provider)` returned) from the recorded project, or, after a 404 there,
    from the first other project that holds the object: OpenAI answers another project's key 404, so a run
    recorded under the wrong project would otherwise stay unrefreshed for ever. ProviderNotFound when every
    project answers 404. A ProviderError (not a rate limit) when another project could not be asked or
    failed: the caller passes over this object only, since stopping the pass would leave it at the front
    of the queue, stopping every later pass on it too."""
    project_id = project_id or settings.OPENAI_PROJECT_ID
    provider = _reachable(providers, project_id, result)
    try:
        return provider, project_id, fetch(provider)
    except ProviderNotFound as not_found:
        try:
            holder, fetched, unreachable = project_holding(providers.for_project, other_projects(project_id), fetch)
        except ProviderError as exc:
            raise ProviderError(f"not found in OpenAI project {project_id}; asking the others failed: {exc}") from exc
        if holder is None:
            if unreachable:
                raise ProviderError(not_found_unasked(project_id, unreachable)) from not_found
            raise
    result.found_elsewhere += 1
    return providers.for_project(holder), holder, fetched


def _ingest_read(events: list[dict], result: CollectResult) -> None:
    """Ingest what the collector read, 1,000 events a batch. Each run was read just now with its project's key,
    so its project is confirmed: a run recorded under the wrong project moves to the right one at once, not
    only when it next changes (each pass would otherwise find it elsewhere again, an extra request)."""
    for start in range(0, len(events), 1000):
        result.add(ingest_events(events=events[start:start + 1000], projects_confirmed=True))


def _reachable(providers: ProjectProviders, project_id: str, result: CollectResult) -> OpenAIProvider:
    """The provider of the project; counts a run or thread of a project RunLedger has no key for (the
    providers log it once)."""
    try:
        return providers.for_project(project_id)
    except ProjectKeyMissing:
        result.unreachable += 1
        raise


def collect_runs_refresh(*, limit: int = 500, provider: OpenAIProvider | None = None,
                         heartbeat: Callable[[], object] | None = None) -> CollectResult:
    """Retrieve up to `limit` non-terminal runs from OpenAI (least recently checked first), each with its own
    project's key, and ingest them. `heartbeat` is called before each run is asked about (the task renews its
    singleton lock there: a pass of slow answers outlasts the lock, and beat then started a copy every minute)."""
    providers = ProjectProviders(default=provider or OpenAIProvider.default())
    result = CollectResult()
    since = timezone.now() - REFRESH_MAX_AGE
    runs = list(
        Run.objects.unscoped()
        .exclude(status__in=TERMINAL_STATUSES)
        .filter(created_at__gte=since)
        .select_related("tenant")
        .order_by("updated_at")
        .values("id", "openai_id", "api", "thread_openai_id", "tenant__slug", "openai_project")[:limit]
    )
    events: list[dict] = []
    checked_ids, passed_ids = [], []  # passed: not checked (no key, an error), still to the back of the queue
    beat = heartbeat or (lambda: None)
    outage = _OutageWatch(result, "collect_runs_refresh")
    for run in runs:
        beat()
        if run["api"] == Api.ASSISTANTS:
            def fetch(provider, run=run):
                return provider.retrieve_run(run["thread_openai_id"], run["openai_id"])
        else:
            def fetch(provider, run=run):
                return provider.retrieve_response(run["openai_id"])
        try:
            provider, project, obj = _fetch_anywhere(providers, run["openai_project"], fetch, result)
        except ProjectKeyMissing:
            passed_ids.append(run["id"])  # or a project without a key would hold the front of the queue for ever
            continue
        except ProviderNotFound:
            outage.answered()
            result.not_found += 1
            checked_ids.append(run["id"])
            continue
        except ProviderRateLimited:
            result.stopped_early = "rate limited"
            break
        except ProviderError as exc:
            result.errors += 1
            logger.warning("collect %s: %s", run["openai_id"], exc)
            passed_ids.append(run["id"])  # a project whose key OpenAI refuses must not hold the queue either
            if outage.failed(exc):
                break  # the runs not asked about keep their place at the front of the queue
            continue
        outage.answered()
        checked_ids.append(run["id"])
        events.append(_run_event(provider, obj, run["tenant__slug"], project))
    result.checked = len(checked_ids)
    _ingest_read(events, result)
    if checked_ids or passed_ids:
        # Rotate: runs just checked (or passed over) go to the back of the queue even when nothing changed.
        Run.objects.unscoped().filter(pk__in=checked_ids + passed_ids).update(updated_at=timezone.now())
    return result


def collect_thread_runs(*, limit: int = 200, active_since: dt.datetime, provider: OpenAIProvider | None = None,
                        heartbeat: Callable[[], object] | None = None) -> CollectResult:
    """List the runs of recorded, active Assistants threads (a cursor rotates through them, `limit` threads per
    call), each with its project's key, and ingest every run, attributed to the thread's tenant. Runs already
    recorded come back unchanged. `heartbeat` is called before each thread is listed, as collect_runs_refresh's."""
    providers = ProjectProviders(default=provider or OpenAIProvider.default())
    result = CollectResult()
    cursor = cache.get(DISCOVER_CURSOR_KEY) or 0
    threads_query = (
        Thread.objects.unscoped()
        .filter(kind=ThreadKind.THREAD, status=Thread.Status.ACTIVE, last_activity_at__gte=active_since)
        .order_by("pk")
    )
    threads = list(threads_query.filter(pk__gt=cursor).values("id", "openai_id", "tenant__slug", "openai_project")[:limit])
    if not threads and cursor:
        cache.delete(DISCOVER_CURSOR_KEY)
        return result
    events: list[dict] = []
    beat = heartbeat or (lambda: None)
    done_through = None  # the last thread this call finished with
    outage = _OutageWatch(result, "collect_thread_runs")
    for thread in threads:
        beat()
        stop = False

        def first_runs(provider, thread=thread):
            return list(itertools.islice(provider.list_thread_runs(thread["openai_id"]), THREAD_RUNS_PER_THREAD))

        try:
            provider, project, runs = _fetch_anywhere(providers, thread["openai_project"], first_runs, result)
            events.extend(_run_event(provider, obj, thread["tenant__slug"], project) for obj in runs)
            outage.answered()
        except ProjectKeyMissing:
            # Counted by _reachable, not as checked; the cursor moves past the thread.
            done_through = thread["id"]
            continue
        except ProviderNotFound:
            outage.answered()
            result.not_found += 1
        except ProviderRateLimited:
            result.stopped_early = "rate limited"
            break
        except ProviderError as exc:
            result.errors += 1
            logger.warning("list runs of %s: %s", thread["openai_id"], exc)
            # Passed over as any failed thread is (the cursor moves past it); after an outage's last failure the
            # threads not listed keep their place, as after a rate limit.
            stop = outage.failed(exc)
        result.checked += 1
        done_through = thread["id"]
        if stop:
            break
    _ingest_read(events, result)
    # The cursor moves only once the runs read are stored: moved thread by thread before, a worker killed before
    # the ingest (or an ingest that failed) left those threads' unreported runs behind until the next full pass,
    # and a thread quiet for `active_since` by then was never listed again.
    if len(threads) < limit and not result.stopped_early:
        cache.delete(DISCOVER_CURSOR_KEY)  # a full pass is done; start over next time
    elif done_through is not None:
        cache.set(DISCOVER_CURSOR_KEY, done_through, None)
    return result
