"""Vector store, file and container events whose attachment or expiry fields are malformed: each is rejected
on its own, naming the field, and the good events of the same batch are stored (the fields used to be read
only inside the batch's transaction, where one bad value failed the whole request with a 500)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from apps.ledger.models import Run, Thread
from apps.lifecycle.models import Container, StoredFile, VectorStore
from tests import builders
from tests.conftest import bearer

pytestmark = pytest.mark.django_db
WHEN = dt.datetime(2026, 3, 4, 10, tzinfo=dt.UTC)


def _post(api_client, key, events):
    api_client.raise_request_exception = False
    return api_client.post("/api/v1/ingest/", data=json.dumps({"events": events}), content_type="application/json",
                           **bearer(key))


def _container(**fields):
    return builders.container(container_id="cntr_bad", created_at=WHEN) | fields


def _file(**fields):
    return builders.file(file_id="file-bad", created_at=WHEN) | fields


def _store(**fields):
    return builders.vector_store(vector_store_id="vs_bad", created_at=WHEN) | fields


@pytest.mark.parametrize(("bad", "field"), [
    (_container(expires_after={"anchor": "last_active_at", "minutes": "abc"}), "object.expires_after.minutes"),
    (_container(expires_after={"anchor": "last_active_at", "minutes": 10**20}), "object.expires_after.minutes"),
    (_container(expires_after={"anchor": "last_active_at", "minutes": -1}), "object.expires_after.minutes"),
    (_container(expires_after={"anchor": "last_active_at", "minutes": True}), "object.expires_after.minutes"),
    (_container(expires_after="20 minutes"), "object.expires_after"),
    (_file(vector_store_ids=5), "object.vector_store_ids"),
    (_file(vector_store_ids="vs_1"), "object.vector_store_ids"),
    (_file(thread_ids=7), "object.thread_ids"),
    (_file(thread_ids=[{"id": "thread_1"}]), "object.thread_ids"),
    (_store(thread_ids=7), "object.thread_ids"),
    (_store(thread_ids=["thread_\x00"]), "object.thread_ids"),
    # Stored whole as jsonb on PostgreSQL, which refuses NUL and lone surrogates anywhere (found by the fuzz test).
    (_store(extra={"nested": {"k\x00ey": 1}}), "object.extra.nested"),
    (_file(extra=["\ud800"]), "object.extra.0"),
    # Stored in 20-character columns: PostgreSQL refused a longer one with a 500 for the whole batch.
    (_store(status="s" * 21), "object.status"),
    (_container(status="s" * 21), "object.status"),
], ids=["minutes-text", "minutes-huge", "minutes-negative", "minutes-bool", "expires-after-text",
        "file-stores-number", "file-stores-string", "file-threads-number", "file-threads-objects",
        "store-threads-number", "store-threads-nul", "store-nul-in-a-nested-key", "file-lone-surrogate",
        "store-status-too-long", "container-status-too-long"])
def test_a_malformed_resource_is_rejected_naming_its_field_and_the_good_run_beside_it_is_stored(
        api_client, tenant, ingest_key, bad, field):
    good = builders.response(response_id="resp_good_1", created_at=WHEN)
    response = _post(api_client, ingest_key, [{"tenant": "acme", "object": good}, {"tenant": "acme", "object": bad}])
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    assert [r["outcome"] for r in body["results"]] == ["created", "rejected"]
    assert body["results"][1]["error"]["field"] == field
    assert Run.objects.for_tenant(tenant).filter(openai_id="resp_good_1").exists()
    assert not any(model.objects.unscoped().exists() for model in (Container, StoredFile, VectorStore))


def test_well_formed_attachments_and_expiry_are_stored(api_client, tenant, ingest_key):
    events = [
        {"tenant": "acme", "object": _container()},
        {"tenant": "acme", "object": _file(vector_store_ids=["vs_1"], thread_ids=["thread_1"])},
        {"tenant": "acme", "object": _store(thread_ids=["thread_2", "thread_1"])},
    ]
    response = _post(api_client, ingest_key, events)
    assert response.status_code == 200 and response.json()["created"] == 3, response.content[:300]
    assert Container.objects.unscoped().get().expires_after_minutes == 20
    file = StoredFile.objects.unscoped().get()
    assert (file.vector_store_openai_ids, file.thread_openai_ids) == (["vs_1"], ["thread_1"])
    assert VectorStore.objects.unscoped().get().thread_openai_ids == ["thread_1", "thread_2"]


_RESOURCES = {
    "thread": lambda: builders.thread(thread_id="thread_bad", created_at=WHEN),
    "conversation": lambda: builders.conversation(conversation_id="conv_bad", created_at=WHEN),
    "vector_store": _store,
    "file": _file,
    "container": _container,
}


def _post_text(api_client, key, body: str):
    api_client.raise_request_exception = False
    return api_client.post("/api/v1/ingest/", data=body.encode(), content_type="application/json", **bearer(key))


@pytest.mark.parametrize("kind", _RESOURCES)
@pytest.mark.parametrize(("json_text", "field", "message"), [
    # 600 levels: orjson reads JSON up to 1,024 deep, and checking it recursively overflowed Python's stack.
    ("[" * 600 + "]" * 600, "object.extra", "must not be nested more than 32 levels deep"),
    # Valid JSON no float holds: read as inf, which no JSON column stores (SQLite's CHECK and PostgreSQL refuse it).
    ('{"limits": [1, 1e400]}', "object.extra.limits.1", "must be a finite number (this one does not fit a float)"),
], ids=["nested-600-deep", "number-1e400"])
def test_a_resource_no_json_column_holds_is_rejected_naming_its_field_and_the_run_beside_it_is_stored(
        api_client, tenant, ingest_key, kind, json_text, field, message):
    good = builders.response(response_id="resp_good_2", created_at=WHEN)
    events = [{"tenant": "acme", "object": good}, {"tenant": "acme", "object": _RESOURCES[kind]() | {"extra": "@"}}]
    response = _post_text(api_client, ingest_key, json.dumps({"events": events}).replace('"@"', json_text))
    assert response.status_code == 200, response.content[:300]
    assert [(r["outcome"], r.get("error")) for r in response.json()["results"]] == [
        ("created", None), ("rejected", {"field": field, "message": message})]
    assert Run.objects.for_tenant(tenant).filter(openai_id="resp_good_2").exists()
    assert not any(model.objects.unscoped().exists() for model in (Container, StoredFile, VectorStore, Thread))


def test_a_number_no_float_holds_in_run_metadata_is_rejected_naming_the_key(api_client, tenant, ingest_key):
    good = builders.response(response_id="resp_good_3", created_at=WHEN)
    bad = builders.response(response_id="resp_inf", created_at=WHEN, metadata={"score": "@"})
    body = json.dumps({"events": [{"tenant": "acme", "object": good}, {"tenant": "acme", "object": bad}]})
    response = _post_text(api_client, ingest_key, body.replace('"@"', "1e400"))
    assert response.status_code == 200, response.content[:300]
    assert response.json()["results"][1]["error"] == {
        "field": "object.metadata.score", "message": "must be a finite number (this one does not fit a float)"}
    assert list(Run.objects.for_tenant(tenant).values_list("openai_id", flat=True)) == ["resp_good_3"]


@pytest.mark.parametrize("kind", ["run", *_RESOURCES])
def test_an_integer_past_64_bits_is_rejected_naming_its_field_and_the_run_beside_it_is_stored(
        api_client, tenant, ingest_key, kind):
    # orjson reads such an integer as a float, but a lone surrogate escape anywhere in the body (here in a run's
    # `instructions`, which the ledger does not store) sends the whole body to Python's json, which keeps it
    # whole; the ledger's JSON encoder then refused it at the write: a 500 for the batch.
    good = builders.assistants_run(run_id="run_good_4", created_at=WHEN) | {"instructions": "\ud800"}
    if kind == "run":
        bad, field = builders.response(response_id="resp_big", created_at=WHEN, metadata={"count": 2**64}), \
            "object.metadata.count"
    else:
        bad, field = _RESOURCES[kind]() | {"metadata": {"count": -(2**63) - 1}}, "object.metadata.count"
    body = json.dumps({"events": [{"tenant": "acme", "object": good}, {"tenant": "acme", "object": bad}]})
    response = _post_text(api_client, ingest_key, body)
    assert response.status_code == 200, response.content[:300]
    assert [(r["outcome"], r.get("error")) for r in response.json()["results"]] == [
        ("created", None),
        ("rejected", {"field": field, "message": "must be a number that fits 64 bits (this one does not fit the stored JSON)"})]
    assert list(Run.objects.for_tenant(tenant).values_list("openai_id", flat=True)) == ["run_good_4"]
    assert not any(model.objects.unscoped().exists() for model in (Container, StoredFile, VectorStore))
