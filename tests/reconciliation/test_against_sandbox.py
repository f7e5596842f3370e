"""Reconciliation end to end against the sandbox through the real SDK: a generated month served by the sandbox
and ingested into the ledger matches line for line; injected drift is found on its day and line with its
amount and nothing else is flagged; a 429 or 5xx in the middle of pagination is retried."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

import pytest

from apps.ledger.models import Run
from apps.ledger.services import ingest_events
from apps.reconciliation import openai_side
from apps.reconciliation.models import ReconciliationLine, ReconciliationRun
from apps.reconciliation.services import reconciliation_reconcile

pytestmark = pytest.mark.django_db

MONTH_START = dt.date(2026, 10, 1)
MONTH_DAYS = 31
MICRO = Decimal("0.000001")
# (model, tools, token volume) per response of a day, at realistic volumes (the sandbox's `sandbox` hint
# fixes the tokens it bills). gpt-5.5 never uses tools, so a day without it loses exactly its own lines.
TRAFFIC = [
    ("gpt-5.4", [], {"input_tokens": 180_000, "cached_tokens": 60_000, "output_tokens": 12_000}),
    ("gpt-5.4", [{"type": "web_search"}], {"input_tokens": 90_000, "output_tokens": 8_000}),
    ("gpt-5.5", [], {"input_tokens": 40_000, "cached_tokens": 10_000, "output_tokens": 3_000}),
    ("gpt-6.1-sol", [], {"input_tokens": 250_000, "cached_tokens": 120_000, "output_tokens": 20_000}),
    # Past 272K input tokens: billed at gpt-6.1-sol's long-context multiples, on the same lines as the one above.
    ("gpt-6.1-sol", [], {"input_tokens": 300_000, "output_tokens": 10_000}),
]


def _serve_month(sandbox, openai_client, tenants) -> dict[dt.date, list[dict]]:
    """Responses for every day of October, alternating tenants, at 03:00 + n hours UTC."""
    served: dict[dt.date, list[dict]] = defaultdict(list)
    for offset in range(MONTH_DAYS):
        day = MONTH_START + dt.timedelta(days=offset)
        for index, (model, tools, tokens) in enumerate(TRAFFIC):
            tenant = tenants[(offset + index) % len(tenants)]
            sandbox.clock.set(dt.datetime(day.year, day.month, day.day, 3 + index * 5, tzinfo=dt.UTC).timestamp())
            response = openai_client.responses.create(
                model=model, input=f"question {offset}-{index}", tools=tools,
                metadata={"tenant": tenant.slug, "feature": "support"},
                # Vary the volume by day so no two days look alike.
                extra_body={"sandbox": {name: value + offset * 97 for name, value in tokens.items()}},
            )
            served[day].append({"tenant": tenant.slug, "object": response.model_dump(mode="json")})
    return served


def _ingest(served, *, skip=lambda day, event: False) -> None:
    events = [dict(event, openai_project="proj_default") for day, day_events in served.items()
              for event in day_events if not skip(day, event)]
    result = ingest_events(events=events)
    assert result.created == len(events), [r.as_dict() for r in result.results if r.outcome == "rejected"][:3]


def _reconcile(provider, *, end_day=MONTH_START + dt.timedelta(days=MONTH_DAYS - 1), days=MONTH_DAYS):
    return reconciliation_reconcile(end_day=end_day, days=days, trigger="test",
                                    provider_factory=lambda project: provider, raise_errors=True)


def _flagged() -> dict[tuple[dt.date, str], ReconciliationLine]:
    return {(line.day, line.line): line for line in
            ReconciliationLine.objects.filter(run__is_current=True).exclude(status="matched")}


@pytest.fixture
def month(sandbox, openai_client, provider, tenant, other_tenant):
    return _serve_month(sandbox, openai_client, [tenant, other_tenant])


def test_a_generated_month_without_drift_matches_every_line(month, provider):
    _ingest(month)
    outcome = _reconcile(provider)[0]
    assert len(outcome.runs) == MONTH_DAYS
    assert _flagged() == {}
    lines = ReconciliationLine.objects.filter(run__is_current=True)
    names = set(lines.values_list("line", flat=True))
    assert {"gpt-5.4, input", "gpt-5.4, cached input", "gpt-5.4, output", "gpt-5.5, input tokens",
            "gpt-6.1-sol, cached input tokens", "web search", "unattributed spend"} <= names
    # The long prompt of the first day was rated at 2x input and 1.5x output (gpt-6.1-sol: $2 and $10 per 1M),
    # and its day's lines still match what OpenAI billed for both of the model's requests.
    long_prompt = Run.objects.unscoped().get(model="gpt-6.1-sol", input_tokens=300_000)
    assert (long_prompt.cost_input_usd, long_prompt.cost_output_usd) == (Decimal("1.2"), Decimal("0.15"))
    # Both sides really were compared: every day has OpenAI dollars, and the month's totals agree to the cent.
    runs = ReconciliationRun.objects.filter(is_current=True)
    assert all(run.openai_total_usd > 0 for run in runs)
    ledger = sum((run.ledger_total_usd for run in runs), Decimal(0))
    openai = sum((run.openai_total_usd for run in runs), Decimal(0))
    assert abs(ledger - openai) < Decimal("0.01")


def test_injected_drift_is_found_on_its_day_and_line_with_its_amount_and_nothing_else(month, provider, sandbox):
    more_day, less_day = dt.date(2026, 10, 4), dt.date(2026, 10, 11)
    unattributed_day, missing_day = dt.date(2026, 10, 18), dt.date(2026, 10, 25)
    sandbox.faults.add_drift(day=more_day, amount_usd="1.50", line_item="gpt-5.4, input")
    sandbox.faults.add_drift(day=less_day, amount_usd="-0.75", line_item="gpt-5.4, output")
    sandbox.faults.add_drift(day=unattributed_day, amount_usd="2.25", unattributed=True)
    skipped = [event["object"] for event in month[missing_day] if event["object"]["model"] == "gpt-5.5"]
    _ingest(month, skip=lambda day, event: day == missing_day and event["object"]["model"] == "gpt-5.5")

    _reconcile(provider)

    flagged = _flagged()
    missing_input = sum(o["usage"]["input_tokens"] for o in skipped)
    missing_cached = sum(o["usage"]["input_tokens_details"]["cached_tokens"] for o in skipped)
    missing_output = sum(o["usage"]["output_tokens"] for o in skipped)
    # gpt-5.5 list price: $5 input / $25 output per 1M tokens; no cached price, so cached bills at input.
    price = lambda tokens, usd: Decimal(tokens) * Decimal(usd) / 10**6  # noqa: E731
    expected = {
        (more_day, "gpt-5.4, input"): ("drift", Decimal("1.50")),
        (less_day, "gpt-5.4, output"): ("drift", Decimal("-0.75")),
        (unattributed_day, "unattributed spend"): ("drift", Decimal("2.25")),
        (missing_day, "gpt-5.5, input"): ("missing_in_ledger", price(missing_input - missing_cached, "5.00")),
        (missing_day, "gpt-5.5, cached input"): ("missing_in_ledger", price(missing_cached, "5.00")),
        (missing_day, "gpt-5.5, output"): ("missing_in_ledger", price(missing_output, "25.00")),
        (missing_day, "gpt-5.5, input tokens"): ("missing_in_ledger", Decimal(missing_input)),
        (missing_day, "gpt-5.5, cached input tokens"): ("missing_in_ledger", Decimal(missing_cached)),
        (missing_day, "gpt-5.5, output tokens"): ("missing_in_ledger", Decimal(missing_output)),
    }
    found = {key: (line.status, line.difference.quantize(MICRO)) for key, line in flagged.items()}
    assert found == {key: (status, amount.quantize(MICRO)) for key, (status, amount) in expected.items()}
    # The money nobody can bill is shown on each day's unattributed line, whichever line explains it.
    unattributed = {line.day: line.openai_value.quantize(MICRO) for line in ReconciliationLine.objects.filter(
        run__is_current=True, line="unattributed spend")}
    assert unattributed[more_day] == Decimal("1.5").quantize(MICRO)
    assert unattributed[less_day] == Decimal("-0.75").quantize(MICRO)
    assert unattributed[missing_day] == sum(amount for (day, line), (_, amount) in expected.items()
                                            if day == missing_day and not line.endswith("tokens")).quantize(MICRO)
    assert unattributed[dt.date(2026, 10, 5)] == 0


def test_a_small_drift_within_tolerance_is_not_flagged(month, provider, sandbox):
    # $0.004 on a line of a few dollars: within the larger of 1% and $0.01.
    sandbox.faults.add_drift(day=dt.date(2026, 10, 7), amount_usd="0.004", line_item="gpt-5.4, output")
    _ingest(month)
    _reconcile(provider, end_day=dt.date(2026, 10, 8), days=2)
    assert _flagged() == {}


@pytest.mark.parametrize("fault", ["rate_limit", "server_error"])
def test_a_fault_in_the_middle_of_pagination_is_retried_and_the_result_is_complete(
        month, provider, sandbox, monkeypatch, fault):
    _ingest(month)
    monkeypatch.setattr(openai_side, "COSTS_PAGE_DAYS", 3)   # 8 days -> 3 pages of Costs
    monkeypatch.setattr(openai_side, "USAGE_PAGE_DAYS", 3)
    usage = provider.client.admin.organization.usage
    original_costs = usage.costs
    pages = []

    def costs_then_fail_the_next_page(**kwargs):
        page = original_costs(**kwargs)
        pages.append(kwargs.get("page"))
        if len(pages) == 1:  # the first page came back: the next request fails once
            if fault == "rate_limit":
                sandbox.faults.rate_limit(path="organization/costs", times=1, retry_after=0.01)
            else:
                sandbox.faults.server_error(path="organization/costs", times=1, status=503)
        return page

    monkeypatch.setattr(usage, "costs", costs_then_fail_the_next_page)
    outcome = _reconcile(provider, end_day=dt.date(2026, 10, 8), days=8)[0]
    assert len(pages) >= 3 and pages[0] is None and all(pages[1:])
    assert [rule.fired for rule in sandbox.faults.rules] == [1]
    assert [run.status for run in outcome.runs] == ["complete"] * 8
    assert _flagged() == {}
    assert all(run.openai_total_usd > 0 for run in outcome.runs)


def test_rerunning_against_the_sandbox_is_idempotent_and_keeps_history(month, provider):
    _ingest(month)
    _reconcile(provider, end_day=dt.date(2026, 10, 8), days=1)
    first = list(ReconciliationLine.objects.filter(run__is_current=True).values_list(
        "line", "ledger_value", "openai_value", "status").order_by("line"))
    _reconcile(provider, end_day=dt.date(2026, 10, 8), days=1)
    second = list(ReconciliationLine.objects.filter(run__is_current=True).values_list(
        "line", "ledger_value", "openai_value", "status").order_by("line"))
    assert first == second
    assert ReconciliationRun.objects.filter(day=dt.date(2026, 10, 8)).count() == 2
    assert ReconciliationRun.objects.filter(day=dt.date(2026, 10, 8), is_current=True).count() == 1
