"""Reads for the billing API: usage by period, monthly statements (live or frozen) with the vector storage the
lifecycle app meters.

Statement arithmetic. A statement is built from *components*, each with exact (unrounded) numbers:
`model:<name>` (runs, tokens by kind, token cost by kind), `tool:<kind>` (sessions or calls and their
cost) and `vector_storage` (GB-days and cost). A closed statement stores its own components. For an open
month O, every closed month M whose next open month is O (all months between M and O closed) contributes
an adjustment per component: the ledger's current value for M, minus M's frozen value, minus what closed
statements already carried as adjustments for M. So a late run is billed exactly once, however many
months pass before anyone looks.

Amounts on lines are rounded to cents; the subtotal is the sum of the rounded lines (as on an invoice),
the markup line is a percentage of that subtotal, and each line also carries its exact amount."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Sum
from django.db.models.functions import TruncMonth

from apps.core.exports import csv_value
from apps.core.money import ZERO, round_cents, usd_string
from apps.core.timeutils import EARLIEST_DAY, LATEST_DAY, next_month, previous_month
from apps.ledger import selectors as ledger_selectors

from .models import Statement

MAX_USAGE_DAYS = 366
PERIOD_PATTERN = re.compile(r"^([0-9]{4})-(0[1-9]|1[0-2])$")  # [0-9]: \d also takes other scripts' digits
TOOL_UNITS = {"code_interpreter": "session", "file_search": "call", "web_search": "call"}
TOOL_DESCRIPTIONS = {
    "code_interpreter": "Code interpreter sessions",
    "file_search": "File search calls",
    "web_search": "Web search calls",
}
MODEL_COUNT_FIELDS = ("runs", "unpriced_runs", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
MODEL_MONEY_FIELDS = ("cost_input_usd", "cost_cached_input_usd", "cost_output_usd", "cost_usd")
CSV_COLUMNS = (
    "period", "type", "description", "source_period", "model", "tool", "runs", "input_tokens",
    "cached_input_tokens", "output_tokens", "reasoning_tokens", "quantity", "unit", "cost_input_usd",
    "cost_cached_input_usd", "cost_output_usd", "amount_usd", "exact_amount_usd",
)


class PeriodError(ValueError):
    pass


def parse_period(text: str) -> dt.date:
    """'YYYY-MM' → the first day of that month; PeriodError otherwise."""
    match = PERIOD_PATTERN.fullmatch(text or "")  # match() lets "2026-01\n" through: `$` matches before a newline
    if not match or not EARLIEST_DAY.year <= int(match.group(1)) <= LATEST_DAY.year:
        raise PeriodError("Use a month as YYYY-MM (for example 2026-03).")
    return dt.date(int(match.group(1)), int(match.group(2)), 1)


# --- usage --------------------------------------------------------------------------------------------


USAGE_TOTAL_FIELDS = ("runs", "unpriced_runs", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
USAGE_MONEY_FIELDS = ("cost_input_usd", "cost_cached_input_usd", "cost_output_usd", "cost_tools_usd", "cost_usd")


def tenant_usage(*, tenant, start: dt.date, end: dt.date, group_by: str) -> dict:
    """The usage document of the API: totals and one line per group, money as exact Decimal."""
    lines = ledger_selectors.usage_lines(tenant=tenant, start=start, end=end, group_by=group_by)
    for line in lines:  # the ledger's rows are fresh: renamed in place rather than copied
        line["cost_usd"] = line.pop("cost_total_usd")
    # Column by column: a month by end user has thousands of lines.
    totals = {name: sum((line[name] for line in lines), 0) for name in USAGE_TOTAL_FIELDS}
    totals.update({name: sum((line[name] for line in lines), ZERO) for name in USAGE_MONEY_FIELDS})
    return {
        "tenant": tenant.slug,
        "start": start,
        "end": end,
        "group_by": group_by,
        "currency": "USD",
        "total_cost_usd": totals["cost_usd"],
        **{name: totals[name] for name in USAGE_TOTAL_FIELDS},
        **{name: totals[name] for name in USAGE_MONEY_FIELDS[:-1]},
        "lines": lines,
    }


# --- vector storage, metered by the lifecycle app ------------------------------------------------------


def vector_storage_by_month(*, tenant, start: dt.date, end: dt.date) -> dict[dt.date, tuple[Decimal, Decimal]]:
    """(GB-days, cost) of a tenant's metered vector storage (the lifecycle app's daily StorageMeter rows) per
    month from `start` to `end` (first days of months; end exclusive), months without metering left out."""
    from apps.lifecycle.models import StorageMeter

    rows = (StorageMeter.objects.for_tenant(tenant).filter(day__gte=start, day__lt=end)
            .annotate(month=TruncMonth("day")).values("month").order_by()
            .annotate(gb_days=Sum("gb_days"), cost_usd=Sum("cost_usd")))
    return {row["month"]: (row["gb_days"] or ZERO, row["cost_usd"] or ZERO) for row in rows}


# --- statement components -----------------------------------------------------------------------------


def components_by_month(*, tenant, first: dt.date, last: dt.date) -> dict[dt.date, dict[str, dict]]:
    """The exact components of one tenant's usage (see the module docstring) in every month from `first` to
    `last` (inclusive), in the same few queries whatever the number of months: an open statement works out
    every closed month before it, and a query or four per month made one with a few years of closed months
    take half a second."""
    start, end = first, next_month(last)
    lines = ledger_selectors.usage_lines_by_month(tenant=tenant, start=start, end=end, group_by="model")
    tools = ledger_selectors.tool_usage_by_kind_by_month(tenant=tenant, start=start, end=end)
    storage = vector_storage_by_month(tenant=tenant, start=start, end=end)
    months: dict[dt.date, dict[str, dict]] = {}
    for month in tools:  # every month of the range
        components: dict[str, dict] = {}
        for row in lines.get(month, []):
            components[f"model:{row['key']}"] = {
                "kind": "model", "model": row["key"],
                **{name: row[name] for name in MODEL_COUNT_FIELDS},
                "cost_input_usd": row["cost_input_usd"],
                "cost_cached_input_usd": row["cost_cached_input_usd"],
                "cost_output_usd": row["cost_output_usd"],
                "cost_usd": row["cost_input_usd"] + row["cost_cached_input_usd"] + row["cost_output_usd"],
            }
        for kind, usage in tools[month].items():
            components[f"tool:{kind}"] = {
                "kind": "tool", "tool": kind, "quantity": Decimal(usage["quantity"]), "cost_usd": usage["cost_usd"],
            }
        gb_days, cost_usd = storage.get(month, (ZERO, ZERO))
        components["vector_storage"] = {"kind": "vector_storage", "quantity": gb_days, "cost_usd": cost_usd}
        months[month] = components
    return months


_NUMERIC_INT = set(MODEL_COUNT_FIELDS)
_NUMERIC_DECIMAL = set(MODEL_MONEY_FIELDS) | {"quantity"}


def _to_jsonable(component: dict) -> dict:
    return {key: (format(value, "f") if isinstance(value, Decimal) else value) for key, value in component.items()}


def _from_jsonable(component: dict) -> dict:
    parsed = {}
    for key, value in component.items():
        if key in _NUMERIC_DECIMAL:
            parsed[key] = Decimal(value)
        elif key in _NUMERIC_INT:
            parsed[key] = int(value)
        else:
            parsed[key] = value
    return parsed


def _numeric_fields(component: dict) -> list[str]:
    return [key for key in component if key in _NUMERIC_INT or key in _NUMERIC_DECIMAL]


def _difference(current: dict | None, frozen: dict | None, carried: list[dict]) -> dict | None:
    """current − frozen − carried for each numeric field; None when nothing differs."""
    template = current or frozen or (carried[0] if carried else None)
    if template is None:
        return None
    delta = {key: value for key, value in template.items() if key not in _NUMERIC_INT and key not in _NUMERIC_DECIMAL}
    changed = False
    for field in _numeric_fields(template):
        zero = 0 if field in _NUMERIC_INT else ZERO
        value = (current or {}).get(field, zero) - (frozen or {}).get(field, zero)
        value -= sum((entry.get(field, zero) for entry in carried), zero)
        delta[field] = value
        changed = changed or value != 0
    return delta if changed else None


@dataclass(frozen=True)
class StatementData:
    """A statement before rendering: its own components and the adjustments it carries, exact."""

    tenant: object
    period: dt.date
    components: dict[str, dict]
    adjustments: list[dict]  # {"source_period": "YYYY-MM", "component": key, **delta}


def _closed_statements(tenant) -> dict[dt.date, Statement]:
    return {
        statement.period: statement
        for statement in Statement.objects.for_tenant(tenant).filter(status=Statement.Status.CLOSED)
    }


def statement_get_closed(*, tenant, period: dt.date) -> Statement | None:
    return Statement.objects.for_tenant(tenant).filter(period=period, status=Statement.Status.CLOSED).first()


def statement_data(*, tenant, period: dt.date) -> StatementData:
    """The live content of an open statement: this month's components and the adjustments owed for the
    closed months immediately before it."""
    closed = _closed_statements(tenant)
    sources = []
    month = previous_month(period)
    while month in closed:
        sources.append(month)
        month = previous_month(month)
    adjustments = []
    everything = components_by_month(tenant=tenant, first=sources[-1] if sources else period, last=period)
    for source in reversed(sources):
        source_key = source.strftime("%Y-%m")
        frozen = {key: _from_jsonable(value) for key, value in closed[source].document.get("components", {}).items()}
        carried: dict[str, list[dict]] = {}
        for statement in closed.values():
            for entry in statement.document.get("adjustments", []):
                if entry["source_period"] == source_key:
                    carried.setdefault(entry["component"], []).append(_from_jsonable(entry))
        current = everything[source]
        for key in sorted(set(current) | set(frozen) | set(carried)):
            delta = _difference(current.get(key), frozen.get(key), carried.get(key, []))
            if delta is not None:
                delta.pop("source_period", None)
                delta.pop("component", None)
                adjustments.append({"source_period": source_key, "component": key, **delta})
    return StatementData(
        tenant=tenant, period=period, components=everything[period], adjustments=adjustments
    )


def statement_data_at_one_moment(*, tenant, period: dt.date) -> StatementData:
    """The statement's content as the ledger stood at one moment. It is read in several queries (usage by model,
    tool quantities, tool fees, storage, closed statements); under PostgreSQL's default READ COMMITTED each sees
    what committed before it, so a run ingested between two of them froze half on the statement (its tool use
    without its run and tokens, for good) and half as the next month's adjustment. One REPEATABLE READ snapshot
    for all of them (the close, and every answer of an open statement, whose JSON and CSV must add up too);
    ingest is not blocked. Inside a caller's transaction (tests) its isolation stands."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # must be the transaction's first statement
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return statement_data(tenant=tenant, period=period)


def statement_document_for_storage(data: StatementData) -> dict:
    """What a closed statement keeps to compute later adjustments against (exact values as strings)."""
    return {
        "components": {key: _to_jsonable(value) for key, value in data.components.items()},
        "adjustments": [_to_jsonable(entry) for entry in data.adjustments],
    }


# --- rendering ------------------------------------------------------------------------------------------


def _blank_line(**values) -> dict:
    line = {
        "type": None, "description": "", "source_period": None, "model": None, "tool": None, "runs": None,
        "input_tokens": None, "cached_input_tokens": None, "output_tokens": None, "reasoning_tokens": None,
        "quantity": None, "unit": None, "cost_input_usd": None, "cost_cached_input_usd": None,
        "cost_output_usd": None, "amount_usd": "0.00", "exact_amount_usd": "0.00",
    }
    line.update(values)
    return line


def _quantity(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def _money_fields(component: dict) -> dict:
    return {
        "cost_input_usd": usd_string(component["cost_input_usd"]),
        "cost_cached_input_usd": usd_string(component["cost_cached_input_usd"]),
        "cost_output_usd": usd_string(component["cost_output_usd"]),
    }


def _line_for(component: dict, *, line_type: str, source_period: str | None = None) -> dict:
    amount = component["cost_usd"]
    common = {"amount_usd": usd_string(round_cents(amount)), "exact_amount_usd": usd_string(amount)}
    prefix = f"Adjustment for {source_period}: " if source_period else ""
    if component["kind"] == "model":
        return _blank_line(
            type=line_type, description=f"{prefix}{component['model']}", source_period=source_period,
            model=component["model"], runs=component["runs"], input_tokens=component["input_tokens"],
            cached_input_tokens=component["cached_input_tokens"], output_tokens=component["output_tokens"],
            reasoning_tokens=component["reasoning_tokens"], **_money_fields(component), **common,
        )
    if component["kind"] == "tool":
        return _blank_line(
            type=line_type, description=f"{prefix}{TOOL_DESCRIPTIONS.get(component['tool'], component['tool'])}",
            source_period=source_period, tool=component["tool"], quantity=_quantity(component["quantity"]),
            unit=TOOL_UNITS.get(component["tool"], "call"), **common,
        )
    return _blank_line(
        type=line_type, description=f"{prefix}Vector storage", source_period=source_period,
        quantity=_quantity(component["quantity"]), unit="GB-day", **common,
    )


_KIND_ORDER = {"model": 0, "tool": 1, "vector_storage": 2}


def statement_document(data: StatementData, *, status: str, closed_at: dt.datetime | None) -> dict:
    """The statement as the API returns it (every amount a decimal string)."""
    tenant = data.tenant
    period_key = data.period.strftime("%Y-%m")
    ordered = sorted(data.components.values(), key=lambda c: (_KIND_ORDER[c["kind"]], c.get("model") or c.get("tool") or ""))
    lines = [_line_for(component, line_type=component["kind"]) for component in ordered]
    lines += [
        _line_for(entry, line_type="adjustment", source_period=entry["source_period"]) for entry in data.adjustments
    ]
    subtotal = sum((round_cents(Decimal(line["exact_amount_usd"])) for line in lines), ZERO)
    markup_percent = tenant.markup_percent
    markup = ZERO
    if markup_percent:
        markup = round_cents(subtotal * markup_percent / 100)
        lines.append(_blank_line(
            type="markup", description=f"Markup {usd_string(markup_percent)}%", quantity=usd_string(markup_percent),
            unit="percent", amount_usd=usd_string(markup), exact_amount_usd=usd_string(subtotal * markup_percent / 100),
        ))
    model_components = [c for c in data.components.values() if c["kind"] == "model"]
    return {
        "tenant": tenant.slug,
        "external_id": tenant.external_id,
        "period": period_key,
        "period_start": data.period.isoformat(),
        "period_end": next_month(data.period).isoformat(),
        "status": status,
        "closed_at": closed_at.isoformat().replace("+00:00", "Z") if closed_at else None,
        "currency": "USD",
        "runs": sum(c["runs"] for c in model_components),
        "unpriced_runs": sum(c["unpriced_runs"] for c in model_components),
        "lines": lines,
        "subtotal_usd": usd_string(subtotal),
        "markup_percent": usd_string(markup_percent) if markup_percent else None,
        "markup_usd": usd_string(markup),
        "total_usd": usd_string(subtotal + markup),
    }


def render_json(document: dict) -> str:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def render_csv(document: dict) -> str:
    """One row per line, then a total row; the same columns on every row, so spreadsheets sum them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for line in document["lines"]:
        writer.writerow([document["period"] if column == "period" else _csv_value(line.get(column)) for column in CSV_COLUMNS])
    total = _blank_line(type="total", description=f"Total ({document['status']})",
                        amount_usd=document["total_usd"], exact_amount_usd=document["total_usd"])
    writer.writerow([document["period"] if column == "period" else _csv_value(total.get(column)) for column in CSV_COLUMNS])
    return buffer.getvalue()


def _csv_value(value) -> str:
    # Model names and features come from the tenant's ingest: escaped like every dashboard CSV, so a cell such as
    # =HYPERLINK(…) is text in a spreadsheet, not a formula (core.exports holds the rule).
    return csv_value(value, "text")


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class RenderedStatement:
    json: str
    csv: str
    status: str


def statement_rendered(*, tenant, period: dt.date) -> RenderedStatement:
    """The statement's JSON and CSV: the stored bytes of a closed statement, or the live rendering of an open one."""
    closed = statement_get_closed(tenant=tenant, period=period)
    if closed is not None:
        return RenderedStatement(json=closed.frozen_json, csv=closed.frozen_csv, status=closed.status)
    document = statement_document(statement_data_at_one_moment(tenant=tenant, period=period),
                                  status=Statement.Status.OPEN, closed_at=None)
    return RenderedStatement(json=render_json(document), csv=render_csv(document), status=Statement.Status.OPEN)
