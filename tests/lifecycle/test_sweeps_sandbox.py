"""Sweeps against the OpenAI sandbox through the real SDK (RunLedger's provider): retention boundaries,
legal hold, dry run vs real run, a sweep killed mid-way and resumed, a 429 storm under a shared rate
limit, and vector store / file / container cleanup after an inventory sync."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from apps.ledger.models import Thread
from apps.ledger.services import ingest_events
from apps.lifecycle import services
from apps.lifecycle.models import ArchivedItem, Outcome, StoredFile, SweepItem, VectorStore
from apps.provider.client import OpenAIProvider
from apps.provider.ratelimit import SharedRateLimiter

DAY = 86400


def _record(tenant, obj) -> None:
    result = ingest_events(events=[{"tenant": tenant.slug, "object": obj}])
    assert result.results[0].outcome != "rejected", result.results[0]


def _make_thread(openai_client, tenant, **kwargs) -> str:
    thread = openai_client.beta.threads.create(messages=[{"role": "user", "content": "hello"}], **kwargs)
    _record(tenant, thread.to_dict())
    return thread.id


def _as_of(sandbox) -> dt.datetime:
    return sandbox.clock.datetime()


def _run(sweep, provider):
    return services.sweep_run_to_completion(sweep_id=sweep.pk, provider=provider, sleep=lambda s: None)


@pytest.fixture
def retention(tenant, other_tenant):
    for t in (tenant, other_tenant):
        t.thread_retention_days = 30
        t.save()
    return tenant


def test_retention_boundary_at_the_sandbox_and_in_the_ledger(sandbox, openai_client, provider, retention):
    tenant = retention
    old = _make_thread(openai_client, tenant)
    sandbox.advance(2 * DAY)
    recent = _make_thread(openai_client, tenant)
    sandbox.advance(29 * DAY)  # old: 31 days idle, recent: 29 days idle
    sweep = services.sweep_create(kind="threads", as_of=_as_of(sandbox))
    assert _run(sweep, provider).status == "finished"

    assert old not in sandbox.state.threads and recent in sandbox.state.threads
    assert Thread.objects.for_tenant(tenant).get(openai_id=old).status == "deleted"
    assert Thread.objects.for_tenant(tenant).get(openai_id=recent).status == "active"
    audit = SweepItem.objects.for_tenant(tenant).get(sweep=sweep)
    assert (audit.openai_id, audit.outcome, audit.resource_type) == (old, Outcome.DELETED, "thread")
    assert audit.processed_at is not None and "thread_retention_days=30" in audit.rule


def test_legal_hold_keeps_every_thread(sandbox, openai_client, provider, retention, other_tenant):
    other_tenant.legal_hold = True
    other_tenant.save()
    held = [_make_thread(openai_client, other_tenant) for _ in range(3)]
    sandbox.advance(400 * DAY)
    sweep = services.sweep_create(kind="threads", as_of=_as_of(sandbox))
    _run(sweep, provider)
    assert all(thread_id in sandbox.state.threads for thread_id in held)
    assert not SweepItem.objects.unscoped().filter(sweep=sweep).exists()


def test_dry_run_deletes_nothing_and_lists_exactly_what_the_real_run_deletes(sandbox, openai_client, provider, retention):
    tenant = retention
    old = {_make_thread(openai_client, tenant) for _ in range(4)}
    conversation = openai_client.conversations.create(items=[{"type": "message", "role": "user", "content": "hi"}])
    _record(tenant, conversation.to_dict())
    old.add(conversation.id)
    sandbox.advance(10 * DAY)
    fresh = _make_thread(openai_client, tenant)
    sandbox.advance(25 * DAY)

    preview = services.sweep_create(kind="threads", dry_run=True, as_of=_as_of(sandbox))
    _run(preview, provider)
    listed = set(SweepItem.objects.unscoped().filter(sweep=preview, outcome=Outcome.WOULD_DELETE)
                 .values_list("openai_id", flat=True))
    assert listed == old
    assert old <= set(sandbox.state.threads) | set(sandbox.state.conversations)
    assert Thread.objects.for_tenant(tenant).filter(status="active").count() == 6

    real = services.sweep_create(kind="threads", as_of=_as_of(sandbox))
    _run(real, provider)
    deleted = set(SweepItem.objects.unscoped().filter(sweep=real, outcome=Outcome.DELETED).values_list("openai_id", flat=True))
    assert deleted == listed
    assert fresh in sandbox.state.threads
    assert not (old & (set(sandbox.state.threads) | set(sandbox.state.conversations)))


def test_archive_before_delete_copies_messages_into_runledger(sandbox, openai_client, provider, retention):
    tenant = retention
    tenant.archive_before_delete = True
    tenant.save()
    thread_id = _make_thread(openai_client, tenant)
    openai_client.beta.threads.messages.create(thread_id, role="user", content="second")
    sandbox.advance(31 * DAY)
    _run(services.sweep_create(kind="threads", as_of=_as_of(sandbox)), provider)
    archived = list(ArchivedItem.objects.for_tenant(tenant).filter(thread_openai_id=thread_id).order_by("position"))
    assert len(archived) == 2 and thread_id not in sandbox.state.threads
    # Oldest first, though both were written in the same second.
    assert [item.data["content"][0]["text"]["value"] for item in archived][1] == "second"


def test_an_archived_conversation_keeps_its_items_oldest_first(sandbox, openai_client, provider, retention):
    """Conversation items carry no timestamp: the archive is the only record of their order once deleted."""
    tenant = retention
    tenant.archive_before_delete = True
    tenant.save()
    conversation = openai_client.conversations.create(items=[{"type": "message", "role": "user", "content": "first"}])
    openai_client.responses.create(model="gpt-6.1-sol", conversation=conversation.id, input="second")
    _record(tenant, conversation.to_dict())
    sandbox.advance(31 * DAY)
    preview = services.sweep_create(kind="threads", dry_run=True, as_of=_as_of(sandbox))
    _run(preview, provider)
    _run(services.sweep_create(kind="threads", preview_of=preview), provider)

    archived = list(ArchivedItem.objects.for_tenant(tenant).filter(thread_openai_id=conversation.id)
                    .order_by("position"))
    assert [(item.data.get("role"), item.data["content"][0].get("text")) for item in archived][:2] == [
        ("user", "first"), ("user", "second")]


def test_conversation_used_after_its_dry_run_survives_the_confirmation(sandbox, openai_client, provider, retention):
    tenant = retention
    conversation = openai_client.conversations.create(items=[{"type": "message", "role": "user", "content": "hi"}])
    _record(tenant, conversation.to_dict())
    sandbox.advance(31 * DAY)
    preview = services.sweep_create(kind="threads", dry_run=True, as_of=_as_of(sandbox))
    _run(preview, provider)
    assert preview.items.get().outcome == Outcome.WOULD_DELETE
    # Used again (a new response in it) after the preview, and the ledger has not heard of it yet.
    openai_client.responses.create(model="gpt-6.1-sol", conversation=conversation.id, input="back again")
    real = services.sweep_create(kind="threads", preview_of=preview)
    _run(real, provider)
    assert real.items.get().outcome == Outcome.SKIPPED_ACTIVE
    assert conversation.id in sandbox.state.conversations


def test_a_conversation_found_in_use_restarts_its_retention_so_later_sweeps_keep_it(
        sandbox, openai_client, provider, retention):
    """Used without RunLedger hearing of it: the sweep that sees its new items keeps it and moves its last
    activity to then, so the next nightly sweeps (which take that new item as their baseline) keep it too."""
    tenant = retention
    conversation = openai_client.conversations.create(items=[{"type": "message", "role": "user", "content": "hi"}])
    _record(tenant, conversation.to_dict())
    sandbox.advance(31 * DAY)
    first = services.sweep_create(kind="threads", as_of=_as_of(sandbox))
    _run(first, provider)
    assert first.items.get().outcome == Outcome.SKIPPED_ACTIVE  # a first look keeps it
    openai_client.responses.create(model="gpt-6.1-sol", conversation=conversation.id, input="still talking")
    sandbox.advance(DAY)
    second = services.sweep_create(kind="threads", as_of=_as_of(sandbox))
    _run(second, provider)
    assert second.items.get().outcome == Outcome.SKIPPED_ACTIVE
    assert Thread.objects.for_tenant(tenant).get(openai_id=conversation.id).last_activity_at == second.as_of

    for _night in range(3):
        sandbox.advance(DAY)
        later = services.sweep_create(kind="threads", as_of=_as_of(sandbox))
        _run(later, provider)
        assert not later.items.filter(outcome=Outcome.DELETED).exists()
    assert conversation.id in sandbox.state.conversations


def test_a_dry_run_that_finds_a_conversation_in_use_does_not_let_the_next_sweep_delete_it(
        sandbox, openai_client, provider, retention):
    """The dry run keeps its hands off the ledger, so it must not become the baseline of the new items either."""
    tenant = retention
    conversation = openai_client.conversations.create(items=[{"type": "message", "role": "user", "content": "hi"}])
    _record(tenant, conversation.to_dict())
    sandbox.advance(31 * DAY)
    _run(services.sweep_create(kind="threads", as_of=_as_of(sandbox)), provider)  # a first look keeps it
    openai_client.responses.create(model="gpt-6.1-sol", conversation=conversation.id, input="still talking")
    sandbox.advance(DAY // 2)
    preview = services.sweep_create(kind="threads", dry_run=True, as_of=_as_of(sandbox))
    _run(preview, provider)
    assert "a real sweep restarts its retention" in preview.items.get().detail
    sandbox.advance(DAY // 2)

    nightly = services.sweep_create(kind="threads", as_of=_as_of(sandbox))
    _run(nightly, provider)

    assert nightly.items.get().outcome == Outcome.SKIPPED_ACTIVE
    assert conversation.id in sandbox.state.conversations


def test_a_sweep_whose_openai_base_url_is_wrong_keeps_every_conversation_on_record(sandbox, openai_client, retention):
    """OPENAI_BASE_URL without /v1: OpenAI answers every path 404 "Invalid URL". Taken for "not found", the sweep
    recorded the live conversation as already gone, and a conversation cannot be listed: RunLedger lost the only
    way to delete it."""
    tenant = retention
    conversation = openai_client.conversations.create(items=[{"type": "message", "role": "user", "content": "hi"}])
    _record(tenant, conversation.to_dict())
    sandbox.advance(31 * DAY)
    misconfigured = OpenAIProvider(base_url=sandbox.url, api_key=sandbox.api_key, project_id="proj_default",
                                   backoff_base=0.01, backoff_cap=0.05, rate_limiter=None)
    sweep = services.sweep_create(kind="threads", as_of=_as_of(sandbox))
    _run(sweep, misconfigured)

    item = SweepItem.objects.unscoped().get(sweep=sweep)
    assert item.outcome == Outcome.FAILED and "Invalid URL" in item.detail and "OPENAI_BASE_URL" in item.detail
    assert Thread.objects.for_tenant(tenant).get(openai_id=conversation.id).status == "active"
    assert conversation.id in sandbox.state.conversations


class _KilledAfterDelete(BaseException):
    """What a SIGKILL looks like to the code after it: nothing after this line runs."""


class _KillingProvider:
    """The real provider, except the process "dies" right after OpenAI confirmed the Nth delete."""

    def __init__(self, inner: OpenAIProvider, kill_after: int):
        self.inner, self.kill_after, self.deletes = inner, kill_after, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def delete_thread(self, thread_id):
        outcome = self.inner.delete_thread(thread_id)
        self.deletes += 1
        if self.deletes == self.kill_after:
            raise _KilledAfterDelete(thread_id)
        return outcome


def test_sweep_killed_mid_way_resumes_with_no_double_delete_and_no_skipped_item(
        sandbox, openai_client, provider, retention, settings):
    tenant = retention
    settings.LIFECYCLE_SWEEP_BATCH_SIZE = 4
    settings.LIFECYCLE_ITEM_LEASE_SECONDS = 0
    settings.LIFECYCLE_SWEEP_STALE_SECONDS = 0
    ids = {_make_thread(openai_client, tenant) for _ in range(12)}
    sandbox.advance(45 * DAY)
    delete_calls: list[str] = []
    real_handle = sandbox.sandbox.api.handle

    def counting_handle(request):
        if request.method == "DELETE":
            delete_calls.append(request.path)
        return real_handle(request)

    sandbox.sandbox.api.handle = counting_handle
    sweep = services.sweep_create(kind="threads", as_of=_as_of(sandbox))
    with pytest.raises(_KilledAfterDelete):
        _run(sweep, _KillingProvider(provider, kill_after=6))
    assert len(delete_calls) == 6

    assert services.sweeps_reap() == [sweep.pk]
    assert _run(sweep, provider).status == "finished"
    assert len(delete_calls) == len(set(delete_calls)) == 12  # each thread deleted at OpenAI exactly once
    outcomes = dict(SweepItem.objects.unscoped().filter(sweep=sweep).values_list("openai_id", "outcome"))
    assert set(outcomes) == ids
    # The thread deleted just before the kill is this sweep's delete (its item said the call was sent).
    assert sorted(outcomes.values()) == [Outcome.DELETED] * 12
    assert not ids & set(sandbox.state.threads)
    assert Thread.objects.for_tenant(tenant).filter(status="active").count() == 0


def test_429_storm_slows_the_sweep_without_failing_it_or_exceeding_the_rate(sandbox, openai_client, retention, settings):
    tenant = retention
    ids = {_make_thread(openai_client, tenant) for _ in range(8)}
    sandbox.advance(45 * DAY)
    settings.LIFECYCLE_TRANSIENT_RETRY_SECONDS = 0.05
    arrivals: list[float] = []
    lock = threading.Lock()
    real_handle = sandbox.sandbox.api.handle

    def timed_handle(request):
        with lock:
            arrivals.append(time.time())
        return real_handle(request)

    sandbox.sandbox.api.handle = timed_handle
    per_window, window = 10, 0.5  # the configured rate: 1,200 requests per minute
    limiter = SharedRateLimiter(requests_per_minute=int(per_window * 60 / window), window_seconds=window,
                                name=f"storm-{time.time_ns()}")
    storm_provider = OpenAIProvider(base_url=sandbox.base_url, api_key=sandbox.api_key, project_id="proj_default",
                                    backoff_base=0.02, backoff_cap=0.1, rate_limiter=limiter)
    storm = sandbox.faults.rate_limit(path="^/v1/threads", times=30, retry_after=0.1)
    sweep = services.sweep_create(kind="threads", as_of=_as_of(sandbox))
    started = time.monotonic()
    result = services.sweep_run_to_completion(sweep_id=sweep.pk, provider=storm_provider)
    elapsed = time.monotonic() - started

    assert result.status == "finished"
    assert storm.fired == 30 and storm_provider.retries_made > 0
    outcomes = set(SweepItem.objects.unscoped().filter(sweep=sweep).values_list("outcome", flat=True))
    assert outcomes == {Outcome.DELETED}
    assert not ids & set(sandbox.state.threads)
    assert elapsed >= 30 * 0.1 / 2  # slowed down by Retry-After, not failed
    # Never more than the configured number of requests in any aligned window of the limiter.
    by_window: dict[int, int] = {}
    for moment in arrivals:
        by_window[int(moment // window)] = by_window.get(int(moment // window), 0) + 1
    assert max(by_window.values()) <= per_window + 1  # +1: a request granted at a window's end arrives in the next


def test_idle_vector_stores_orphan_files_and_idle_containers_are_cleaned_up(
        sandbox, openai_client, provider, retention, settings):
    tenant = retention
    tenant.vector_store_idle_days = 7
    tenant.save()
    settings.LIFECYCLE_FILE_MIN_AGE_DAYS = 3
    kept_file = openai_client.files.create(file=("a.txt", b"x" * 2048), purpose="assistants")
    loose_file = openai_client.files.create(file=("b.txt", b"y" * 1024), purpose="assistants")
    idle_store = openai_client.vector_stores.create(name="idle", metadata={"tenant": tenant.slug})
    busy_store = openai_client.vector_stores.create(name="busy", metadata={"tenant": tenant.slug},
                                                    file_ids=[kept_file.id])
    container = openai_client.containers.create(name="ci")
    services.resources_record(tenant=tenant, obj=loose_file.to_dict())
    services.resources_record(tenant=tenant, obj=container.to_dict())
    sandbox.advance(10 * DAY)
    sandbox.state.touch_vector_store(busy_store.id, sandbox.clock.now())
    services.inventory_sync(provider=provider)

    assert VectorStore.objects.for_tenant(tenant).count() == 2
    kept = StoredFile.objects.for_tenant(tenant).get(openai_id=kept_file.id)
    assert kept.vector_store_openai_ids == [busy_store.id] and kept.tenant_source == "vector_store"

    as_of = _as_of(sandbox)
    for kind in ("vector_stores", "files", "containers"):
        assert _run(services.sweep_create(kind=kind, as_of=as_of), provider).status == "finished"
    assert idle_store.id not in sandbox.state.vector_stores and busy_store.id in sandbox.state.vector_stores
    assert loose_file.id not in sandbox.state.files and kept_file.id in sandbox.state.files
    assert container.id not in sandbox.state.containers
    deleted = dict(SweepItem.objects.for_tenant(tenant).filter(outcome=Outcome.DELETED).values_list("openai_id", "resource_type"))
    assert deleted == {idle_store.id: "vector_store", loose_file.id: "file", container.id: "container"}


@pytest.mark.parametrize("retry_answer", [
    # Every retry answered 503 too: the provider gives up on a 5xx.
    (503, "The server had an error", {"type": "server_error"}),
    # Every retry answered 429: the provider gives up on the 429, which refuses only the retry, not the first try.
    (429, "Rate limit reached", {"type": "requests", "code": "rate_limit_exceeded"}),
], ids=["retries-503", "retries-429"])
def test_a_delete_openai_carried_out_but_answered_with_errors_is_recorded_as_ours(
        sandbox, openai_client, provider, tenant, settings, retry_answer):
    """The store is deleted on the first DELETE, answered 503, and every retry of that call fails too: the next
    batch's re-check finds it gone, and that is this sweep's own delete, with its saving, not someone else's."""
    from apps.sandbox.api import SandboxError

    settings.LIFECYCLE_TRANSIENT_RETRY_SECONDS = 0
    tenant.vector_store_idle_days = 7
    tenant.save()
    store = openai_client.vector_stores.create(name="kb", metadata={"tenant": tenant.slug})
    services.inventory_sync(provider=provider)
    VectorStore.objects.unscoped().filter(openai_id=store.id).update(usage_bytes=5 * 1024**3)
    sandbox.advance(10 * DAY)
    real, deletes = sandbox.sandbox.api.handle, []
    retry_status, retry_message, retry_error = retry_answer

    def handle(request):
        if request.method == "DELETE" and request.path.startswith("/v1/vector_stores/"):
            deletes.append(request.path)
            if len(deletes) == 1:
                real(request)  # OpenAI deletes it...
                raise SandboxError(503, "The server had an error", type="server_error")  # ...and answers 503
            if len(deletes) <= provider.max_attempts:
                raise SandboxError(retry_status, retry_message, **retry_error)
        return real(request)

    sandbox.sandbox.api.handle = handle
    sweep = services.sweep_create(kind="vector_stores", as_of=_as_of(sandbox))
    _run(sweep, provider)

    item = SweepItem.objects.unscoped().get(sweep=sweep)
    assert len(deletes) >= provider.max_attempts
    assert item.outcome == Outcome.DELETED and "went through" in item.detail
    assert item.saved_usd_per_day > 0
    assert VectorStore.objects.unscoped().get(openai_id=store.id).deletion_reason.startswith("vector_store_idle_days=7")


def test_a_file_removed_from_a_store_that_lives_on_becomes_a_candidate(sandbox, openai_client, provider, tenant,
                                                                         settings):
    """The inventory rebuilds a file's stores from the stores' own listings: a stale attachment to a live
    store kept the file from ever being swept."""
    settings.LIFECYCLE_FILE_MIN_AGE_DAYS = 3
    file = openai_client.files.create(file=("a.txt", b"x" * 2048), purpose="assistants")
    store = openai_client.vector_stores.create(name="kb", metadata={"tenant": tenant.slug}, file_ids=[file.id])
    services.inventory_sync(provider=provider)
    assert StoredFile.objects.unscoped().get(openai_id=file.id).vector_store_openai_ids == [store.id]
    openai_client.vector_stores.files.delete(file.id, vector_store_id=store.id)  # the store stays live
    sandbox.advance(10 * DAY)
    sandbox.state.touch_vector_store(store.id, sandbox.clock.now())
    services.inventory_sync(provider=provider)

    assert StoredFile.objects.unscoped().get(openai_id=file.id).vector_store_openai_ids == []
    sweep = services.sweep_create(kind="files", as_of=_as_of(sandbox))
    _run(sweep, provider)
    assert SweepItem.objects.unscoped().get(sweep=sweep, openai_id=file.id).outcome == Outcome.DELETED


def test_the_inventory_rebuilds_files_stores_page_by_page(sandbox, openai_client, provider, tenant, monkeypatch):
    """The files in stores are read in pages of INVENTORY_FILE_PAGE (memory stays flat however many there
    are): every file of every page is rebuilt, not only the first page's."""
    monkeypatch.setattr(services, "INVENTORY_FILE_PAGE", 2)
    files = [openai_client.files.create(file=(f"{n}.txt", b"x" * 64), purpose="assistants") for n in range(5)]
    store = openai_client.vector_stores.create(name="kb", metadata={"tenant": tenant.slug},
                                               file_ids=[file.id for file in files])
    services.inventory_sync(provider=provider)
    for file in files:
        openai_client.vector_stores.files.delete(file.id, vector_store_id=store.id)
    services.inventory_sync(provider=provider)

    assert list(StoredFile.objects.unscoped().values_list("vector_store_openai_ids", flat=True)) == [[]] * 5
