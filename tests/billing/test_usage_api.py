"""GET /api/v1/tenants/{slug}/usage/: totals and lines equal the ledger's runs exactly, for any range and grouping."""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
from collections import defaultdict
from decimal import Decimal

import pytest

from apps.billing.serializers import usage_cursor
from apps.core.api_support import cursor_token
from apps.ledger.models import Run
from tests import builders
from tests.conftest import bearer

from .conftest import at, ingest

pytestmark = pytest.mark.django_db

COUNTS = ("runs", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
MONEY = ("cost_input_usd", "cost_cached_input_usd", "cost_output_usd", "cost_tools_usd")


def usage(client, key, slug="acme", **params):
    return client.get(f"/api/v1/tenants/{slug}/usage/", params, **bearer(key))


def expected_from_runs(tenant, start: dt.date, end: dt.date, group_by: str) -> dict:
    """The same numbers computed independently from the ledger's run rows."""
    runs = Run.objects.for_tenant(tenant).filter(
        created_at__gte=dt.datetime.combine(start, dt.time(), dt.UTC), created_at__lt=dt.datetime.combine(end, dt.time(), dt.UTC)
    )
    lines: dict[str, dict] = defaultdict(lambda: {**{name: 0 for name in COUNTS}, **{name: Decimal(0) for name in MONEY}, "cost_usd": Decimal(0)})
    for run in runs:
        key = {"day": run.created_at.date().isoformat(), "model": run.model, "feature": run.feature, "user": run.user_id}[group_by]
        line = lines[key]
        line["runs"] += 1
        for name in COUNTS[1:]:
            line[name] += getattr(run, name)
        for name in MONEY:
            line[name] += getattr(run, name)
        line["cost_usd"] += run.cost_total_usd
    return dict(lines)


def test_usage_totals_and_lines_equal_the_ledger_runs_for_random_ranges_and_groupings(api_client, billing_key, tenant, other_tenant):
    rng = random.Random(20260108)
    models = ["gpt-5.4", "gpt-4.1", "gpt-5-mini", "gpt-4o"]
    objects = []
    for _ in range(80):
        created = at(2026, 3, 1) + dt.timedelta(minutes=rng.randrange(0, 60 * 24 * 75))
        attribution = {"user_id": rng.choice(["", "u1", "u2", "u3"]), "feature": rng.choice(["", "chat", "search"])}
        if rng.random() < 0.5:
            obj = builders.assistants_run(created_at=created, thread_id="thread_acme", model=rng.choice(models), prompt_tokens=rng.randrange(0, 200_000),
                                          completion_tokens=rng.randrange(0, 20_000), code_interpreter=rng.random() < 0.2,
                                          status=rng.choice(["completed", "completed", "failed", "cancelled"]))
        else:
            input_tokens = rng.randrange(0, 200_000)
            output_tokens = rng.randrange(0, 20_000)
            obj = builders.response(created_at=created, model=rng.choice(models), input_tokens=input_tokens,
                                    cached_tokens=rng.randrange(0, input_tokens + 1), output_tokens=output_tokens,
                                    reasoning_tokens=rng.randrange(0, output_tokens + 1), web_search_calls=rng.randrange(0, 3),
                                    file_search_calls=rng.randrange(0, 3))
        objects.append((obj, attribution))
    for obj, attribution in objects:
        ingest(tenant, obj, **attribution)
    ingest(other_tenant, builders.response(created_at=at(2026, 3, 10), model="gpt-4.1", input_tokens=77_777))

    for _ in range(30):
        start = dt.date(2026, 2, 20) + dt.timedelta(days=rng.randrange(0, 80))
        end = start + dt.timedelta(days=rng.randrange(1, 40))
        group_by = rng.choice(["day", "model", "feature", "user"])
        answer = usage(api_client, billing_key, start=start.isoformat(), end=end.isoformat(), group_by=group_by)
        assert answer.status_code == 200, answer.content
        body = answer.json()
        expected = expected_from_runs(tenant, start, end, group_by)
        assert [line["key"] for line in body["lines"]] == sorted(expected)
        for line in body["lines"]:
            want = expected[line["key"]]
            assert {name: line[name] for name in COUNTS} == {name: want[name] for name in COUNTS}
            assert {name: Decimal(line[name]) for name in (*MONEY, "cost_usd")} == {name: want[name] for name in (*MONEY, "cost_usd")}
        assert body["runs"] == sum(line["runs"] for line in expected.values())
        assert body["reasoning_tokens"] == sum(line["reasoning_tokens"] for line in expected.values())
        assert Decimal(body["total_cost_usd"]) == sum((line["cost_usd"] for line in expected.values()), Decimal(0))
        assert body["start"] == start.isoformat() and body["end"] == end.isoformat() and body["currency"] == "USD"


def test_usage_money_is_decimal_strings_and_end_is_exclusive(api_client, billing_key, tenant):
    [run] = ingest(tenant, builders.assistants_run(created_at=at(2026, 4, 2, 23, 59), thread_id="thread_acme", model="gpt-5.4",
                                                   prompt_tokens=1_000_000, completion_tokens=100_000))
    ingest(tenant, builders.assistants_run(created_at=at(2026, 4, 3, 0, 0), model="gpt-5.4"))
    body = usage(api_client, billing_key, start="2026-04-02", end="2026-04-03", group_by="model").json()
    assert body["runs"] == 1
    assert body["total_cost_usd"] == "4.00" and run.cost_total_usd == Decimal("4")
    assert body["lines"] == [{
        "key": "gpt-5.4", "runs": 1, "unpriced_runs": 0, "input_tokens": 1_000_000, "cached_input_tokens": 0,
        "output_tokens": 100_000, "reasoning_tokens": 0, "cost_input_usd": "2.50", "cost_cached_input_usd": "0.00",
        "cost_output_usd": "1.50", "cost_tools_usd": "0.00", "cost_usd": "4.00",
    }]


@pytest.mark.parametrize("group_by", ["day", "model", "feature"])
def test_usage_lists_only_groups_with_runs_after_a_run_moves_to_another_model_and_feature(
        api_client, billing_key, tenant, group_by):
    # Reported in progress as gpt-4.1 / chat, then completed as the dated snapshot / search: the first
    # report's rollup keys stay behind at zero runs.
    ingest(tenant, builders.response(response_id="resp_moves", created_at=at(2026, 1, 5), model="gpt-4.1",
                                     status="in_progress"), feature="chat")
    [run] = ingest(tenant, builders.response(response_id="resp_moves", created_at=at(2026, 1, 5),
                                             model="gpt-4.1-2025-04-14"), feature="search")

    body = usage(api_client, billing_key, start="2026-01-01", end="2026-02-01", group_by=group_by).json()

    key = {"day": "2026-01-05", "model": "gpt-4.1-2025-04-14", "feature": "search"}[group_by]
    assert [(line["key"], line["runs"], line["cost_usd"]) for line in body["lines"]] == [
        (key, 1, str(run.cost_total_usd.normalize()))]


@pytest.mark.postgres
@pytest.mark.parametrize("group_by", ["model", "feature"])
def test_usage_lines_sort_by_key_in_code_point_order_whatever_the_databases_collation(
        api_client, billing_key, tenant, group_by):
    from django.db import connection

    # docker-compose's postgres:16 creates the database with an en_US locale, where "_x" < "chat" < "Search";
    # the test database is C. The column given a linguistic collation (rolled back with the test) stands for it.
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE ledger_dailyrollup ALTER COLUMN "{group_by}" TYPE varchar(100) COLLATE "en-x-icu"')
    for name in ("chat", "Search", "_x"):
        ingest(tenant, builders.response(created_at=at(2026, 1, 5), model=f"gpt-4.1{name}" if group_by == "model" else "gpt-4.1"),
               feature=name)

    body = usage(api_client, billing_key, start="2026-01-01", end="2026-02-01", group_by=group_by).json()

    keys = [line["key"] for line in body["lines"]]
    assert keys == sorted(keys) and len(keys) == 3  # code-point order, as SQLite's path and usage by end user give


JANUARY_DAYS = (dt.date(2026, 1, 1), dt.date(2026, 2, 1))
JANUARY = {"start": "2026-01-01", "end": "2026-02-01"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": "2026-13-01", "end": "2026-02-01"}, "start"),
        ({"start": "2026-01-01", "end": "yesterday"}, "end"),
        ({"start": "2026-01-01T00:00:00", "end": "2026-02-01"}, "start"),
        ({"start": "2026-02-01", "end": "2026-02-01"}, "end"),
        ({"start": "2026-02-01", "end": "2026-01-01"}, "end"),
        ({"start": "2024-01-01", "end": "2025-06-01"}, "end"),
        ({"start": "2026-01-01", "end": "2026-02-01", "group_by": "tenant"}, "group_by"),
        # Near the end of Python's calendar a month's end or a range's months would overflow (a 500 before).
        ({"start": "9999-12-01"}, "start"),
        ({"start": "9999-01-01", "end": "9999-12-31", "group_by": "user"}, "start"),
        ({"start": "1969-12-01"}, "start"),
        ({"start": "2026-3-1"}, "start"),
        ({"start": "\uff12026-01-01"}, "start"),  # a fullwidth digit: \d matched it, and it read as 2026
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "99999999999999999999"}, "limit"),
        ({"limit": "10", "cursor": "not-a-cursor"}, "cursor"),
        # Cursors this API did not write, though they decode: another shape, other JSON spacing, a key no stored
        # text holds (a NUL: PostgreSQL refused it as a parameter, a 500).
        ({"limit": "10", "cursor": cursor_token({"after": "u1"})}, "cursor"),
        ({"limit": "10", "group_by": "user", "cursor": base64.urlsafe_b64encode(
            b'{"group_by": "user", "after": "u1"}').decode()}, "cursor"),
        ({**JANUARY, "limit": "10", "group_by": "user", "cursor": usage_cursor("user", *JANUARY_DAYS, "u\x00")},
         "cursor"),
        # A key of another grouping means nothing here.
        ({**JANUARY, "limit": "10", "group_by": "day", "cursor": usage_cursor("user", *JANUARY_DAYS, "u1")}, "cursor"),
        # Nor are another period's next keys the rest of this one's lines; nor does a cursor from before it named its
        # period say which it pages.
        ({**JANUARY, "limit": "10", "group_by": "user",
          "cursor": usage_cursor("user", dt.date(2026, 2, 1), dt.date(2026, 3, 1), "u1")}, "cursor"),
        ({"limit": "10", "group_by": "user", "cursor": usage_cursor("user", *JANUARY_DAYS, "u1")}, "cursor"),
        ({**JANUARY, "limit": "10", "group_by": "user", "cursor": cursor_token({"group_by": "user", "after": "u1"})},
         "cursor"),
        ({**JANUARY, "cursor": usage_cursor("day", *JANUARY_DAYS, "2026-01-02")}, "limit"),  # without its limit
    ],
)
def test_bad_usage_parameters_are_400_naming_the_field(api_client, billing_key, tenant, params, field):
    answer = usage(api_client, billing_key, **params)
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == field and answer.json()["error"]["code"] == "invalid"


def test_a_cursor_used_with_other_dates_says_which_period_it_pages(api_client, billing_key, tenant):
    """A cursor names its period: a client that changed start or end between pages would otherwise have been given
    the next keys of the other period, and added up lines of two periods without a word."""
    answer = usage(api_client, billing_key, start="2026-01-01", end="2026-01-15", group_by="user", limit="10",
                   cursor=usage_cursor("user", *JANUARY_DAYS, "u1"))
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == (
        "This cursor pages 2026-01-01 to 2026-02-01, not 2026-01-01 to 2026-01-15; use the next link as given, or "
        "start again from the first page.")


def test_usage_has_an_etag_and_answers_304(api_client, billing_key, tenant):
    ingest(tenant, builders.assistants_run(created_at=at(2026, 4, 2)))
    first = usage(api_client, billing_key, start="2026-04-01", end="2026-05-01")
    again = api_client.get("/api/v1/tenants/acme/usage/", {"start": "2026-04-01", "end": "2026-05-01"},
                           HTTP_IF_NONE_MATCH=first["ETag"], **bearer(billing_key))
    assert again.status_code == 304
    ingest(tenant, builders.assistants_run(created_at=at(2026, 4, 3)))
    changed = api_client.get("/api/v1/tenants/acme/usage/", {"start": "2026-04-01", "end": "2026-05-01"},
                             HTTP_IF_NONE_MATCH=first["ETag"], **bearer(billing_key))
    assert changed.status_code == 200 and json.loads(changed.content)["runs"] == 2


def test_usage_defaults_to_this_month_by_day(api_client, billing_key, tenant):
    body = usage(api_client, billing_key).json()
    assert body["group_by"] == "day" and body["start"].endswith("-01") and body["lines"] == []
    assert body["total_cost_usd"] == "0.00"


def _walk(client, key, **params) -> list[dict]:
    """Every page of a paged usage query, following `next` as given."""
    pages, url = [], None
    first = usage(client, key, **params)
    while True:
        response = first if url is None else client.get(url, **bearer(key))
        assert response.status_code == 200, response.content
        pages.append(response.json())
        url = pages[-1]["next"]
        if url is None:
            return pages


@pytest.mark.parametrize("group_by", ["user", "day"])
def test_usage_pages_cover_every_line_once_and_each_page_carries_the_whole_periods_totals(
        api_client, billing_key, tenant, group_by):
    """A billing system reading thousands of end users can take them a page at a time: the lines of the pages
    together are exactly the lines of one answer, in order, and every page's totals are the period's."""
    for index, user_id in enumerate(["", "u1", "u2", "Zoë", "u3"]):
        ingest(tenant, builders.response(created_at=at(2026, 3, 2 + index), input_tokens=1_000 * (index + 1)),
               user_id=user_id)
    whole = usage(api_client, billing_key, start="2026-03-01", end="2026-04-01", group_by=group_by).json()
    assert whole["next"] is None and len(whole["lines"]) == 5

    pages = _walk(api_client, billing_key, start="2026-03-01", end="2026-04-01", group_by=group_by, limit=2)

    assert [len(page["lines"]) for page in pages] == [2, 2, 1]
    assert [line for page in pages for line in page["lines"]] == whole["lines"]
    totals = {name: value for name, value in whole.items() if name not in ("lines", "next")}
    for page in pages:
        assert {name: value for name, value in page.items() if name not in ("lines", "next")} == totals
    assert "limit=2" in pages[0]["next"] and "group_by=" + group_by in pages[0]["next"]
    # A page that ends exactly at the last line says so: no link to an empty page.
    assert [len(page["lines"]) for page in _walk(api_client, billing_key, start="2026-03-01", end="2026-04-01",
                                                 group_by=group_by, limit=5)] == [5]



def test_a_walk_over_the_default_period_finishes_that_month_when_the_month_turns_between_pages(
        api_client, billing_key, tenant):
    """The `next` link writes the period out: left to the defaults, the page after the month's turn read another
    month, and its cursor (naming the month it pages) was refused."""
    import time_machine

    for index, user_id in enumerate(["u1", "u2", "u3"]):
        ingest(tenant, builders.response(created_at=at(2026, 3, 20 + index)), user_id=user_id)
    with time_machine.travel(dt.datetime(2026, 3, 31, 23, 59, tzinfo=dt.UTC), tick=False):
        first = usage(api_client, billing_key, group_by="user", limit=2).json()
    assert "start=2026-03-01" in first["next"] and "end=2026-04-01" in first["next"]
    with time_machine.travel(dt.datetime(2026, 4, 1, 0, 1, tzinfo=dt.UTC), tick=False):
        second = api_client.get(first["next"], **bearer(billing_key))
    assert second.status_code == 200, second.content
    assert [line["key"] for line in first["lines"] + second.json()["lines"]] == ["u1", "u2", "u3"]
    assert (second.json()["start"], second.json()["next"]) == ("2026-03-01", None)
