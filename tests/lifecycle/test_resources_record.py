"""Recording a raw vector store, file or container (resources_record, used by ingest and the inventory
sync): attachment and expiry fields are read by the same functions ingest validates events with, so a
malformed one is refused as a LifecycleError naming the field and nothing is stored."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import DatabaseError

from apps.lifecycle import services
from apps.lifecycle.models import Container, StoredFile, VectorStore
from tests import builders

WHEN = dt.datetime(2026, 3, 4, 10, tzinfo=dt.UTC)


@pytest.mark.parametrize(("obj", "field"), [
    (builders.container(created_at=WHEN) | {"expires_after": {"minutes": 10**20}}, "object.expires_after.minutes"),
    (builders.container(created_at=WHEN) | {"expires_after": {"minutes": "abc"}}, "object.expires_after.minutes"),
    (builders.file(created_at=WHEN) | {"vector_store_ids": 5}, "object.vector_store_ids"),
    (builders.vector_store(created_at=WHEN) | {"thread_ids": 7}, "object.thread_ids"),
], ids=["minutes-huge", "minutes-text", "file-stores-number", "store-threads-number"])
def test_a_malformed_attachment_or_expiry_is_refused_naming_the_field(tenant, obj, field):
    with pytest.raises(services.LifecycleError, match=f"^{field}: "):
        services.resources_record(tenant=tenant, obj=obj)
    assert not any(model.objects.unscoped().exists() for model in (Container, StoredFile, VectorStore))


def test_a_file_report_without_attachments_keeps_the_ones_recorded(tenant):
    services.resources_record(tenant=tenant, obj=builders.file(file_id="file-a", created_at=WHEN)
                              | {"vector_store_ids": ["vs_1"]})
    services.resources_record(tenant=tenant, obj=builders.file(file_id="file-a", created_at=WHEN))
    assert StoredFile.objects.unscoped().get().vector_store_openai_ids == ["vs_1"]


def test_an_insert_refused_for_another_reason_than_a_concurrent_record_is_raised_as_it_is(tenant):
    # `raw` holding inf (no JSON column takes it; ingest's normalizer refuses it, a direct caller need not): the
    # insert fails, no concurrent insert of the same id exists, so the error is the database's, not DoesNotExist.
    obj = builders.vector_store(vector_store_id="vs_unstorable", created_at=WHEN) | {"limits": [float("inf")]}
    with pytest.raises(DatabaseError):
        services.resources_record(tenant=tenant, obj=obj)
    assert not VectorStore.objects.unscoped().exists()
