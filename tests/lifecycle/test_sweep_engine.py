"""The sweep engine's bookkeeping with an in-memory provider: boundaries, dry run vs real run, legal hold,
resumption after a crash with no double delete and no skipped item, transient errors."""

from __future__ import annotations

import datetime as dt

import pytest

from apps.ledger.models import Thread
from apps.lifecycle import services
from apps.lifecycle.models import ArchivedItem, Outcome, Sweep, SweepItem, VectorStore
from apps.tenants.models import Tenant
from tests import builders

from .fakes import FakeProvider, FakeRateLimited

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
GIB = 1024**3


def _thread(tenant, openai_id, *, days_idle: float, provider: FakeProvider, kind="thread"):
    last = NOW - dt.timedelta(days=days_idle)
    row = Thread.objects.create(tenant=tenant, openai_id=openai_id, kind=kind, created_at=last, last_activity_at=last)
    if kind == "thread":
        provider.add_thread(openai_id, last)
    else:
        provider.conversations[openai_id] = {"id": openai_id, "object": "conversation", "created_at": int(last.timestamp())}
    return row


def _run(sweep, provider):
    return services.sweep_run_to_completion(sweep_id=sweep.pk, provider=provider, sleep=lambda s: None)


@pytest.fixture
def provider():
    return FakeProvider()


@pytest.fixture
def policies(tenant, other_tenant):
    tenant.thread_retention_days = 30
    tenant.save()
    other_tenant.thread_retention_days = 30
    other_tenant.legal_hold = True
    other_tenant.save()
    return tenant, other_tenant


def test_thread_one_day_inside_retention_survives_and_one_day_outside_is_deleted(policies, provider):
    tenant, _ = policies
    _thread(tenant, "thread_keep", days_idle=29, provider=provider)
    _thread(tenant, "thread_old", days_idle=31, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    result = _run(sweep, provider)
    assert result.status == "finished"
    assert provider.deletes == ["thread_old"]
    assert Thread.objects.unscoped().get(openai_id="thread_keep").status == "active"
    old = Thread.objects.unscoped().get(openai_id="thread_old")
    assert old.status == "deleted" and old.deleted_at is not None and "thread_retention_days=30" in old.deletion_reason
    audit = SweepItem.objects.unscoped().get(sweep=sweep)
    assert (audit.openai_id, audit.outcome, audit.tenant_id) == ("thread_old", Outcome.DELETED, tenant.pk)


def test_legal_hold_tenant_is_never_swept_even_when_everything_is_expired(policies, provider):
    _, held = policies
    _thread(held, "thread_held", days_idle=400, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    _run(sweep, provider)
    assert provider.deletes == []
    with pytest.raises(services.SweepRefused):
        services.sweep_create(kind="threads", tenant=held, as_of=NOW)


def test_legal_hold_set_after_planning_is_honoured_before_delete(policies, provider):
    tenant, _ = policies
    _thread(tenant, "thread_old", days_idle=90, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    services._plan_step(sweep)
    tenant.legal_hold = True
    tenant.save()
    _run(sweep, provider)
    assert provider.deletes == []
    assert SweepItem.objects.unscoped().get(sweep=sweep).outcome == Outcome.SKIPPED_LEGAL_HOLD


def _idle_store(tenant, provider, store_id: str, *, days_idle: int = 60) -> VectorStore:
    idle_since = NOW - dt.timedelta(days=days_idle)
    services.resources_record(tenant=tenant, obj=builders.vector_store(
        vector_store_id=store_id, usage_bytes=GIB, created_at=idle_since, last_active_at=idle_since))
    provider.vector_stores[store_id] = {"id": store_id, "object": "vector_store", "usage_bytes": GIB,
                                        "created_at": int(idle_since.timestamp()),
                                        "last_active_at": int(idle_since.timestamp())}
    return VectorStore.objects.unscoped().get(openai_id=store_id)


def test_a_store_reassigned_to_a_held_tenant_after_its_dry_run_is_kept_by_the_confirmation(policies, provider):
    """The confirmation copies the preview's tenant; the resource's tenant now decides, not that copy."""
    tenant, held = policies
    store = _idle_store(tenant, provider, "vs_evidence")
    preview = services.sweep_create(kind="vector_stores", dry_run=True, as_of=NOW)
    _run(preview, provider)
    assert SweepItem.objects.unscoped().get(sweep=preview).outcome == Outcome.WOULD_DELETE
    services.resource_assign(resource_type="vector_store", pk=store.pk, tenant=held, actor=None)

    confirmation = services.sweep_create(kind="vector_stores", preview_of=preview)
    _run(confirmation, provider)

    assert provider.deletes == []
    item = SweepItem.objects.unscoped().get(sweep=confirmation)
    assert item.outcome == Outcome.SKIPPED_ACTIVE and "tenant changed since the sweep was planned" in item.detail
    assert VectorStore.objects.unscoped().get(openai_id="vs_evidence").status == "active"


def test_a_vector_store_sweep_that_deletes_the_billed_orphans_resolves_their_alert(policies, provider, settings):
    """Before, the alert stayed open until the next hourly inventory sync."""
    from apps.alerts.models import Alert

    settings.LIFECYCLE_SWEEP_UNASSIGNED = True
    _idle_store(None, provider, "vs_orphan_a")
    _idle_store(None, provider, "vs_orphan_b")  # 2 GiB with no tenant: 1 GiB past the free GB is billed
    (raised,) = services.orphan_alerts_refresh(now=NOW).raised

    assert _run(services.sweep_create(kind="vector_stores", as_of=NOW), provider).status == "finished"

    assert sorted(provider.deletes) == ["vs_orphan_a", "vs_orphan_b"]
    assert Alert.unscoped_objects.get(pk=raised).resolved_at is not None


def test_a_vector_store_sweep_is_finished_even_if_the_orphan_alerts_cannot_be_refreshed(policies, provider, settings,
                                                                                      monkeypatch):
    def fails(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "orphan_alerts_refresh", fails)
    settings.LIFECYCLE_SWEEP_UNASSIGNED = True
    _idle_store(None, provider, "vs_orphan")
    sweep = services.sweep_create(kind="vector_stores", as_of=NOW)

    assert _run(sweep, provider).status == "finished"
    sweep.refresh_from_db()
    assert (sweep.status, sweep.batch_failures, provider.deletes) == ("finished", 0, ["vs_orphan"])


def test_an_orphan_adopted_by_a_held_tenant_after_planning_is_kept(policies, provider, settings):
    _, held = policies
    settings.LIFECYCLE_SWEEP_UNASSIGNED = True
    _idle_store(None, provider, "vs_orphan")
    sweep = services.sweep_create(kind="vector_stores", as_of=NOW)
    services._plan_step(sweep)
    # The application reports the store with its ingest key: ingest gives an orphan the reporting tenant.
    services.resources_record(tenant=held, obj=provider.vector_stores["vs_orphan"])

    _run(sweep, provider)

    assert provider.deletes == []
    assert SweepItem.objects.unscoped().get(sweep=sweep).outcome == Outcome.SKIPPED_ACTIVE


class _OrphanAssignedDuringRecheck(FakeProvider):
    """Staff assign the orphan store to a tenant while its re-check is at OpenAI."""

    def __init__(self, tenant):
        super().__init__()
        self.tenant = tenant

    def retrieve_vector_store(self, vs_id):
        store = VectorStore.objects.unscoped().get(openai_id=vs_id)
        services.resource_assign(resource_type="vector_store", pk=store.pk, tenant=self.tenant, actor=None)
        return super().retrieve_vector_store(vs_id)


def test_an_orphan_assigned_to_a_held_tenant_while_it_is_rechecked_is_kept(policies, settings):
    _, held = policies
    settings.LIFECYCLE_SWEEP_UNASSIGNED = True
    provider = _OrphanAssignedDuringRecheck(held)
    _idle_store(None, provider, "vs_orphan")
    sweep = services.sweep_create(kind="vector_stores", as_of=NOW)

    _run(sweep, provider)

    assert provider.deletes == []
    assert SweepItem.objects.unscoped().get(sweep=sweep).outcome == Outcome.SKIPPED_ACTIVE


class _HoldPlacedWhileListingMessages(FakeProvider):
    """Ops put the tenant on legal hold while the sweep lists a thread's messages for the `on_listing`-th time
    (1: the re-check; 2: the archive's copy), calls that can take minutes of 429 retries."""

    def __init__(self, tenant, *, on_listing: int):
        super().__init__()
        self.tenant_pk, self.on_listing, self.listings = tenant.pk, on_listing, 0

    def list_thread_messages(self, thread_id):
        self.listings += 1
        if self.listings == self.on_listing:
            Tenant.objects.filter(pk=self.tenant_pk).update(legal_hold=True)
        return super().list_thread_messages(thread_id)


def test_a_hold_placed_while_an_item_is_rechecked_stops_its_delete(policies):
    tenant, _ = policies
    provider = _HoldPlacedWhileListingMessages(tenant, on_listing=1)
    _thread(tenant, "thread_old", days_idle=90, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)

    _run(sweep, provider)

    assert provider.deletes == []
    assert SweepItem.objects.unscoped().get(sweep=sweep).outcome == Outcome.SKIPPED_LEGAL_HOLD
    assert Thread.objects.unscoped().get(openai_id="thread_old").status == "active"


def test_a_hold_placed_while_a_thread_is_archived_stops_its_delete(policies):
    tenant, _ = policies
    tenant.archive_before_delete = True
    tenant.save()
    provider = _HoldPlacedWhileListingMessages(tenant, on_listing=2)
    _thread(tenant, "thread_old", days_idle=90, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)

    _run(sweep, provider)

    assert provider.listings == 2 and provider.deletes == []
    assert SweepItem.objects.unscoped().get(sweep=sweep).outcome == Outcome.SKIPPED_LEGAL_HOLD


class _RunReportedWhileArchiving(FakeProvider):
    """Ingest records a run on the thread (its last activity moves to `days_idle` ago) during the archive's
    listing of its messages, the second listing after the re-check's."""

    def __init__(self, days_idle: float):
        super().__init__()
        self.listings = 0
        self.days_idle = days_idle

    def list_thread_messages(self, thread_id):
        self.listings += 1
        if self.listings == 2:
            Thread.objects.unscoped().filter(openai_id=thread_id).update(
                last_activity_at=NOW - dt.timedelta(days=self.days_idle))
        return super().list_thread_messages(thread_id)


def test_a_run_reported_while_a_thread_is_archived_stops_its_delete(policies):
    # The archive's listing can take minutes of calls; the re-check before it saw the thread idle.
    tenant, _ = policies
    tenant.archive_before_delete = True
    tenant.save()
    provider = _RunReportedWhileArchiving(days_idle=0.01)
    _thread(tenant, "thread_old", days_idle=90, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)

    _run(sweep, provider)

    assert provider.listings == 2 and provider.deletes == []
    item = SweepItem.objects.unscoped().get(sweep=sweep)
    assert item.outcome == Outcome.SKIPPED_ACTIVE
    assert "recorded after its re-check" in item.detail
    assert item.last_activity_at == NOW - dt.timedelta(days=0.01)
    assert Thread.objects.unscoped().get(openai_id="thread_old").status == "active"
    assert not ArchivedItem.objects.unscoped().exists()


def test_activity_recorded_while_archiving_but_still_past_retention_does_not_stop_the_delete(policies):
    tenant, _ = policies
    tenant.archive_before_delete = True
    tenant.save()
    provider = _RunReportedWhileArchiving(days_idle=31)  # a late report of an old run: still idle past 30 days
    _thread(tenant, "thread_old", days_idle=90, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)

    _run(sweep, provider)

    assert provider.deletes == ["thread_old"]
    assert SweepItem.objects.unscoped().get(sweep=sweep).outcome == Outcome.DELETED


def test_dry_run_deletes_nothing_and_its_confirmation_deletes_exactly_its_list(policies, provider):
    tenant, _ = policies
    for i in range(5):
        _thread(tenant, f"thread_{i}", days_idle=31 + i, provider=provider)
    _thread(tenant, "thread_fresh", days_idle=1, provider=provider)
    preview = services.sweep_create(kind="threads", dry_run=True, as_of=NOW)
    _run(preview, provider)
    listed = set(SweepItem.objects.unscoped().filter(sweep=preview, outcome=Outcome.WOULD_DELETE).values_list("openai_id", flat=True))
    assert provider.deletes == [] and len(provider.threads) == 6
    assert Thread.objects.for_tenant(tenant).filter(status="active").count() == 6
    real = services.sweep_create(kind="threads", preview_of=preview)
    _run(real, provider)
    assert set(provider.deletes) == listed == {f"thread_{i}" for i in range(5)}


def test_a_confirmation_records_in_the_ledger_the_threads_its_preview_found_already_gone(policies, provider):
    # A dry run writes nothing to the ledger; confirmed, only its "would delete" list used to be swept, so a
    # thread OpenAI had already deleted stayed "overdue" on the tenant page until some later full sweep.
    tenant, _ = policies
    _thread(tenant, "thread_live", days_idle=40, provider=provider)
    _thread(tenant, "thread_gone", days_idle=40, provider=provider)
    del provider.threads["thread_gone"]  # deleted at OpenAI by the application (or the Assistants sunset)
    preview = services.sweep_create(kind="threads", dry_run=True, as_of=NOW)
    _run(preview, provider)
    outcomes = dict(SweepItem.objects.unscoped().filter(sweep=preview).values_list("openai_id", "outcome"))
    assert outcomes == {"thread_live": Outcome.WOULD_DELETE, "thread_gone": Outcome.ALREADY_GONE}
    assert Thread.objects.for_tenant(tenant).get(openai_id="thread_gone").status == "active"

    _run(services.sweep_create(kind="threads", preview_of=preview), provider)

    assert provider.deletes == ["thread_live"]  # still only what the preview listed for deletion
    assert set(Thread.objects.for_tenant(tenant).filter(status="deleted").values_list("openai_id", flat=True)) == {
        "thread_live", "thread_gone"}


def test_a_confirmation_never_deletes_what_its_preview_found_already_gone_if_it_answers_again(policies, provider):
    """The preview offered "thread_back" as already gone, not for deletion. If OpenAI answers for it by the
    time of the confirmation (a project whose key was configured since, a 404 that was not the object's), the
    confirmation must keep it: it deletes only what its preview listed to delete."""
    tenant, _ = policies
    _thread(tenant, "thread_live", days_idle=40, provider=provider)
    _thread(tenant, "thread_back", days_idle=40, provider=provider)
    back = provider.threads.pop("thread_back")
    preview = services.sweep_create(kind="threads", dry_run=True, as_of=NOW)
    _run(preview, provider)
    assert SweepItem.objects.unscoped().get(sweep=preview, openai_id="thread_back").outcome == Outcome.ALREADY_GONE
    provider.threads["thread_back"] = back

    confirmation = services.sweep_create(kind="threads", preview_of=preview)
    _run(confirmation, provider)

    assert provider.deletes == ["thread_live"]
    kept = SweepItem.objects.unscoped().get(sweep=confirmation, openai_id="thread_back")
    assert kept.outcome == Outcome.SKIPPED_ACTIVE and "dry run" in kept.detail
    assert Thread.objects.for_tenant(tenant).get(openai_id="thread_back").status == "active"


def test_thread_used_during_the_sweep_survives_the_recheck(policies, provider):
    tenant, _ = policies
    _thread(tenant, "thread_revived", days_idle=45, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    services._plan_step(sweep)
    provider.runs["thread_revived"] = [{"id": "run_x", "created_at": int((NOW - dt.timedelta(hours=1)).timestamp())}]
    _run(sweep, provider)
    assert provider.deletes == []
    assert SweepItem.objects.unscoped().get(sweep=sweep).outcome == Outcome.SKIPPED_ACTIVE


def test_a_conversation_a_sweep_looks_at_first_is_kept_and_the_next_sweep_deletes_it_if_unchanged(policies, provider):
    """Conversation items carry no timestamps, so the ledger's idle date may be stale (an item appended before its
    response reached ingest): the first real sweep records the newest item and keeps the conversation."""
    tenant, _ = policies
    _thread(tenant, "conv_quiet", days_idle=45, provider=provider, kind="conversation")
    provider.items["conv_quiet"] = [{"id": "msg_old", "type": "message", "role": "user"}]
    first = services.sweep_create(kind="threads", as_of=NOW)
    _run(first, provider)
    item = SweepItem.objects.unscoped().get(sweep=first)
    assert provider.deletes == [] and (item.outcome, item.fingerprint) == (Outcome.SKIPPED_ACTIVE, "msg_old")
    assert item.detail.startswith("first look at its items")
    _run(services.sweep_create(kind="threads", as_of=NOW + dt.timedelta(days=1)), provider)
    assert provider.deletes == ["conv_quiet"]


def test_a_conversation_used_since_an_earlier_sweep_looked_survives(policies, provider):
    tenant, _ = policies
    _thread(tenant, "conv_busy", days_idle=45, provider=provider, kind="conversation")
    provider.items["conv_busy"] = [{"id": "msg_old", "type": "message", "role": "user"}]
    _run(services.sweep_create(kind="threads", as_of=NOW), provider)
    # The application appends to it; the response has not reached ingest, so the ledger still reads 45 days.
    provider.items["conv_busy"].insert(0, {"id": "msg_new", "type": "message", "role": "user"})
    later = services.sweep_create(kind="threads", as_of=NOW + dt.timedelta(days=1))
    _run(later, provider)
    item = SweepItem.objects.unscoped().get(sweep=later)
    assert provider.deletes == [] and item.outcome == Outcome.SKIPPED_ACTIVE and item.fingerprint == "msg_new"


def test_a_dry_run_lists_a_conversation_its_confirmation_deletes_when_nothing_was_added(policies, provider):
    tenant, _ = policies
    _thread(tenant, "conv_idle", days_idle=45, provider=provider, kind="conversation")
    dry = services.sweep_create(kind="threads", dry_run=True, as_of=NOW)
    _run(dry, provider)
    assert SweepItem.objects.unscoped().get(sweep=dry).outcome == Outcome.WOULD_DELETE
    _run(services.sweep_create(kind="threads", preview_of=dry), provider)
    assert provider.deletes == ["conv_idle"]


def _old_file(tenant, provider, file_id: str) -> None:
    from tests import builders

    created = NOW - dt.timedelta(days=30)
    services.resources_record(tenant=tenant, obj=builders.file(file_id=file_id, created_at=created))
    provider.files[file_id] = {"id": file_id, "object": "file", "created_at": int(created.timestamp())}


def _live_store(tenant, provider, store_id: str, *, files=()) -> None:
    from tests import builders

    services.resources_record(tenant=tenant, obj=builders.vector_store(vector_store_id=store_id, created_at=NOW))
    provider.vector_stores[store_id] = {"id": store_id, "object": "vector_store"}
    provider.vector_store_files[store_id] = list(files)


def test_a_file_attached_to_a_live_store_since_the_last_inventory_sync_is_kept(policies, provider):
    """The ledger's attachments are an hour old at most: the re-check asks OpenAI about the live stores."""
    tenant, _ = policies
    _old_file(tenant, provider, "file-kept")
    _live_store(tenant, provider, "vs_live", files=["file-kept"])  # attached at OpenAI after the last sync
    sweep = services.sweep_create(kind="files", as_of=NOW)
    _run(sweep, provider)
    item = SweepItem.objects.unscoped().get(sweep=sweep)
    assert provider.deletes == [] and item.outcome == Outcome.SKIPPED_ATTACHED and "vs_live" in item.detail


def test_a_file_no_live_store_holds_is_deleted_after_asking_each(policies, provider):
    tenant, other = policies
    _old_file(tenant, provider, "file-loose")
    _live_store(tenant, provider, "vs_a")
    _live_store(other, provider, "vs_other_tenant")  # a store of another tenant is not asked
    _run(services.sweep_create(kind="files", as_of=NOW), provider)
    assert provider.deletes == ["file-loose"] and provider.retrieved_attachments == [("vs_a", "file-loose")]


def test_a_file_with_more_live_stores_to_ask_than_the_bound_is_kept(policies, provider, settings):
    tenant, _ = policies
    settings.LIFECYCLE_FILE_RECHECK_MAX_STORES = 2
    _old_file(tenant, provider, "file-many")
    for number in range(3):
        _live_store(tenant, provider, f"vs_{number}")
    sweep = services.sweep_create(kind="files", as_of=NOW)
    _run(sweep, provider)
    assert provider.deletes == [] and provider.retrieved_attachments == []
    assert SweepItem.objects.unscoped().get(sweep=sweep).outcome == Outcome.SKIPPED_ATTACHED


@pytest.fixture
def archive_too_small(policies, provider, settings):
    """An archiving tenant's two idle threads, the archive holding 2 items: thread_long has 3 messages,
    thread_short 2. The tenant."""
    tenant, _ = policies
    tenant.archive_before_delete = True
    tenant.save()
    settings.LIFECYCLE_ARCHIVE_MAX_ITEMS = 2
    _thread(tenant, "thread_long", days_idle=45, provider=provider)
    _thread(tenant, "thread_short", days_idle=45, provider=provider)
    old = int((NOW - dt.timedelta(days=45)).timestamp())
    provider.messages["thread_long"] = [{"id": f"msg_{n}", "created_at": old} for n in range(3)]
    provider.messages["thread_short"] = [{"id": f"msg_s{n}", "created_at": old} for n in range(2)]
    return tenant


def test_a_thread_with_more_messages_than_the_archive_holds_is_kept_not_archived_in_part(archive_too_small,
                                                                                        provider):
    """Deleting after a cut-short archive would lose the oldest messages for good."""
    from apps.lifecycle.models import ArchivedItem

    tenant = archive_too_small
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    _run(sweep, provider)
    long_item = SweepItem.objects.unscoped().get(sweep=sweep, openai_id="thread_long")
    assert provider.deletes == ["thread_short"] and long_item.outcome == Outcome.FAILED
    assert "more than 2 items to archive" in long_item.detail
    assert not ArchivedItem.objects.for_tenant(tenant).filter(thread_openai_id="thread_long").exists()
    assert ArchivedItem.objects.for_tenant(tenant).filter(thread_openai_id="thread_short").count() == 2


def test_a_dry_run_records_the_archive_limit_failure_the_real_run_would(archive_too_small, provider):
    """The preview lists exactly what its confirmation deletes: a thread too long to archive is not offered."""
    from apps.lifecycle.models import ArchivedItem

    tenant = archive_too_small

    preview = services.sweep_create(kind="threads", dry_run=True, as_of=NOW)
    _run(preview, provider)
    previewed = {item.openai_id: item for item in SweepItem.objects.unscoped().filter(sweep=preview)}
    assert previewed["thread_long"].outcome == Outcome.FAILED
    assert previewed["thread_short"].outcome == Outcome.WOULD_DELETE
    assert not ArchivedItem.objects.for_tenant(tenant).exists()  # a dry run copies nothing

    _run(services.sweep_create(kind="threads", preview_of=preview), provider)
    assert provider.deletes == ["thread_short"]
    real = services.sweep_create(kind="threads", as_of=NOW)
    _run(real, provider)
    refused = SweepItem.objects.unscoped().get(sweep=real, openai_id="thread_long")
    assert (refused.outcome, refused.detail) == (Outcome.FAILED, previewed["thread_long"].detail)
    assert provider.deletes == ["thread_short"]


def test_thread_gone_at_openai_counts_as_already_deleted(policies, provider):
    tenant, _ = policies
    _thread(tenant, "thread_gone", days_idle=45, provider=provider)
    del provider.threads["thread_gone"]
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    _run(sweep, provider)
    assert SweepItem.objects.unscoped().get(sweep=sweep).outcome == Outcome.ALREADY_GONE
    assert Thread.objects.unscoped().get(openai_id="thread_gone").status == "deleted"


def test_sweep_killed_after_a_delete_resumes_without_double_delete_or_skipped_item(policies, provider, settings):
    tenant, _ = policies
    settings.LIFECYCLE_SWEEP_BATCH_SIZE = 3
    settings.LIFECYCLE_ITEM_LEASE_SECONDS = 0
    settings.LIFECYCLE_SWEEP_STALE_SECONDS = 0
    ids = [f"thread_{i:02d}" for i in range(10)]
    for openai_id in ids:
        _thread(tenant, openai_id, days_idle=60, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    provider.fail_after_deletes = 5
    with pytest.raises(KeyboardInterrupt):
        _run(sweep, provider)
    assert len(provider.deletes) == 5
    sweep.refresh_from_db()
    assert sweep.status == Sweep.Status.RUNNING
    assert services.sweeps_reap() == [sweep.pk]
    result = _run(sweep, provider)
    assert result.status == "finished"
    assert sorted(provider.deletes) == ids  # each exactly once
    outcomes = dict(SweepItem.objects.unscoped().filter(sweep=sweep).values_list("openai_id", "outcome"))
    # The one deleted at OpenAI just before the crash is found gone on resume, not deleted again, and recorded
    # as this sweep's delete (the item said its delete call was sent), not as someone else's (already_gone).
    assert outcomes == dict.fromkeys(ids, Outcome.DELETED)
    killed_on = provider.deletes[4]
    item = SweepItem.objects.unscoped().get(sweep=sweep, openai_id=killed_on)
    assert "an earlier delete call went through" in item.detail
    assert Thread.objects.unscoped().get(openai_id=killed_on).deletion_reason.startswith("thread_retention_days=")
    assert Thread.objects.for_tenant(tenant).filter(status="active").count() == 0


def test_transient_rate_limit_retries_the_item_later_instead_of_failing_it(policies, provider):
    tenant, _ = policies
    _thread(tenant, "thread_old", days_idle=60, provider=provider)
    provider.rate_limit_next = 2
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    sleeps = []
    result = services.sweep_run_to_completion(sweep_id=sweep.pk, provider=provider, sleep=sleeps.append)
    assert result.status == "finished" and provider.deletes == ["thread_old"]
    assert len(sleeps) == 2
    assert SweepItem.objects.unscoped().get(sweep=sweep).outcome == Outcome.DELETED


class _RateLimitedFirstDelete(FakeProvider):
    """OpenAI answers the first delete call with a 429 after every retry: a refusal, nothing deleted."""

    def __init__(self):
        super().__init__()
        self.delete_calls = 0

    def delete_thread(self, thread_id):
        self.delete_calls += 1
        if self.delete_calls == 1:
            raise FakeRateLimited("429")
        return super().delete_thread(thread_id)


def test_a_thread_someone_else_deletes_after_our_delete_was_rate_limited_is_already_gone_not_ours(policies):
    tenant, _ = policies
    provider = _RateLimitedFirstDelete()
    _thread(tenant, "thread_old", days_idle=90, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)

    def application_deletes_it_during_the_wait(seconds):
        provider.threads.pop("thread_old", None)

    services.sweep_run_to_completion(sweep_id=sweep.pk, provider=provider, sleep=application_deletes_it_during_the_wait)

    item = SweepItem.objects.unscoped().get(sweep=sweep)
    assert provider.deletes == [] and not item.delete_sent
    assert item.outcome == Outcome.ALREADY_GONE
    assert Thread.objects.unscoped().get(openai_id="thread_old").deletion_reason.startswith(services.GONE_REASON)


class _Unreachable(Exception):
    status_code = 503


class _UnreachableOnce(FakeProvider):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def retrieve_thread(self, thread_id):
        self.calls += 1
        if self.calls == 1:
            raise _Unreachable("could not reach OpenAI (Connection error.)")
        return super().retrieve_thread(thread_id)


@pytest.mark.parametrize(("provider_class", "reason"), [
    (_UnreachableOnce, "an error reaching OpenAI (could not reach OpenAI (Connection error.))"),
    (lambda: _rate_limited_once(), "a rate limit"),
])
def test_a_batch_that_must_wait_says_why(policies, provider_class, reason):
    # `sweep` printed "waiting after a rate limit" for a sandbox that was not running.
    tenant, _ = policies
    provider = provider_class()
    _thread(tenant, "thread_old", days_idle=90, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    results = []

    services.sweep_run_to_completion(sweep_id=sweep.pk, provider=provider, sleep=lambda s: None,
                                     progress=results.append)

    waited = [result for result in results if result.status == "retry_later"]
    assert [result.retry_reason for result in waited] == [reason]
    assert results[-1].status == "finished" and results[-1].retry_reason == ""


def _rate_limited_once() -> FakeProvider:
    provider = FakeProvider()
    provider.rate_limit_next = 1
    return provider


def test_only_one_real_sweep_per_kind_at_a_time(policies, provider):
    services.sweep_create(kind="threads", as_of=NOW)
    with pytest.raises(services.SweepBusy):
        services.sweep_create(kind="threads", as_of=NOW)
    services.sweep_create(kind="vector_stores", as_of=NOW)  # another kind is fine
    services.sweep_create(kind="threads", dry_run=True, as_of=NOW)  # previews never block


def test_the_database_refuses_a_second_unfinished_real_sweep_of_a_kind_and_a_second_confirmation(policies, provider):
    """Two requests at once both pass sweep_create's checks (each reads before the other writes): the
    constraints decide, and sweep_create turns the loser's IntegrityError into the same refusal."""
    from django.db import IntegrityError, transaction

    first = services.sweep_create(kind="threads", as_of=NOW)
    with pytest.raises(IntegrityError), transaction.atomic():
        Sweep.objects.create(kind="threads", dry_run=False, as_of=NOW)
    Sweep.objects.unscoped().filter(pk=first.pk).update(status=Sweep.Status.FINISHED)
    preview = services.sweep_create(kind="vector_stores", dry_run=True, as_of=NOW)
    Sweep.objects.unscoped().filter(pk=preview.pk).update(status=Sweep.Status.FINISHED)
    services.sweep_create(kind="vector_stores", preview_of=preview)
    with pytest.raises(IntegrityError), transaction.atomic():  # the preview rule alone (another kind)
        Sweep.objects.create(kind="files", dry_run=False, as_of=NOW, preview_of=preview)
    # Finished duplicates that races left before the rule existed do not break it.
    Sweep.objects.create(kind="files", dry_run=False, as_of=NOW, preview_of=preview, status=Sweep.Status.FINISHED)


def test_a_sweep_lost_to_a_concurrent_request_is_refused_not_a_500(policies, provider, monkeypatch):
    from django.db import IntegrityError

    def raced(**fields):
        raise IntegrityError("duplicate key value violates unique constraint \"sweep_one_real_sweep_per_kind_at_a_time\"")

    monkeypatch.setattr(Sweep.objects, "create", raced)
    with pytest.raises(services.SweepBusy):
        services.sweep_create(kind="threads", as_of=NOW)


def test_a_batch_does_nothing_while_another_worker_holds_the_kind_lock(policies, provider):
    tenant, _ = policies
    _thread(tenant, "thread_old", days_idle=60, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    assert services._lock_acquire("threads", "other-worker")
    result = services.sweep_run_batch(sweep_id=sweep.pk, provider=provider)
    assert result.status == "busy" and provider.deletes == []
    services._lock_release("threads", "other-worker")
    assert _run(sweep, provider).status == "finished"


def test_a_sweep_whose_batches_keep_raising_is_failed_and_audited_after_the_limit(policies, provider, monkeypatch, settings):
    from apps.core.models import AuditEvent
    from apps.provider.client import ProviderAuthError

    tenant, _ = policies
    settings.LIFECYCLE_MAX_BATCH_FAILURES = 2
    _thread(tenant, "thread_old", days_idle=60, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)

    settings.OPENAI_API_KEY = ""  # this worker has no API key: outside any item
    with pytest.raises(ProviderAuthError):
        services.sweep_run_batch(sweep_id=sweep.pk)
    sweep.refresh_from_db()
    assert (sweep.status, sweep.batch_failures, sweep.claimed_by) == (Sweep.Status.RUNNING, 1, "")
    result = services.sweep_run_batch(sweep_id=sweep.pk)
    assert result.status == "failed"
    sweep.refresh_from_db()
    assert sweep.status == Sweep.Status.FAILED and "OPENAI_API_KEY is not set" in sweep.errors[-1]["error"]
    assert AuditEvent.objects.filter(action="lifecycle.sweep.fail", target_id=str(sweep.pk)).exists()
    assert services.sweeps_reap() == []  # never resumed again
    services.sweep_create(kind="threads", as_of=NOW)  # and it no longer blocks the next sweep of its kind


def test_only_batch_failures_in_a_row_fail_a_sweep(policies, provider, monkeypatch, settings):
    tenant, _ = policies
    settings.LIFECYCLE_MAX_BATCH_FAILURES = 2
    for openai_id in ("thread_1", "thread_2"):
        _thread(tenant, openai_id, days_idle=60, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    original = services._claim_next_item
    monkeypatch.setattr(services, "_claim_next_item", lambda *args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        services.sweep_run_batch(sweep_id=sweep.pk, provider=provider)
    monkeypatch.setattr(services, "_claim_next_item", original)
    assert services.sweep_run_batch(sweep_id=sweep.pk, provider=provider, batch_size=1).status == "more"
    monkeypatch.setattr(services, "_claim_next_item", lambda *args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        services.sweep_run_batch(sweep_id=sweep.pk, provider=provider)
    sweep.refresh_from_db()
    assert (sweep.status, sweep.batch_failures) == (Sweep.Status.RUNNING, 1)


def test_an_item_whose_worker_stopped_on_it_too_often_is_failed_without_touching_openai(policies, provider, settings):
    tenant, _ = policies
    settings.LIFECYCLE_MAX_ITEM_ATTEMPTS = 3
    settings.LIFECYCLE_ITEM_LEASE_SECONDS = 300
    _thread(tenant, "thread_poison", days_idle=60, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    services._plan_step(sweep)
    # Three workers claimed it and died (or their batch raised) before finishing it; its lease ran out.
    SweepItem.objects.unscoped().filter(sweep=sweep).update(
        state=SweepItem.State.CLAIMED, claimed_by="dead", attempts=3, claimed_at=NOW - dt.timedelta(hours=1))
    provider.threads.clear()  # any call at OpenAI would now answer 404 ("already gone")
    assert _run(sweep, provider).status == "finished"
    item = SweepItem.objects.unscoped().get(sweep=sweep)
    assert item.outcome == Outcome.FAILED and item.detail.startswith("gave up after 3 attempts")
    assert Thread.objects.unscoped().get(openai_id="thread_poison").status == "active"


def test_a_batch_that_only_planned_frees_the_sweep_for_the_next_task(policies, provider, settings):
    # Each task runs as a new worker id: a planning batch that kept its claim made the next one "busy",
    # and a big plan then advanced one step per reaper round.
    tenant, _ = policies
    settings.LIFECYCLE_SWEEP_SET_PLAN_PAGE = 1
    for i in range(3):
        _thread(tenant, f"thread_{i}", days_idle=60, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    assert services.sweep_run_batch(sweep_id=sweep.pk, worker="A", provider=provider, batch_size=10).status == "more"
    assert services.sweep_run_batch(sweep_id=sweep.pk, worker="B", provider=provider, batch_size=10).status == "more"


class _CancellingProvider(FakeProvider):
    """Someone cancels the sweep right after its first delete."""

    def __init__(self, sweep_id_holder: list):
        super().__init__()
        self.sweep_id_holder = sweep_id_holder

    def delete_thread(self, thread_id):
        outcome = super().delete_thread(thread_id)
        if len(self.deletes) == 1:
            services.sweep_cancel(sweep_id=self.sweep_id_holder[0], actor_label="test")
        return outcome


def test_a_cancelled_sweep_stops_after_the_item_in_hand_and_counts_it(policies):
    """"Recent sweeps" shows Sweep.counts: it must say what the sweep deleted, the item in hand included."""
    tenant, _ = policies
    holder: list = []
    provider = _CancellingProvider(holder)
    for index in range(3):
        _thread(tenant, f"thread_old_{index}", days_idle=40, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    holder.append(sweep.pk)

    result = _run(sweep, provider)

    assert len(provider.deletes) == 1
    sweep.refresh_from_db()
    assert sweep.status == Sweep.Status.FAILED and sweep.errors[-1]["error"] == "cancelled by test"
    assert result.status == "failed"
    assert sweep.counts == services.sweep_counts(sweep) == {Outcome.DELETED: 1, SweepItem.State.PENDING: 2}
    with pytest.raises(services.SweepRefused, match="already failed"):
        services.sweep_cancel(sweep_id=sweep.pk)


def test_a_sweep_failed_mid_batch_records_the_counts_of_what_it_did(policies, provider, monkeypatch, settings):
    tenant, _ = policies
    settings.LIFECYCLE_MAX_BATCH_FAILURES = 1
    for index in range(3):
        _thread(tenant, f"thread_old_{index}", days_idle=40, provider=provider)
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    claim_next_item, claims = services._claim_next_item, []

    def database_lost_on_the_third_claim(*args):
        claims.append(args)
        if len(claims) == 3:
            raise RuntimeError("database connection lost")
        return claim_next_item(*args)

    monkeypatch.setattr(services, "_claim_next_item", database_lost_on_the_third_claim)
    assert services.sweep_run_batch(sweep_id=sweep.pk, provider=provider).status == "failed"

    sweep.refresh_from_db()
    assert len(provider.deletes) == 2
    assert sweep.counts == services.sweep_counts(sweep) == {Outcome.DELETED: 2, SweepItem.State.PENDING: 1}
