"""POST /api/v1/ingest/: contract, per-event rejection, limits, isolation, and no 500 on any body."""

import datetime as dt
import json

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.ledger.models import Run
from tests import builders
from tests.conftest import bearer

URL = "/api/v1/ingest/"
WHEN = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def _post(client, key, body, **extra):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.generic("POST", URL, data, content_type="application/json", **bearer(key), **extra)


def test_ingest_stores_runs_and_answers_per_event(api_client, ingest_key, tenant):
    run = builders.assistants_run(run_id="run_api_1", created_at=WHEN, prompt_tokens=20000, completion_tokens=500)
    response = _post(api_client, ingest_key, {"events": [
        {"tenant": "acme", "object": run, "attribution": {"user_id": "u1", "feature": "qa"}},
    ]})
    assert response.status_code == 200, response.content
    assert response.json() == {"created": 1, "updated": 0, "unchanged": 0, "rejected": 0,
                               "results": [{"index": 0, "id": "run_api_1", "outcome": "created"}]}
    stored = Run.objects.for_tenant(tenant).get(openai_id="run_api_1")
    assert (stored.user_id, stored.feature, str(stored.cost_total_usd)) == ("u1", "qa", "0.0575000000")


def test_mixed_batch_stores_good_events_and_names_each_bad_one(api_client, ingest_key, tenant):
    good_a = builders.assistants_run(run_id="run_good_a", created_at=WHEN)
    good_b = builders.response(response_id="resp_good_b", created_at=WHEN)
    bad_usage = builders.assistants_run(run_id="run_bad_usage", created_at=WHEN)
    bad_usage["usage"]["prompt_tokens"] = -5
    bad_status = builders.response(response_id="resp_bad_status", created_at=WHEN, status="exploded")
    response = _post(api_client, ingest_key, {"events": [
        {"tenant": "acme", "object": good_a},
        {"tenant": "acme", "object": bad_usage},
        "not an event",
        {"tenant": "nobody", "object": builders.assistants_run(created_at=WHEN)},
        {"tenant": "acme", "object": good_b},
        {"tenant": "acme", "object": bad_status},
        {"tenant": "acme", "object": {"object": "chat.completion", "id": "x"}},
        {"object": builders.assistants_run(created_at=WHEN)},
    ]})
    body = response.json()
    assert response.status_code == 200
    assert (body["created"], body["rejected"]) == (2, 6)
    errors = {r["index"]: r["error"] for r in body["results"] if r["outcome"] == "rejected"}
    assert errors[1] == {"field": "object.usage.prompt_tokens", "message": "must be a whole number from 0 to 10**12"}
    assert errors[2]["message"] == "each event must be an object"
    assert errors[3]["field"] == "tenant" and "unknown tenant" in errors[3]["message"]
    assert errors[5]["field"] == "object.status"
    assert errors[6]["field"] == "object.object"
    assert errors[7]["field"] == "tenant"
    assert set(Run.objects.for_tenant(tenant).values_list("openai_id", flat=True)) == {"run_good_a", "resp_good_b"}


def test_tenant_bound_ingest_key_cannot_write_another_tenant(api_client, tenant_ingest_key, tenant, other_tenant):
    theirs = builders.assistants_run(run_id="run_theirs", created_at=WHEN, metadata={"tenant": "globex"})
    explicit = builders.assistants_run(run_id="run_explicit", created_at=WHEN)
    mine = builders.assistants_run(run_id="run_mine", created_at=WHEN)
    response = _post(api_client, tenant_ingest_key, {"events": [
        {"object": theirs}, {"tenant": "globex", "object": explicit}, {"object": mine},
    ]})
    body = response.json()
    assert [r["outcome"] for r in body["results"]] == ["rejected", "rejected", "created"]
    assert body["results"][0]["error"]["field"] == "object.metadata.tenant"
    assert "may only write tenant 'acme'" in body["results"][1]["error"]["message"]
    assert not Run.objects.for_tenant(other_tenant).exists()
    assert Run.objects.for_tenant(tenant).get().openai_id == "run_mine"


def test_tenant_bound_key_cannot_overwrite_a_run_recorded_for_another_tenant(api_client, ingest_key, tenant_ingest_key,
                                                                            tenant, other_tenant):
    run = builders.assistants_run(run_id="run_globex", created_at=WHEN, status="in_progress")
    assert _post(api_client, ingest_key, {"events": [{"tenant": "globex", "object": run}]}).json()["created"] == 1
    later = builders.assistants_run(run_id="run_globex", thread_id="thread_elsewhere", created_at=WHEN,
                                   prompt_tokens=10**6)
    body = _post(api_client, tenant_ingest_key, {"events": [{"object": later}]}).json()
    assert body["results"][0]["error"] == {"field": "object.id", "message": "this run is recorded for another tenant"}
    assert Run.objects.for_tenant(other_tenant).get().status == "in_progress"


def test_tenant_bound_key_cannot_rewrite_a_resource_recorded_for_another_tenant(api_client, ingest_key,
                                                                                  tenant_ingest_key, other_tenant):
    # A vector store's size is billed as storage and its dates decide the sweeps: another tenant's report of
    # the same id is refused and changes nothing, as for runs and threads.
    from apps.lifecycle.models import VectorStore

    theirs = builders.vector_store(vector_store_id="vs_globex", created_at=WHEN, usage_bytes=10**9)
    assert _post(api_client, ingest_key, {"events": [{"tenant": "globex", "object": theirs}]}).json()["created"] == 1
    rewritten = {**theirs, "name": "overwritten", "usage_bytes": 1, "expires_at": 1_700_000_000}
    mine = builders.vector_store(vector_store_id="vs_acme", created_at=WHEN)
    body = _post(api_client, tenant_ingest_key, {"events": [{"object": rewritten}, {"object": mine}]}).json()
    assert [r["outcome"] for r in body["results"]] == ["rejected", "created"]
    assert body["results"][0]["error"] == {"field": "object.id",
                                           "message": "this resource is recorded for another tenant"}
    stored = VectorStore.objects.for_tenant(other_tenant).get()
    assert (stored.name, stored.usage_bytes, stored.expires_at, stored.raw) == ("docs", 10**9, None, theirs)


def test_ingest_key_cannot_read(api_client, tenant_ingest_key, ingest_key):
    for key in (tenant_ingest_key, ingest_key):
        assert api_client.get("/api/v1/tenants/", **bearer(key)).status_code == 403
        assert api_client.get(URL, **bearer(key)).status_code == 405


def test_billing_key_cannot_ingest_and_anonymous_is_refused(api_client, billing_key, tenant):
    body = {"events": [{"tenant": "acme", "object": builders.assistants_run(created_at=WHEN)}]}
    assert _post(api_client, billing_key, body).status_code == 403
    assert api_client.post(URL, body, format="json").status_code in (401, 403)
    assert not Run.objects.for_tenant(tenant).exists()


@pytest.mark.parametrize(("body", "field"), [
    (b"{not json", "body"),
    (b"\xff\xfe{}", "body"),
    (b"[1, 2]", "body"),
    (b'{"events": {}}', "events"),
    (b'{"events": [], "extra": 1}', "extra"),
    (b'{"events": [NaN]}', "body"),
    (b"", "body"),
])
def test_malformed_bodies_get_400_naming_the_field(api_client, ingest_key, body, field):
    response = _post(api_client, ingest_key, body)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


def test_too_many_events_and_oversized_bodies_get_413(api_client, ingest_key, tenant):
    with override_settings(INGEST_MAX_EVENTS=2):
        body = {"events": [{"tenant": "acme", "object": builders.assistants_run(created_at=WHEN)} for _ in range(3)]}
        response = _post(api_client, ingest_key, body)
        assert response.status_code == 413 and response.json()["error"]["field"] == "events"
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000):
        response = _post(api_client, ingest_key, {"events": [], "pad": "x" * 2000})
        assert response.status_code == 413
    assert not Run.objects.for_tenant(tenant).exists()


def test_nul_characters_are_rejected_per_event(api_client, ingest_key, tenant):
    run = builders.assistants_run(run_id="run_nul", created_at=WHEN, metadata={"feature": "a\x00b"})
    ok = builders.assistants_run(run_id="run_ok", created_at=WHEN)
    body = _post(api_client, ingest_key, {"events": [{"tenant": "acme", "object": run},
                                                      {"tenant": "acme", "object": ok}]}).json()
    assert [r["outcome"] for r in body["results"]] == ["rejected", "created"]


@pytest.mark.parametrize(("obj", "field"), [
    ({**builders.assistants_run(run_id="run_bad_code", created_at=WHEN, status="failed"),
      "last_error": {"code": ["server_error"], "message": "boom"}}, "object.last_error.code"),
    ({**builders.response(response_id="resp_bad_code", created_at=WHEN), "status": "failed",
      "error": {"code": 500, "message": "boom"}}, "object.error.code"),
    ({**builders.response(response_id="resp_bad_reason", created_at=WHEN), "status": "incomplete",
      "incomplete_details": {"reason": ["max_output_tokens"]}}, "object.incomplete_details.reason"),
    # Stored as 0, a usage object without its own counts would bill the run nothing.
    ({**builders.assistants_run(run_id="run_null_tokens", created_at=WHEN),
      "usage": {"prompt_tokens": None, "completion_tokens": 5, "total_tokens": 5}}, "object.usage.prompt_tokens"),
    ({**builders.response(response_id="resp_no_output_tokens", created_at=WHEN),
      "usage": {"input_tokens": 12, "total_tokens": 12}}, "object.usage.output_tokens"),
])
def test_a_malformed_error_code_or_token_count_is_rejected_naming_it_and_the_event_beside_it_stored(
        api_client, ingest_key, tenant, obj, field):
    ok = builders.assistants_run(run_id="run_ok", created_at=WHEN)
    body = _post(api_client, ingest_key, {"events": [{"tenant": "acme", "object": obj},
                                                      {"tenant": "acme", "object": ok}]}).json()
    assert [r["outcome"] for r in body["results"]] == ["rejected", "created"]
    assert body["results"][0]["error"]["field"] == field
    assert list(Run.objects.for_tenant(tenant).values_list("openai_id", flat=True)) == ["run_ok"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
run_keys = st.sampled_from(["id", "object", "created_at", "status", "model", "usage", "thread_id", "metadata",
                            "output", "conversation", "tools", "last_error", "expires_at", "completed_at"])


@st.composite
def mutated_events(draw):
    base = draw(st.sampled_from(["run", "response", "thread", "vector_store"]))
    if base == "run":
        obj = builders.assistants_run(created_at=WHEN, status=draw(st.sampled_from(["completed", "queued"])))
    elif base == "response":
        obj = builders.response(created_at=WHEN, code_interpreter_calls=1)
    elif base == "thread":
        obj = builders.thread(created_at=WHEN)
    else:
        obj = builders.vector_store(created_at=WHEN)
    for _ in range(draw(st.integers(0, 3))):
        obj[draw(run_keys)] = draw(json_values)
    event = {"tenant": draw(st.sampled_from(["acme", "globex", "nobody", 7, None])), "object": obj}
    if draw(st.booleans()):
        event["attribution"] = draw(json_values)
    return event


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(mutated_events() | json_values, max_size=6), raw=st.binary(max_size=40))
def test_fuzzed_bodies_never_500(api_client, ingest_key, tenant, other_tenant, events, raw):
    response = _post(api_client, ingest_key, {"events": events})
    assert response.status_code in (200, 400, 413), response.content
    if response.status_code == 200:
        body = response.json()
        assert len(body["results"]) == len(events)
        assert body["created"] + body["updated"] + body["unchanged"] + body["rejected"] == len(events)
    assert _post(api_client, ingest_key, raw).status_code in (200, 400)


def test_openapi_schema_documents_the_ingest_endpoint(api_client):
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/v1/ingest/"]["post"]
    assert operation["operationId"] == "ingest_events"
    assert "IngestRequest" in json.dumps(operation["requestBody"])
    assert {"200", "400", "413"} <= set(operation["responses"])


def test_openapi_schema_documents_the_ingest_rate_limit(api_client):
    """Ingest answers 429 past the key's rate (docs/api.md); the schema listed every other endpoint's 429 but
    not this one's, so a client generated from it had no way to know it must wait and re-send."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    responses = schema["paths"]["/api/v1/ingest/"]["post"]["responses"]
    assert "429" in responses
    assert "Retry-After" in responses["429"]["description"]
