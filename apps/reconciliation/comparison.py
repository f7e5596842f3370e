"""Pure comparison of ledger observations with OpenAI's: line naming, tolerance and status. No database, no I/O.

An observation is a value keyed by (day, OpenAI project, line). Line names are canonical so both sides
meet: Costs line items as "<model>, input" / "<model>, cached input" / "<model>, output" and tool lines
("code interpreter", "file search", "web search", "vector storage"); Usage counts as
"<model>, input tokens" etc. and "code interpreter sessions" / "file search calls"."""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

ZERO = Decimal("0")
HUNDRED = Decimal("100")
PCT_PLACES = Decimal("0.0001")

UNIT_USD = "usd"
UNIT_TOKENS = "tokens"
UNIT_SESSIONS = "sessions"
UNIT_CALLS = "calls"

KIND_COST = "cost"
KIND_USAGE = "usage"
KIND_UNATTRIBUTED = "unattributed"

MATCHED = "matched"
DRIFT = "drift"
MISSING_IN_LEDGER = "missing_in_ledger"
MISSING_AT_OPENAI = "missing_at_openai"
FLAGGED = frozenset({DRIFT, MISSING_IN_LEDGER, MISSING_AT_OPENAI})

UNATTRIBUTED_LINE = "unattributed spend"

# Per-model cost components: the ledger's rollup column for each, and the spellings OpenAI uses.
MODEL_COMPONENTS = ("input", "cached input", "cache write", "output")
_COMPONENT_ALIASES = {
    "input": "input", "input tokens": "input", "uncached input": "input", "uncached input tokens": "input",
    "text input": "input", "input text": "input",
    "cached input": "cached input", "cached input tokens": "cached input", "input cached": "cached input",
    "input cached tokens": "cached input", "cached": "cached input",
    "cache write": "cache write", "cache write tokens": "cache write", "input cache write": "cache write",
    "input cache write tokens": "cache write",
    "output": "output", "output tokens": "output", "text output": "output", "output text": "output",
}
TOOL_LINES = ("code interpreter", "file search", "web search", "vector storage")
_TOOL_ALIASES = {
    "code interpreter": "code interpreter", "code interpreter sessions": "code interpreter",
    "code interpreter session": "code interpreter", "containers": "code interpreter",
    "container sessions": "code interpreter",
    "file search": "file search", "file search calls": "file search", "file search tool calls": "file search",
    "file searches": "file search",
    "web search": "web search", "web search calls": "web search", "web search tool calls": "web search",
    "vector storage": "vector storage", "vector store storage": "vector storage", "vector stores": "vector storage",
    "file search storage": "vector storage", "storage": "vector storage",
}


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("_", " ").strip().lower())


def canonical_line_item(raw: str | None) -> tuple[str, str]:
    """(line name, model) for a Costs line item as OpenAI spells it. Unknown items keep their own
    (cleaned) name, so they still show up, as lines the ledger does not have."""
    if not raw:
        return "unspecified line item", ""
    if "," in raw:
        model, _, component = raw.partition(",")
        model = model.strip()
        canonical = _COMPONENT_ALIASES.get(_clean(component))
        if canonical:
            return f"{model}, {canonical}", model
        return f"{model}, {_clean(component)}", model
    cleaned = _clean(raw)
    return _TOOL_ALIASES.get(cleaned, cleaned), ""


def is_ledger_line(line: str, model: str) -> bool:
    """Whether the ledger records this kind of Costs line item at all: a model's input / cached input / output,
    or a tool or storage line. Anything else (fine-tuning, spend OpenAI could not tie to a request, items we
    have never seen) can belong to no tenant, so it counts only towards unattributed spend."""
    if model:
        return line.rpartition(", ")[2] in ("input", "cached input", "output")
    return line in TOOL_LINES


def model_cost_line(model: str, component: str) -> str:
    return f"{model}, {component}"


def model_usage_line(model: str, component: str) -> str:
    """component: input / cached input / output."""
    return f"{model}, {component} tokens"


CODE_INTERPRETER_SESSIONS_LINE = "code interpreter sessions"
FILE_SEARCH_CALLS_LINE = "file search calls"


@dataclass(frozen=True)
class LineSpec:
    kind: str
    unit: str
    model: str = ""


@dataclass
class Observations:
    """One side's values: (day, project, line) → value, plus what each line is."""

    values: dict[tuple[dt.date, str, str], Decimal] = field(default_factory=lambda: defaultdict(lambda: ZERO))
    specs: dict[str, LineSpec] = field(default_factory=dict)
    # Informational: OpenAI's vector-store bytes per day (the Costs "vector storage" line is what is compared).
    storage_bytes: dict[dt.date, int] = field(default_factory=dict)
    # The organization's vector-store bytes per day and project, this project's included.
    storage_bytes_by_project: dict[dt.date, dict[str, int]] = field(default_factory=dict)
    # OpenAI spend on line items no ledger line can hold: (day, project) → {line item: USD}.
    unmapped: dict[tuple[dt.date, str], dict[str, Decimal]] = field(default_factory=lambda: defaultdict(dict))

    def add_unmapped(self, day: dt.date, project: str, line: str, value) -> None:
        items = self.unmapped[(day, project)]
        items[line] = items.get(line, ZERO) + Decimal(value)

    def unmapped_total(self, day: dt.date, project: str) -> Decimal:
        return sum(self.unmapped.get((day, project), {}).values(), ZERO)

    def add(self, day: dt.date, project: str, line: str, value, spec: LineSpec) -> None:
        self.values[(day, project, line)] += Decimal(value)
        self.specs.setdefault(line, spec)

    def keys_for(self, day: dt.date, project: str) -> set[str]:
        return {line for (d, p, line) in self.values if d == day and p == project}

    def get(self, day: dt.date, project: str, line: str) -> Decimal | None:
        key = (day, project, line)
        return self.values[key] if key in self.values else None

    def cost_total(self, day: dt.date, project: str) -> Decimal:
        return sum(
            (value for (d, p, line), value in self.values.items()
             if d == day and p == project and self.specs[line].kind == KIND_COST),
            ZERO,
        )


@dataclass(frozen=True)
class Tolerance:
    """Dollar lines match when |difference| ≤ max(percent of OpenAI's value, usd). Counts match exactly."""

    percent: Decimal = Decimal("1")
    usd: Decimal = Decimal("0.01")

    def allows(self, difference: Decimal, openai_value: Decimal, unit: str) -> bool:
        if unit != UNIT_USD:
            return difference == 0
        allowed = max(abs(openai_value) * self.percent / HUNDRED, self.usd)
        return abs(difference) <= allowed


@dataclass(frozen=True)
class LineResult:
    day: dt.date
    openai_project: str
    line: str
    kind: str
    unit: str
    model: str
    ledger_value: Decimal
    openai_value: Decimal
    difference: Decimal
    difference_pct: Decimal | None
    status: str

    @property
    def is_flagged(self) -> bool:
        return self.status in FLAGGED


def _pct(difference: Decimal, openai_value: Decimal) -> Decimal | None:
    if openai_value == 0:
        return None
    return (difference / openai_value * HUNDRED).quantize(PCT_PLACES)


def line_status(ledger: Decimal | None, openai: Decimal | None, unit: str, tolerance: Tolerance) -> str:
    """A side that reported nothing (None) or zero for a line the other side has is 'missing' there,
    unless the difference is within tolerance (a few cents of rounding are not a missing line)."""
    ledger_value = ledger if ledger is not None else ZERO
    openai_value = openai if openai is not None else ZERO
    difference = openai_value - ledger_value
    if tolerance.allows(difference, openai_value, unit):
        return MATCHED
    if ledger_value == 0:
        return MISSING_IN_LEDGER
    if openai_value == 0:
        return MISSING_AT_OPENAI
    return DRIFT


def compare_day(
    *, day: dt.date, project: str, ledger: Observations, openai: Observations, tolerance: Tolerance
) -> list[LineResult]:
    """Every line either side has for this day and project, plus the unattributed-spend line.

    Unattributed spend is OpenAI's total minus everything the ledger attributed to a tenant: the money nobody
    can bill (negative: tenants carry more than OpenAI billed). Its value is always that full amount. Its
    status flags only the part no other flagged line explains — spend on line items the ledger cannot hold,
    or many small differences adding up — so one cause (a drifting line, a missing model) raises one flag."""
    results: list[LineResult] = []
    lines = ledger.keys_for(day, project) | openai.keys_for(day, project)
    for line in sorted(lines):
        spec = openai.specs.get(line) or ledger.specs[line]
        ledger_value = ledger.get(day, project, line)
        openai_value = openai.get(day, project, line)
        lv = ledger_value if ledger_value is not None else ZERO
        ov = openai_value if openai_value is not None else ZERO
        if lv == 0 and ov == 0:
            continue  # a zero on one side and nothing on the other is not a line anybody cares about
        difference = ov - lv
        results.append(LineResult(
            day=day, openai_project=project, line=line, kind=spec.kind, unit=spec.unit, model=spec.model,
            ledger_value=lv, openai_value=ov, difference=difference, difference_pct=_pct(difference, ov),
            status=line_status(ledger_value, openai_value, spec.unit, tolerance),
        ))
    openai_total = openai.cost_total(day, project) + openai.unmapped_total(day, project)
    ledger_total = ledger.cost_total(day, project)
    unattributed = openai_total - ledger_total
    explained = sum((r.difference for r in results if r.kind == KIND_COST and r.is_flagged), ZERO)
    # What no flagged line explains is spend on line items the ledger cannot hold plus the in-tolerance
    # differences of the other lines. Those may add up to the day's tolerance (each line is within its own);
    # unbillable spend gets only the dollar tolerance: 1% of a $1,000 day would hide $9 nobody can bill.
    unmapped = openai.unmapped_total(day, project)
    in_tolerance = unattributed - explained - unmapped
    settled = abs(unmapped) <= tolerance.usd and tolerance.allows(in_tolerance, openai_total, UNIT_USD)
    results.append(LineResult(
        day=day, openai_project=project, line=UNATTRIBUTED_LINE, kind=KIND_UNATTRIBUTED, unit=UNIT_USD, model="",
        # The ledger's expected unattributed spend is zero: every dollar should belong to a tenant.
        ledger_value=ZERO, openai_value=unattributed, difference=unattributed,
        difference_pct=_pct(unattributed, openai_total),
        status=MATCHED if settled else DRIFT,
    ))
    return results


def _usd4(amount: Decimal) -> str:
    """To the hundredth of a cent, the sign before the dollar ("-$0.0040", not "$-0.0040")."""
    return f"{'-' if amount < 0 else ''}${abs(amount):.4f}"


def unattributed_explanation(results: Iterable[LineResult], unmapped: Mapping[str, Decimal]) -> str:
    """Where a day's unattributed spend comes from, for the run's notes."""
    parts = [f"{line} {_usd4(amount)}" for line, amount in sorted(unmapped.items()) if amount]
    parts += [f"{r.line} ({r.status.replace('_', ' ')}) {_usd4(r.difference)}" for r in results
              if r.kind == KIND_COST and r.is_flagged]
    return "Unattributed spend comes from: " + "; ".join(parts) + "." if parts else ""


def day_totals(results: Iterable[LineResult]) -> Mapping[str, Decimal]:
    ledger_total = sum((r.ledger_value for r in results if r.kind == KIND_COST), ZERO)
    unattributed = next((r.openai_value for r in results if r.kind == KIND_UNATTRIBUTED), ZERO)
    # OpenAI's total includes spend on line items no ledger line holds (they are in unattributed spend).
    return {"ledger_total_usd": ledger_total, "openai_total_usd": ledger_total + unattributed,
            "unattributed_usd": unattributed}
