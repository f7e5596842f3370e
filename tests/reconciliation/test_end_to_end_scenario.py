"""A generated sandbox scenario loaded into RunLedger through the product's own paths (apps/sandbox/demo.py, the
code `seed_demo` runs: ingest of the export, deletions, daily storage metering) reconciles with zero drift; with
each kind of billing drift injected (more, less, unattributed spend, one model missing), exactly the injected
lines are flagged, on their day, with their amount.

The scenario spans the Assistants sunset (2026-08-26), so both APIs, their tool rules (file_search is billed and
counted per call only under Responses), deleted threads (whose runs the ledger keeps), and vector stores created,
deleted and expiring inside the window are all reconciled."""

from __future__ import annotations

import datetime as dt
import warnings
from decimal import Decimal

import pytest

from apps.ledger.models import DailyRollup, Run
from apps.reconciliation.comparison import KIND_COST, KIND_UNATTRIBUTED, UNATTRIBUTED_LINE, Tolerance
from apps.reconciliation.models import ReconciliationLine
from apps.reconciliation.openai_side import openai_observations
from apps.reconciliation.services import reconciliation_reconcile
from apps.sandbox.demo import (
    export_deletions_record,
    export_first_day,
    export_ingest,
    export_tenants_ensure,
    export_today,
    storage_meter_range,
)
from apps.sandbox.scenario import ASSISTANTS_SUNSET

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 9, 10, 12, tzinfo=dt.UTC)
TENANTS, DAYS, SEED = 3, 35, 9
MICRO = Decimal("0.000001")


def _code_interpreter_runs(export) -> list[dict]:
    return [row for row in export["runs"] if "code_interpreter" in _step_tools(row)]


def _step_tools(row) -> set[str]:
    return {call["type"] for step in row.get("steps") or [] if step["step_details"]["type"] == "tool_calls"
            for call in step["step_details"]["tool_calls"]}


def _day_of(obj) -> dt.date:
    return dt.datetime.fromtimestamp(obj["created_at"], tz=dt.UTC).date()


@pytest.fixture
def scenario(sandbox, provider, openai_client):
    """The generated month, with a few threads (and their code-interpreter runs) deleted at OpenAI before the
    export, the way OpenAI's retention or an application deletes them."""
    sandbox.clock.set(NOW.timestamp())
    sandbox.load_scenario(tenants=TENANTS, days=DAYS, seed=SEED)
    threads = sorted({row["object"]["thread_id"] for row in _code_interpreter_runs(sandbox.export())})[:4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for thread_id in threads:
            assert openai_client.beta.threads.delete(thread_id).deleted
    export = sandbox.export()
    deleted_runs = [row for row in _code_interpreter_runs(export) if row["deleted_at"]]
    assert deleted_runs, "deleted threads' runs keep their steps in the export"
    return export


def _load(export) -> None:
    """What seed_demo does, minus users, budgets and the inventory sync (which reads nothing reconciled)."""
    export_tenants_ensure(export)
    totals = export_ingest(export)
    assert totals.rejected == 0, totals.errors[:3]
    export_deletions_record(export)
    storage_meter_range(first_day=export_first_day(export), last_day=export_today(export))


def _window(export) -> tuple[dt.date, dt.date]:
    return export_first_day(export), export_today(export) - dt.timedelta(days=1)


def _reconcile(provider, export):
    first, last = _window(export)
    return reconciliation_reconcile(end_day=last, days=(last - first).days + 1, trigger="test",
                                    provider_factory=lambda project: provider, raise_errors=True)


def _lines() -> dict[tuple[dt.date, str], ReconciliationLine]:
    return {(line.day, line.line): line for line in ReconciliationLine.objects.filter(run__is_current=True)}


def _flagged() -> dict[tuple[dt.date, str], ReconciliationLine]:
    return {key: line for key, line in _lines().items() if line.status != "matched"}


def test_a_generated_scenario_reconciles_with_zero_drift_then_each_injected_drift_is_found_exactly(
        sandbox, provider, scenario):
    _load(scenario)
    first, last = _window(scenario)
    outcome = _reconcile(provider, scenario)[0]
    assert len(outcome.runs) == (last - first).days + 1
    assert _flagged() == {}

    lines = _lines()
    names = {line for _, line in lines}
    assert {"code interpreter", "code interpreter sessions", "file search", "file search calls", "web search",
            "vector storage", UNATTRIBUTED_LINE} <= names
    # Both APIs' models are compared: Assistants ones before the sunset, gpt-6 ones (Responses only) after.
    assert any(day < ASSISTANTS_SUNSET and line.startswith(("gpt-4", "gpt-5")) for day, line in lines)
    assert any(day >= ASSISTANTS_SUNSET and line.startswith("gpt-6") for day, line in lines)
    # What each fix is about is really in the data: Assistants file_search calls the Usage API does not count,
    # code-interpreter sessions of runs whose thread is gone, stores deleted and expiring inside the window.
    assistants_file_search = Run.objects.unscoped().filter(api="assistants", file_search_calls__gt=0)
    assert assistants_file_search.exists()
    assert all(line.ledger_value == line.openai_value for (_, name), line in lines.items()
               if name in ("file search calls", "code interpreter sessions"))
    rollup_calls = sum(DailyRollup.objects.unscoped().values_list("file_search_calls", flat=True))
    compared_calls = sum(line.ledger_value for (_, name), line in lines.items() if name == "file search calls")
    assert rollup_calls > compared_calls
    window_start = dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC).timestamp()
    stores = scenario["vector_stores"]
    assert any(row["deleted_at"] and row["deleted_at"] > window_start for row in stores)
    assert any((row["object"].get("expires_at") or 0) > window_start and row["object"]["status"] == "expired"
               for row in stores)
    # Every dollar OpenAI billed is attributed to a tenant (to rounding far below a cent).
    assert all(abs(line.openai_value) < Decimal("0.0001") for (_, name), line in lines.items() if name == UNATTRIBUTED_LINE)

    # Drift: more on one line, less on another, spend with no tenant on a third day.
    more_day, less_day, unattributed_day = last - dt.timedelta(days=3), last - dt.timedelta(days=9), last - dt.timedelta(days=15)

    def biggest_cost_line(day):
        return max((line for (d, _), line in lines.items() if d == day and line.kind == KIND_COST and line.model),
                   key=lambda line: line.openai_value)

    more_line, less_line = biggest_cost_line(more_day), biggest_cost_line(less_day)
    assert less_line.openai_value > Decimal("0.5")
    sandbox.faults.add_drift(day=more_day, amount_usd="1.25", line_item=more_line.line)
    sandbox.faults.add_drift(day=less_day, amount_usd="-0.25", line_item=less_line.line)
    sandbox.faults.add_drift(day=unattributed_day, amount_usd="0.75", unattributed=True)
    _reconcile(provider, scenario)

    flagged = _flagged()
    assert set(flagged) == {(more_day, more_line.line), (less_day, less_line.line),
                            (unattributed_day, UNATTRIBUTED_LINE)}
    assert flagged[(more_day, more_line.line)].difference.quantize(MICRO) == Decimal("1.25")
    assert flagged[(less_day, less_line.line)].difference.quantize(MICRO) == Decimal("-0.25")
    assert flagged[(more_day, more_line.line)].status == flagged[(less_day, less_line.line)].status == "drift"
    unattributed = flagged[(unattributed_day, UNATTRIBUTED_LINE)]
    assert unattributed.kind == KIND_UNATTRIBUTED and unattributed.openai_value.quantize(MICRO) == Decimal("0.75")
    # The drifting lines' days show the difference as unattributed spend, explained by the flagged line.
    after = _lines()
    assert after[(more_day, UNATTRIBUTED_LINE)].openai_value.quantize(MICRO) == Decimal("1.25")
    assert after[(more_day, UNATTRIBUTED_LINE)].status == "matched"
    # Everything else is exactly as before the drift.
    for key, line in lines.items():
        if key not in flagged and key not in {(more_day, UNATTRIBUTED_LINE), (less_day, UNATTRIBUTED_LINE)}:
            assert (after[key].ledger_value, after[key].status) == (line.ledger_value, "matched"), key


def _tool_use(rows) -> dict[str, int]:
    """What OpenAI meters for these runs and responses, counted from the raw objects: a session per run that ran
    code (Assistants) or per distinct container (Responses); file-search calls per call on Responses only."""
    use = {"sessions": 0, "file_search": 0, "web_search": 0}
    for row in rows:
        obj = row["object"]
        if obj["object"] == "thread.run":
            use["sessions"] += "code_interpreter" in _step_tools(row)
            continue
        if not obj.get("usage"):
            continue
        items = obj["output"] or []
        use["sessions"] += len({item["container_id"] for item in items if item["type"] == "code_interpreter_call"})
        use["file_search"] += sum(item["type"] == "file_search_call" for item in items)
        use["web_search"] += sum(item["type"] == "web_search_call" for item in items)
    return use


def test_a_model_missing_from_the_ledger_for_a_day_flags_only_what_its_runs_billed(sandbox, provider, scenario):
    first, last = _window(scenario)
    start, end = first, last + dt.timedelta(days=1)
    openai = openai_observations(provider=provider, start=start, end=end, project_id="proj_default")
    rows = [row for kind in ("runs", "responses") for row in scenario[kind] if row["tenant"]]
    by_model_day: dict[tuple, list] = {}
    for row in rows:
        by_model_day.setdefault((_day_of(row["object"]), row["object"]["model"]), []).append(row)

    def model_costs(day, model):
        return {line: value for (d, _, line), value in openai.values.items()
                if d == day and openai.specs[line].kind == KIND_COST and openai.specs[line].model == model}

    # The model-day with the most spend among those whose every cost line is clearly beyond the $0.01 tolerance.
    candidates = [(sum(costs.values()), day, model) for (day, model) in by_model_day
                  if start <= day < end and (costs := model_costs(day, model)) and min(costs.values()) > Decimal("0.02")]
    _, missing_day, missing_model = max(candidates)
    dropped = by_model_day[(missing_day, missing_model)]

    kept = dict(scenario)
    for kind in ("runs", "responses"):
        kept[kind] = [row for row in scenario[kind] if row not in dropped]
    _load(kept)
    _reconcile(provider, scenario)

    # Expected differences: the model's own lines (all of OpenAI's value), and the tool lines its runs moved,
    # counted from the dropped objects and priced with the sandbox's own price book.
    expected = {line: value for (d, _, line), value in openai.values.items()
                if d == missing_day and openai.specs[line].model == missing_model and value}
    use, prices = _tool_use(dropped), sandbox.state.price_book.tool_price(missing_day)
    tool_differences = {
        "code interpreter sessions": Decimal(use["sessions"]),
        "file search calls": Decimal(use["file_search"]),
        "code interpreter": use["sessions"] * prices.code_interpreter_session,
        "file search": use["file_search"] * prices.file_search_per_1k / 1000,
        "web search": use["web_search"] * prices.web_search_per_1k / 1000,
    }
    tolerance = Tolerance()
    for line, difference in tool_differences.items():
        unit = "usd" if line in ("code interpreter", "file search", "web search") else "count"
        if difference and not tolerance.allows(difference, openai.get(missing_day, "proj_default", line), unit):
            expected[line] = difference
    flagged = _flagged()
    assert set(flagged) == {(missing_day, line) for line in expected}
    for line, value in expected.items():
        assert flagged[(missing_day, line)].difference.quantize(MICRO) == value.quantize(MICRO), line
        if openai.specs[line].model:
            assert flagged[(missing_day, line)].status == "missing_in_ledger"
    # The day's unattributed spend is all the dropped runs cost, explained by the flagged lines (one cause, one set
    # of flags) unless the unflagged, in-tolerance tool remainders add up beyond the tolerance themselves.
    dropped_spend = sum(model_costs(missing_day, missing_model).values()) + sum(
        value for line, value in tool_differences.items() if line in ("code interpreter", "file search", "web search"))
    unattributed = _lines()[(missing_day, UNATTRIBUTED_LINE)]
    assert unattributed.openai_value.quantize(MICRO) == dropped_spend.quantize(MICRO)
    assert unattributed.status == "matched"
