"""Costs and Usage are the ground truth for reconciliation: for a generated month they must equal, to
the cent, what the sandbox served, computed here independently from the exported objects and the
price book JSON; injected drift must show up as exactly the injected amount."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from decimal import Decimal

import pytest

from apps.sandbox.pricing import PRICE_BOOK_PATH

DAY = 86400
MILLION = Decimal(1_000_000)


def _prices():
    with open(PRICE_BOOK_PATH, encoding="utf-8") as handle:
        data = json.load(handle)
    return data["models"], data["tools"][0]


def _price(models, model: str, day: dt.date) -> dict:
    rows = [row for row in models if row["model"] == model and dt.date.fromisoformat(row["effective_from"]) <= day]
    return max(rows, key=lambda row: row["effective_from"])


def _long_context_multiples(price: dict, input_tokens: int) -> tuple[Decimal, Decimal]:
    """A prompt past the price's long-context threshold bills at its multiples (input, output)."""
    rule = price.get("long_context")
    if rule and input_tokens > rule["above_input_tokens"]:
        return Decimal(rule["input_multiplier"]), Decimal(rule["output_multiplier"])
    return Decimal(1), Decimal(1)


def _day(moment: float) -> dt.date:
    return dt.datetime.fromtimestamp(moment, tz=dt.UTC).date()


def served_costs(export: dict, now: float) -> dict[tuple[dt.date, str], Decimal]:
    """What the sandbox served, rated independently: (day, line item) → exact Decimal."""
    models, tools = _prices()
    costs: dict[tuple[dt.date, str], Decimal] = defaultdict(Decimal)
    for row in export["runs"]:
        run = row["object"]
        if not run["usage"]:
            continue
        day = _day(run["created_at"])
        price = _price(models, run["model"], day)
        costs[(day, f"{run['model']}, input")] += run["usage"]["prompt_tokens"] * Decimal(price["input_usd_per_1m"]) / MILLION
        costs[(day, f"{run['model']}, output")] += run["usage"]["completion_tokens"] * Decimal(price["output_usd_per_1m"]) / MILLION
        used_code = any(call["type"] == "code_interpreter" for step in row["steps"] if step["type"] == "tool_calls"
                        for call in step["step_details"]["tool_calls"])
        if used_code:
            costs[(day, "code interpreter")] += Decimal(tools["code_interpreter_session_usd"])
    for row in export["responses"]:
        response = row["object"]
        usage = response["usage"]
        if not usage:
            continue
        day = _day(response["created_at"])
        price = _price(models, response["model"], day)
        cached = usage["input_tokens_details"]["cached_tokens"]
        written = usage["input_tokens_details"]["cache_write_tokens"]
        input_price = Decimal(price["input_usd_per_1m"])
        cached_price = Decimal(price["cached_input_usd_per_1m"] or price["input_usd_per_1m"])
        write_price = Decimal(price["cache_write_usd_per_1m"] or price["input_usd_per_1m"])
        model = response["model"]
        on_input, on_output = _long_context_multiples(price, usage["input_tokens"])
        costs[(day, f"{model}, input")] += (usage["input_tokens"] - cached - written) * input_price * on_input / MILLION
        costs[(day, f"{model}, cached input")] += cached * cached_price * on_input / MILLION
        costs[(day, f"{model}, cache write")] += written * write_price * on_input / MILLION
        costs[(day, f"{model}, output")] += (usage["output_tokens"] * Decimal(price["output_usd_per_1m"]) * on_output
                                             / MILLION)
        output = response["output"]
        containers = {item["container_id"] for item in output if item["type"] == "code_interpreter_call"}
        costs[(day, "code interpreter")] += len(containers) * Decimal(tools["code_interpreter_session_usd"])
        searches = sum(1 for item in output if item["type"] == "file_search_call")
        costs[(day, "file search")] += searches * Decimal(tools["file_search_call_usd_per_1k"]) / 1000
        web = sum(1 for item in output if item["type"] == "web_search_call")
        costs[(day, "web search")] += web * Decimal(tools["web_search_call_usd_per_1k"]) / 1000
    for day, stored in stored_bytes_by_day(export, now).items():
        gigabytes = Decimal(stored) / Decimal(2 ** 30)
        billable = max(Decimal(0), gigabytes - Decimal(tools["vector_storage_free_gb"]))
        costs[(day, "vector storage")] += billable * Decimal(tools["vector_storage_usd_per_gb_day"])
    return costs


def stored_bytes_by_day(export: dict, now: float) -> dict[dt.date, int]:
    first = _day(min(row["object"]["created_at"] for row in export["vector_stores"]))
    totals: dict[dt.date, int] = defaultdict(int)
    for row in export["vector_stores"]:
        store = row["object"]
        ends = [moment for moment in (row["deleted_at"], store["expires_at"]) if moment is not None and moment <= now]
        end = min(ends) if ends else now
        day = first
        while day <= _day(now):
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
            if store["created_at"] < min(start + DAY, now) and end > start:
                totals[day] += store["usage_bytes"]
            day += dt.timedelta(days=1)
    return totals


@pytest.fixture
def month(sandbox):
    summary = sandbox.load_scenario(tenants=3, days=30, seed=11)
    export = sandbox.export()
    first = dt.date.fromisoformat(summary["first_day"])
    start = int(dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC).timestamp())
    return export, start, int(sandbox.clock.now()) + 1


def _reported(buckets) -> dict[tuple[dt.date, str], float]:
    reported = defaultdict(float)
    for bucket in buckets:
        for result in bucket["results"]:
            reported[(_day(bucket["start_time"]), result["line_item"])] += result["amount"]["value"]
    return reported


def test_costs_for_a_generated_month_equal_what_was_served_to_the_cent(provider, sandbox, month):
    export, start, end = month
    buckets = provider.costs(start, end, group_by=["line_item", "project_id"], page_limit=7)
    assert len(buckets) == 30
    expected = {key: value for key, value in served_costs(export, sandbox.clock.now()).items()
                if value and start <= dt.datetime(key[0].year, key[0].month, key[0].day, tzinfo=dt.UTC).timestamp() < end}
    reported = _reported(buckets)
    assert set(reported) == set(expected)
    for key, value in expected.items():
        assert abs(Decimal(repr(reported[key])) - value) < Decimal("1e-9"), key
    total_reported = sum(Decimal(repr(value)) for value in reported.values())
    total_served = sum(expected.values())
    assert total_reported.quantize(Decimal("0.01")) == total_served.quantize(Decimal("0.01"))
    assert total_served > 10
    lines = {line for _, line in expected}
    assert {"code interpreter", "file search", "web search", "vector storage"} <= lines
    assert any(line.endswith("cached input") for line in lines) and any(line.endswith("cache write") for line in lines)


def test_ungrouped_costs_total_matches_grouped(provider, month):
    _, start, end = month
    grouped = sum(result["amount"]["value"] for bucket in provider.costs(start, end, group_by=["line_item"])
                  for result in bucket["results"])
    ungrouped = provider.costs(start, end)
    assert all(len(bucket["results"]) <= 1 for bucket in ungrouped)
    assert sum(result["amount"]["value"] for bucket in ungrouped for result in bucket["results"]) == pytest.approx(grouped, abs=1e-9)
    assert all(result["line_item"] is None and result["project_id"] is None for bucket in ungrouped for result in bucket["results"])


def test_drift_changes_the_costs_by_exactly_the_injected_amount(provider, sandbox, month):
    export, start, end = month
    baseline = sum(Decimal(repr(value)) for value in _reported(provider.costs(start, end, group_by=["line_item"])).values())
    some_day = _day(start + 10 * DAY)
    sandbox.faults.add_drift(day=some_day, amount_usd="12.34", line_item="vector storage")
    sandbox.faults.add_drift(day=some_day + dt.timedelta(days=1), amount_usd="-1.05")
    sandbox.faults.add_drift(day=some_day + dt.timedelta(days=2), amount_usd="7.50", unattributed=True)
    drifted_buckets = provider.costs(start, end, group_by=["line_item"])
    drifted = _reported(drifted_buckets)
    total = sum(Decimal(repr(value)) for value in drifted.values())
    assert (total - baseline).quantize(Decimal("0.01")) == Decimal("18.79")
    assert drifted[(some_day + dt.timedelta(days=2), "unattributed usage")] == 7.5
    other_days = {key: value for key, value in drifted.items() if key[0] not in {
        some_day, some_day + dt.timedelta(days=1), some_day + dt.timedelta(days=2)}}
    served = _reported(provider.costs(start, end, group_by=["line_item"]))
    assert all(served[key] == value for key, value in other_days.items())
    sandbox.faults.clear_drift()
    restored = sum(Decimal(repr(value)) for value in _reported(provider.costs(start, end, group_by=["line_item"])).values())
    assert restored == baseline


def test_usage_endpoints_equal_what_was_served(provider, sandbox, month):
    export, start, end = month
    runs = [row["object"] for row in export["runs"] if row["object"]["usage"]]
    responses = [row["object"] for row in export["responses"] if row["object"]["usage"]]
    completions = [result for bucket in provider.usage_completions(start, end, group_by=["model"]) for result in bucket["results"]]
    assert sum(result["input_tokens"] for result in completions) == (
        sum(run["usage"]["prompt_tokens"] for run in runs) + sum(response["usage"]["input_tokens"] for response in responses))
    assert sum(result["input_cached_tokens"] for result in completions) == sum(
        response["usage"]["input_tokens_details"]["cached_tokens"] for response in responses)
    assert sum(result["output_tokens"] for result in completions) == (
        sum(run["usage"]["completion_tokens"] for run in runs) + sum(response["usage"]["output_tokens"] for response in responses))
    assert sum(result["num_model_requests"] for result in completions) >= len(runs) + len(responses)
    sessions = sum(result["num_sessions"] for bucket in provider.usage_code_interpreter_sessions(start, end)
                   for result in bucket["results"])
    expected_sessions = sum(
        1 for row in export["runs"] if row["object"]["usage"] and any(
            call["type"] == "code_interpreter" for step in row["steps"] if step["type"] == "tool_calls"
            for call in step["step_details"]["tool_calls"])
    ) + sum(len({item["container_id"] for item in response["output"] if item["type"] == "code_interpreter_call"})
            for response in responses)
    assert sessions == expected_sessions > 0
    searches = sum(result["num_requests"] for bucket in provider.usage_file_search_calls(start, end)
                   for result in bucket["results"])
    assert searches == sum(1 for response in responses for item in response["output"] if item["type"] == "file_search_call")
    stored = {bucket["start_time"]: sum(result["usage_bytes"] for result in bucket["results"])
              for bucket in provider.usage_vector_stores(start, end)}
    expected_stored = stored_bytes_by_day(export, sandbox.clock.now())
    for bucket_start, usage_bytes in stored.items():
        assert usage_bytes == expected_stored.get(_day(bucket_start), 0)


def test_start_time_is_inclusive_and_end_time_exclusive(openai_client, sandbox, provider):
    moment = int(sandbox.clock.now())
    openai_client.responses.create(model="gpt-6-luna", input="hi", extra_body={"sandbox": {"input_tokens": 100, "output_tokens": 10}})

    def tokens(start: int, end: int) -> int:
        return sum(result["input_tokens"] for bucket in provider.usage_completions(start, end, bucket_width="1m")
                   for result in bucket["results"])

    assert tokens(moment, moment + 60) == 100
    assert tokens(moment - 60, moment) == 0
    assert tokens(moment - 60, moment + 1) == 100


def test_usage_groups_by_project_from_the_openai_project_header(sandbox, openai_client, provider):
    import openai

    other = openai.OpenAI(base_url=sandbox.base_url, api_key=sandbox.api_key, project="proj_other", max_retries=0)
    other.responses.create(model="gpt-6-luna", input="x", extra_body={"sandbox": {"input_tokens": 50, "output_tokens": 5}})
    openai_client.responses.create(model="gpt-6-luna", input="x", extra_body={"sandbox": {"input_tokens": 70, "output_tokens": 5}})
    now = int(sandbox.clock.now())
    by_project = {result["project_id"]: result["input_tokens"] for bucket in provider.usage_completions(
        now - 60, now + 60, group_by=["project_id"], bucket_width="1m") for result in bucket["results"]}
    assert by_project == {"proj_other": 50, "proj_default": 70}
    only_other = provider.costs(now - DAY, now + 1, group_by=["project_id"], project_ids=["proj_other"])
    assert {result["project_id"] for bucket in only_other for result in bucket["results"]} == {"proj_other"}


def test_admin_pages_carry_next_page_until_the_end(openai_client, sandbox):
    today = int(sandbox.clock.now()) // DAY * DAY
    page = openai_client.admin.organization.usage.costs(start_time=today - 20 * DAY, end_time=today, limit=7)
    assert page.has_more is True and len(page.data) == 7 and page.next_page
    seen = len(page.data)
    while page.has_more:
        page = openai_client.admin.organization.usage.costs(start_time=today - 20 * DAY, end_time=today, limit=7,
                                                            page=page.next_page)
        seen += len(page.data)
    assert page.next_page is None and seen == 20


def test_vector_storage_takes_the_free_gb_once_for_the_organization_and_splits_the_bill_by_project_bytes(
        sandbox, provider):
    from apps.sandbox import objects

    gib = 1024**3
    day_start = (int(sandbox.clock.now()) // DAY - 2) * DAY  # a whole UTC day, two days back
    for project, size in (("proj_default", 1 * gib), ("proj_other", 3 * gib)):
        store = objects.vector_store(vector_store_id=sandbox.state.new_id("vs_"), created_at=day_start - DAY,
                                     name=project, usage_bytes=size, file_counts={}, last_active_at=day_start - DAY)
        sandbox.state.add_vector_store(store, project_id=project)

    def storage(**filters) -> dict[str, Decimal]:
        return {result["project_id"]: Decimal(repr(result["amount"]["value"]))
                for bucket in provider.costs(day_start, day_start + DAY, group_by=["line_item", "project_id"], **filters)
                for result in bucket["results"] if result["line_item"] == "vector storage"}

    # 4 GiB, 1 free, 3 billable at $0.10: $0.30 for the organization, 1:3 by bytes. A free GB per project
    # would bill 0 and 0.20.
    assert storage() == {"proj_default": Decimal("0.075"), "proj_other": Decimal("0.225")}
    # Asked about one project, its share is the same: the free GB is still the organization's.
    assert storage(project_ids=["proj_other"]) == {"proj_other": Decimal("0.225")}


def test_costs_bill_each_tier_at_its_multiple_and_a_snapshot_at_its_familys_price(openai_client, sandbox, provider):
    """As OpenAI bills them and the ledger rates them: flex at half the list price, priority at double; a dated
    snapshot is served and billed at its family's price (the sandbox refused it as an unknown model)."""
    models, _ = _prices()
    price = Decimal(_price(models, "gpt-6-luna", _day(sandbox.clock.now()))["input_usd_per_1m"])
    for model, tier in (("gpt-6-luna", "default"), ("gpt-6-luna", "flex"), ("gpt-6-luna-2026-03-05", "priority")):
        openai_client.responses.create(model=model, input="x", service_tier=tier,
                                       extra_body={"sandbox": {"input_tokens": 200_000, "output_tokens": 0}})
    now = int(sandbox.clock.now())
    lines = {result["line_item"]: Decimal(repr(result["amount"]["value"]))
             for bucket in provider.costs(now - DAY, now + 1, group_by=["line_item"]) for result in bucket["results"]
             if result["line_item"].endswith(", input")}
    # 200k tokens (under the long-context threshold): 0.2 of the price per 1M at default, 0.1 at flex, 0.4 at priority.
    assert lines == {"gpt-6-luna, input": price * Decimal("0.3"), "gpt-6-luna-2026-03-05, input": price * Decimal("0.4")}


def test_costs_bill_a_prompt_past_272k_tokens_at_the_long_context_multiples(openai_client, sandbox, provider):
    """As OpenAI bills its current models: above 272K input tokens the whole request at 2x input and 1.5x
    output (shared reference, section 6), with the service tier's multiple on top; at 272K, the list price."""
    models, _ = _prices()
    price = _price(models, "gpt-6.1-sol", _day(sandbox.clock.now()))
    input_price, output_price = Decimal(price["input_usd_per_1m"]), Decimal(price["output_usd_per_1m"])
    for model, tokens, tier in (("gpt-6.1-sol", 272_000, "default"), ("gpt-6.1-sol-2026-09-30", 300_000, "default"),
                                ("gpt-6.1-sol-2026-10-01", 300_000, "flex")):
        openai_client.responses.create(model=model, input="x", service_tier=tier, extra_body={
            "sandbox": {"input_tokens": tokens, "output_tokens": 10_000}})
    now = int(sandbox.clock.now())
    lines = {result["line_item"]: Decimal(repr(result["amount"]["value"]))
             for bucket in provider.costs(now - DAY, now + 1, group_by=["line_item"]) for result in bucket["results"]
             if result["line_item"].startswith("gpt-6.1-sol")}
    assert lines == {
        "gpt-6.1-sol, input": 272_000 * input_price / MILLION,
        "gpt-6.1-sol, output": 10_000 * output_price / MILLION,
        "gpt-6.1-sol-2026-09-30, input": 300_000 * input_price * 2 / MILLION,
        "gpt-6.1-sol-2026-09-30, output": 10_000 * output_price * Decimal("1.5") / MILLION,
        "gpt-6.1-sol-2026-10-01, input": 300_000 * input_price * 2 / 2 / MILLION,
        "gpt-6.1-sol-2026-10-01, output": 10_000 * output_price * Decimal("1.5") / 2 / MILLION,
    }


@pytest.mark.parametrize("tier", [5, ["flex"], "turbo"])
def test_a_service_tier_openai_does_not_offer_is_a_400_naming_it_and_costs_still_answer(openai_client, sandbox,
                                                                                        provider, tier):
    """Costs now scale by the tier each response was served on: a response created with a tier that is not a
    string (or none OpenAI offers) was accepted, and every Costs request over its day was a 500 after it."""
    import openai

    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.responses.create(model="gpt-6-luna", input="x", extra_body={
            "service_tier": tier, "sandbox": {"input_tokens": 1_000, "output_tokens": 0}})
    assert refused.value.param == "service_tier"
    openai_client.responses.create(model="gpt-6-luna", input="x", service_tier="flex",
                                   extra_body={"sandbox": {"input_tokens": 1_000, "output_tokens": 0}})
    now = int(sandbox.clock.now())
    lines = [result["line_item"] for bucket in provider.costs(now - DAY, now + 1, group_by=["line_item"])
             for result in bucket["results"]]
    assert "gpt-6-luna, input" in lines
