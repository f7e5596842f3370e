"""Rating is exact: the seed document's worked examples, cached/reasoning/cache-write tokens, tool fees."""

import datetime as dt
from decimal import Decimal

import pytest

from apps.pricing.rating import (
    LongContextRate,
    ModelRate,
    RatingError,
    ToolRate,
    Usage,
    rate_code_interpreter_sessions,
    rate_run,
    rate_vector_storage,
)
from tests.golden import golden_examples


def _golden() -> dict:
    return golden_examples()


def _golden_rates():
    data = _golden()
    models = {
        name: ModelRate(model=name, effective_from=dt.date(2024, 1, 1), input_usd_per_1m=Decimal(p["input"]),
                        output_usd_per_1m=Decimal(p["output"]))
        for name, p in data["prices_usd_per_1m_tokens"].items()
    }
    tools = data["tool_prices_usd"]
    tool_rate = ToolRate(
        effective_from=dt.date(2024, 1, 1),
        code_interpreter_session_usd=Decimal(tools["code_interpreter_session"]),
        file_search_call_usd_per_1k=Decimal("2.50"),
        web_search_call_usd_per_1k=Decimal("10.00"),
        vector_storage_usd_per_gb_day=Decimal(tools["vector_storage_per_gb_day"]),
        vector_storage_free_gb=Decimal(tools["vector_storage_free_gb"]),
    )
    return models, tool_rate


def test_every_golden_example_is_reproduced_exactly():
    models, tool_rate = _golden_rates()
    checked = 0
    for example in _golden()["examples"]:
        if "prompt_tokens" in example:
            usage = Usage(input_tokens=example["prompt_tokens"], output_tokens=example["completion_tokens"])
            cost = rate_run(usage, models[example["model"]], tool_rate)
            assert cost.total == Decimal(example["cost_usd"]), example["what"]
        elif "code_interpreter_calls" in example:
            # Ten code runs inside one Assistants run are still one session.
            usage = Usage(code_interpreter_sessions=1)
            assert example["sessions"] == 1
            cost = rate_run(usage, models["gpt-5.4"], tool_rate)
            assert cost.tools == cost.total == Decimal(example["cost_usd"]), example["what"]
        elif "sessions" in example:
            assert rate_code_interpreter_sessions(example["sessions"], tool_rate) == Decimal(example["cost_usd_per_day"])
        elif "stored_gb" in example:
            days = example.get("days", 1)
            expected = Decimal(example.get("cost_usd", example.get("cost_usd_per_day")))
            assert rate_vector_storage(example["stored_gb"], days, tool_rate) == expected, example["what"]
        elif "high_cost_run_usd" in example:
            from apps.tenants.models import Tenant

            assert Tenant._meta.get_field("high_cost_run_usd").default == Decimal(example["high_cost_run_usd"])
        else:
            pytest.fail(f"unhandled golden example {example}")
        checked += 1
    assert checked == len(_golden()["examples"]) == 11


def test_cached_tokens_bill_at_cached_price_and_only_once():
    rate = ModelRate(model="m", effective_from=dt.date(2026, 1, 1), input_usd_per_1m=Decimal("2.00"),
                     cached_input_usd_per_1m=Decimal("0.10"), output_usd_per_1m=Decimal("10.00"))
    cost = rate_run(Usage(input_tokens=1_000_000, cached_input_tokens=400_000, output_tokens=0), rate, None)
    assert cost.input == Decimal("1.2")  # 600k uncached x $2
    assert cost.cached_input == Decimal("0.04")  # 400k x $0.10
    assert cost.total == Decimal("1.24")


def test_null_cached_price_bills_cached_tokens_at_input_price():
    rate = ModelRate(model="m", effective_from=dt.date(2026, 1, 1), input_usd_per_1m=Decimal("2.50"),
                     output_usd_per_1m=Decimal("15"))
    cost = rate_run(Usage(input_tokens=20_000, cached_input_tokens=5_000, output_tokens=500), rate, None)
    assert cost.total == Decimal("0.0575")
    assert cost.cached_input == Decimal("0.0125")


def test_cache_write_tokens_bill_at_cache_write_price_inside_cost_input():
    rate = ModelRate(model="gpt-6.1-terra", effective_from=dt.date(2026, 10, 26), input_usd_per_1m=Decimal("1.00"),
                     cached_input_usd_per_1m=Decimal("0.05"), cache_write_usd_per_1m=Decimal("1.25"),
                     output_usd_per_1m=Decimal("5.00"))
    usage = Usage(input_tokens=10_000, cached_input_tokens=2_000, cache_write_tokens=4_000, output_tokens=1_000,
                  reasoning_tokens=600)
    cost = rate_run(usage, rate, None)
    # 4,000 uncached x $1 + 4,000 writes x $1.25 = 0.004 + 0.005; 2,000 cached x 0.05; output incl. reasoning x $5
    assert cost.input == Decimal("0.009")
    assert cost.cached_input == Decimal("0.0001")
    assert cost.output == Decimal("0.005")
    assert cost.total == Decimal("0.0141")


def test_reasoning_tokens_are_not_billed_twice():
    rate = ModelRate(model="m", effective_from=dt.date(2026, 1, 1), input_usd_per_1m=Decimal("1"),
                     output_usd_per_1m=Decimal("10"))
    with_reasoning = rate_run(Usage(output_tokens=1000, reasoning_tokens=900), rate, None)
    without = rate_run(Usage(output_tokens=1000), rate, None)
    assert with_reasoning == without
    assert with_reasoning.output == Decimal("0.01")


def test_file_search_calls_cost_only_under_responses_and_web_search_always():
    _, tool_rate = _golden_rates()
    rate = ModelRate(model="m", effective_from=dt.date(2026, 1, 1), input_usd_per_1m=Decimal("0"),
                     output_usd_per_1m=Decimal("0"))
    assistants = rate_run(Usage(file_search_calls=4, api="assistants"), rate, tool_rate)
    responses = rate_run(Usage(file_search_calls=4, web_search_calls=2, code_interpreter_sessions=2, api="responses"),
                         rate, tool_rate)
    assert assistants.tools == Decimal("0")
    assert responses.tools == Decimal("0.01") + Decimal("0.02") + Decimal("0.06")


def test_service_tier_modifiers_apply_to_tokens_not_tools():
    _, tool_rate = _golden_rates()
    rate = ModelRate(model="m", effective_from=dt.date(2026, 1, 1), input_usd_per_1m=Decimal("2"),
                     output_usd_per_1m=Decimal("10"))
    base = Usage(input_tokens=1_000_000, output_tokens=100_000, code_interpreter_sessions=1, api="responses")
    flex = rate_run(Usage(**{**base.__dict__, "service_tier": "flex"}), rate, tool_rate)
    priority = rate_run(Usage(**{**base.__dict__, "service_tier": "priority"}), rate, tool_rate)
    default = rate_run(Usage(**{**base.__dict__, "service_tier": "default"}), rate, tool_rate)
    assert default.total == Decimal("3.03")
    assert flex.total == Decimal("1.53")
    assert priority.total == Decimal("6.03")


# gpt-6.1-sol's prices and OpenAI's long-context rule for its current models (shared reference, section 6).
LONG_CONTEXT = ModelRate(model="gpt-6.1-sol", effective_from=dt.date(2026, 9, 1), input_usd_per_1m=Decimal("2"),
                         cached_input_usd_per_1m=Decimal("0.10"), cache_write_usd_per_1m=Decimal("2.50"),
                         output_usd_per_1m=Decimal("10"),
                         long_context=LongContextRate(above_input_tokens=272_000, input_multiplier=Decimal("2"),
                                                      output_multiplier=Decimal("1.5")))


def test_a_prompt_past_the_long_context_threshold_bills_every_token_at_its_multiples():
    # 300,000 input tokens: 40,000 cached, 10,000 cache writes, 250,000 uncached; 20,000 output (5,000 reasoning).
    usage = Usage(input_tokens=300_000, cached_input_tokens=40_000, cache_write_tokens=10_000, output_tokens=20_000,
                  reasoning_tokens=5_000, api="responses")
    cost = rate_run(usage, LONG_CONTEXT, None)
    assert cost.input == Decimal("1.05")  # (250,000 × $2 + 10,000 × $2.50) / 1M = $0.525, × 2
    assert cost.cached_input == Decimal("0.008")  # 40,000 × $0.10 / 1M = $0.004, × 2
    assert cost.output == Decimal("0.3")  # 20,000 × $10 / 1M = $0.20, × 1.5
    assert cost.total == Decimal("1.358")


def test_the_long_context_threshold_is_exclusive_and_counts_cached_tokens_in_the_prompt():
    at = rate_run(Usage(input_tokens=272_000, output_tokens=1_000), LONG_CONTEXT, None)
    assert (at.input, at.output) == (Decimal("0.544"), Decimal("0.01"))
    past = rate_run(Usage(input_tokens=272_001, cached_input_tokens=272_000, output_tokens=1_000), LONG_CONTEXT, None)
    assert (past.input, past.cached_input, past.output) == (Decimal("0.000004"), Decimal("0.0544"), Decimal("0.015"))


def test_long_context_multiples_stack_on_the_service_tier_and_a_version_without_them_has_none():
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000, api="responses", service_tier="priority")
    assert rate_run(usage, LONG_CONTEXT, None).total == Decimal("11")  # ($2 × 2 × 2) + ($1 × 2 × 1.5)
    flex = Usage(**{**usage.__dict__, "service_tier": "flex"})
    assert rate_run(flex, LONG_CONTEXT, None).total == Decimal("2.75")  # ($2 × 0.5 × 2) + ($1 × 0.5 × 1.5)
    plain = ModelRate(model="gpt-5.4", effective_from=dt.date(2024, 1, 1), input_usd_per_1m=Decimal("2"),
                      output_usd_per_1m=Decimal("10"))
    assert rate_run(Usage(input_tokens=1_000_000, output_tokens=100_000), plain, None).total == Decimal("3")


def test_impossible_usage_is_refused():
    rate = ModelRate(model="m", effective_from=dt.date(2026, 1, 1), input_usd_per_1m=Decimal("1"),
                     output_usd_per_1m=Decimal("1"))
    with pytest.raises(RatingError):
        rate_run(Usage(input_tokens=10, cached_input_tokens=11), rate, None)
    with pytest.raises(RatingError):
        rate_run(Usage(output_tokens=10, reasoning_tokens=11), rate, None)
    with pytest.raises(RatingError):
        rate_run(Usage(code_interpreter_sessions=1), rate, None)


def test_quantized_parts_add_up_to_total():
    rate = ModelRate(model="m", effective_from=dt.date(2026, 1, 1), input_usd_per_1m=Decimal("0.075"),
                     output_usd_per_1m=Decimal("0.000333"))
    cost = rate_run(Usage(input_tokens=3, output_tokens=7), rate, None).quantized()
    assert cost.total == cost.input + cost.cached_input + cost.output + cost.tools
    assert cost.input == Decimal("0.0000002250")


def test_a_price_finer_than_the_ledger_holds_is_rounded_half_up_per_part():
    # The API takes prices with 6 decimal places; a token then costs more than the ledger's 10 places.
    rate = ModelRate(model="m", effective_from=dt.date(2026, 1, 1), input_usd_per_1m=Decimal("0.123457"),
                     output_usd_per_1m=Decimal("0.000001"))
    cost = rate_run(Usage(input_tokens=1, output_tokens=3), rate, None).quantized()
    assert (cost.input, cost.output, cost.total) == (Decimal("0.0000001235"), Decimal("0E-10"), Decimal("0.0000001235"))


def test_every_shipped_price_at_every_tier_and_long_context_multiple_costs_tokens_exactly():
    # docs/pricing.md: exact at the ledger's 10 places while price × multipliers has at most 4 decimal places.
    import json
    from pathlib import Path

    from apps.pricing.rating import SERVICE_TIER_MULTIPLIERS

    book = json.loads((Path(__file__).parents[2] / "apps/pricing/data/price_book.json").read_text())
    tiers = {*SERVICE_TIER_MULTIPLIERS.values(), Decimal(1)}
    finer = []
    for price in book["models"]:
        long_context = price.get("long_context") or {}
        multiples = {Decimal(1), *(Decimal(long_context[name]) for name in ("input_multiplier", "output_multiplier")
                                   if name in long_context)}
        for field in ("input_usd_per_1m", "cached_input_usd_per_1m", "output_usd_per_1m", "cache_write_usd_per_1m"):
            if price.get(field) is None:
                continue
            for figure in (Decimal(price[field]) * tier * multiple for tier in tiers for multiple in multiples):
                if figure.normalize().as_tuple().exponent < -4:
                    finer.append((price["model"], field, figure))
    assert finer == []
