"""A vector store or file that a live thread's tool_resources name is never swept, whether the thread was
reported before or after the store or file reached the ledger; once the thread is gone, it is swept as any
other. Against the sandbox through the real SDK."""

from __future__ import annotations

import datetime as dt

import pytest

from apps.ledger.models import Thread, ThreadToolResource
from apps.ledger.services import ingest_events
from apps.lifecycle import services
from apps.lifecycle.models import Outcome, SweepItem

DAY = 86400


def _ingest(tenant, *objects) -> None:
    for obj in objects:
        assert ingest_events(events=[{"tenant": tenant.slug, "object": obj.to_dict()}]).rejected == 0


def _sweep(sandbox, provider, kind: str) -> dict[str, str]:
    sweep = services.sweep_create(kind=kind, as_of=sandbox.clock.datetime())
    services.sweep_run_to_completion(sweep_id=sweep.pk, provider=provider, sleep=lambda s: None)
    return dict(SweepItem.objects.unscoped().filter(sweep=sweep).values_list("openai_id", "outcome"))


@pytest.fixture
def policies(tenant):
    tenant.thread_retention_days = 60
    tenant.vector_store_idle_days = 30
    tenant.save()
    return tenant


@pytest.mark.parametrize("thread_first", [False, True], ids=["store then thread", "thread then store"])
def test_a_store_a_live_thread_uses_is_kept_past_its_idle_days(sandbox, openai_client, provider, policies,
                                                                 thread_first):
    store = openai_client.vector_stores.create(name="kb", metadata={"tenant": policies.slug})
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "hello"}],
                                               tool_resources={"file_search": {"vector_store_ids": [store.id]}})
    _ingest(policies, *((thread, store) if thread_first else (store, thread)))
    assert ThreadToolResource.objects.for_tenant(policies).filter(resource_openai_id=store.id).exists()
    sandbox.advance(35 * DAY)  # idle past 30 days; the thread (60) lives on
    services.inventory_sync(provider=provider)

    outcomes = _sweep(sandbox, provider, "vector_stores")

    assert outcomes.get(store.id) != Outcome.DELETED
    assert store.id in sandbox.state.vector_stores


def test_a_file_a_live_threads_code_interpreter_uses_is_kept(sandbox, openai_client, provider, policies):
    file = openai_client.files.create(file=("data.csv", b"a,b\n1,2\n"), purpose="assistants")
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "analyse"}],
                                               tool_resources={"code_interpreter": {"file_ids": [file.id]}})
    _ingest(policies, thread, file)
    sandbox.advance(8 * DAY)  # past the files' 7 days

    outcomes = _sweep(sandbox, provider, "files")

    assert outcomes.get(file.id) != Outcome.DELETED
    assert file.id in sandbox.state.files


def test_once_the_thread_is_gone_its_store_is_swept_as_any_other(sandbox, openai_client, provider, policies):
    store = openai_client.vector_stores.create(name="kb", metadata={"tenant": policies.slug})
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "hello"}],
                                               tool_resources={"file_search": {"vector_store_ids": [store.id]}})
    _ingest(policies, store, thread)
    Thread.objects.for_tenant(policies).filter(openai_id=thread.id).update(status=Thread.Status.DELETED)
    sandbox.advance(35 * DAY)
    services.inventory_sync(provider=provider)

    assert _sweep(sandbox, provider, "vector_stores")[store.id] == Outcome.DELETED


def test_a_dry_run_records_nothing_on_the_stores_its_threads_use(sandbox, openai_client, provider, tenant):
    """Its re-check of an expired thread reads the thread's tool_resources; only a real sweep records them
    (and gives an orphan store the thread's tenant)."""
    from apps.lifecycle.models import VectorStore

    tenant.thread_retention_days = 30
    tenant.save()
    store = openai_client.vector_stores.create(name="no tenant")  # no metadata: an orphan once listed
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "hi"}],
                                               tool_resources={"file_search": {"vector_store_ids": [store.id]}})
    _ingest(tenant, thread)
    services.inventory_sync(provider=provider)
    fields = ("tenant_id", "tenant_source", "thread_openai_ids")
    before = VectorStore.objects.unscoped().values(*fields).get(openai_id=store.id)
    sandbox.advance(31 * DAY)
    preview = services.sweep_create(kind="threads", dry_run=True, as_of=sandbox.clock.datetime())
    services.sweep_run_to_completion(sweep_id=preview.pk, provider=provider, sleep=lambda s: None)

    assert VectorStore.objects.unscoped().values(*fields).get(openai_id=store.id) == before


def test_another_tenants_thread_naming_a_store_does_not_keep_it(sandbox, openai_client, provider, policies,
                                                                other_tenant):
    other_tenant.thread_retention_days = 60
    other_tenant.save()
    store = openai_client.vector_stores.create(name="kb", metadata={"tenant": policies.slug})
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "hello"}],
                                               tool_resources={"file_search": {"vector_store_ids": [store.id]}})
    _ingest(policies, store)
    _ingest(other_tenant, thread)  # globex's thread names acme's store
    sandbox.advance(35 * DAY)
    services.inventory_sync(provider=provider)

    assert _sweep(sandbox, provider, "vector_stores")[store.id] == Outcome.DELETED


@pytest.mark.parametrize(("tool_resources", "field"), [
    ({"file_search": {"vector_store_ids": "vs_abc"}}, "object.tool_resources.file_search.vector_store_ids"),
    ({"code_interpreter": {"file_ids": ["file_" + "x" * 200]}}, "object.tool_resources.code_interpreter.file_ids"),
    ({"code_interpreter": ["file_abc"]}, "object.tool_resources.code_interpreter"),
])
def test_a_thread_whose_tool_resources_ids_cannot_be_stored_is_refused_naming_them(tenant, tool_resources, field):
    from tests import builders

    bad = {**builders.thread(thread_id="thread_bad", created_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC)),
           "tool_resources": tool_resources}
    good = builders.thread(thread_id="thread_good", created_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    result = ingest_events(events=[{"tenant": tenant.slug, "object": bad}, {"tenant": tenant.slug, "object": good}])
    assert [r.outcome for r in result.results] == ["rejected", "created"]
    assert result.results[0].error["field"] == field
