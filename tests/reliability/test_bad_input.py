"""Bad input beyond tests/ledger's fuzzing: targeted hypothesis strategies for the values that corrupt
ledgers (negative and huge token counts, wrong types, unknown statuses, absurd timestamps), deep JSON,
10 MB bodies and invalid UTF-8. Always a clear 4xx (or a per-event rejection naming the field), never a
500, and no stored row ever breaks the ledger's invariants."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.ledger.models import Run, RunStatus
from apps.ledger.services import ledger_check
from tests import builders
from tests.conftest import bearer

pytestmark = pytest.mark.django_db

WHEN = dt.datetime(2026, 11, 10, 9, 0, tzinfo=dt.UTC)
EXAMPLES = int(os.environ.get("DRILL_EXAMPLES", "60"))
BIG = 2**63

bad_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=-1), st.integers(min_value=2**53, max_value=2**80),
    st.floats(allow_nan=False), st.sampled_from(["12", "", "NaN", "1e309", True, None, [], {}]),
)
bad_statuses = st.one_of(st.text(max_size=30), st.integers(), st.none(), st.sampled_from(["COMPLETED", "done", "in-progress"]))
bad_times = st.one_of(st.integers(min_value=-(2**40), max_value=2**45), st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=20), st.none())


@st.composite
def corrupt_responses(draw):
    obj = builders.response(created_at=WHEN, response_id=f"resp_bad_{draw(st.integers(0, 10**9))}")
    field = draw(st.sampled_from(["input_tokens", "output_tokens", "cached", "reasoning", "status", "created_at",
                                  "model", "usage", "metadata"]))
    if field in ("input_tokens", "output_tokens"):
        obj["usage"][field] = draw(bad_numbers)
    elif field == "cached":
        obj["usage"]["input_tokens_details"]["cached_tokens"] = draw(bad_numbers)
    elif field == "reasoning":
        obj["usage"]["output_tokens_details"]["reasoning_tokens"] = draw(bad_numbers)
    elif field == "status":
        obj["status"] = draw(bad_statuses)
    elif field == "created_at":
        obj["created_at"] = draw(bad_times)
    elif field == "model":
        obj["model"] = draw(st.one_of(st.text(min_size=101, max_size=300), st.integers(), st.none(), st.just("")))
    elif field == "usage":
        obj["usage"] = draw(st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)))
    else:
        obj["metadata"] = draw(st.one_of(st.integers(), st.text(max_size=5),
                                         st.dictionaries(st.text(max_size=70), st.text(max_size=600), max_size=20)))
    return {"tenant": "acme", "object": obj}


def _post(client, key, body, **extra):
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post("/api/v1/ingest/", data=data, content_type="application/json", **bearer(key), **extra)


def _assert_ledger_sound():
    for run in Run.objects.unscoped().values("status", "input_tokens", "output_tokens", "cached_input_tokens",
                                             "reasoning_tokens", "cost_total_usd", "created_at", "model"):
        assert run["status"] in RunStatus.values
        for name in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"):
            assert 0 <= run[name] < BIG, run
        assert run["cached_input_tokens"] <= run["input_tokens"]
        assert run["cost_total_usd"] >= 0
        # The normalizer's bounds (see test_a_run_dated_before_openai_existed_is_rejected for the lower one): a
        # timestamp from 2015 up to the year 3000. Hypothesis draws integers, and one in 2100-3000 is accepted.
        assert dt.datetime(1970, 1, 1, tzinfo=dt.UTC) <= run["created_at"] < dt.datetime(3000, 1, 1, tzinfo=dt.UTC)
        assert run["model"]
    assert ledger_check() == []


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow])
@given(events=st.lists(corrupt_responses(), min_size=1, max_size=5))
def test_corrupt_values_are_rejected_per_event_naming_the_field_and_never_stored(api_client, ingest_key, tenant,
                                                                                 events):
    response = _post(api_client, ingest_key, {"events": events})
    assert response.status_code in (200, 400, 413), response.content[:500]
    if response.status_code == 200:
        for result in response.json()["results"]:
            if result["outcome"] == "rejected":
                assert result["error"]["message"]
    _assert_ledger_sound()


def test_deep_json_is_a_400_not_a_recursion_error(api_client, ingest_key, tenant):
    deep = "[" * 100_000 + "]" * 100_000
    response = _post(api_client, ingest_key, f'{{"events": {deep}}}'.encode())
    assert response.status_code == 400
    nested = {"events": [{"tenant": "acme", "object": builders.response(created_at=WHEN)}]}
    meta: dict = {}
    cursor = meta
    for _ in range(5000):
        cursor["a"] = {}
        cursor = cursor["a"]
    nested["events"][0]["object"]["metadata"] = meta
    try:
        body = json.dumps(nested).encode()
    except RecursionError:
        pytest.skip("this Python cannot even encode it")
    response = _post(api_client, ingest_key, body)
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert response.json()["results"][0]["outcome"] in ("rejected", "created")
    _assert_ledger_sound()


@pytest.mark.parametrize("method, path", [
    ("post", "/api/v1/tenants/"), ("patch", "/api/v1/tenants/acme/"), ("post", "/api/v1/prices/"),
    ("post", "/api/v1/tenants/acme/statements/2026-01/close"),
])
def test_deep_json_sent_to_any_write_endpoint_is_a_400_parse_error(api_client, admin_key, tenant, method, path):
    deep = '{"name": ' + "[" * 1000 + "]" * 1000 + "}"  # 2 KB; deeper than Python's JSON parser recurses

    response = getattr(api_client, method)(path, data=deep, content_type="application/json", **bearer(admin_key))

    assert (response.status_code, response.json()["error"]["code"]) == (400, "parse_error")


@pytest.mark.parametrize(("method", "path", "length"), [
    ("POST", "/api/v1/ingest/", "0"), ("POST", "/api/v1/ingest/", "-1"), ("PATCH", "/api/v1/tenants/acme/", ""),
    ("POST", "/api/v1/prices/", "0"),
])
def test_a_chunked_body_without_content_length_is_a_411_not_an_empty_body(api_client, admin_key, tenant, method,
                                                                          path, length):
    # Django reads a WSGI body up to its Content-Length: a chunked PATCH of legal_hold answered 200 behind
    # gunicorn having changed nothing.
    response = api_client.generic(method, path, b"", content_type="application/json", HTTP_TRANSFER_ENCODING="chunked",
                                  CONTENT_LENGTH=length, **bearer(admin_key))

    assert (response.status_code, response.json()["error"]["code"]) == (411, "length_required")
    tenant.refresh_from_db()
    assert not tenant.legal_hold


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/v1/ingest/"), ("PATCH", "/api/v1/tenants/acme/")])
@pytest.mark.parametrize("length", ["abc", "13, 13", "-5", "1e3", "١٣"])
def test_a_content_length_that_is_not_a_whole_number_is_a_400_naming_it(api_client, admin_key, tenant, method, path,
                                                                       length):
    # Read as no body: reading it then raised in ingest (a 500), and a PATCH answered 200 having changed nothing.
    response = api_client.generic(method, path, b'{"legal_hold": true}', content_type="application/json",
                                  CONTENT_LENGTH=length, **bearer(admin_key))

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "Content-Length"
    tenant.refresh_from_db()
    assert not tenant.legal_hold


def test_a_10_mb_body_is_a_413_before_it_is_parsed(api_client, ingest_key, tenant):
    event = {"tenant": "acme", "object": builders.response(created_at=WHEN)}
    body = json.dumps({"events": [event], "pad": "x" * (10 * 1024 * 1024)}).encode()
    response = _post(api_client, ingest_key, body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert Run.objects.unscoped().count() == 0


@pytest.mark.parametrize("raw", [b"\xff\xfe{\"events\": []}", b'{"events": ["\xc3\x28"]}', b"\xed\xa0\x80",
                                 b'{"events": [{"tenant": "acme\x00"}]}'])
def test_invalid_utf8_and_nul_bytes_are_a_clear_4xx_or_rejection(api_client, ingest_key, tenant, raw):
    response = _post(api_client, ingest_key, raw)
    assert response.status_code in (200, 400)
    if response.status_code == 400:
        assert response.json()["error"]["field"] == "body" or response.json()["error"]["message"]
    else:
        assert all(r["outcome"] == "rejected" for r in response.json()["results"])
    assert Run.objects.unscoped().count() == 0


@pytest.mark.parametrize("slug", ["acme\u0000", "ac\ud800me"])
def test_a_tenant_slug_postgresql_cannot_hold_is_rejected_per_event(api_client, ingest_key, tenant, slug):
    # Escaped in the JSON (valid JSON, unlike a raw NUL byte), so it reaches the tenant lookup; PostgreSQL
    # refuses NUL in a query, which was a 500 for the whole batch.
    body = json.dumps({"events": [{"tenant": slug, "object": builders.response(created_at=WHEN)},
                                  {"tenant": "acme", "object": builders.response(created_at=WHEN)}]})
    response = _post(api_client, ingest_key, body.encode())
    assert response.status_code == 200
    first, second = response.json()["results"]
    assert first["outcome"] == "rejected" and first["error"] == {
        "field": "tenant", "message": "must not contain NUL characters or invalid Unicode"}
    assert second["outcome"] == "created"


def test_an_answer_naming_a_lone_surrogate_the_request_sent_is_still_json(api_client, ingest_key, tenant):
    # The id and an unknown field name are echoed in the results; orjson cannot encode a lone surrogate (a 500).
    run = builders.response(created_at=WHEN)
    run["id"] = "resp_\ud800"
    body = json.dumps({"events": [{"tenant": "acme", "object": run},
                                  {"tenant": "acme", "object": builders.response(created_at=WHEN), "x\udfff": 1}]})
    response = _post(api_client, ingest_key, body.encode())
    assert response.status_code == 200
    first, second = json.loads(response.content)["results"]
    assert first["outcome"] == "rejected" and first["id"] == "resp_\ud800"
    assert second["outcome"] == "rejected" and second["error"]["field"] == "x\udfff"
    assert Run.objects.unscoped().count() == 0


def test_unknown_status_is_rejected_with_the_field_named(api_client, ingest_key, tenant):
    obj = builders.response(created_at=WHEN, response_id="resp_weird")
    obj["status"] = "exploded"
    result = _post(api_client, ingest_key, {"events": [{"tenant": "acme", "object": obj}]}).json()["results"][0]
    assert result["outcome"] == "rejected"
    assert "status" in (result["error"].get("field") or "") + result["error"]["message"]
    assert not Run.objects.unscoped().filter(openai_id="resp_weird").exists()


def test_a_run_dated_before_openai_existed_is_rejected(api_client, ingest_key, tenant):
    obj = builders.response(created_at=WHEN, response_id="resp_epoch")
    obj["created_at"] = 0
    result = _post(api_client, ingest_key, {"events": [{"tenant": "acme", "object": obj}]}).json()["results"][0]
    assert result["outcome"] == "rejected"


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "data", "status"), [
    ("get", "/runs/resp%00x/", None, 404),
    ("get", "/prices/?model=a%00b", None, 400),
    ("get", "/runs/?feature=a%00b", None, 400),
    ("post", "/lifecycle/sweeps/new/", {"kind": "threads", "tenant": "a\x00b"}, 400),
])
def test_a_nul_character_on_a_page_is_a_4xx_never_a_database_error(client, staff_user, method, path, data, status):
    """PostgreSQL refuses NUL in a query (psycopg raises before sending: a 500); one middleware refuses it."""
    client.force_login(staff_user)
    response = getattr(client, method)(path, data) if data else getattr(client, method)(path)
    assert response.status_code == status


@pytest.mark.django_db
def test_a_nul_character_in_an_api_parameter_is_a_400_naming_it(api_client, admin_key):
    answer = api_client.get("/api/v1/runs/?user=a%00b", **bearer(admin_key))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["field"], error["message"]) == ("invalid", "user", "Must not contain NUL characters.")


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
                                          "text/plain", ""])
def test_ingest_answers_a_body_that_is_not_said_to_be_json_with_a_415_naming_the_header(
        api_client, ingest_key, tenant, content_type):
    """As every other write does. The NUL middleware leaves the body alone whatever the type says: parsing it as a
    form consumed a multipart body (a 500) and read a "%00" inside the JSON as a NUL parameter."""
    body = {"events": [{"tenant": "acme", "object": builders.response(
        created_at=WHEN, response_id="resp_form", metadata={"url": "https://x.test/?q=%00&a=1"})}]}
    response = api_client.generic("POST", "/api/v1/ingest/", json.dumps(body), content_type=content_type,
                                  **bearer(ingest_key))
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert response.json()["error"]["field"] == "Content-Type"
    assert "application/json" in response.json()["error"]["message"]
    assert not Run.objects.for_tenant(tenant).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON", "application/vnd.runledger+json"])
def test_ingest_takes_json_with_any_parameters_and_a_percent_00_inside_a_string(
        api_client, ingest_key, tenant, content_type):
    body = {"events": [{"tenant": "acme", "object": builders.response(
        created_at=WHEN, response_id="resp_json", metadata={"url": "https://x.test/?q=%00&a=1"})}]}
    response = api_client.generic("POST", "/api/v1/ingest/", json.dumps(body), content_type=content_type,
                                  **bearer(ingest_key))
    assert response.status_code == 200 and response.json()["created"] == 1
