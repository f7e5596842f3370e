"""The pure comparison: line naming, tolerance, statuses and the unattributed-spend line."""

import datetime as dt
from decimal import Decimal

import pytest

from apps.reconciliation.comparison import (
    KIND_COST,
    KIND_USAGE,
    UNIT_TOKENS,
    UNIT_USD,
    LineSpec,
    Observations,
    Tolerance,
    canonical_line_item,
    compare_day,
    is_ledger_line,
    line_status,
    unattributed_explanation,
)

DAY = dt.date(2026, 11, 3)
P = "proj_a"
USD = LineSpec(KIND_COST, UNIT_USD, "gpt-5.4")
TOKENS = LineSpec(KIND_USAGE, UNIT_TOKENS, "gpt-5.4")


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        ("gpt-5.4, input", "gpt-5.4, input"),
        ("gpt-6-astra, input_tokens", "gpt-6-astra, input"),
        ("gpt-5.4, cached input", "gpt-5.4, cached input"),
        ("gpt-5.4, cached_input_tokens", "gpt-5.4, cached input"),
        ("gpt-5.4, output_tokens", "gpt-5.4, output"),
        ("Code Interpreter", "code interpreter"),
        ("file_search", "file search"),
        ("web search calls", "web search"),
        ("vector storage", "vector storage"),
        ("fine-tuning", "fine-tuning"),
    ],
)
def test_openai_line_items_are_named_the_way_the_ledger_names_them(raw, line):
    assert canonical_line_item(raw)[0] == line


def test_cache_write_keeps_its_own_name_so_the_service_can_fold_it():
    assert canonical_line_item("gpt-6.1-terra, cache write")[0] == "gpt-6.1-terra, cache write"


@pytest.mark.parametrize(
    ("line", "model", "known"),
    [("gpt-5.4, input", "gpt-5.4", True), ("gpt-5.4, output", "gpt-5.4", True), ("file search", "", True),
     ("vector storage", "", True), ("unattributed usage", "", False), ("fine-tuning", "", False),
     ("gpt-5.4, audio input", "gpt-5.4", False)],
)
def test_only_line_items_the_ledger_records_are_compared_line_by_line(line, model, known):
    assert is_ledger_line(line, model) is known


@pytest.mark.parametrize(
    ("ledger", "openai", "status"),
    [
        ("100.00", "100.99", "matched"),      # within 1%
        ("100.00", "101.02", "drift"),        # 1.02 > 1% of 101.02
        ("0.50", "0.51", "matched"),          # within the $0.01 floor
        ("0.50", "0.52", "drift"),
        (None, "0.009", "matched"),           # a missing line worth less than the floor is noise
        (None, "0.02", "missing_in_ledger"),
        ("0.02", None, "missing_at_openai"),
        ("0", "3.00", "missing_in_ledger"),
    ],
)
def test_dollar_lines_match_within_the_larger_of_one_percent_and_a_cent(ledger, openai, status):
    to = lambda v: None if v is None else Decimal(v)  # noqa: E731
    assert line_status(to(ledger), to(openai), UNIT_USD, Tolerance()) == status


def test_token_counts_compare_exactly():
    assert line_status(Decimal(1000), Decimal(1001), UNIT_TOKENS, Tolerance()) == "drift"
    assert line_status(Decimal(1000), Decimal(1000), UNIT_TOKENS, Tolerance()) == "matched"
    assert line_status(None, Decimal(1), UNIT_TOKENS, Tolerance()) == "missing_in_ledger"


def test_tolerance_is_configurable():
    strict = Tolerance(percent=Decimal("0"), usd=Decimal("0"))
    assert line_status(Decimal("1.00"), Decimal("1.0000001"), UNIT_USD, strict) == "drift"


def _obs(values):
    obs = Observations()
    for line, value, spec in values:
        obs.add(DAY, P, line, Decimal(value), spec)
    return obs


def test_compare_day_reports_value_difference_percent_and_unattributed_spend():
    ledger = _obs([("gpt-5.4, input", "10.00", USD), ("gpt-5.4, output", "5.00", USD),
                   ("gpt-5.4, input tokens", "4000000", TOKENS)])
    openai = _obs([("gpt-5.4, input", "12.50", USD), ("gpt-5.4, output", "5.00", USD),
                   ("gpt-5.4, input tokens", "4000000", TOKENS)])
    results = {r.line: r for r in compare_day(day=DAY, project=P, ledger=ledger, openai=openai, tolerance=Tolerance())}
    drift = results["gpt-5.4, input"]
    assert (drift.ledger_value, drift.openai_value, drift.difference, drift.difference_pct, drift.status) == (
        Decimal("10.00"), Decimal("12.50"), Decimal("2.50"), Decimal("20.0000"), "drift")
    assert results["gpt-5.4, output"].status == "matched"
    assert results["gpt-5.4, input tokens"].status == "matched"
    unattributed = results["unattributed spend"]
    # The full amount is shown; the flag stays on the line that explains it, so one cause raises one flag.
    assert (unattributed.ledger_value, unattributed.openai_value, unattributed.status) == (
        Decimal("0"), Decimal("2.50"), "matched")


def test_the_unattributed_explanation_writes_a_negative_amount_with_its_sign_before_the_dollar():
    ledger = _obs([("gpt-5.4, input", "10.00", USD)])
    openai = _obs([("gpt-5.4, input", "7.00", USD)])
    results = compare_day(day=DAY, project=P, ledger=ledger, openai=openai, tolerance=Tolerance())
    text = unattributed_explanation(results, {"credit": Decimal("-0.004"), "unattributed usage": Decimal("1.25")})
    assert text == ("Unattributed spend comes from: credit -$0.0040; unattributed usage $1.2500; "
                    "gpt-5.4, input (drift) -$3.0000.")


def test_spend_on_line_items_no_ledger_line_holds_is_flagged_as_unattributed():
    ledger = _obs([("gpt-5.4, input", "10.00", USD)])
    openai = _obs([("gpt-5.4, input", "10.00", USD)])
    openai.add_unmapped(DAY, P, "unattributed usage", Decimal("7.25"))
    results = {r.line: r for r in compare_day(day=DAY, project=P, ledger=ledger, openai=openai, tolerance=Tolerance())}
    assert set(results) == {"gpt-5.4, input", "unattributed spend"}
    assert (results["unattributed spend"].openai_value, results["unattributed spend"].status) == (Decimal("7.25"), "drift")
    assert results["gpt-5.4, input"].status == "matched"


def test_many_small_differences_within_tolerance_still_add_up_to_unattributed_drift():
    lines = [(f"m{i}, input", "0.100", LineSpec(KIND_COST, UNIT_USD, f"m{i}")) for i in range(20)]
    ledger = _obs(lines)
    openai = _obs([(line, "0.109", spec) for line, _, spec in lines])  # each under the $0.01 floor
    results = {r.line: r for r in compare_day(day=DAY, project=P, ledger=ledger, openai=openai, tolerance=Tolerance())}
    assert all(results[line].status == "matched" for line, _, _ in lines)
    assert (results["unattributed spend"].openai_value, results["unattributed spend"].status) == (Decimal("0.180"), "drift")


def test_lines_zero_on_both_sides_are_left_out_and_a_clean_day_has_only_matches():
    ledger = _obs([("gpt-5.4, input", "1.00", USD), ("gpt-5.4, cached input", "0", USD)])
    openai = _obs([("gpt-5.4, input", "1.00", USD)])
    results = compare_day(day=DAY, project=P, ledger=ledger, openai=openai, tolerance=Tolerance())
    assert [(r.line, r.status) for r in results] == [("gpt-5.4, input", "matched"), ("unattributed spend", "matched")]


def test_spend_on_a_line_item_the_ledger_cannot_hold_is_flagged_even_under_one_percent_of_the_day():
    """1% of a $1,000 day would hide $9 nobody can bill: unmapped spend gets only the dollar tolerance."""
    day = dt.date(2026, 11, 19)
    ledger, openai = Observations(), Observations()
    spec = LineSpec(KIND_COST, UNIT_USD, "gpt-5")
    ledger.add(day, "proj", "gpt-5, input", Decimal("1000"), spec)
    openai.add(day, "proj", "gpt-5, input", Decimal("1000"), spec)
    openai.add_unmapped(day, "proj", "unattributed usage", Decimal("9"))
    unattributed = [r for r in compare_day(day=day, project="proj", ledger=ledger, openai=openai,
                                           tolerance=Tolerance()) if r.line == "unattributed spend"][0]
    assert (unattributed.openai_value, unattributed.status) == (Decimal("9"), "drift")


def test_in_tolerance_line_differences_may_add_up_to_the_days_tolerance_on_the_unattributed_line():
    day = dt.date(2026, 11, 19)
    ledger, openai = Observations(), Observations()
    for model in ("gpt-5", "gpt-5-mini"):
        spec = LineSpec(KIND_COST, UNIT_USD, model)
        ledger.add(day, "proj", f"{model}, input", Decimal("500"), spec)
        openai.add(day, "proj", f"{model}, input", Decimal("504"), spec)  # 0.8% each: within tolerance
    openai.add_unmapped(day, "proj", "unattributed usage", Decimal("0.01"))
    unattributed = [r for r in compare_day(day=day, project="proj", ledger=ledger, openai=openai,
                                           tolerance=Tolerance()) if r.line == "unattributed spend"][0]
    assert (unattributed.openai_value, unattributed.status) == (Decimal("8.01"), "matched")


def test_the_default_tolerance_is_read_from_the_environment_at_start_up_or_refused_naming_it():
    # README lists every setting as an environment variable; the tolerance was a Django setting only.
    import os
    import subprocess
    import sys

    from django.conf import settings

    def start(**variables):
        return subprocess.run(
            [sys.executable, "-c", "import django; django.setup(); from apps.reconciliation.projects import "
             "default_tolerance as t; print(t().percent, t().usd)"],
            capture_output=True, text=True, cwd=settings.BASE_DIR, timeout=60,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", **variables})

    assert start().stdout.split() == ["1", "0.01"]
    assert start(RECONCILIATION_TOLERANCE_PERCENT="2.5", RECONCILIATION_TOLERANCE_USD="0.50").stdout.split() == [
        "2.5", "0.50"]
    refused = start(RECONCILIATION_TOLERANCE_PERCENT="-1")
    assert refused.returncode != 0 and "RECONCILIATION_TOLERANCE_PERCENT must be a percentage of 0 or more" in (
        refused.stderr)
