"""OpenAI's side of a reconciliation: Costs and Usage buckets fetched through the provider wrapper (which pages to
the end and retries 429/5xx) and turned into observations keyed by (UTC day, project, canonical line)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from apps.core.money import quantize_ledger, to_decimal
from apps.core.timeutils import day_start, from_unix, to_unix

from .comparison import (
    CODE_INTERPRETER_SESSIONS_LINE,
    FILE_SEARCH_CALLS_LINE,
    KIND_COST,
    KIND_USAGE,
    UNIT_CALLS,
    UNIT_SESSIONS,
    UNIT_TOKENS,
    UNIT_USD,
    LineSpec,
    Observations,
    canonical_line_item,
    is_ledger_line,
    model_cost_line,
    model_usage_line,
)

# Days per page: the API's maxima (Costs 180, daily usage 31), so a normal run is one page per endpoint.
COSTS_PAGE_DAYS = 180
USAGE_PAGE_DAYS = 31


def _field(obj, name: str, default=None):
    """Read a field from an SDK model or a plain dict alike."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    value = getattr(obj, name, default)
    if value is default and hasattr(obj, "model_extra") and obj.model_extra:
        value = obj.model_extra.get(name, default)
    return value


def _buckets(page_or_buckets) -> Iterable:
    """The provider returns every bucket of every page; accept a list, or an object with `.data`."""
    data = _field(page_or_buckets, "data", None) if not isinstance(page_or_buckets, list) else None
    return data if data is not None else page_or_buckets


def _bucket_day(bucket) -> dt.date:
    return from_unix(_field(bucket, "start_time")).date()


def _project(result, default_project: str) -> str:
    return _field(result, "project_id") or default_project


def _in_range(day: dt.date, start: dt.date, end: dt.date) -> bool:
    return start <= day < end


def _results(pages, start: dt.date, end: dt.date):
    """(day, result) for every result in a bucket inside [start, end): a page may hold buckets outside the
    asked range."""
    for bucket in _buckets(pages):
        day = _bucket_day(bucket)
        if _in_range(day, start, end):
            for result in _field(bucket, "results", []) or []:
                yield day, result


def _project_results(pages, start: dt.date, end: dt.date, project_id: str):
    """(day, result) for every result of this project in [start, end): an admin key sees the whole
    organization."""
    for day, result in _results(pages, start, end):
        if _project(result, project_id) == project_id:
            yield day, result


def openai_observations(*, provider, start: dt.date, end: dt.date, project_id: str, progress=None) -> Observations:
    """Costs by line item and project, completions by model and project, code-interpreter sessions and
    file-search calls by project, for the UTC days start (inclusive) to end (exclusive). Results for other
    projects are dropped: an admin key sees the whole organization."""
    say = progress or (lambda message: None)
    start_time, end_time = to_unix(day_start(start)), to_unix(day_start(end))
    observations = Observations()
    project_ids = [project_id]

    say("fetching Costs grouped by line item and project")
    for day, result in _project_results(provider.costs(start_time, end_time, group_by=["line_item", "project_id"],
                                                       project_ids=project_ids, page_limit=COSTS_PAGE_DAYS),
                                        start, end, project_id):
        # OpenAI sends dollars as floats: 2.5000000000000004, or a residue like 1.4e-17 for a line that nets to
        # nothing. Read at the ledger's scale, as the ledger's own amounts are, so the stored line is the one
        # compared (a residue is $0, not a drift whose percentage of it overflows the column).
        amount = quantize_ledger(to_decimal(_field(_field(result, "amount"), "value", 0) or 0))
        line, model = canonical_line_item(_field(result, "line_item"))
        if model and line == model_cost_line(model, "cache write"):
            # The ledger's input cost includes cache writes (see apps/pricing/rating.py): compare them together.
            line = model_cost_line(model, "input")
        if not is_ledger_line(line, model):
            observations.add_unmapped(day, project_id, line, amount)
            continue
        observations.add(day, project_id, line, amount, LineSpec(KIND_COST, UNIT_USD, model))

    say("fetching completions usage grouped by model and project")
    for day, result in _project_results(
            provider.usage_completions(start_time, end_time, group_by=["model", "project_id"], bucket_width="1d",
                                       project_ids=project_ids, page_limit=USAGE_PAGE_DAYS),
            start, end, project_id):
        model = _field(result, "model") or "unknown model"
        spec = LineSpec(KIND_USAGE, UNIT_TOKENS, model)
        observations.add(day, project_id, model_usage_line(model, "input"), _field(result, "input_tokens", 0) or 0, spec)
        observations.add(day, project_id, model_usage_line(model, "cached input"),
                         _field(result, "input_cached_tokens", 0) or 0, spec)
        observations.add(day, project_id, model_usage_line(model, "output"), _field(result, "output_tokens", 0) or 0, spec)

    say("fetching code-interpreter sessions")
    _add_counts(observations, provider.usage_code_interpreter_sessions, CODE_INTERPRETER_SESSIONS_LINE,
                "num_sessions", UNIT_SESSIONS, start_time, end_time, start, end, project_id, project_ids)
    say("fetching file-search calls")
    _add_counts(observations, provider.usage_file_search_calls, FILE_SEARCH_CALLS_LINE,
                "num_requests", UNIT_CALLS, start_time, end_time, start, end, project_id, project_ids)

    # Every project's, not only this one's: OpenAI's free GB is taken to be the organization's (docs/lifecycle.md),
    # so stores in projects RunLedger cannot list change this project's share of the bill (a day note says so).
    say("fetching vector-store usage")
    for day, result in _results(provider.usage_vector_stores(start_time, end_time, group_by=["project_id"],
                                                             bucket_width="1d", page_limit=USAGE_PAGE_DAYS),
                                start, end):
        by_project = observations.storage_bytes_by_project.setdefault(day, {})
        owner = _project(result, project_id)
        by_project[owner] = by_project.get(owner, 0) + int(_field(result, "usage_bytes", 0) or 0)
    observations.storage_bytes = {day: by_project[project_id]
                                  for day, by_project in observations.storage_bytes_by_project.items()
                                  if project_id in by_project}
    return observations


def _add_counts(observations, fetch, line: str, field: str, unit: str, start_time, end_time, start, end,
                project_id, project_ids) -> None:
    """One per-day usage count (code-interpreter sessions, file-search calls) for the project."""
    for day, result in _project_results(fetch(start_time, end_time, group_by=["project_id"], bucket_width="1d",
                                              project_ids=project_ids, page_limit=USAGE_PAGE_DAYS),
                                        start, end, project_id):
        observations.add(day, project_id, line, _field(result, field, 0) or 0, LineSpec(KIND_USAGE, unit))
