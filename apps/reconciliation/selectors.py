"""Reads for reconciliation: the projects to reconcile, the ledger's side of a day (what was attributed to
tenants), and the current results and their history for the API and the page.

The ledger side is a cross-tenant, organization-level read, which is what `unscoped()` exists for; it
aggregates in the database (daily rollups for tokens and token costs, runs grouped by price version for the
tool split), so a day with millions of runs still returns a few hundred rows."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, DecimalField, Exists, OuterRef, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDate

from apps.core.money import MONEY_FIELD_KWARGS, usd_string
from apps.core.timeutils import UTC, day_start
from apps.ledger.models import Api, DailyRollup, Run
from apps.pricing.rating import ONE_THOUSAND, billable_file_search_calls

from .comparison import (
    CODE_INTERPRETER_SESSIONS_LINE,
    FILE_SEARCH_CALLS_LINE,
    KIND_COST,
    KIND_USAGE,
    UNIT_CALLS,
    UNIT_SESSIONS,
    UNIT_TOKENS,
    UNIT_USD,
    ZERO,
    LineSpec,
    Observations,
    model_cost_line,
    model_usage_line,
)
from .models import FLAGGED_STATUSES, LateLedgerDay, OpenAIProject, ReconciliationLine, ReconciliationRun
from .projects import ProjectConfig, default_project_config, project_config_from_model, project_q

_MONEY = DecimalField(**MONEY_FIELD_KWARGS)


# --- projects ------------------------------------------------------------------------------------


def reconciliation_projects(*, project_id: str | None = None, include_inactive: bool = False) -> list[ProjectConfig]:
    """Projects ops configured (active ones), plus the settings default unless it is configured too."""
    projects = OpenAIProject.objects.all()
    if not include_inactive:
        projects = projects.filter(is_active=True)
    configs = [project_config_from_model(project) for project in projects]
    default = default_project_config()
    configured_ids = set(OpenAIProject.objects.values_list("project_id", flat=True))
    if default.project_id and default.project_id not in configured_ids:
        configs.append(default)
    if project_id is not None:
        configs = [config for config in configs if config.project_id == project_id]
    return sorted(configs, key=lambda config: config.project_id)


def reconciliation_project_ids() -> list[str]:
    """Every project id that has results or is configured, for filters."""
    ids = set(ReconciliationRun.objects.values_list("openai_project", flat=True).distinct())
    ids |= {config.project_id for config in reconciliation_projects(include_inactive=True)}
    return sorted(ids)


# --- the ledger's side ---------------------------------------------------------------------------


def ledger_observations(*, start: dt.date, end: dt.date, project_id: str) -> tuple[Observations, dict]:
    """What the ledger attributed to tenants for the UTC days start..end (exclusive) in one OpenAI project,
    as observations on the same canonical lines as OpenAI's; plus notes per day (unpriced runs, storage)."""
    observations = Observations()
    notes: dict[dt.date, list[str]] = defaultdict(list)
    cost = lambda model: LineSpec(KIND_COST, UNIT_USD, model)  # noqa: E731
    usage = lambda model: LineSpec(KIND_USAGE, UNIT_TOKENS, model)  # noqa: E731

    rollups = (
        DailyRollup.objects.unscoped()
        .filter(project_q(project_id), day__gte=start, day__lt=end)
        .values("day", "model")
        .order_by()
        .annotate(
            input_tokens=Sum("input_tokens"), cached_input_tokens=Sum("cached_input_tokens"),
            output_tokens=Sum("output_tokens"), code_interpreter_sessions=Sum("code_interpreter_sessions"),
            file_search_calls=Sum("file_search_calls"), unpriced_runs=Sum("unpriced_runs"),
            cost_input_usd=Sum("cost_input_usd"), cost_cached_input_usd=Sum("cost_cached_input_usd"),
            cost_output_usd=Sum("cost_output_usd"),
        )
    )
    for row in rollups:
        day, model = row["day"], row["model"]
        # Cache writes are inside the ledger's input cost (and OpenAI's "cache write" is folded into input).
        observations.add(day, project_id, model_cost_line(model, "input"), row["cost_input_usd"], cost(model))
        observations.add(day, project_id, model_cost_line(model, "cached input"), row["cost_cached_input_usd"], cost(model))
        observations.add(day, project_id, model_cost_line(model, "output"), row["cost_output_usd"], cost(model))
        observations.add(day, project_id, model_usage_line(model, "input"), row["input_tokens"], usage(model))
        observations.add(day, project_id, model_usage_line(model, "cached input"), row["cached_input_tokens"], usage(model))
        observations.add(day, project_id, model_usage_line(model, "output"), row["output_tokens"], usage(model))
        observations.add(day, project_id, CODE_INTERPRETER_SESSIONS_LINE, row["code_interpreter_sessions"],
                         LineSpec(KIND_USAGE, UNIT_SESSIONS))
        if row["unpriced_runs"]:
            notes[day].append(f"{row['unpriced_runs']} unpriced {model} runs carry no cost in the ledger (add a price).")

    for day, calls in _file_search_calls(start=start, end=end, project_id=project_id):
        observations.add(day, project_id, FILE_SEARCH_CALLS_LINE, calls, LineSpec(KIND_USAGE, UNIT_CALLS))

    for day, tool, amount in _tool_costs(start=start, end=end, project_id=project_id):
        observations.add(day, project_id, tool, amount, cost(""))

    storage = storage_cost_by_project(start=start, end=end)
    if storage is None:
        for day in _each_day(start, end):
            notes[day].append("Vector storage is not metered yet (lifecycle app): the ledger counts it as $0.")
    else:
        for (day, project), amount in storage.items():
            if project == project_id:
                observations.add(day, project_id, "vector storage", amount, cost(""))
    return observations, dict(notes)


def _each_day(start: dt.date, end: dt.date):
    day = start
    while day < end:
        yield day
        day += dt.timedelta(days=1)


def _file_search_calls(*, start: dt.date, end: dt.date, project_id: str):
    """(day, calls) of the Responses file_search tool: what OpenAI's Usage API counts (and bills per call).
    Assistants runs' file_search calls carried no per-call fee and are not in that count; the daily rollups
    hold both APIs' calls together, so this reads the runs."""
    rows = (
        Run.objects.unscoped()
        .filter(project_q(project_id), created_at__gte=day_start(start), created_at__lt=day_start(end),
                api=Api.RESPONSES, file_search_calls__gt=0)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .order_by()
        .annotate(calls=Sum("file_search_calls"))
    )
    for row in rows:
        yield row["day"], row["calls"]


def _tool_costs(*, start: dt.date, end: dt.date, project_id: str):
    """(day, tool line, USD) from runs grouped by the tool price version each was rated with, by the rating
    rules (file-search calls bill only under the Responses API), so the tools add up to cost_tools_usd."""
    rows = (
        Run.objects.unscoped()
        .filter(project_q(project_id), created_at__gte=day_start(start), created_at__lt=day_start(end),
                priced=True, tool_price__isnull=False)
        .filter(Q(code_interpreter_sessions__gt=0) | Q(file_search_calls__gt=0) | Q(web_search_calls__gt=0))
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values(
            "day", "api", "tool_price__code_interpreter_session_usd", "tool_price__file_search_call_usd_per_1k",
            "tool_price__web_search_call_usd_per_1k",
        )
        .order_by()
        .annotate(
            sessions=Coalesce(Sum("code_interpreter_sessions"), 0),
            file_search=Coalesce(Sum("file_search_calls"), 0),
            web_search=Coalesce(Sum("web_search_calls"), 0),
            runs=Count("id"),
        )
    )
    for row in rows:
        day = row["day"]
        if row["sessions"]:
            yield day, "code interpreter", Decimal(row["sessions"]) * row["tool_price__code_interpreter_session_usd"]
        file_search = billable_file_search_calls(api=row["api"], calls=row["file_search"])
        if file_search:
            yield day, "file search", Decimal(file_search) * row["tool_price__file_search_call_usd_per_1k"] / ONE_THOUSAND
        if row["web_search"]:
            yield day, "web search", Decimal(row["web_search"]) * row["tool_price__web_search_call_usd_per_1k"] / ONE_THOUSAND


def storage_cost_by_project(*, start: dt.date, end: dt.date) -> dict[tuple[dt.date, str], Decimal] | None:
    """Vector-storage cost attributed to tenants per (day, OpenAI project), from the lifecycle app's meters
    (stores with no tenant are left out: their cost is unattributed spend). None when that app offers no
    meter, and the reconciliation then says so rather than pretending storage was checked."""
    try:
        from apps.lifecycle.selectors import storage_cost_by_project as metered_by_project
    except ImportError:
        return None
    from apps.tenants.models import Tenant
    from apps.tenants.scoping import TenantScope

    # Every tenant by id (not "every tenant"), so the unassigned stores' meter rows are excluded.
    every_tenant = TenantScope.of(Tenant.objects.values_list("id", flat=True))
    return metered_by_project(scope=every_tenant, start=start, end=end)


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultFilters:
    start: dt.date
    end: dt.date  # exclusive, like every range in the API
    project_id: str | None = None
    flagged_only: bool = False


def current_runs(filters: ResultFilters) -> QuerySet:
    runs = ReconciliationRun.objects.filter(is_current=True, day__gte=filters.start, day__lt=filters.end)
    if filters.project_id:
        runs = runs.filter(openai_project=filters.project_id)
    return runs.order_by("day", "openai_project")


def late_days_pending(filters: ResultFilters) -> list[LateLedgerDay]:
    """Per (day, project) in the range with a result, a mark that runs reached its ledger since (late runs):
    the hourly pass compares it again; until then its ledger figures predate those runs."""
    marks = LateLedgerDay.objects.filter(day__gte=filters.start, day__lt=filters.end).filter(Exists(
        ReconciliationRun.objects.filter(is_current=True, day=OuterRef("day"), openai_project=OuterRef("openai_project"))))
    if filters.project_id:
        marks = marks.filter(openai_project=filters.project_id)
    return list(marks.order_by("day", "openai_project"))


def failed_attempts(filters: ResultFilters) -> list[ReconciliationRun]:
    """Per (day, project) in the range, the latest attempt when it failed after the current result (or when
    the day has none): a revoked admin key or a Costs API down for days must not look like a green page. One
    query: a failed attempt with no finished attempt started after it."""
    finished = [ReconciliationRun.Status.COMPLETE, ReconciliationRun.Status.FAILED]
    later = ReconciliationRun.objects.filter(
        day=OuterRef("day"), openai_project=OuterRef("openai_project"), status__in=finished,
    ).filter(Q(started_at__gt=OuterRef("started_at")) | Q(started_at=OuterRef("started_at"), pk__gt=OuterRef("pk")))
    # A result compared again after a re-rating reused older OpenAI figures: it does not answer a failed fetch,
    # only a failed re-compare (which a later one that succeeded settles, or the card would stay for good: the
    # daily run never looks at days that old again).
    later_fetch = later.exclude(status=ReconciliationRun.Status.COMPLETE, recompared_from__isnull=False)
    failed = ReconciliationRun.objects.filter(day__gte=filters.start, day__lt=filters.end,
                                              status=ReconciliationRun.Status.FAILED)
    if filters.project_id:
        failed = failed.filter(openai_project=filters.project_id)
    unanswered = (Q(recompared_from__isnull=True) & ~Exists(later_fetch)) | (
        Q(recompared_from__isnull=False) & ~Exists(later))
    return list(failed.filter(unanswered).order_by("day", "openai_project")
                .only("day", "openai_project", "status", "error", "started_at", "trigger"))


def current_lines(filters: ResultFilters) -> QuerySet:
    lines = ReconciliationLine.objects.filter(run__is_current=True, day__gte=filters.start, day__lt=filters.end)
    if filters.project_id:
        lines = lines.filter(openai_project=filters.project_id)
    if filters.flagged_only:
        lines = lines.filter(status__in=FLAGGED_STATUSES)
    return lines.order_by("day", "openai_project", "kind", "line")


def current_runs_with_lines(filters: ResultFilters) -> list[ReconciliationRun]:
    """Current runs with their (optionally flagged-only) lines attached as `.selected_lines`: two queries."""
    runs = list(current_runs(filters))
    by_run: dict[int, list[ReconciliationLine]] = defaultdict(list)
    lines = ReconciliationLine.objects.filter(run_id__in=[run.pk for run in runs])
    if filters.flagged_only:
        lines = lines.filter(status__in=FLAGGED_STATUSES)
    for line in lines.order_by("kind", "line"):
        by_run[line.run_id].append(line)
    for run in runs:
        run.selected_lines = by_run.get(run.pk, [])
    return runs


@dataclass(frozen=True)
class DayTotals:
    day: dt.date
    ledger_usd: Decimal
    openai_usd: Decimal
    unattributed_usd: Decimal
    flagged: int


def day_totals(filters: ResultFilters) -> list[DayTotals]:
    """Ledger vs OpenAI dollars per day over the current runs (all projects summed unless one is chosen)."""
    zero = Value(ZERO, output_field=_MONEY)
    rows = (
        current_runs(filters).values("day").order_by("day")
        .annotate(
            ledger=Coalesce(Sum("ledger_total_usd"), zero), openai=Coalesce(Sum("openai_total_usd"), zero),
            unattributed=Coalesce(Sum("unattributed_usd"), zero), flagged=Coalesce(Sum("flagged_count"), 0),
        )
    )
    return [DayTotals(row["day"], row["ledger"], row["openai"], row["unattributed"], row["flagged"]) for row in rows]


def value_text(value: Decimal | None, unit: str) -> str | None:
    """Dollars as the API writes money; counts as whole numbers."""
    if value is None:
        return None
    if unit == UNIT_USD:
        return usd_string(value)
    return str(int(value)) if value == value.to_integral_value() else format(value.normalize(), "f")


def line_row(line: ReconciliationLine) -> dict:
    return {
        "day": line.day,
        "project": line.openai_project,
        "line": line.line,
        "kind": line.kind,
        "unit": line.unit,
        "model": line.model,
        "ledger_value": value_text(line.ledger_value, line.unit),
        "openai_value": value_text(line.openai_value, line.unit),
        "difference": value_text(line.difference, line.unit),
        "difference_percent": None if line.difference_pct is None else format(line.difference_pct.normalize(), "f"),
        "status": line.status,
    }


def reconciliation_results(*, start: dt.date, end: dt.date, project: str = "", flagged_only: bool = False) -> list[dict]:
    """The current result's lines from start to end (exclusive), as plain rows: the contract the billing API
    reads ({day, project, line, ledger_value, openai_value, difference, difference_percent, status}, plus
    kind, unit and model). One query."""
    filters = ResultFilters(start=start, end=end, project_id=project or None, flagged_only=flagged_only)
    return [line_row(line) for line in current_lines(filters)]


def run_history(*, day: dt.date, project_id: str) -> QuerySet:
    return ReconciliationRun.objects.filter(day=day, openai_project=project_id).order_by("-started_at", "-id")
