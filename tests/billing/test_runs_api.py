"""GET /api/v1/runs/ and /api/v1/runs/{id}/: filters, newest-first cursor pages, constant query count, scope."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from apps.ledger.models import Run
from tests import builders
from tests.conftest import bearer

from .conftest import at, ingest, response

pytestmark = pytest.mark.django_db


def ids(answer) -> list[str]:
    assert answer.status_code == 200, answer.content
    return [run["id"] for run in answer.json()["results"]]


def test_runs_are_listed_newest_first_with_their_cost_breakdown(api_client, billing_key, ledger):
    answer = api_client.get("/api/v1/runs/", {"tenant": "acme"}, **bearer(billing_key))
    expected = sorted(ledger["acme_jan"] + ledger["acme_feb"], key=lambda run: run.created_at, reverse=True)
    assert ids(answer) == [run.openai_id for run in expected]
    first = answer.json()["results"][0]
    run = expected[0]
    assert first["tenant"] == "acme" and first["model"] == run.model and first["status"] == "completed"
    assert Decimal(first["cost_usd"]) == run.cost_total_usd and isinstance(first["cost_usd"], str)
    assert first["model_price_version"] == "gpt-5.4@2024-01-01" and first["priced"] is True


@pytest.mark.parametrize(
    ("params", "expected_keys"),
    [
        ({"model": "gpt-4.1"}, {"acme_jan:1", "acme_jan:2"}),
        ({"feature": "chat"}, {"acme_jan:0", "acme_jan:2"}),
        ({"user": "u1"}, {"acme_jan:0", "acme_jan:2"}),
        # Empty is a value, as the usage lines' "" key: the runs without that attribution, not every run.
        ({"feature": ""}, {"acme_feb:0"}),
        ({"user": ""}, set()),
        ({"start": "2026-01-09", "end": "2026-02-01"}, {"acme_jan:1", "acme_jan:2"}),
        ({"start": "2026-01-31T23:59:00Z", "end": "2026-02-01T00:00:01+00:00"}, {"acme_jan:2", "acme_feb:0"}),
        ({"status": "completed", "end": "2026-01-06"}, {"acme_jan:0"}),
        ({"status": "failed"}, set()),
    ],
)
def test_runs_filters(api_client, billing_key, ledger, params, expected_keys):
    named = {f"{group}:{index}": run.openai_id for group in ("acme_jan", "acme_feb") for index, run in enumerate(ledger[group])}
    answer = api_client.get("/api/v1/runs/", {"tenant": "acme", **params}, **bearer(billing_key))
    assert set(ids(answer)) == {named[key] for key in expected_keys}


@pytest.mark.parametrize(("field", "stored"), [("user_id", "u1 "), ("feature", " ")])
def test_text_filters_match_exactly_as_stored_not_trimmed(api_client, billing_key, tenant, field, stored):
    # Usage by end user shows "u1" and "u1 " as separate lines; the runs filter must select each one's runs.
    spaced = response(tenant, at(2026, 3, 4), attribution={field: stored})
    plain = response(tenant, at(2026, 3, 5), attribution={field: stored.strip()})  # "": no feature
    name = "user" if field == "user_id" else "feature"

    spaced_ids = ids(api_client.get("/api/v1/runs/", {name: stored}, **bearer(billing_key)))
    plain_ids = ids(api_client.get("/api/v1/runs/", {name: stored.strip()}, **bearer(billing_key)))

    assert spaced_ids == [spaced.openai_id]
    assert plain_ids == [plain.openai_id]


def test_min_cost_and_high_cost_filters(api_client, billing_key, tenant, ledger):
    costs = sorted(run.cost_total_usd for run in ledger["acme_jan"] + ledger["acme_feb"])
    threshold = costs[-2]
    answer = api_client.get("/api/v1/runs/", {"tenant": "acme", "min_cost": str(threshold)}, **bearer(billing_key))
    assert len(ids(answer)) == 2
    flagged = {run.openai_id for run in Run.objects.for_tenant(tenant).filter(is_high_cost=True)}
    assert set(ids(api_client.get("/api/v1/runs/", {"tenant": "acme", "high_cost": "true"}, **bearer(billing_key)))) == flagged
    not_flagged = ids(api_client.get("/api/v1/runs/", {"tenant": "acme", "high_cost": "false"}, **bearer(billing_key)))
    assert not set(not_flagged) & flagged and len(not_flagged) + len(flagged) == 4


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "done"}, "status"), ({"min_cost": "cheap"}, "min_cost"), ({"min_cost": "-1"}, "min_cost"),
     ({"start": "01/02/2026"}, "start"), ({"start": "2026-02-01", "end": "2026-01-01"}, "end"),
     ({"start": "9999-12-31T23:00:00-05:00"}, "start"), ({"end": "0001-01-01"}, "end"), ({"start": "2026-W09-1"}, "start"),
     ({"high_cost": "maybe"}, "high_cost"), ({"limit": "x"}, "limit"), ({"limit": "0"}, "limit"),
     ({"limit": "-5"}, "limit"), ({"limit": "501"}, "limit"), ({"limit": "١٠"}, "limit"),
     ({"limit": "1" * 5000}, "limit")],  # int() refuses 4,300+ digits with a ValueError (a 500 before)
)
def test_bad_run_filters_are_400_naming_the_field(api_client, billing_key, ledger, params, field):
    answer = api_client.get("/api/v1/runs/", params, **bearer(billing_key))
    assert answer.status_code == 400 and answer.json()["error"]["field"] == field


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def _keyset(**cursor) -> str:
    """A cursor shaped like the ones the API writes, holding what the test says."""
    import base64

    return base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()


@pytest.mark.parametrize("cursor", [
    "!!!", "%%%", "Zm9v", "abc", _b64("p=garbage"), _b64("p=2026-13-01"), _b64("r=1&p=x"),
    _b64("p=9999-12-31T23:00:00-05:00"), _b64("p=2026-05-01 00:10:00+00:00&x=1"), _b64("p=a\x00b"),
    _keyset(b=0, p=["2026-05-01T00:10:00", 5]), _keyset(b=0, p=["2026-05-01T05:40:00+05:30", 5]),
    _keyset(b=0, p=["2026-05-01T00:10:00+00:00", 2**63]), _keyset(b=0, p=["2026-05-01T00:10:00+00:00"]),
    _keyset(b=2, p=["2026-05-01T00:10:00+00:00", 5]), _keyset(b=0, p=["2026-05-01T00:10:00+00:00", 5], x=1),
    _keyset(b=0, p=[None, 5]), _keyset(b=0, p=[["2026"], 5]), _keyset(b=False, p=["2026-05-01T00:10:00+00:00", 5]),
])
def test_a_cursor_this_api_did_not_write_is_400_naming_it(api_client, billing_key, ledger, cursor):
    answer = api_client.get("/api/v1/runs/", {"cursor": cursor}, **bearer(billing_key))
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "cursor"


def test_cursor_pages_walk_every_run_once_with_a_constant_number_of_queries(
    api_client, billing_key, tenant, django_assert_max_num_queries
):
    base = at(2026, 5, 1)
    objects = [builders.response(created_at=base + dt.timedelta(minutes=index // 2), model="gpt-4.1") for index in range(45)]
    ingest(tenant, *objects)
    seen: list[str] = []
    url, params = "/api/v1/runs/", {"limit": 10}
    pages = 0
    while url:
        with django_assert_max_num_queries(4):  # key lookup, page query (tenant, prices joined), nothing per run
            answer = api_client.get(url, params, **bearer(billing_key))
        seen += ids(answer)
        url, params = answer.json()["next"], {}
        pages += 1
    assert pages == 5
    assert sorted(seen) == sorted(obj["id"] for obj in objects) and len(seen) == len(set(seen))
    created = [Run.objects.for_tenant(tenant).get(openai_id=openai_id).created_at for openai_id in seen]
    assert created == sorted(created, reverse=True)


def test_a_run_inserted_at_the_cursors_second_while_walking_is_neither_repeated_nor_skipped(
        api_client, billing_key, tenant):
    # Runs share created_at seconds. A cursor that counted rows at its second repeated one when a run was
    # inserted at that second between two pages (a client summing costs counted it twice).
    when = at(2026, 5, 1)
    ingest(tenant, *[builders.response(response_id=f"resp_same_{index}", created_at=when, model="gpt-4.1")
                     for index in range(3)])
    first = api_client.get("/api/v1/runs/", {"limit": 2}, **bearer(billing_key)).json()
    ingest(tenant, builders.response(response_id="resp_same_9", created_at=when, model="gpt-4.1"),
           builders.response(response_id="resp_newer", created_at=when + dt.timedelta(hours=1), model="gpt-4.1"))

    second = api_client.get(first["next"], **bearer(billing_key)).json()

    assert [run["id"] for run in first["results"]] == ["resp_same_2", "resp_same_1"]
    assert [run["id"] for run in second["results"]] == ["resp_same_0"]  # past the cursor's run, in id order
    back = api_client.get(second["previous"], **bearer(billing_key)).json()
    assert [run["id"] for run in back["results"]] == ["resp_same_2", "resp_same_1"]


def test_previous_links_walk_back_to_the_first_page(api_client, billing_key, tenant):
    ingest(tenant, *[builders.response(response_id=f"resp_walk_{index:02d}", created_at=at(2026, 5, 1, 12, index),
                                       model="gpt-4.1") for index in range(7)])
    pages = [api_client.get("/api/v1/runs/", {"limit": 3}, **bearer(billing_key)).json()]
    while pages[-1]["next"]:
        pages.append(api_client.get(pages[-1]["next"], **bearer(billing_key)).json())
    backwards = [pages[-1]]
    while backwards[-1]["previous"]:
        backwards.append(api_client.get(backwards[-1]["previous"], **bearer(billing_key)).json())

    forward_ids = [[run["id"] for run in page["results"]] for page in pages]
    assert forward_ids == [["resp_walk_06", "resp_walk_05", "resp_walk_04"],
                           ["resp_walk_03", "resp_walk_02", "resp_walk_01"], ["resp_walk_00"]]
    assert [[run["id"] for run in page["results"]] for page in backwards][1:] == forward_ids[:-1][::-1]
    assert pages[0]["previous"] is None and pages[-1]["next"] is None


def test_a_previous_link_to_deleted_runs_answers_the_lists_first_page(api_client, billing_key, tenant):
    ingest(tenant, *[builders.response(response_id=f"resp_gone_{index}", created_at=at(2026, 5, 1, 12, index),
                                       model="gpt-4.1") for index in range(4)])
    first = api_client.get("/api/v1/runs/", {"limit": 2}, **bearer(billing_key)).json()
    second = api_client.get(first["next"], **bearer(billing_key)).json()
    Run.objects.for_tenant(tenant).filter(openai_id__in=["resp_gone_3", "resp_gone_2"]).delete()

    back = api_client.get(second["previous"], **bearer(billing_key)).json()

    # Nothing is before the cursor now: the list starts there (not an empty page that reads as its end).
    assert [run["id"] for run in back["results"]] == ["resp_gone_1", "resp_gone_0"]
    assert back["previous"] is None and back["next"] is None


def test_run_detail_by_openai_id(api_client, billing_key, ledger):
    run = ledger["acme_jan"][1]
    answer = api_client.get(f"/api/v1/runs/{run.openai_id}/", **bearer(billing_key))
    assert answer.status_code == 200
    body = answer.json()
    assert body["id"] == run.openai_id and body["api"] == "responses" and body["cached_input_tokens"] == 20_000
    assert body["reasoning_tokens"] == 1_000 and body["web_search_calls"] == 2 and body["feature"] == "search"
    assert Decimal(body["cost_tools_usd"]) == run.cost_tools_usd
    missing = api_client.get("/api/v1/runs/run_missing/", **bearer(billing_key))
    assert missing.status_code == 404 and missing.json() == {"error": {"code": "not_found", "message": "Not found."}}


def test_cursor_pages_walk_more_runs_than_one_second_holds_without_repeating(api_client, billing_key, tenant):
    # 1,600 runs created in the same second: a page's cursor counts how many of them were returned already,
    # and DRF's default cap on that count (1,000) made the fourth page repeat the third forever.
    when = at(2026, 5, 1)
    ingest(tenant, *[builders.response(response_id=f"resp_same_{index:04d}", created_at=when, model="gpt-4.1")
                     for index in range(1_600)])
    seen: list[str] = []
    url, params = "/api/v1/runs/", {"limit": 500}
    while url and len(seen) < 5_000:
        answer = api_client.get(url, params, **bearer(billing_key))
        seen += ids(answer)
        url, params = answer.json()["next"], {}
    assert len(seen) == 1_600 and len(set(seen)) == 1_600
