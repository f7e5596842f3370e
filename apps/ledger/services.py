"""Writes to the ledger: ingesting runs, responses, threads and conversations, keeping threads and the
rollups consistent by deltas, and re-rating runs after a price change.

The ingest path is set-based (issue #9). Parsing, normalizing, rating and staging the rows of the runs a
batch will likely create run in parallel across workers; the write phase takes a PostgreSQL advisory lock
(INGEST_LOCK_KEY), so batches write one at a time and never wait on each other's row locks or deadlock
(re-pricing and ledger_check --fix take it too). Under it, one query reads the batch's existing runs (FOR
UPDATE, in openai_id order), new runs go in from the stage with one INSERT ... SELECT, changed runs with one
UPDATE ... FROM, each rollup table gets one upsert that ADDS the sum of the batch's share rows per key (new
state minus old), and thread totals one UPDATE. import_runs' workers, which never share a run, hold the
lock shared. docs/ledger.md walks through it.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import datetime as dt
import functools
import gc
import logging
import operator
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError, OperationalError, transaction
from django.db.models import F, Q, QuerySet
from django.dispatch import Signal
from django.utils import timezone

from apps.core.money import MONEY_FIELD_KWARGS, ZERO, money_text, quantize_ledger, usd_to_units
from apps.pricing.pricebook import PriceBook
from apps.pricing.rating import CostBreakdown, RatingError, Usage, billable_file_search_calls, rate_run
from apps.provider.normalizers import (
    NormalizationError,
    ResourceRecord,
    apply_attribution,
    metadata_attribution,
    normalize_resource,
    normalize_run_object,
    run_fields_fast,
    unstorable_text,
)
from apps.tenants.models import Tenant

from . import bulk
from .models import (
    END_USER_COUNTS,
    END_USER_MONEY,
    END_USER_UNITS,
    GONE_REASON,
    PROMPT_TOKEN_EDGES,
    STATUS_RANK,
    WASTED_STATUSES,
    DailyRollup,
    EndUserDailyRollup,
    EndUserMonthlyRollup,
    EndUserMonthPartRollup,
    EveryTenantDailyRollup,
    PromptSizeRollup,
    RollupCompaction,
    Run,
    RunStatus,
    TenantDailyRollup,
    Thread,
    ThreadToolResource,
    ToolUsageRollup,
    end_user_units_column,
    month_part_start,
)

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key that serializes ingest write phases ("RLINGEST" in ASCII, as an int64).
INGEST_LOCK_KEY = 0x524C494E47455354
RUN_KINDS = frozenset({"thread.run", "response"})
THREAD_KINDS = frozenset({"thread", "conversation"})
LIFECYCLE_KINDS = frozenset({"vector_store", "file", "container"})

# --- results --------------------------------------------------------------------------------------


@dataclass
class EventResult:
    index: int
    id: str | None
    outcome: str  # created | updated | unchanged | rejected
    error: dict | None = None

    def as_dict(self) -> dict:
        body: dict[str, Any] = {"index": self.index, "id": self.id, "outcome": self.outcome}
        if self.error:
            body["error"] = self.error
        return body


@dataclass
class IngestResult:
    results: list[EventResult] = field(default_factory=list)

    def _count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def created(self) -> int:
        return self._count("created")

    @property
    def updated(self) -> int:
        return self._count("updated")

    @property
    def unchanged(self) -> int:
        return self._count("unchanged")

    @property
    def rejected(self) -> int:
        return self._count("rejected")

    def as_dict(self) -> dict:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "results": [r.as_dict() for r in self.results],
        }


class _Rejected(Exception):
    def __init__(self, field_name: str | None, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


# --- lifecycle hook -------------------------------------------------------------------------------

# kind -> handler(tenant_id_by_index: dict[int, int], records: dict[int, ResourceRecord],
#                 project_by_index: dict[int, str]) -> dict[int, outcome].
# The lifecycle app registers handlers for vector_store / file / container from its AppConfig.ready().
_RESOURCE_HANDLERS: dict[str, Callable[[dict[int, int], dict[int, ResourceRecord], dict[int, str]], dict[int, str]]] = {}


def resource_handler_register(*, kind: str, handler: Callable) -> None:
    """Let another app store the resources it owns (vector stores, files, containers) from ingest events.
    The handler receives {event index: tenant id}, {event index: ResourceRecord} and {event index: OpenAI
    project} for one batch, runs
    inside the ingest transaction, and returns {event index: "created" | "updated" | "unchanged" |
    "tenant_conflict"}; a tenant_conflict (the resource is recorded for another tenant, and the handler changed
    nothing) rejects that event."""
    if kind not in LIFECYCLE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(sorted(LIFECYCLE_KINDS))}")
    _RESOURCE_HANDLERS[kind] = handler


# --- run state ------------------------------------------------------------------------------------

RUN_FIELDS = (
    "tenant_id", "openai_id", "api", "openai_project", "thread_id", "thread_openai_id", "assistant_id", "prompt_id",
    "model", "service_tier", "status", "status_rank", "created_at", "started_at", "completed_at", "failed_at",
    "cancelled_at", "expires_at", "error_code", "incomplete_reason", "input_tokens", "cached_input_tokens",
    "cache_write_tokens", "output_tokens", "reasoning_tokens", "code_interpreter_sessions", "file_search_calls",
    "web_search_calls", "function_calls", "user_id", "session_id", "feature", "metadata", "cost_input_usd",
    "cost_cached_input_usd", "cost_output_usd", "cost_tools_usd", "cost_total_usd", "priced", "model_price_id",
    "tool_price_id", "is_high_cost",
)
_RECORD_FIELDS = (
    "openai_id", "api", "thread_openai_id", "assistant_id", "prompt_id", "model", "service_tier", "status",
    "created_at", "started_at", "completed_at", "failed_at", "cancelled_at", "expires_at", "error_code",
    "incomplete_reason", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens", "code_interpreter_sessions", "file_search_calls", "web_search_calls", "function_calls",
    "user_id", "session_id", "feature", "metadata",
)
# What makes a report a change of the stored run (besides metadata): the project too, which only a newer state
# or a confirmed project (ingest_events' projects_confirmed) replaces.
_COMPARED_FIELDS = (*(name for name in _RECORD_FIELDS if name != "metadata"), "openai_project")
ATTRIBUTION_FIELDS = ("user_id", "session_id", "feature")
ROLLUP_KEY = ("tenant_id", "day", "openai_project", "model", "feature")
ROLLUP_SUMS = (
    "runs", "unpriced_runs", "high_cost_runs", "input_tokens", "cached_input_tokens", "cache_write_tokens",
    "output_tokens", "reasoning_tokens", "code_interpreter_sessions", "file_search_calls", "web_search_calls",
    "cost_input_usd", "cost_cached_input_usd", "cost_output_usd", "cost_tools_usd", "cost_total_usd",
    "wasted_cost_usd",
)
COST_FIELDS = ("cost_input_usd", "cost_cached_input_usd", "cost_output_usd", "cost_tools_usd", "cost_total_usd")


def _progress_key(state: dict) -> tuple:
    """How far along a run state is. A state replaces another only if its key is strictly greater, so the
    final row is the same whatever order the reports arrive in (an older state never overwrites a newer)."""
    ended = state.get("completed_at") or state.get("failed_at") or state.get("cancelled_at")
    rank = STATUS_RANK.get(state["status"], 0)
    # Between states of the live rank (in_progress, requires_action: a run goes to and fro between them),
    # the later deadline is the later state; other ranks do not look at it.
    expires = state.get("expires_at") if rank == STATUS_RANK[RunStatus.IN_PROGRESS] else None
    return (
        rank,
        expires.timestamp() if expires else 0.0,
        state["input_tokens"] + state["output_tokens"],
        sum(state[name] for name in TOOL_COUNT_FIELDS),  # at _TOOLS_IN_KEY
        state.get("started_at") is not None,
        ended.timestamp() if ended else 0.0,
        state["status"],
    )


TOOL_COUNT_FIELDS = ("code_interpreter_sessions", "file_search_calls", "web_search_calls", "function_calls")
_TOOLS_IN_KEY = 3  # where _progress_key holds the tool calls


def _same_stage(key: tuple, other: tuple) -> bool:
    """Two progress keys that differ at most in their tool calls: the same stage of the run."""
    return key[:_TOOLS_IN_KEY] == other[:_TOOLS_IN_KEY] and key[_TOOLS_IN_KEY + 1:] == other[_TOOLS_IN_KEY + 1:]


def _take_exact_tool_counts(winner: dict, old: dict, new: dict) -> None:
    """Two reports of the same stage of a run told apart by their tool counts only. An Assistants report
    without run steps guesses them (one code-interpreter session if the tool was enabled, other calls
    unknown); counts from steps are exact. So the new report's counts stand unless they are a guess, in
    which case the other state's do (a stored row's may be exact): exact counts win whichever report came
    first, and no later guess undoes them."""
    source = old if new.get("_tools_guessed") else new
    counts = [source[name] for name in TOOL_COUNT_FIELDS]
    if [winner[name] for name in TOOL_COUNT_FIELDS] != counts:
        winner.update(zip(TOOL_COUNT_FIELDS, counts, strict=True))
        winner.pop("_rated", None)  # its costs were worked out for the other counts: rated again
    if source.get("_tools_guessed"):
        winner["_tools_guessed"] = True
    else:
        winner.pop("_tools_guessed", None)


_NOTHING_EXPLICIT: frozenset[str] = frozenset()


def _explicit_attribution(state: dict) -> frozenset[str]:
    """The attribution fields of a state that were sent beside the object (`attribution`) rather than read
    from its metadata. A report knows (_parse marks it); for a stored row they are the values that differ
    from what its metadata gives."""
    marked = state.get("_explicit_attribution")
    if marked is not None:
        return marked
    from_metadata = metadata_attribution(state.get("metadata") or {})
    return frozenset(name for name in ATTRIBUTION_FIELDS if state.get(name) and state[name] != from_metadata[name])


def _merge(old: dict, new: dict) -> dict:
    """The newer of two states, with attribution that only the other one carries filled in (or that the other
    was sent beside its object, which overrides metadata), and the exact tool counts of either when they are
    the same stage of the run."""
    old_key, new_key = _progress_key(old), _progress_key(new)
    if new_key > old_key:
        winner, loser = dict(new), old
    else:
        winner, loser = dict(old), new
    if _same_stage(old_key, new_key):
        _take_exact_tool_counts(winner, old, new)
    explicit, loser_explicit = _explicit_attribution(winner), _explicit_attribution(loser)
    for name in ATTRIBUTION_FIELDS:
        if name in loser_explicit and name not in explicit:
            winner[name] = loser[name]  # sent beside the object: it overrides metadata, however new
        elif not winner.get(name) and loser.get(name):
            winner[name] = loser[name]
    winner["_explicit_attribution"] = explicit | loser_explicit
    if loser.get("metadata"):
        winner["metadata"] = {**loser["metadata"], **(winner.get("metadata") or {})}
    if not winner.get("thread_openai_id") and loser.get("thread_openai_id"):
        winner["thread_openai_id"] = loser["thread_openai_id"]
    if new.get("_project_confirmed"):
        winner["openai_project"] = new["openai_project"]
    elif winner.get("_project_unnamed") and not loser.get("_project_unnamed"):
        # A report that names no project says nothing about where the run is: the default project it was
        # given is only for a run first seen that way, never a move away from a project another report named.
        winner["openai_project"] = loser["openai_project"]
        del winner["_project_unnamed"]
    return winner


def _same_content(a: dict, b: dict) -> bool:
    # Lists compared at once: a generator in all() costs a frame switch per field, and this runs for every
    # report of a stored run.
    return [a.get(name) for name in _COMPARED_FIELDS] == [b.get(name) for name in _COMPARED_FIELDS] and (
        (a.get("metadata") or {}) == (b.get("metadata") or {})
    )


def _rate_state(state: dict, book: PriceBook, high_cost_by_tenant: dict[int, Decimal]) -> None:
    created = state["created_at"]
    day = created.astimezone(dt.UTC).date()
    model_rate = book.model_rate(state["model"], day)
    tool_rate = book.tool_rate(day)
    cost = CostBreakdown.zero()
    priced = False
    if model_rate is not None:
        usage = Usage(
            input_tokens=state["input_tokens"], cached_input_tokens=state["cached_input_tokens"],
            cache_write_tokens=state["cache_write_tokens"], output_tokens=state["output_tokens"],
            reasoning_tokens=state["reasoning_tokens"], code_interpreter_sessions=state["code_interpreter_sessions"],
            file_search_calls=state["file_search_calls"], web_search_calls=state["web_search_calls"],
            api=state["api"], service_tier=state["service_tier"],
        )
        try:
            cost = rate_run(usage, model_rate, tool_rate).quantized()
            priced = True
        except RatingError:
            cost = CostBreakdown.zero()
    state["cost_input_usd"] = cost.input
    state["cost_cached_input_usd"] = cost.cached_input
    state["cost_output_usd"] = cost.output
    state["cost_tools_usd"] = cost.tools
    state["cost_total_usd"] = cost.total
    state["priced"] = priced
    state["model_price_id"] = model_rate.price_id if (priced and model_rate) else None
    state["tool_price_id"] = tool_rate.price_id if (priced and tool_rate) else None
    state["is_high_cost"] = _is_high_cost(priced, cost.total, high_cost_by_tenant.get(state["tenant_id"]))


def _high_cost_thresholds(tenant_ids: Iterable[int]) -> dict[int, Decimal | None]:
    """tenant id -> its high-cost threshold (None: no run is high-cost), for the tenants that exist."""
    return dict(Tenant.objects.filter(pk__in=list(tenant_ids)).values_list("pk", "high_cost_run_usd"))


def _is_high_cost(priced: bool, total: Decimal, threshold: Decimal | None) -> bool:
    """A priced run that cost more than its tenant's high-cost threshold (none: no run is)."""
    return bool(priced and threshold is not None and Decimal(total) > threshold)


def _billable_tools(state: dict) -> list[int] | None:
    """The run's billable tool use [code-interpreter sessions, file-search calls, web-search calls] under the
    rules of pricing.rating.rate_tools (file-search calls carry a fee only under the Responses API), or None
    when nothing of it is billed at a tool price (unpriced, no tool price, no billable tool use)."""
    if not state["priced"] or not state.get("tool_price_id"):
        return None
    sessions, web_search = state["code_interpreter_sessions"], state["web_search_calls"]
    file_search = billable_file_search_calls(api=state["api"], calls=state["file_search_calls"])
    if not (sessions or file_search or web_search):
        return None
    return [sessions, file_search, web_search]


# --- rollup shares --------------------------------------------------------------------------------
# A run's share of every rollup table is worked out in one place, _share_row: one row per run state with
# the state's key in every table's terms and its values (negated to take a stored state back). Each rollup
# table declares which share columns make its key and its sums. PostgreSQL adds the rows up per table
# server-side (one INSERT ... SELECT ... GROUP BY per table from one staging table); SQLite and ledger_check
# add them up in Python with the same declarations (_add_shares).

SHARE_KEYS = ("tenant_id", "day", "month", "part", "openai_project", "model", "feature", "user_id", "size_bin",
              "tool_price_id")
SHARE_MONEY = ("cost_input_usd", "cost_cached_input_usd", "cost_output_usd", "cost_tools_usd", "cost_total_usd",
               "wasted_cost_usd")
SHARE_VALUES = (
    "runs", "unpriced_runs", "high_cost_runs", "input_tokens", "cached_input_tokens", "cache_write_tokens",
    "output_tokens", "reasoning_tokens", "code_interpreter_sessions", "file_search_calls", "web_search_calls",
    *SHARE_MONEY, "max_input_tokens", "billable_code_interpreter_sessions", "billable_file_search_calls",
    "billable_web_search_calls",
)
# A share row: which run it is for (staged before the ingest lock; None for rows worked out under it),
# then SHARE_KEYS and SHARE_VALUES.
SHARE_COLUMNS = ("openai_id", *SHARE_KEYS, *SHARE_VALUES)
SHARE_STAGE = [
    bulk.Column(name, "text" if name in ("openai_id", "openai_project", "model", "feature", "user_id")
                else "date" if name in ("day", "month", "part") else "numeric" if name in SHARE_MONEY else "bigint")
    for name in SHARE_COLUMNS
]
_NO_TOOLS = (0, 0, 0)


def prompt_size_bin(input_tokens: int) -> int:
    """The index in PROMPT_TOKEN_EDGES of the bin holding this prompt size (edges[i] <= tokens < edges[i+1])."""
    return max(0, bisect.bisect_right(PROMPT_TOKEN_EDGES, input_tokens) - 1)


def _share_row(state: dict, sign: int = 1, openai_id: str | None = None) -> list:
    """The run state's share of every rollup table, in SHARE_COLUMNS order; sign −1 takes it back (a maximum
    cannot be taken back: max_input_tokens is 0 then, and GREATEST keeps what the table has)."""
    day = state["created_at"].astimezone(dt.UTC).date()
    total = Decimal(state["cost_total_usd"])
    billable = _billable_tools(state)
    values = [
        1, 0 if state["priced"] else 1, 1 if state["is_high_cost"] else 0,
        state["input_tokens"], state["cached_input_tokens"], state["cache_write_tokens"], state["output_tokens"],
        state["reasoning_tokens"], state["code_interpreter_sessions"], state["file_search_calls"],
        state["web_search_calls"],
        Decimal(state["cost_input_usd"]), Decimal(state["cost_cached_input_usd"]), Decimal(state["cost_output_usd"]),
        Decimal(state["cost_tools_usd"]), total, total if state["status"] in WASTED_STATUSES else ZERO,
    ]
    if sign > 0:
        values.append(state["input_tokens"])
        values.extend(billable or _NO_TOOLS)
    else:
        values = [-value for value in values]
        values.append(0)
        values.extend(-count for count in (billable or _NO_TOOLS))
    return [
        openai_id, state["tenant_id"], day, day.replace(day=1), month_part_start(day), state["openai_project"],
        state["model"], state["feature"], state["user_id"] or "", prompt_size_bin(state["input_tokens"]),
        None if billable is None else state["tool_price_id"], *values,
    ]


@dataclass(frozen=True, eq=False)  # module-level singletons: identity hashing, cheap as dict keys
class _RollupTable:
    """A rollup table maintained by deltas: its key (share columns of the same names), the columns that add
    up, those kept with GREATEST, the share columns they come from when named otherwise, the share column
    that must be set for a row to count here at all, and the sums that hold money as whole ledger units
    (from a share's USD amount; apps.core.money.LEDGER_UNITS_PER_USD)."""

    model: type
    key: tuple[str, ...]
    sums: tuple[str, ...]
    greatest: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()  # share columns of sums + greatest, when not named like them
    only_with: str | None = None
    units: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.sums, *self.greatest)

    @property
    def label(self) -> str:
        return self.model.__name__

    @property
    def per_tenant(self) -> bool:
        """False for a total over every tenant (EveryTenantDailyRollup), which no tenant's runs alone add up to."""
        return "tenant_id" in self.key

    def rows(self) -> QuerySet:
        """Every row of the table, whatever its tenant (the tenant-owned ones' manager asks to be told)."""
        return self.model.objects.unscoped() if self.per_tenant else self.model.objects.all()

    @functools.cached_property
    def value_sources(self) -> tuple[str, ...]:
        return self.sources or self.columns

    @functools.cached_property
    def _pick_key(self) -> Callable:
        if len(self.key) == 1:  # itemgetter of one index gives the value, not a 1-tuple
            position = SHARE_COLUMNS.index(self.key[0])
            return lambda row: (row[position],)
        return operator.itemgetter(*[SHARE_COLUMNS.index(name) for name in self.key])

    @functools.cached_property
    def _pick_values(self) -> Callable:
        return operator.itemgetter(*[SHARE_COLUMNS.index(name) for name in self.value_sources])

    @functools.cached_property
    def _only_with_index(self) -> int | None:
        return None if self.only_with is None else SHARE_COLUMNS.index(self.only_with)

    @functools.cached_property
    def _unit_positions(self) -> tuple[int, ...]:
        return tuple(self.columns.index(name) for name in self.units)

    def project(self, row: list) -> tuple[tuple, tuple] | None:
        """(key, values in `columns` order) of a share row in this table, or None if it has no share here."""
        if self._only_with_index is not None and row[self._only_with_index] is None:
            return None
        values = self._pick_values(row)
        if self._unit_positions:
            values = list(values)
            for position in self._unit_positions:
                values[position] = usd_to_units(values[position])
        return self._pick_key(row), values


END_USER_KEY = ("tenant_id", "day", "user_id")
END_USER_MONTH_KEY = ("tenant_id", "month", "user_id")
END_USER_PART_KEY = ("tenant_id", "part", "user_id")
END_USER_SUMS = (*END_USER_COUNTS, *END_USER_UNITS)
PROMPT_SIZE_KEY = ("tenant_id", "day", "size_bin")
TOOL_USAGE_KEY = ("tenant_id", "day", "tool_price_id")
TOOL_USAGE_SUMS = ("code_interpreter_sessions", "billable_file_search_calls", "web_search_calls")
DAILY = _RollupTable(DailyRollup, ROLLUP_KEY, ROLLUP_SUMS)
TENANT_DAILY = _RollupTable(TenantDailyRollup, ("tenant_id", "day"), ("runs", "unpriced_runs", "cost_total_usd"))
EVERY_TENANT_DAILY = _RollupTable(EveryTenantDailyRollup, ("day",), TENANT_DAILY.sums)
END_USER_DAILY, END_USER_MONTHLY, END_USER_MONTH_PARTS = (
    _RollupTable(model, key, END_USER_SUMS, sources=(*END_USER_COUNTS, *END_USER_MONEY), units=END_USER_UNITS)
    for model, key in ((EndUserDailyRollup, END_USER_KEY), (EndUserMonthlyRollup, END_USER_MONTH_KEY),
                       (EndUserMonthPartRollup, END_USER_PART_KEY))
)
PROMPT_SIZE = _RollupTable(PromptSizeRollup, PROMPT_SIZE_KEY, ("runs",), greatest=("max_input_tokens",))
TOOL_USAGE = _RollupTable(ToolUsageRollup, TOOL_USAGE_KEY, TOOL_USAGE_SUMS, only_with="tool_price_id", sources=(
    "billable_code_interpreter_sessions", "billable_file_search_calls", "billable_web_search_calls"))
ROLLUP_TABLES = (DAILY, TENANT_DAILY, END_USER_DAILY, END_USER_MONTHLY, END_USER_MONTH_PARTS, PROMPT_SIZE, TOOL_USAGE,
                 EVERY_TENANT_DAILY)


def _add_shares(tables: dict[_RollupTable, dict[tuple, list]], rows: list[list]) -> None:
    """Add share rows up into {table: {key: values}} in Python: sums add up, a maximum is only ever raised."""
    for table, bucket in tables.items():
        added = len(table.sums)
        for row in rows:
            projected = table.project(row)
            if projected is None:
                continue
            key, values = projected
            current = bucket.get(key)
            if current is None:
                bucket[key] = list(values)
                continue
            for index in range(added):
                current[index] += values[index]
            for index in range(added, len(values)):
                current[index] = max(current[index], values[index])


def _write_rollups(tables: dict[_RollupTable, dict[tuple, list]]) -> None:
    """One upsert per table that adds each key's values (rows in key order, so writers lock rows in the same
    order); keys whose values are all zero are left out."""
    for table, sums in tables.items():
        rows = [[*key, *values] for key, values in sorted(sums.items()) if any(values)]
        if rows:
            columns = bulk.columns_for(table.model, [*table.key, *table.columns])
            bulk.upsert(table.model._meta.db_table, columns, rows, conflict=table.key, add=table.sums,
                        greatest=table.greatest)


def _write_shares(rows: list[list], *, staged: str | None = None) -> None:
    """Add share rows to every rollup table. PostgreSQL: the rows go into a staging table (appended to
    `staged`, which already holds rows staged earlier in the transaction) and each table gets one upsert
    that sums them per key server-side; SQLite: summed in Python."""
    if not bulk.is_postgres():
        tables: dict[_RollupTable, dict[tuple, list]] = {table: {} for table in ROLLUP_TABLES}
        _add_shares(tables, rows)
        _write_rollups(tables)
        return
    if staged is None:
        if not rows:
            return
        staged = bulk.stage(SHARE_STAGE, rows)
    elif rows:
        bulk.stage(SHARE_STAGE, rows, name=staged, append=True)
    for table in ROLLUP_TABLES:
        bulk.upsert_grouped(
            table.model._meta.db_table, bulk.columns_for(table.model, [*table.key, *table.columns]), staged,
            source=[SHARE_COLUMNS.index(name) for name in (*table.key, *table.value_sources)],
            key=table.key, add=table.sums, greatest=table.greatest, units=table.units,
            only_with=None if table.only_with is None else SHARE_COLUMNS.index(table.only_with),
        )


class _Deltas:
    """The batch's changes to rollups and thread totals: share rows (+ new state, − old state), written once
    per batch (one upsert per table), and per-thread sums of (new − old)."""

    def __init__(self):
        self.shares: list[list] = []
        self.threads: dict[int, list] = {}  # thread pk -> [run_count, cost_usd]
        # thread pk -> (created_at, last_activity_at, metadata) the batch reports; applied with the totals.
        self.thread_activity: dict[int, tuple] = {}

    def apply(self, old: dict | None, new: dict | None, *, new_share_staged: bool = False) -> None:
        """Take `old` back and add `new`; `new_share_staged`: the new state's share row is already staged
        (ingest stages the rows of the runs it expects to create before it takes the lock)."""
        for state, sign in ((old, -1), (new, 1)):
            if state is None:
                continue
            if not (sign > 0 and new_share_staged):
                self.shares.append(_share_row(state, sign))
            if state.get("thread_id"):
                thread = self.threads.setdefault(state["thread_id"], [0, ZERO])
                thread[0] += sign
                thread[1] += Decimal(state["cost_total_usd"]) * sign

    def write(self, *, staged_shares: str | None = None) -> None:
        _write_shares(self.shares, staged=staged_shares)
        thread_rows = []
        for pk in sorted(set(self.threads) | set(self.thread_activity)):
            count, cost = self.threads.get(pk, (0, ZERO))
            created, activity, metadata = self.thread_activity.get(pk, (None, None, None))
            if count or cost or created is not None:
                thread_rows.append([pk, count, cost, created, activity, metadata or {}])
        if thread_rows:
            # The batch's thread rows are locked here, at the end of the transaction and in id order, not
            # when the batch starts: concurrent batches share threads and would otherwise wait on each other
            # for their whole length.
            bulk.lock_rows(Thread._meta.db_table, "id", [row[0] for row in thread_rows])
            key = bulk.columns_for(Thread, ["id"])[0]
            bulk.update_from_values(
                Thread._meta.db_table, key,
                bulk.columns_for(Thread, ["run_count", "cost_usd", "created_at", "last_activity_at", "metadata"]),
                thread_rows, add=("run_count", "cost_usd"), least=("created_at",), greatest=("last_activity_at",),
                replace_unless_empty_json=("metadata",),
            )


# --- ingest ---------------------------------------------------------------------------------------

# Sent inside each ingest transaction that changed stored runs, once they and the rollups are written, with
# `changes`: [{"old": the stored state or None for a new run, "new": the state stored now}]. A listener's writes
# commit or roll back with the batch (reconciliation marks the days its daily run no longer re-checks); it runs
# under the ingest lock, so it must stay cheap for a batch of ordinary, recent runs.
runs_ingested = Signal()


@dataclass
class _RunEvent:
    index: int
    state: dict


@dataclass
class _ThreadEvent:
    index: int
    tenant_id: int
    record: ResourceRecord
    openai_project: str
    outcome: str = "unchanged"


def _reject(results: list[EventResult | None], index: int, openai_id, field_name: str | None, message: str) -> None:
    error = {"message": message}
    if field_name:
        error["field"] = field_name
    results[index] = EventResult(index=index, id=openai_id if isinstance(openai_id, str) else None,
                                 outcome="rejected", error=error)


def _tenants_by_slug(events: list) -> dict[str, Tenant]:
    slugs: set[str] = set()
    for event in events:
        if not isinstance(event, dict):
            continue
        if isinstance(event.get("tenant"), str):
            slugs.add(event["tenant"])
        obj = event.get("object")
        if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
            tenant = obj["metadata"].get("tenant")
            if isinstance(tenant, str):
                slugs.add(tenant)
    # No slug holds a NUL or a lone surrogate, and PostgreSQL refuses them in a query (a 500): such an event
    # is then rejected as naming an unknown tenant.
    slugs = {slug for slug in slugs if 0 < len(slug) <= 63 and not unstorable_text(slug)}
    if not slugs:
        return {}
    return {t.slug: t for t in Tenant.objects.filter(slug__in=slugs)}


def _resolve_tenant(event: dict, metadata_tenant: str, tenants: dict[str, Tenant], key_tenant: Tenant | None) -> Tenant:
    explicit = event.get("tenant")
    if explicit is not None and not isinstance(explicit, str):
        raise _Rejected("tenant", "must be a tenant slug (string)")
    slug = explicit or metadata_tenant
    field_name = "tenant" if explicit else "object.metadata.tenant"
    if slug and unstorable_text(slug):  # no slug holds these; not echoed back, it would only be noise
        raise _Rejected(field_name, "must not contain NUL characters or invalid Unicode")
    if not slug:
        if key_tenant is not None:
            return key_tenant
        raise _Rejected("tenant", "required: send 'tenant' or set object.metadata.tenant")
    if key_tenant is not None and slug != key_tenant.slug:
        raise _Rejected(field_name, f"this API key may only write tenant '{key_tenant.slug}'")
    tenant = tenants.get(slug)
    if tenant is None:
        raise _Rejected(field_name, f"unknown tenant '{slug[:63]}'")
    return tenant


# Where a normalized record's fields come from in the event, when not from `object.<the same name>`.
_EVENT_PATHS = {"openai_id": "object.id", "prompt_id": "object.prompt.id", "metadata_tenant": "object.metadata.tenant",
                "incomplete_reason": "object.incomplete_details.reason"}


def _event_path(record, name: str, event: dict) -> str:
    """The event's field a record's field was read from, for the rejection to name what the sender sent."""
    if name in ATTRIBUTION_FIELDS:
        attribution = event.get("attribution")
        sent = isinstance(attribution, dict) and attribution.get(name) is not None
        return f"attribution.{name}" if sent else f"object.metadata.{name}"
    responses = getattr(record, "api", "") == "responses"
    if name == "thread_openai_id":
        if not responses:
            return "object.thread_id"
        conversation = (event.get("object") or {}).get("conversation")
        return "object.conversation.id" if isinstance(conversation, dict) else "object.conversation"
    if name == "error_code":
        return "object.error.code" if responses else "object.last_error.code"
    return _EVENT_PATHS.get(name, f"object.{name}")


def _check_text(record, event: dict) -> None:
    """PostgreSQL stores neither NUL characters nor lone surrogates: refuse them per event, not per batch."""
    strings = [value for value in vars(record).values() if isinstance(value, str) and value]
    if strings and unstorable_text("".join(strings)):
        for name, value in vars(record).items():
            if isinstance(value, str) and value and unstorable_text(value):
                raise _Rejected(_event_path(record, name, event), "must not contain NUL characters or invalid Unicode")
    metadata = getattr(record, "metadata", None)
    if metadata:
        # Keys and string values directly (metadata values are scalars): no JSON encoding per event.
        texts = [str(key) for key in metadata] + [value for value in metadata.values() if isinstance(value, str)]
        if unstorable_text("".join(texts)):
            raise _Rejected("object.metadata", "must not contain NUL characters or invalid Unicode")


def _text_ok(fields: dict) -> bool:
    """The fast path's text check: every string field and the metadata's keys and string values at once."""
    texts = [value for value in fields.values() if type(value) is str and value]
    metadata = fields.get("metadata")
    if metadata:
        texts.extend(metadata)
        texts.extend(value for value in metadata.values() if type(value) is str)
    return not unstorable_text("".join(texts))


def _openai_project(event: dict) -> str:
    project = event.get("openai_project")
    if project is None:
        return settings.OPENAI_PROJECT_ID
    if not isinstance(project, str) or len(project) > 100:
        raise _Rejected("openai_project", "must be a string of at most 100 characters")
    if unstorable_text(project):
        raise _Rejected("openai_project", "must not contain NUL characters or invalid Unicode")
    return project


def _parse(events: list, key_tenant: Tenant | None, results: list, projects_confirmed: bool = False
           ) -> tuple[list[_RunEvent], list[_ThreadEvent], dict]:
    tenants = _tenants_by_slug(events)
    run_events: list[_RunEvent] = []
    thread_events: list[_ThreadEvent] = []
    lifecycle: dict[str, tuple[dict[int, int], dict[int, ResourceRecord], dict[int, str]]] = {}
    for index, event in enumerate(events):
        openai_id = None
        try:
            if not isinstance(event, dict):
                raise _Rejected(None, "each event must be an object")
            obj = event.get("object")
            if not isinstance(obj, dict):
                raise _Rejected("object", "required: the run, response or resource exactly as OpenAI returned it")
            openai_id = obj.get("id")
            kind = obj.get("object") if isinstance(obj.get("object"), str) else None
            unknown = set(event) - {"tenant", "object", "attribution", "steps", "openai_project"}
            if unknown:
                raise _Rejected(sorted(unknown)[0], "unknown field")
            if kind in RUN_KINDS:
                state = run_fields_fast(obj, steps=event.get("steps"), attribution=event.get("attribution"))
                if state is not None and _text_ok(state):
                    metadata_tenant = state.pop("metadata_tenant")
                else:
                    # The detailed path: the same fields for an object the fast path declined, or the
                    # precise error (field and reason) for a bad one.
                    record = normalize_run_object(obj, steps=event.get("steps"))
                    apply_attribution(record, event.get("attribution"))
                    _check_text(record, event)
                    metadata_tenant = record.metadata_tenant
                    state = {name: getattr(record, name) for name in _RECORD_FIELDS}
                tenant = _resolve_tenant(event, metadata_tenant, tenants, key_tenant)
                state["tenant_id"] = tenant.pk
                state["openai_project"] = _openai_project(event)
                if event.get("openai_project") is None:
                    state["_project_unnamed"] = True
                if projects_confirmed:
                    state["_project_confirmed"] = True
                state["status_rank"] = STATUS_RANK.get(state["status"], 0)
                if kind == "thread.run" and event.get("steps") is None:
                    state["_tools_guessed"] = True  # see _take_exact_tool_counts
                attribution = event.get("attribution")
                state["_explicit_attribution"] = _NOTHING_EXPLICIT if attribution is None else frozenset(
                    name for name in ATTRIBUTION_FIELDS if attribution.get(name) is not None)
                run_events.append(_RunEvent(index, state))
            elif kind in THREAD_KINDS or kind in LIFECYCLE_KINDS:
                if event.get("attribution") is not None:
                    raise _Rejected("attribution", "only runs and responses carry attribution")
                record = normalize_resource(obj)
                _check_text(record, event)
                tenant = _resolve_tenant(event, record.metadata_tenant, tenants, key_tenant)
                if kind in THREAD_KINDS:
                    thread_events.append(_ThreadEvent(index, tenant.pk, record, _openai_project(event)))
                elif kind in _RESOURCE_HANDLERS:
                    tenants_by_index, records, projects = lifecycle.setdefault(kind, ({}, {}, {}))
                    tenants_by_index[index] = tenant.pk
                    records[index] = record
                    # Not named: "" keeps the project already recorded (the inventory lists each project).
                    projects[index] = _openai_project(event) if event.get("openai_project") is not None else ""
                else:
                    raise _Rejected("object.object", f"'{kind}' objects are not yet supported by this server")
            else:
                raise _Rejected(
                    "object.object",
                    "must be one of thread.run, response, thread, conversation, vector_store, file, container",
                )
        except NormalizationError as exc:
            _reject(results, index, openai_id, exc.field, exc.message)
        except _Rejected as exc:
            _reject(results, index, openai_id, exc.field, exc.message)
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError, RecursionError) as exc:
            # A shape no check above anticipated (or nesting deeper than Python recurses, which orjson reads up
            # to 1,024 levels): this event is refused, the batch goes on.
            logger.warning("ingest event %s unreadable: %r", index, exc)
            _reject(results, index, openai_id, "object", f"could not be read ({type(exc).__name__})")
    return run_events, thread_events, lifecycle


def _lock_existing_runs(openai_ids: Iterable[str]) -> dict[str, dict]:
    """The stored rows of these runs, locked (FOR UPDATE, in openai_id order) until the batch commits."""
    ids = sorted(set(openai_ids))
    if not ids:
        return {}
    if bulk.is_postgres():
        names = ["id", *RUN_FIELDS]
        found = bulk.select_by_key(Run._meta.db_table, names, "openai_id", ids, for_update=True,
                                   json_columns=["metadata"])
        return {row["openai_id"]: row for row in found}
    rows = (
        Run.objects.unscoped()
        .filter(openai_id__in=ids)
        .order_by("openai_id")
        .select_for_update()
        .values("id", *RUN_FIELDS)
    )
    return {row["openai_id"]: row for row in rows}


_RUN_VALUES = operator.itemgetter(*RUN_FIELDS)


def _run_row(state: dict, now: dt.datetime, with_id: bool = False) -> list:
    # Every state carries every RUN_FIELDS key by now (parsed, rated, thread resolved, or read back stored).
    values = list(_RUN_VALUES(state))
    values.append(now)
    if with_id:
        return [state["id"], *values]
    values.append(now)
    return values


@dataclass
class _Plan:
    outcome_by_index: dict[int, str]
    final: dict[str, dict]  # openai_id -> final state to store
    existing: dict[str, dict]  # openai_id -> stored state before this batch


RUN_OF_ANOTHER_TENANT = "this run is recorded for another tenant"


def _runs_of_other_tenants(run_events: list[_RunEvent], existing: dict[str, dict], results: list) -> None:
    """Reject the reports of runs recorded for another tenant (_plan_runs also refuses a run reported for two
    tenants within the batch)."""
    for event in run_events:
        stored = existing.get(event.state["openai_id"])
        if stored is not None and stored["tenant_id"] != event.state["tenant_id"]:
            _reject(results, event.index, event.state["openai_id"], "object.id", RUN_OF_ANOTHER_TENANT)


def _plan_runs(run_events: list[_RunEvent], existing: dict[str, dict], results: list) -> _Plan:
    """Replay the batch's reports in order against the stored rows: outcome per event, final state per run."""
    outcome_by_index: dict[int, str] = {}
    current: dict[str, dict] = {}
    for event in run_events:
        state = event.state
        openai_id = state["openai_id"]
        before = current.get(openai_id) or existing.get(openai_id)
        if before is not None and before["tenant_id"] != state["tenant_id"]:
            _reject(results, event.index, openai_id, "object.id", RUN_OF_ANOTHER_TENANT)
            continue
        if before is None:
            current[openai_id] = state
            outcome_by_index[event.index] = "created"
            continue
        merged = _merge(before, state)
        if _same_content(merged, before):
            outcome_by_index[event.index] = "unchanged"
        else:
            outcome_by_index[event.index] = "updated"
            current[openai_id] = {**merged, "id": before.get("id")}
    return _Plan(outcome_by_index, current, existing)


def _record_tool_resources(thread_events: list[_ThreadEvent]) -> None:
    """The vector stores and files each reported thread's tool_resources name (ThreadToolResource): the sweeps
    keep them while the thread lives, whether or not they are in the ledger yet. Links are only added: a store
    a live thread once named is kept until the thread goes."""
    links = {
        (resource_id, event.record.openai_id): ThreadToolResource(
            tenant_id=event.tenant_id, thread_openai_id=event.record.openai_id, resource_openai_id=resource_id,
            kind=kind)
        for event in thread_events
        for kind, ids in ((ThreadToolResource.Kind.VECTOR_STORE, event.record.vector_store_ids),
                          (ThreadToolResource.Kind.FILE, event.record.file_ids))
        for resource_id in ids
    }
    if links:
        ThreadToolResource.objects.unscoped().bulk_create([links[key] for key in sorted(links)], ignore_conflicts=True)


def _ensure_threads(
    run_states: Iterable[dict], thread_events: list[_ThreadEvent], results: list, now: dt.datetime,
    deltas: _Deltas, stored: dict[str, tuple[int, int]],
) -> dict[str, int]:
    """Create the thread/conversation rows this batch is first to mention (existing rows are not locked
    here) and queue every mentioned thread's activity and metadata on `deltas`, written with the thread
    totals at the end of the batch; returns openai_id -> pk."""
    rows: dict[str, dict] = {}
    for event in thread_events:
        record = event.record
        row = rows.setdefault(record.openai_id, {
            "tenant_id": event.tenant_id, "openai_id": record.openai_id, "kind": record.kind,
            "openai_project": event.openai_project, "created_at": record.created_at,
            "last_activity_at": record.last_active_at or record.created_at, "metadata": {},
        })
        row["metadata"] = record.metadata or row["metadata"]
        row["created_at"] = min(row["created_at"], record.created_at)
    for state in run_states:
        thread_id = state.get("thread_openai_id")
        if not thread_id:
            continue
        activity = max(
            moment for moment in (state["created_at"], state.get("completed_at"), state.get("failed_at"),
                                  state.get("cancelled_at"), state.get("started_at")) if moment is not None
        )
        row = rows.setdefault(thread_id, {
            "tenant_id": state["tenant_id"], "openai_id": thread_id,
            "kind": "thread" if state["api"] == "assistants" else "conversation",
            "openai_project": state["openai_project"], "created_at": state["created_at"],
            "last_activity_at": activity, "metadata": {},
        })
        row["created_at"] = min(row["created_at"], state["created_at"])
        row["last_activity_at"] = max(row["last_activity_at"], activity)
    if not rows:
        return {}
    names = ["tenant_id", "openai_id", "kind", "openai_project", "created_at", "last_activity_at", "run_count",
             "cost_usd", "metadata", "status", "deletion_reason", "recorded_at"]
    values = [
        [r["tenant_id"], r["openai_id"], r["kind"], r["openai_project"], r["created_at"], r["last_activity_at"], 0,
         ZERO, r["metadata"], Thread.Status.ACTIVE, "", now]
        for openai_id, r in sorted(rows.items()) if openai_id not in stored
    ]
    returned = bulk.insert_returning(
        Thread._meta.db_table, bulk.columns_for(Thread, names), values, conflict=["openai_id"],
        returning=["id", "openai_id", "tenant_id"],
    )
    returned.extend((pk, openai_id, tenant_id) for openai_id, (pk, tenant_id) in stored.items() if openai_id in rows)
    known = {row[1] for row in returned}
    missing = [openai_id for openai_id in rows if openai_id not in known]
    if missing:  # inserted by a concurrent transaction after `stored` was read (not while the ingest lock is held)
        returned = [*returned, *_stored_threads(missing)]
    mapping = {}
    for pk, openai_id, tenant_id in returned:
        row = rows[openai_id]
        deltas.thread_activity[pk] = (row["created_at"], row["last_activity_at"], row["metadata"])
        mapping[openai_id] = pk
        if tenant_id != rows[openai_id]["tenant_id"]:
            logger.warning("thread %s reported for tenant %s but recorded for tenant %s", openai_id,
                           rows[openai_id]["tenant_id"], tenant_id)
    return mapping


def _threads_alive_again(thread_pks: Iterable[int]) -> None:
    """Threads and conversations the ledger took for gone at OpenAI (a 404 to a sweep, or no longer listed)
    that this batch reports activity in after that moment: OpenAI still holds them, so they are live again and
    the sweeps keep their retention promise (a conversation cannot be listed: this row is the only way to find
    it again). A thread RunLedger deleted itself stays deleted. Audited like `recheck_gone`'s restores."""
    from apps.core.services import audit_record

    pks = list(thread_pks)
    if not pks:
        return
    revived = list(Thread.objects.unscoped().filter(
        pk__in=pks, status=Thread.Status.DELETED, deletion_reason__startswith=GONE_REASON,
        last_activity_at__gt=F("deleted_at"),
    ).values("pk", "openai_id", "kind", "tenant_id", "deleted_at", "deletion_reason"))
    if not revived:
        return
    Thread.objects.unscoped().filter(pk__in=[row["pk"] for row in revived]).update(
        status=Thread.Status.ACTIVE, deleted_at=None, deletion_reason="")
    for row in revived:
        audit_record(action="lifecycle.thread.restore", target_type=row["kind"], target_id=row["openai_id"],
                     actor_label="ingest", tenant_id=row["tenant_id"],
                     data={"why": "activity reported after it was taken for gone at OpenAI",
                           "was": row["deletion_reason"], "taken_for_gone_at": row["deleted_at"].isoformat()})


def _stored_threads(openai_ids: list[str]) -> list[tuple[int, str, int]]:
    """(pk, openai_id, tenant id) of the stored threads among these ids, whichever tenant holds them: ingest
    checks ownership itself (_thread_conflicts)."""
    if bulk.is_postgres():
        names = ["id", "openai_id", "tenant_id"]
        return [(row["id"], row["openai_id"], row["tenant_id"])
                for row in bulk.select_by_key(Thread._meta.db_table, names, "openai_id", openai_ids)]
    return list(Thread.objects.unscoped().filter(openai_id__in=openai_ids).values_list("id", "openai_id", "tenant_id"))


def _thread_conflicts(run_events: list[_RunEvent], thread_events: list[_ThreadEvent],
                      results: list) -> dict[str, tuple[int, int]]:
    """Reject events that would attach a run or thread to a thread recorded for another tenant; returns the
    stored threads the batch mentions, openai_id -> (pk, tenant id)."""
    wanted: dict[str, list[tuple[int, int, str, str]]] = defaultdict(list)
    for event in run_events:
        if event.state.get("thread_openai_id"):
            wanted[event.state["thread_openai_id"]].append(
                (event.index, event.state["tenant_id"], event.state["openai_id"],
                 "object.conversation.id" if event.state["api"] == "responses" else "object.thread_id"))
    for event in thread_events:
        wanted[event.record.openai_id].append((event.index, event.tenant_id, event.record.openai_id, "object.id"))
    if not wanted:
        return {}
    stored = {openai_id: (pk, tenant_id) for pk, openai_id, tenant_id in _stored_threads(list(wanted))}
    for thread_id, uses in wanted.items():
        owner = stored[thread_id][1] if thread_id in stored else None
        if owner is None:
            # A thread first seen in this batch belongs to the first tenant that reports it: the lowest event
            # index (`uses` lists the run events before the thread events, not in batch order).
            owner = min(uses)[1]
        for index, tenant_id, openai_id, field_name in uses:
            if tenant_id != owner and results[index] is None:
                _reject(results, index, openai_id, field_name, "this thread is recorded for another tenant")
    return stored


def _write_runs(plan: _Plan, book: PriceBook, thresholds: dict[int, Decimal], thread_pks: dict[str, int],
                now: dt.datetime, deltas: _Deltas, *, serialized: bool,
                prestaged: _Prestaged | None = None) -> tuple[list[dict], list[str]]:
    """Insert new runs and update changed ones; returns (changes as old/new pairs, ids that lost an insert race).
    With `prestaged`, new runs whose rows were staged before the lock go in from the staging table."""
    inserts, updates = [], []
    for openai_id, state in sorted(plan.final.items()):
        state["thread_id"] = thread_pks.get(state.get("thread_openai_id") or "")
        if not state.get("_rated"):
            # Only a stored row that outranked every report of this batch gets here: the reported states
            # were rated before the transaction (see _rate_reported).
            _rate_state(state, book, thresholds)
        old = plan.existing.get(openai_id)
        if old is None:
            inserts.append(state)
        elif _RUN_VALUES(state) != _RUN_VALUES(old):
            updates.append((old, state))
    lost: list[str] = []
    changes: list[dict] = []
    # Staged rows of runs that are not new after all must go whether or not any run is (they would be summed).
    from_stage = prestaged.take(inserts) if prestaged else []
    if inserts:
        columns = bulk.columns_for(Run, RUN_INSERT_FIELDS)
        direct = [s for s in inserts if not from_stage or s["openai_id"] not in prestaged.taken]
        if from_stage:
            prestaged.insert_runs(columns)
        rows = [_run_row(s, now) for s in direct]
        if serialized:
            # Nobody else can be inserting these runs (the ingest lock is held and they were not found
            # under it), so they go in with one COPY — no staging table, no conflict checks.
            bulk.copy_into(Run._meta.db_table, columns, rows)
            inserted_ids = {s["openai_id"] for s in direct}
        else:
            inserted_ids = {row[0] for row in bulk.insert_returning(
                Run._meta.db_table, columns, rows, conflict=["openai_id"], returning=["openai_id"])}
        for state in from_stage:
            deltas.apply(None, state, new_share_staged=True)
            changes.append({"old": None, "new": state})
        for state in direct:
            if state["openai_id"] in inserted_ids:
                deltas.apply(None, state)
                changes.append({"old": None, "new": state})
            else:
                lost.append(state["openai_id"])
    if updates:
        key = bulk.columns_for(Run, ["id"])[0]
        columns = bulk.columns_for(Run, [*RUN_FIELDS, "updated_at"])
        bulk.update_from_values(Run._meta.db_table, key, columns, [_run_row(new, now, with_id=True)
                                                                   for _, new in updates])
        for old, new in updates:
            deltas.apply(old, new)
            changes.append({"old": old, "new": new})
    return changes, lost


RUN_INSERT_FIELDS = (*RUN_FIELDS, "recorded_at", "updated_at")
# Every RUN_FIELDS value but thread_id, which the staged rows leave to a join on thread_openai_id.
_RUN_VALUES_BUT_THREAD = operator.itemgetter(*[name for name in RUN_FIELDS if name != "thread_id"])


class _Prestaged:
    """Ingest's work done before it takes the lock, on PostgreSQL: the run rows and share rows of every run the
    batch would create if none were stored yet, COPYed into temp tables. Under the lock, the runs that are
    indeed new go in with one INSERT ... SELECT (their thread ids joined by thread_openai_id, since new threads
    get theirs under the lock) and their shares are summed into the rollups from the staged rows; the rest
    (stored after all, rejected, merged otherwise) are dropped from the stage and written as before."""

    RUNS = "_ingest_prestaged_runs"
    SHARES = "_ingest_prestaged_shares"

    def __init__(self, run_events: list[_RunEvent], now: dt.datetime):
        plan = _plan_runs(run_events, {}, [None] * (max((e.index for e in run_events), default=-1) + 1))
        self.states = plan.final
        self.taken: set[str] = set()
        for state in self.states.values():
            state.setdefault("thread_id", None)
        ordered = sorted(self.states.items())
        bulk.stage(bulk.columns_for(Run, RUN_INSERT_FIELDS), [_run_row(state, now) for _, state in ordered],
                   name=self.RUNS)
        bulk.stage(SHARE_STAGE, [_share_row(state, 1, openai_id) for openai_id, state in ordered], name=self.SHARES)

    def take(self, inserts: list[dict]) -> list[dict]:
        """The states among `inserts` whose staged rows are exactly theirs; drops every other staged row."""
        taken = [state for state in inserts if (staged := self.states.get(state["openai_id"])) is not None
                 and (staged is state or _RUN_VALUES_BUT_THREAD(staged) == _RUN_VALUES_BUT_THREAD(state))]
        self.taken = {state["openai_id"] for state in taken}
        stale = [openai_id for openai_id in self.states if openai_id not in self.taken]
        bulk.delete_staged(self.RUNS, RUN_INSERT_FIELDS.index("openai_id"), stale)
        bulk.delete_staged(self.SHARES, SHARE_COLUMNS.index("openai_id"), stale)
        return taken

    def insert_runs(self, columns: list[bulk.Column]) -> None:
        thread_at, thread_openai_id_at = RUN_INSERT_FIELDS.index("thread_id"), RUN_INSERT_FIELDS.index("thread_openai_id")
        select = ", ".join("t.id" if i == thread_at else f"s.c{i}" for i in range(len(columns)))
        inserted = bulk.insert_select(
            Run._meta.db_table, columns,
            f"SELECT {select} FROM {self.RUNS} AS s LEFT JOIN {Thread._meta.db_table} AS t "
            f"ON t.openai_id = s.c{thread_openai_id_at} AND s.c{thread_openai_id_at} <> ''",
        )
        if inserted != len(self.taken):
            raise RuntimeError(f"ingest: {inserted} prestaged runs inserted, {len(self.taken)} expected")


def _rate_reported(run_events: list[_RunEvent]) -> tuple[PriceBook, dict[int, Decimal]]:
    """Rate every reported state up front, outside the transaction: a run's cost depends only on its own
    reported fields, the price book and its tenant's high-cost threshold, and rating is most of the batch's
    CPU — done here, it overlaps with the other workers' write phases instead of lengthening them."""
    book = PriceBook.load(track_changes=True)  # checked again under the ingest lock (_ingest_once)
    tenant_ids = {e.state["tenant_id"] for e in run_events}
    thresholds = _high_cost_thresholds(tenant_ids)
    _rate_states(run_events, book, thresholds)
    return book, thresholds


def _rate_states(run_events: list[_RunEvent], book: PriceBook, thresholds: dict[int, Decimal]) -> None:
    for event in run_events:
        _rate_state(event.state, book, thresholds)
        event.state["_rated"] = True


def _thresholds_refreshed(run_events: list[_RunEvent], thresholds: dict[int, Decimal]) -> bool:
    """Under the ingest lock: the batch was rated with thresholds read before it; if a tenant's has changed
    since (runs_reflag_high_cost re-flags the stored runs under this same lock), re-flag the batch's states
    and update `thresholds` in place (stored rows re-rated later in the batch use them). True if so."""
    current = _high_cost_thresholds({e.state["tenant_id"] for e in run_events})
    if current == thresholds:
        return False
    thresholds.clear()
    thresholds.update(current)
    for event in run_events:
        state = event.state
        state["is_high_cost"] = _is_high_cost(state["priced"], state["cost_total_usd"], current.get(state["tenant_id"]))
    return True


def _rerate_with_current_book(run_events: list[_RunEvent], thresholds: dict[int, Decimal]) -> PriceBook:
    """Under the ingest lock: the batch was rated with the price book read before it, and a price version was
    added or removed since. Adding one re-rates the runs stored unpriced at that moment, which cannot include
    this batch's (not written yet): rated with the old book they would stay unpriced for good. So the batch
    is rated again with the book as it is now. A version added after this check is no such loss: its
    re-rating takes this lock too, so it runs once the batch's runs are stored. Returns the book, for the
    stored runs the batch re-rates later."""
    book = PriceBook.load()
    _rate_states(run_events, book, thresholds)
    return book


def _ingest_once(run_events, thread_events, lifecycle, results_template, now, book, thresholds, *, shared: bool):
    results = list(results_template)
    with transaction.atomic():
        # The rows of the runs this batch will most likely create go into temp tables before the lock (the
        # lock then covers set-based statements, not formatting rows); only a batch that writes alone can
        # count on them, since its runs cannot be inserted meanwhile.
        prestaged = _Prestaged(run_events, now) if run_events and bulk.is_postgres() and not shared else None
        # Ingest batches write one at a time (a transaction-scoped advisory lock, PostgreSQL only): batches
        # share rollup rows, threads and in-flight runs, and concurrent ones spent a third of their time
        # waiting on each other's row locks and retrying deadlocks. Everything before this point — reading
        # the body, normalizing, rating, staging — still runs in parallel across workers.
        serialized = bulk.advisory_xact_lock(INGEST_LOCK_KEY, shared=shared)
        if run_events:
            rerated = _thresholds_refreshed(run_events, thresholds)
            if book.is_stale():
                book = _rerate_with_current_book(run_events, thresholds)
                rerated = True
            if rerated and prestaged is not None:
                prestaged.take([])  # its staged rows carry the old costs or flags: the runs go in the ordinary way
                prestaged = None
        existing = _lock_existing_runs(e.state["openai_id"] for e in run_events)
        # Reports of a run recorded for another tenant go first: a thread first seen in this batch belongs to
        # the tenant of the first report naming it, and a refused report must not claim it (the good reports
        # of its real tenant would be refused with it).
        _runs_of_other_tenants(run_events, existing, results)
        run_events = [e for e in run_events if results[e.index] is None]
        stored_threads = _thread_conflicts(run_events, thread_events, results)
        run_events = [e for e in run_events if results[e.index] is None]
        thread_events = [e for e in thread_events if results[e.index] is None]
        tenant_ids = {e.state["tenant_id"] for e in run_events}
        deltas = _Deltas()
        changes: list[dict] = []
        plan = _plan_runs(run_events, existing, results)
        outcomes = dict(plan.outcome_by_index)
        thread_pks = _ensure_threads(list(plan.final.values()), thread_events, results, now, deltas,
                                     stored_threads)
        _record_tool_resources(thread_events)
        for _attempt in range(3):
            new_changes, lost = _write_runs(plan, book, thresholds, thread_pks, now, deltas, serialized=serialized,
                                            prestaged=prestaged if _attempt == 0 else None)
            changes.extend(new_changes)
            if not lost:
                break
            # A concurrent batch inserted these runs first: read them (locked) and replay as updates.
            raced = _lock_existing_runs(lost)
            replay = [e for e in run_events if e.state["openai_id"] in raced]
            plan = _plan_runs(replay, raced, results)
            outcomes.update(plan.outcome_by_index)
        else:
            raise OperationalError("ingest: runs kept conflicting with concurrent batches")
        # Thread and rollup deltas once per batch.
        deltas.write(staged_shares=_Prestaged.SHARES if prestaged else None)
        _threads_alive_again(thread_pks.values())
        thread_outcomes = _thread_outcomes(thread_events)
        lifecycle_outcomes: dict[int, str] = {}
        for kind, (tenant_by_index, records, projects) in lifecycle.items():
            for index, outcome in _RESOURCE_HANDLERS[kind](tenant_by_index, records, projects).items():
                if outcome == "tenant_conflict":
                    _reject(results, index, records[index].openai_id, "object.id",
                            "this resource is recorded for another tenant")
                else:
                    lifecycle_outcomes[index] = outcome
        from apps.alerts.services import alerts_for_run_changes

        alerts_for_run_changes(changes=changes, tenant_ids=tenant_ids)
        if changes:
            runs_ingested.send(sender=Run, changes=changes)
    ids = {e.index: e.state["openai_id"] for e in run_events}
    ids.update({e.index: e.record.openai_id for e in thread_events})
    for records in (records for _, records, _ in lifecycle.values()):
        ids.update({index: record.openai_id for index, record in records.items()})
    for index, outcome in {**outcomes, **thread_outcomes, **lifecycle_outcomes}.items():
        if results[index] is None:
            results[index] = EventResult(index=index, id=ids.get(index), outcome=outcome)
    return results


def _thread_outcomes(thread_events: list[_ThreadEvent]) -> dict[int, str]:
    return {event.index: event.outcome for event in thread_events}


def _driver_errors() -> tuple[type[Exception], ...]:
    try:
        import psycopg
    except ImportError:  # SQLite-only installs
        return ()
    return (psycopg.Error,)


def _is_unique_violation(exc: Exception) -> bool:
    cause = exc.__cause__ or exc
    return getattr(cause, "sqlstate", None) == "23505" or "duplicate key value" in str(exc)


def _is_retryable(exc: Exception) -> bool:
    text = str(exc).lower()
    return "deadlock" in text or "could not serialize" in text or "database is locked" in text


def ingest_events(*, events: list[dict], key_tenant: Tenant | None = None, partitioned: bool = False,
                  projects_confirmed: bool = False) -> IngestResult:
    """Record a batch of raw OpenAI objects (see issue #4 item 3 and docs/ledger.md).

    Each event: {"tenant": slug?, "object": {...}, "attribution": {...}?, "steps": [...]?, "openai_project": str?}.
    Bad events are rejected one by one (index, field, message) while the good ones are stored. With
    `key_tenant`, every event must belong to that tenant (and may omit `tenant`).

    Batches write one at a time (INGEST_LOCK_KEY). `partitioned` is for callers that run several batches at
    once which never carry the same run (import_runs' workers split runs by id): such batches write
    concurrently with each other, still never alongside an ordinary batch.

    `projects_confirmed` is for the run collector, which reads every run with a project's key just before it
    reports it: each run's `openai_project` is where OpenAI holds it, so it replaces the recorded project
    even when the state is no newer (the rollups' shares move with it). Otherwise a report's project is kept
    only with a newer state, so a stale report cannot move a run."""
    if not isinstance(events, list):
        raise TypeError("events must be a list")
    # A batch allocates a few hundred thousand short-lived, acyclic objects; the cyclic collector would
    # walk every live object (all of Django) dozens of times per batch for nothing. Reference counting
    # still frees them; the collector resumes after the batch.
    collecting = gc.isenabled()
    gc.disable()
    try:
        try:
            return _ingest_events(events, key_tenant, partitioned, projects_confirmed)
        except _LedgerOverflow:
            # Some run would take a total past what its column holds. Rare and never retryable as it is:
            # each event goes in on its own, so only those runs are refused, not the records beside them.
            return _ingest_one_by_one(events, key_tenant, projects_confirmed)
    finally:
        if collecting:
            gc.enable()


class _LedgerOverflow(Exception):
    """A write would take a stored total past what its column holds (PostgreSQL's numeric_value_out_of_range,
    SQLite's integer overflow)."""


# Said of a run whose cost cannot be added to the totals: a bigint of ledger units holds about 922 million USD
# per end user and period (apps.core.money.LEDGER_UNITS_PER_USD), the daily rollups' numeric 10**14 USD.
OVERFLOW_MESSAGE = ("its cost would take a stored total (such as its end user's for the month, at most about 922 "
                    "million USD) past what the ledger can hold; check the token counts")


def _is_overflow(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc
    text = str(exc)
    return (getattr(cause, "sqlstate", None) == "22003" or "bigint out of range" in text
            or "numeric field overflow" in text or "integer overflow" in text)


def _ingest_one_by_one(events: list, key_tenant: Tenant | None, projects_confirmed: bool) -> IngestResult:
    results = []
    for index, event in enumerate(events):
        try:
            (result,) = _ingest_events([event], key_tenant, False, projects_confirmed).results
            results.append(dataclasses.replace(result, index=index))
        except _LedgerOverflow:
            obj = event.get("object") if isinstance(event, dict) else None
            openai_id = obj.get("id") if isinstance(obj, dict) else None
            logger.warning("ingest: event %s (%s) refused: a total would overflow", index, openai_id)
            results.append(EventResult(index=index, id=openai_id if isinstance(openai_id, str) else None,
                                       outcome="rejected", error={"field": "object.usage", "message": OVERFLOW_MESSAGE}))
    return IngestResult(results=results)


def _ingest_events(events: list, key_tenant: Tenant | None, partitioned: bool, projects_confirmed: bool) -> IngestResult:
    results: list[EventResult | None] = [None] * len(events)
    run_events, thread_events, lifecycle = _parse(events, key_tenant, results, projects_confirmed)
    _mark_thread_outcomes(thread_events)
    book, thresholds = _rate_reported(run_events)
    now = timezone.now()
    for attempt in range(4):
        try:
            final = _ingest_once(run_events, thread_events, lifecycle, results, now, book, thresholds,
                                 shared=partitioned)
            break
        except OverflowError as exc:  # SQLite: a Python int past 64 bits, refused when bound
            raise _LedgerOverflow(str(exc)) from exc
        except (OperationalError, DatabaseError, *_driver_errors()) as exc:
            if _is_overflow(exc):
                raise _LedgerOverflow(str(exc)) from exc
            if partitioned and _is_unique_violation(exc):
                # Two "partitioned" batches carried the same new run after all (say, two imports of
                # overlapping files at once): this one writes again alone, as an ordinary batch.
                logger.warning("ingest: partitioned batch overlapped another; retrying it exclusively")
                partitioned = False
                continue
            # bulk.py talks to psycopg directly, so a deadlock can arrive as psycopg's own error class.
            if attempt == 3 or not _is_retryable(exc):
                raise
            logger.info("ingest retry after %s", exc)
            time.sleep(0.05 * (2**attempt))
    for index, result in enumerate(final):
        if result is None:  # cannot happen; never leave an event without an answer
            final[index] = EventResult(index=index, id=None, outcome="rejected",
                                       error={"message": "not processed"})
    return IngestResult(results=final)


def _mark_thread_outcomes(thread_events: list[_ThreadEvent]) -> None:
    """created: first time the id is seen; updated: new metadata; unchanged otherwise."""
    if not thread_events:
        return
    ids = {e.record.openai_id for e in thread_events}
    known = dict(Thread.objects.unscoped().filter(openai_id__in=ids).values_list("openai_id", "metadata"))
    seen: set[str] = set()
    for event in thread_events:
        openai_id = event.record.openai_id
        if openai_id not in known and openai_id not in seen:
            event.outcome = "created"
        elif event.record.metadata and known.get(openai_id) != event.record.metadata and openai_id not in seen:
            event.outcome = "updated"
        else:
            event.outcome = "unchanged"
        seen.add(openai_id)


# --- re-pricing -----------------------------------------------------------------------------------


@dataclass
class TenantRepriceDiff:
    tenant_id: int
    tenant_slug: str
    runs: int = 0
    changed_runs: int = 0
    newly_priced_runs: int = 0
    old_total_usd: Decimal = ZERO
    new_total_usd: Decimal = ZERO

    @property
    def difference_usd(self) -> Decimal:
        return self.new_total_usd - self.old_total_usd

    def add(self, other: TenantRepriceDiff) -> None:
        self.runs += other.runs
        self.changed_runs += other.changed_runs
        self.newly_priced_runs += other.newly_priced_runs
        self.old_total_usd += other.old_total_usd
        self.new_total_usd += other.new_total_usd


@dataclass
class RepriceResult:
    start: dt.date | None
    end: dt.date | None
    dry_run: bool
    unpriced_only: bool
    tenants: list[TenantRepriceDiff] = field(default_factory=list)
    # The UTC creation days of the runs whose stored cost changed, per OpenAI project as the runs record it
    # ("" for the deployment's default): what runs_repriced announces once the re-rating has committed.
    changed_days: dict[str, set[dt.date]] = field(default_factory=dict)

    @property
    def changed_runs(self) -> int:
        return sum(t.changed_runs for t in self.tenants)

    @property
    def difference_usd(self) -> Decimal:
        return sum((t.difference_usd for t in self.tenants), ZERO)


REPRICE_BATCH = 2000

# Sent once a re-rating has committed (never for a dry run or one that changed nothing), with
# `changed_days`: {OpenAI project as the runs record it: {UTC creation day, ...}}. Whatever kept a copy of the
# ledger's costs for those days (reconciliation's results) refreshes it; the ledger need not know who listens.
runs_repriced = Signal()


def _announce_repriced(changed_days: dict[str, set[dt.date]]) -> None:
    if not any(changed_days.values()):
        return
    announced = {project: frozenset(days) for project, days in changed_days.items() if days}
    # After the commit: a listener must read the new costs, and a re-rating inside an enclosing transaction
    # that rolls back must announce nothing. robust: the re-rating is in, a listener's error must not undo it.
    transaction.on_commit(lambda: runs_repriced.send(sender=Run, changed_days=announced), robust=True)


class RepriceOverflow(ValueError):
    """Re-pricing stopped: at the current price book a run would cost more than a stored total can hold (an
    absurd price, or one meant per token entered per million), alone or added to its end user's month. The
    batch holding it is not applied; the batches before it are (each its own transaction), and audited:
    `applied` is their result, `applied_days` the first and last creation day of the runs they changed."""

    def __init__(self, run: dict, slugs: dict[int, str], applied: RepriceResult,
                 applied_days: tuple[dt.date, dt.date] | None, tenant_slug: str | None = None):
        self.openai_id, self.model = run["openai_id"], run["model"]
        self.applied, self.applied_days, self.tenant_slug = applied, applied_days, tenant_slug
        super().__init__(
            f"Re-pricing stopped: at the current prices run {run['openai_id']} (model {run['model']}, tenant "
            f"{slugs.get(run['tenant_id'], '?')}) would cost {money_text(Decimal(run['cost_total_usd']))}, "
            f"which would take a stored total (its own, or its end user's for the month, at most about 922 "
            f"million USD) past what the ledger can hold. Check the price of {run['model']}."
        )

    def next_step(self) -> str:
        """What finishes the job once the price is corrected (runs already rated stay rated: an unpriced-only
        re-price would not look at them again)."""
        if self.applied_days is None:
            return "Nothing was changed: correct the price and run the same re-price again."
        first, last = self.applied_days
        applied = f"The batches before it were applied at these prices (runs created {first} to {last}, audited)"
        if not self.applied.unpriced_only:
            # The same range again re-rates those runs too (they now differ from the corrected price).
            return f"{applied}: after correcting the price, run the same re-price again."
        tenant = f" --tenant {self.tenant_slug}" if self.tenant_slug else ""
        return (f"{applied}: after correcting the price, re-rate them with `manage.py reprice --start {first} "
                f"--end {last}{tenant}` (an --unpriced re-price would skip them, as they are priced now), then "
                f"`manage.py reprice --unpriced{tenant}` for the rest.")


def runs_reprice(
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    tenant: Tenant | None = None,
    unpriced_only: bool = False,
    models: Iterable[str] | None = None,
    dry_run: bool = False,
    actor=None,
    actor_label: str = "command:reprice",
    progress: Callable[[int], None] | None = None,
    book: PriceBook | None = None,
    rated_by_price: int | None = None,
) -> RepriceResult:
    """Re-rate runs created in [start, end] (inclusive UTC dates) with the current price book (or `book`); with
    `unpriced_only`, only runs that had no price. Applies the differences to runs, threads and rollups in
    bounded batches (each its own transaction, so a long re-price is resumable) unless `dry_run`, and
    writes one audit record with the per-tenant diff. Raises RepriceOverflow (the batches before it applied
    and audited) when a price would take a stored total past what the ledger holds."""
    queryset = Run.objects.unscoped() if tenant is None else Run.objects.for_tenant(tenant)
    if start:
        queryset = queryset.filter(created_at__gte=dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC))
    if end:
        after = end + dt.timedelta(days=1)
        queryset = queryset.filter(created_at__lt=dt.datetime(after.year, after.month, after.day, tzinfo=dt.UTC))
    if unpriced_only:
        queryset = queryset.filter(priced=False)
    if models is not None:
        queryset = queryset.filter(model__in=list(models))
    if rated_by_price is not None:
        queryset = queryset.filter(model_price_id=rated_by_price)
    result = RepriceResult(start=start, end=end, dry_run=dry_run, unpriced_only=unpriced_only)
    slugs = dict(Tenant.objects.values_list("pk", "slug"))
    thresholds = dict(Tenant.objects.values_list("pk", "high_cost_run_usd"))
    diffs: dict[int, TenantRepriceDiff] = {}
    changed_days: list[dt.date] = []  # first and last creation day of the runs changed so far
    book = book or PriceBook.load()
    last_pk = 0
    try:
        while True:
            with transaction.atomic():
                # Re-pricing writes runs, threads and rollups like an ingest batch does: it takes its turn under
                # the same lock, so the two never interleave (or deadlock: they lock runs in different orders).
                bulk.advisory_xact_lock(INGEST_LOCK_KEY)
                rows = list(queryset.filter(pk__gt=last_pk).order_by("pk").select_for_update()
                            .values("id", *RUN_FIELDS)[:REPRICE_BATCH])
                if not rows:
                    break
                last_pk = rows[-1]["id"]
                batch = _reprice_batch(rows, book, thresholds, slugs)
                if batch.updates and not dry_run:
                    try:
                        batch.write()
                    except (OverflowError, DatabaseError, *_driver_errors()) as exc:
                        if not isinstance(exc, OverflowError) and not _is_overflow(exc):
                            raise
                        # This batch rolls back whole; the ones before it stay applied and are audited below.
                        costliest = max(batch.updates, key=lambda state: Decimal(state["cost_total_usd"]))
                        result.tenants = sorted(diffs.values(), key=lambda d: d.tenant_slug)
                        raise RepriceOverflow(costliest, slugs, result,
                                              (min(changed_days), max(changed_days)) if changed_days else None,
                                              tenant.slug if tenant else None) from exc
            # Counted once the batch is in: a batch that fails is not part of what was applied.
            for tenant_id, batch_diff in batch.diffs.items():
                diffs.setdefault(tenant_id, TenantRepriceDiff(tenant_id, batch_diff.tenant_slug)).add(batch_diff)
            if batch.updates:
                days = [state["created_at"].astimezone(dt.UTC).date() for state in batch.updates]
                changed_days = [min(changed_days + days), max(changed_days + days)]
                if not dry_run:
                    for state, day in zip(batch.updates, days, strict=True):
                        result.changed_days.setdefault(state["openai_project"], set()).add(day)
            if progress:
                progress(len(rows))
    except RepriceOverflow as stopped:
        _reprice_audit(stopped.applied, start, end, unpriced_only, tenant, actor, actor_label, stopped=str(stopped))
        _announce_repriced(result.changed_days)  # the batches before it did commit
        raise
    result.tenants = sorted(diffs.values(), key=lambda d: d.tenant_slug)
    _reprice_audit(result, start, end, unpriced_only, tenant, actor, actor_label)
    _announce_repriced(result.changed_days)
    if not dry_run and any(diff.newly_priced_runs for diff in result.tenants):
        from apps.alerts.services import alerts_resolve_priced_models

        # Under the ingest lock: a batch storing another unpriced run of the model meanwhile would find the
        # alert still open (nothing to reopen) and the resolution would hide it.
        with ingest_paused():
            alerts_resolve_priced_models()
    return result


@dataclass
class _RepriceBatch:
    """One batch of runs re-rated: the new states that differ, the changes for alerts, the rollup deltas and
    the per-tenant diff."""

    updates: list[dict] = field(default_factory=list)
    changes: list[dict] = field(default_factory=list)
    deltas: _Deltas = field(default_factory=lambda: _Deltas())
    diffs: dict[int, TenantRepriceDiff] = field(default_factory=dict)

    def write(self) -> None:
        key = bulk.columns_for(Run, ["id"])[0]
        names = [*COST_FIELDS, "priced", "model_price_id", "tool_price_id", "is_high_cost", "updated_at"]
        now = timezone.now()
        bulk.update_from_values(Run._meta.db_table, key, bulk.columns_for(Run, names),
                                [[state["id"], *[state[n] for n in names[:-1]], now] for state in self.updates])
        self.deltas.write()
        from apps.alerts.services import alerts_for_run_changes

        alerts_for_run_changes(changes=self.changes, tenant_ids={state["tenant_id"] for state in self.updates})


def _reprice_batch(rows: list[dict], book: PriceBook, thresholds: dict, slugs: dict[int, str]) -> _RepriceBatch:
    batch = _RepriceBatch()
    for old in rows:
        new = dict(old)
        _rate_state(new, book, thresholds)
        diff = batch.diffs.setdefault(old["tenant_id"], TenantRepriceDiff(old["tenant_id"], slugs.get(old["tenant_id"], "?")))
        diff.runs += 1
        diff.old_total_usd += Decimal(old["cost_total_usd"])
        diff.new_total_usd += Decimal(new["cost_total_usd"])
        if any(Decimal(new[n]) != Decimal(old[n]) for n in COST_FIELDS) or any(
            new[n] != old[n] for n in ("priced", "model_price_id", "tool_price_id", "is_high_cost")
        ):
            diff.changed_runs += 1
            if new["priced"] and not old["priced"]:
                diff.newly_priced_runs += 1
            batch.updates.append(new)
            batch.deltas.apply(old, new)
            batch.changes.append({"old": old, "new": new})
    return batch


def _reprice_audit(result: RepriceResult, start, end, unpriced_only: bool, tenant, actor, actor_label: str, *,
                   stopped: str = "") -> None:
    """One ledger.reprice record with the per-tenant diff of what was applied (none for a dry run or when
    nothing changed); `stopped` says why a re-price ended early."""
    from apps.core.services import audit_record

    if result.dry_run or not result.changed_runs:
        return
    audit_record(
        action="ledger.reprice", target_type="runs",
        target_id=f"{start or '-'}..{end or '-'}{' unpriced' if unpriced_only else ''}",
        actor=actor, actor_label=actor_label if actor is None else "",
        tenant_id=tenant.pk if tenant else None,
        data={
            "start": start.isoformat() if start else None, "end": end.isoformat() if end else None,
            "unpriced_only": unpriced_only,
            **({"stopped": stopped} if stopped else {}),
            "tenants": [
                {"tenant": d.tenant_slug, "runs": d.runs, "changed_runs": d.changed_runs,
                 "old_total_usd": str(d.old_total_usd), "new_total_usd": str(d.new_total_usd),
                 "difference_usd": str(d.difference_usd)}
                for d in result.tenants if d.changed_runs
            ],
        },
    )


def _wrongly_flagged(tenant_id: int, threshold: Decimal | None) -> QuerySet:
    """The tenant's runs whose high-cost flag disagrees with `threshold` (the (tenant, cost) index serves it)."""
    runs = Run.objects.for_tenant(tenant_id)
    if threshold is None:
        return runs.filter(is_high_cost=True)
    return runs.filter(Q(is_high_cost=True) & (Q(priced=False) | Q(cost_total_usd__lte=threshold))
                       | Q(is_high_cost=False, priced=True, cost_total_usd__gt=threshold))


def runs_reflag_high_cost(*, tenant_id: int) -> int:
    """Bring a tenant's runs' high-cost flags, and the rollups' high-cost counts, in line with its current
    threshold; returns how many runs changed. Only the flag moves: costs change through runs_reprice alone.
    Batches of the runs that disagree, each under the ingest lock with the threshold read under it, so a
    batch of ingest or a second change of threshold in between cannot leave a stale flag behind; idempotent
    (nothing disagrees the second time) and cheap when nothing does (one indexed query, no lock). The runs it
    flags raise no alert: an alert is news about a run, a new threshold is not."""
    thresholds = _high_cost_thresholds([tenant_id])
    if tenant_id not in thresholds or not _wrongly_flagged(tenant_id, thresholds[tenant_id]).exists():
        return 0
    changed = 0
    while True:
        with transaction.atomic():
            bulk.advisory_xact_lock(INGEST_LOCK_KEY)
            threshold = _high_cost_thresholds([tenant_id]).get(tenant_id)
            rows = list(_wrongly_flagged(tenant_id, threshold).order_by("pk").select_for_update()
                        .values("id", *RUN_FIELDS)[:REPRICE_BATCH])
            if not rows:
                return changed
            deltas, now, updates = _Deltas(), timezone.now(), []
            for old in rows:
                new = {**old, "is_high_cost": _is_high_cost(old["priced"], old["cost_total_usd"], threshold)}
                deltas.apply(old, new)
                updates.append([old["id"], new["is_high_cost"], now])
            bulk.update_from_values(Run._meta.db_table, bulk.columns_for(Run, ["id"])[0],
                                    bulk.columns_for(Run, ["is_high_cost", "updated_at"]), updates)
            deltas.write()
            changed += len(rows)


def runs_reprice_unpriced(*, models: Iterable[str] | None = None, actor=None,
                          actor_label: str = "service:price-added") -> RepriceResult:
    """Rate every unpriced run that a price now covers; call after adding a price (the prices API does)."""
    return runs_reprice(unpriced_only=True, models=_with_snapshots(models), actor=actor, actor_label=actor_label)


@contextlib.contextmanager
def ingest_paused():
    """A transaction holding the ingest lock: no batch of ingest (or re-pricing) writes until it ends."""
    with transaction.atomic():
        bulk.advisory_xact_lock(INGEST_LOCK_KEY)
        yield


# What the ledger holds, per run (numeric(24, 10)) and per end user and month (a bigint of ledger units).
_MAX_RUN_COST = Decimal(10) ** (MONEY_FIELD_KWARGS["max_digits"] - MONEY_FIELD_KWARGS["decimal_places"])
_MAX_UNITS = 2**63 - 1


def reprice_overflow_check(*, models: Iterable[str], book: PriceBook) -> RepriceOverflow | None:
    """Would rating the unpriced runs of `models` with `book` take a stored total past what the ledger holds
    (a run's own cost, or its end user's month)? The RepriceOverflow it would raise, naming the run, or None.
    Reads only, in bounded batches and without the ingest lock: a price can be refused before anyone sees it.
    Runs arriving meanwhile are not covered; the re-rating itself still stops on an overflow."""
    slugs = dict(Tenant.objects.values_list("pk", "slug"))
    nothing_applied = RepriceResult(start=None, end=None, dry_run=True, unpriced_only=True)
    queryset = Run.objects.unscoped().filter(priced=False, model__in=list(models)).order_by("pk")
    # The change to each end user's month, keyed and counted as the write would count it: the monthly
    # rollup's projection of the run's share rows (old taken back, new added).
    total_at = END_USER_MONTHLY.columns.index(end_user_units_column("cost_total_usd"))
    added: dict[tuple, int] = defaultdict(int)  # END_USER_MONTH_KEY -> units the rating adds
    costliest: dict[tuple, dict] = {}
    last_pk = 0
    while rows := list(queryset.filter(pk__gt=last_pk).values("id", *RUN_FIELDS)[:REPRICE_BATCH]):
        last_pk = rows[-1]["id"]
        for old in rows:
            new = dict(old)
            _rate_state(new, book, {})
            cost = Decimal(new["cost_total_usd"])
            if cost >= _MAX_RUN_COST:
                return RepriceOverflow(new, slugs, nothing_applied, None)
            for state, sign in ((old, -1), (new, 1)):
                key, values = END_USER_MONTHLY.project(_share_row(state, sign))
                added[key] += values[total_at]
            if key not in costliest or cost > Decimal(costliest[key]["cost_total_usd"]):
                costliest[key] = new
    keys = sorted(added)
    for index in range(0, len(keys), 500):
        chunk = keys[index:index + 500]
        condition = Q()
        for tenant_id, month, user_id in chunk:
            condition |= Q(tenant_id=tenant_id, month=month, user_id=user_id)
        stored = {(row[0], row[1], row[2]): row[3] for row in EndUserMonthlyRollup.objects.unscoped().filter(condition)
                  .values_list("tenant_id", "month", "user_id", end_user_units_column("cost_total_usd"))}
        for key in chunk:
            if stored.get(key, 0) + added[key] > _MAX_UNITS:
                return RepriceOverflow(costliest[key], slugs, nothing_applied, None)
    return None


def run_models_of_family(family: str, *, since: dt.date) -> list[str]:
    """The model names of runs created on or after `since` that a price for `family` covers: the family
    itself and its dated snapshots (read from the daily rollup, which names each model a day saw)."""
    from apps.pricing.pricebook import model_family

    names = DailyRollup.objects.unscoped().filter(day__gte=since).values_list("model", flat=True).distinct()
    return sorted({family} | {name for name in names if model_family(name) == family})


def models_unpriced_of_family(family: str) -> list[str]:
    """The model names of unpriced runs that a price for `family` would rate: itself and its snapshots."""
    return _with_snapshots([family])


def _with_snapshots(models: Iterable[str] | None) -> list[str] | None:
    """A family price also covers its dated snapshots: include the unpriced snapshot names."""
    if models is None:
        return None
    from apps.pricing.pricebook import model_family

    families = set(models)
    unpriced = Run.objects.unscoped().filter(priced=False).values_list("model", flat=True).distinct()
    return sorted(families | {m for m in unpriced if model_family(m) in families})


# --- consistency check ----------------------------------------------------------------------------


@dataclass
class RollupDifference:
    key: tuple
    field: str
    stored: Any
    expected: Any


def rollups_expected(*, tenant_ids: Iterable[int] | None = None) -> dict[_RollupTable, dict[tuple, list]]:
    """Every rollup table's rows recomputed from the run rows (of `tenant_ids` only, if given), streamed:
    {table: {key: values in table.columns order}}."""
    expected: dict[_RollupTable, dict[tuple, list]] = {table: {} for table in ROLLUP_TABLES}
    runs = Run.objects.unscoped().order_by()
    if tenant_ids is not None:
        runs = runs.filter(tenant_id__in=list(tenant_ids))
    for state in runs.values(*RUN_FIELDS).iterator(chunk_size=5000):
        _add_shares(expected, [_share_row(state)])
    return expected


def _rollups_stored(table: _RollupTable, tenant_ids: list[int] | None = None) -> dict[tuple, list]:
    stored = {}
    rollups = table.rows()
    if tenant_ids is not None:
        rollups = rollups.filter(tenant_id__in=tenant_ids)
    for row in rollups.values(*table.key, *table.columns).iterator(chunk_size=5000):
        stored[tuple(row[k] for k in table.key)] = [row[s] for s in table.columns]
    return stored


def _equal(a, b) -> bool:
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        return quantize_ledger(Decimal(a)) == quantize_ledger(Decimal(b))
    return a == b


def _largest_prompt_by_day(rows: dict[tuple, list]) -> dict[tuple, int]:
    """(tenant, day) -> the largest max_input_tokens among that day's prompt-size rows with runs > 0."""
    largest: dict[tuple, int] = {}
    for (tenant_id, day, _bin), (runs, max_tokens) in rows.items():
        if runs:
            largest[(tenant_id, day)] = max(largest.get((tenant_id, day), 0), max_tokens)
    return largest


def _table_differences(table: _RollupTable, expected: dict[tuple, list], stored: dict[tuple, list]) -> list:
    differences = []
    zero = [0] * len(table.columns)
    prefix = () if table is DAILY else (table.label,)
    for key in sorted(set(expected) | set(stored), key=str):
        want, have = expected.get(key, zero), stored.get(key, zero)
        for name, a, b in zip(table.sums, have, want, strict=False):
            if not _equal(a, b):
                differences.append(RollupDifference((*prefix, *key), name, a, b))
    if table.greatest:
        # A row's maximum may keep a prompt size that a run reported before it grew into a larger bin (a
        # maximum cannot be taken back by a delta). What readers use, and what must be exact, is the largest
        # prompt per day among rows that still hold runs.
        want_days, have_days = _largest_prompt_by_day(expected), _largest_prompt_by_day(stored)
        for key in sorted(set(want_days) | set(have_days), key=str):
            if have_days.get(key, 0) != want_days.get(key, 0):
                differences.append(RollupDifference((*prefix, *key), "largest max_input_tokens",
                                                    have_days.get(key, 0), want_days.get(key, 0)))
    return differences


def ledger_check(*, fix: bool = False, tenant_ids: Iterable[int] | None = None) -> list[RollupDifference]:
    """Compare stored rollups (daily, tenant-day, end-user by day, part and month, prompt size, tool usage, the
    day totals over every tenant) with rollups recomputed from runs; with fix, rewrite the stored ones.
    `tenant_ids` checks only those tenants' rollups and threads (a sample of a very large ledger), and the day
    totals over every tenant against the tenant-day rows they add up. Either way the storage meters' day
    totals are checked against the day's meters (and, with fix, written again from them)."""
    tenant_ids = None if tenant_ids is None else sorted(set(tenant_ids))
    if fix and tenant_ids is not None:
        raise ValueError("ledger_check(fix=True) rewrites every rollup: call it without tenant_ids")
    with transaction.atomic():
        if fix:
            # Rewriting rollups from the runs must not miss a batch written meanwhile: ingest waits.
            bulk.advisory_xact_lock(INGEST_LOCK_KEY)
        expected = rollups_expected(tenant_ids=tenant_ids)
        differences = []
        for table in ROLLUP_TABLES:
            if tenant_ids is not None and not table.per_tenant:
                # A sample of tenants does not add up to a total over every tenant: the stored tenant-days do.
                differences.extend(_table_differences(table, _every_tenant_days_as_stored(), _rollups_stored(table)))
                continue
            differences.extend(_table_differences(table, expected[table], _rollups_stored(table, tenant_ids)))
        thread_differences = _thread_differences(tenant_ids)
        differences.extend(thread_differences)
        storage_differences = _storage_total_differences(fix=fix)
        if fix and differences:
            for table in ROLLUP_TABLES:
                table.rows().delete()
            _write_rollups(expected)
            # Rewritten in the order they were recomputed: the nightly compaction puts them tenant by tenant again.
            RollupCompaction.objects.all().delete()
            _fix_threads()
    return differences + storage_differences


def _every_tenant_days_as_stored() -> dict[tuple, list]:
    """EveryTenantDailyRollup's rows as the stored tenant-day rows add them up (in Python: exact Decimals)."""
    totals: dict[tuple, list] = {}
    for day, *values in (TenantDailyRollup.objects.unscoped().order_by().values_list("day", *TENANT_DAILY.sums)
                         .iterator(chunk_size=5000)):
        total = totals.setdefault((day,), [0] * len(values))
        for index, value in enumerate(values):
            total[index] += value
    return totals


def _storage_total_differences(*, fix: bool) -> list[RollupDifference]:
    """The storage meters' day totals over every tenant (apps.lifecycle) that are not what the day's meters add
    up to; with fix, each such day's total written again from its meters."""
    from apps.lifecycle.services import storage_daily_total_differences, storage_daily_total_refresh

    differences = [RollupDifference(("StorageDailyTotal", day), "cost_usd", stored, expected)
                   for day, stored, expected in storage_daily_total_differences()]
    if fix:
        for difference in differences:
            storage_daily_total_refresh(day=difference.key[1])
    return differences


def _thread_totals(tenant_ids: list[int] | None = None):
    from django.db.models import Count, Sum

    runs = Run.objects.unscoped().filter(thread__isnull=False)
    if tenant_ids is not None:
        runs = runs.filter(tenant_id__in=tenant_ids)
    return {
        row["thread_id"]: (row["runs"], row["cost"] or ZERO)
        for row in runs.values("thread_id")
        .annotate(runs=Count("id"), cost=Sum("cost_total_usd")).order_by()
    }


def _thread_differences(tenant_ids: list[int] | None = None) -> list[RollupDifference]:
    totals = _thread_totals(tenant_ids)
    differences = []
    threads = Thread.objects.unscoped()
    if tenant_ids is not None:
        threads = threads.filter(tenant_id__in=tenant_ids)
    for pk, openai_id, run_count, cost in threads.values_list("id", "openai_id", "run_count", "cost_usd").iterator(
            chunk_size=5000):
        want_count, want_cost = totals.get(pk, (0, ZERO))
        if run_count != want_count:
            differences.append(RollupDifference(("thread", openai_id), "run_count", run_count, want_count))
        if not _equal(cost, want_cost):
            differences.append(RollupDifference(("thread", openai_id), "cost_usd", cost, want_cost))
    return differences


def _fix_threads() -> None:
    totals = _thread_totals()
    rows = []
    for pk, run_count, cost in Thread.objects.unscoped().values_list("id", "run_count", "cost_usd"):
        want_count, want_cost = totals.get(pk, (0, ZERO))
        if run_count != want_count or not _equal(cost, want_cost):
            rows.append([pk, want_count, want_cost])
    if rows:
        key = bulk.columns_for(Thread, ["id"])[0]
        bulk.update_from_values(Thread._meta.db_table, key, bulk.columns_for(Thread, ["run_count", "cost_usd"]), rows)
