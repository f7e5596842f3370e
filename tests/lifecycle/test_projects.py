"""Sweeps, the inventory and staff deletes reach each OpenAI resource with its own project's key. OpenAI (and
the sandbox) scope objects by project: asked with another project's key, a live object answers 404, which a
sweep used to record as "already gone" while the object stayed at OpenAI."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from apps.core.models import AuditEvent
from apps.ledger.models import Thread
from apps.ledger.services import ingest_events
from apps.lifecycle import services
from apps.lifecycle.models import Outcome, StoredFile, SweepItem, VectorStore
from apps.reconciliation.models import OpenAIProject

DAY = 86400


@pytest.fixture
def retention(tenant):
    tenant.thread_retention_days = 30
    tenant.vector_store_idle_days = 7
    tenant.save()
    return tenant


def _sweep(sandbox, provider, kind: str):
    sweep = services.sweep_create(kind=kind, as_of=sandbox.clock.datetime())
    assert services.sweep_run_to_completion(sweep_id=sweep.pk, provider=provider, sleep=lambda s: None).status == "finished"
    return sweep


def _ingest(tenant, obj: dict, project: str) -> None:
    result = ingest_events(events=[{"tenant": tenant.slug, "object": obj, "openai_project": project}])
    assert result.results[0].outcome == "created", result.results[0]


def _taken_for_gone(tenant, threads, sweep: int = 1) -> None:
    """The threads recorded under the default project, then as a sweep recorded them when it asked every
    project with the default key: gone at OpenAI."""
    for thread in threads:
        _ingest(tenant, thread.to_dict(), "proj_default")
    _marked_gone(tenant, sweep)


def _marked_gone(tenant, sweep: int) -> None:
    Thread.objects.for_tenant(tenant).update(status="deleted", deletion_reason=f"gone at OpenAI (sweep {sweep})")


def test_a_sweep_deletes_each_thread_with_its_own_projects_key(sandbox, openai_client, provider, second_project,
                                                              retention):
    default_thread = openai_client.beta.threads.create()
    second_thread = second_project.client.beta.threads.create()
    _ingest(retention, default_thread.to_dict(), "proj_default")
    _ingest(retention, second_thread.to_dict(), "proj_second")
    sandbox.advance(31 * DAY)

    sweep = _sweep(sandbox, provider, "threads")

    items = {item.openai_id: item for item in SweepItem.objects.unscoped().filter(sweep=sweep)}
    assert {i: (items[i].outcome, items[i].openai_project) for i in items} == {
        default_thread.id: (Outcome.DELETED, "proj_default"), second_thread.id: (Outcome.DELETED, "proj_second")}
    assert default_thread.id not in sandbox.state.threads and second_thread.id not in sandbox.state.threads


def test_a_resource_in_a_project_runledger_cannot_reach_is_kept_and_its_item_says_what_to_configure(
        sandbox, provider, retention, caplog):
    elsewhere = sandbox.client(project="proj_unknown")
    thread = elsewhere.beta.threads.create()
    _ingest(retention, thread.to_dict(), "proj_unknown")
    sandbox.advance(31 * DAY)

    with caplog.at_level(logging.WARNING, logger="apps.provider.projects"):
        sweep = _sweep(sandbox, provider, "threads")

    item = SweepItem.objects.unscoped().get(sweep=sweep)
    assert item.outcome == Outcome.FAILED and item.openai_project == "proj_unknown"
    assert "OpenAI project proj_unknown is not configured" in item.detail and item.detail.startswith("kept: ")
    assert thread.id in sandbox.state.threads  # not deleted, and not recorded as gone either
    assert Thread.objects.for_tenant(retention).get(openai_id=thread.id).status == Thread.Status.ACTIVE
    assert "proj_unknown cannot be reached" in caplog.text


def test_a_project_configured_without_its_api_key_in_the_environment_is_named(sandbox, provider, retention,
                                                                            monkeypatch):
    OpenAIProject.objects.create(project_id="proj_nokey", admin_key_env="RL_TEST_NOKEY_ADMIN",
                                 api_key_env="RL_TEST_NOKEY_API", base_url=sandbox.base_url)
    monkeypatch.delenv("RL_TEST_NOKEY_API", raising=False)
    elsewhere = sandbox.client(project="proj_nokey")
    thread = elsewhere.beta.threads.create()
    _ingest(retention, thread.to_dict(), "proj_nokey")
    sandbox.advance(31 * DAY)

    item = SweepItem.objects.unscoped().get(sweep=_sweep(sandbox, provider, "threads"))
    assert item.outcome == Outcome.FAILED and "RL_TEST_NOKEY_API is not set" in item.detail
    assert thread.id in sandbox.state.threads
    result = services.inventory_sync(provider=provider)
    assert "RL_TEST_NOKEY_API is not set" in result.unreachable["proj_nokey"]


def test_inventory_lists_every_project_with_its_key_and_marks_gone_only_what_its_project_no_longer_lists(
        sandbox, openai_client, provider, second_project, retention):
    mine = openai_client.vector_stores.create(name="mine", metadata={"tenant": retention.slug})
    file = second_project.client.files.create(file=("a.txt", b"x" * 10), purpose="assistants")
    theirs = second_project.client.vector_stores.create(name="theirs", metadata={"tenant": retention.slug},
                                                        file_ids=[file.id])
    # A store recorded for a project RunLedger cannot list: never listed, so never taken for gone.
    services.resources_record(tenant=retention, openai_project="proj_unlisted", obj={
        "id": "vs_unlisted", "object": "vector_store", "created_at": int(sandbox.clock.now()), "usage_bytes": 0})

    result = services.inventory_sync(provider=provider)

    projects = dict(VectorStore.objects.for_tenant(retention).values_list("openai_id", "openai_project"))
    assert projects == {mine.id: "proj_default", theirs.id: "proj_second", "vs_unlisted": "proj_unlisted"}
    assert result.gone == 0 and result.unreachable == {}
    assert VectorStore.objects.for_tenant(retention).filter(status="active").count() == 3
    assert StoredFile.objects.for_tenant(retention).get(openai_id=file.id).vector_store_openai_ids == [theirs.id]

    second_project.client.vector_stores.delete(theirs.id)
    result = services.inventory_sync(provider=provider)
    assert result.gone == 1
    statuses = dict(VectorStore.objects.for_tenant(retention).values_list("openai_id", "status"))
    assert statuses == {mine.id: "active", theirs.id: "deleted", "vs_unlisted": "active"}


def test_idle_stores_of_another_project_are_swept_with_its_key(sandbox, provider, second_project, retention):
    store = second_project.client.vector_stores.create(name="idle", metadata={"tenant": retention.slug})
    services.inventory_sync(provider=provider)
    sandbox.advance(8 * DAY)

    sweep = _sweep(sandbox, provider, "vector_stores")

    assert SweepItem.objects.unscoped().get(sweep=sweep).outcome == Outcome.DELETED
    assert store.id not in sandbox.state.vector_stores


def test_staff_delete_reaches_the_resources_own_project(sandbox, provider, second_project, staff_user, client):
    store = second_project.client.vector_stores.create(name="orphan")
    services.inventory_sync(provider=provider)
    row = VectorStore.objects.unscoped().get(openai_id=store.id)
    assert row.tenant_id is None and row.openai_project == "proj_second"
    client.force_login(staff_user)
    page = client.get("/lifecycle/orphans/").content.decode()
    assert store.id in page and ">proj_second</code>" in page  # staff see which project an orphan is in

    outcome = services.resource_delete(resource_type="vector_store", pk=row.pk, actor=staff_user, provider=provider)

    assert outcome == Outcome.DELETED and store.id not in sandbox.state.vector_stores
    assert AuditEvent.objects.get(action="lifecycle.resource.delete", target_id=store.id).data == {"outcome": "deleted"}


def test_staff_delete_of_a_resource_in_an_unreachable_project_is_refused_with_what_to_configure(
        sandbox, provider, staff_user):
    services.resources_record(tenant=None, openai_project="proj_unlisted", obj={
        "id": "vs_unlisted", "object": "vector_store", "created_at": int(dt.datetime(2026, 1, 1).timestamp())})
    row = VectorStore.objects.unscoped().get(openai_id="vs_unlisted")

    with pytest.raises(services.LifecycleError, match="proj_unlisted.*is not configured"):
        services.resource_delete(resource_type="vector_store", pk=row.pk, actor=staff_user, provider=provider)
    row.refresh_from_db()
    assert row.status == "active"
    assert not AuditEvent.objects.filter(action="lifecycle.resource.delete").exists()


def test_ingest_records_the_project_a_resource_was_reported_from(tenant):
    result = ingest_events(events=[{"tenant": tenant.slug, "openai_project": "proj_second", "object": {
        "id": "vs_reported", "object": "vector_store", "created_at": 1764000000, "usage_bytes": 10}}])
    assert result.results[0].outcome == "created"
    assert VectorStore.objects.for_tenant(tenant).get().openai_project == "proj_second"


def test_a_store_recorded_without_its_project_is_re_recorded_by_its_projects_listing_not_taken_for_gone(
        sandbox, provider, second_project, tenant):
    store = second_project.client.vector_stores.create(name="theirs")
    # Reported before the project was known (or by an older RunLedger): recorded as the default project's.
    services.resources_record(tenant=tenant, obj=store.to_dict())
    assert VectorStore.objects.for_tenant(tenant).get().openai_project == ""

    result = services.inventory_sync(provider=provider)

    row = VectorStore.objects.for_tenant(tenant).get()
    assert (row.status, row.openai_project, result.gone) == ("active", "proj_second", 0)
    # A later report that does not name the project leaves the recorded one alone.
    ingest_events(events=[{"tenant": tenant.slug, "object": store.to_dict()}])
    assert VectorStore.objects.for_tenant(tenant).get().openai_project == "proj_second"


def test_an_item_planned_before_its_project_was_known_is_processed_with_the_project_the_ledger_has_now(
        sandbox, provider, second_project, retention):
    thread = second_project.client.beta.threads.create()
    _ingest(retention, thread.to_dict(), "proj_second")
    sandbox.advance(31 * DAY)
    preview = services.sweep_create(kind="threads", as_of=sandbox.clock.datetime(), dry_run=True)
    services.sweep_run_to_completion(sweep_id=preview.pk, provider=provider, sleep=lambda s: None)
    SweepItem.objects.unscoped().filter(sweep=preview).update(openai_project="")  # as migration 0007 left it

    confirmation = services.sweep_create(kind="threads", as_of=preview.as_of, preview_of=preview)
    services.sweep_run_to_completion(sweep_id=confirmation.pk, provider=provider, sleep=lambda s: None)

    item = SweepItem.objects.unscoped().get(sweep=confirmation)
    assert (item.outcome, item.openai_project) == (Outcome.DELETED, "proj_second")
    assert thread.id not in sandbox.state.threads


def test_a_404_in_the_recorded_project_asks_the_other_projects_and_corrects_the_ledger(
        sandbox, provider, second_project, retention):
    thread = second_project.client.beta.threads.create()
    _ingest(retention, thread.to_dict(), "proj_default")  # reported under the wrong project
    sandbox.advance(31 * DAY)

    sweep = _sweep(sandbox, provider, "threads")

    item = SweepItem.objects.unscoped().get(sweep=sweep)
    assert (item.outcome, item.openai_project) == (Outcome.DELETED, "proj_second")
    assert thread.id not in sandbox.state.threads
    assert Thread.objects.for_tenant(retention).get(openai_id=thread.id).openai_project == "proj_second"
    corrected = AuditEvent.objects.get(action="lifecycle.resource.project_correct")
    assert (corrected.target_id, corrected.actor_label, corrected.tenant_id) == (thread.id, f"sweep {sweep.pk}",
                                                                               retention.pk)
    assert (corrected.data["previous"], corrected.data["openai_project"]) == ("proj_default", "proj_second")


def test_a_dry_run_that_finds_a_thread_in_another_project_changes_nothing_and_says_where_it_is(
        sandbox, provider, second_project, retention):
    thread = second_project.client.beta.threads.create()
    _ingest(retention, thread.to_dict(), "proj_default")  # reported under the wrong project
    sandbox.advance(31 * DAY)

    sweep = services.sweep_create(kind="threads", as_of=sandbox.clock.datetime(), dry_run=True)
    services.sweep_run_to_completion(sweep_id=sweep.pk, provider=provider, sleep=lambda s: None)

    item = SweepItem.objects.unscoped().get(sweep=sweep)
    assert (item.outcome, item.openai_project) == (Outcome.WOULD_DELETE, "proj_second")
    assert "in OpenAI project proj_second, recorded under proj_default" in item.detail
    assert Thread.objects.for_tenant(retention).get(openai_id=thread.id).openai_project == "proj_default"
    assert not AuditEvent.objects.filter(action="lifecycle.resource.project_correct").exists()
    assert thread.id in sandbox.state.threads


def test_a_project_corrected_once_is_audited_once(tenant):
    store = {"id": "vs_moved", "object": "vector_store", "created_at": 1_760_000_000, "name": "moved",
             "usage_bytes": 0, "status": "completed", "file_counts": {}, "metadata": {}}
    services.resources_record(tenant=tenant, openai_project="proj_default", obj=store)

    for _ in range(2):  # two workers finding it in the same project
        services._project_correct("vector_store", "vs_moved", "proj_second", actor_label="sweep 1")

    assert VectorStore.objects.for_tenant(tenant).get(openai_id="vs_moved").openai_project == "proj_second"
    assert AuditEvent.objects.filter(action="lifecycle.resource.project_correct", target_id="vs_moved").count() == 1


def test_a_404_is_not_gone_while_a_configured_project_cannot_be_asked(sandbox, openai_client, provider, retention,
                                                                     monkeypatch):
    OpenAIProject.objects.create(project_id="proj_nokey", admin_key_env="RL_TEST_NOKEY_ADMIN",
                                 api_key_env="RL_TEST_NOKEY_API", base_url=sandbox.base_url)
    monkeypatch.delenv("RL_TEST_NOKEY_API", raising=False)
    thread = openai_client.beta.threads.create()
    _ingest(retention, thread.to_dict(), "proj_default")
    openai_client.beta.threads.delete(thread.id)
    sandbox.advance(31 * DAY)

    item = SweepItem.objects.unscoped().get(sweep=_sweep(sandbox, provider, "threads"))

    assert item.outcome == Outcome.FAILED and "proj_nokey could not be asked" in item.detail
    assert Thread.objects.for_tenant(retention).get(openai_id=thread.id).status == Thread.Status.ACTIVE


def test_a_store_taken_for_gone_is_restored_when_its_own_project_lists_it(sandbox, provider, second_project, tenant):
    store = second_project.client.vector_stores.create(name="theirs", metadata={"tenant": tenant.slug})
    services.resources_record(tenant=tenant, obj=store.to_dict())
    # What the inventory did when it asked every project with the default key: not listed, so "gone".
    VectorStore.objects.for_tenant(tenant).update(status="deleted", deletion_reason="gone at OpenAI (not listed)")

    result = services.inventory_sync(provider=provider)

    row = VectorStore.objects.for_tenant(tenant).get()
    assert (row.status, row.deletion_reason, row.openai_project) == ("active", "", "proj_second")
    assert result.counts["vector_store:restored"] == 1


def test_a_store_runledger_deleted_stays_deleted_whatever_is_reported(sandbox, provider, tenant):
    services.resources_record(tenant=tenant, openai_project="proj_default", obj={
        "id": "vs_swept", "object": "vector_store", "created_at": 1764000000})
    VectorStore.objects.for_tenant(tenant).update(status="deleted", deletion_reason="idle (sweep 3)")
    assert services.resources_record(tenant=tenant, openai_project="proj_default", listed=True, obj={
        "id": "vs_swept", "object": "vector_store", "created_at": 1764000000}) == "deleted_kept"


def test_one_projects_refused_key_leaves_its_rows_and_the_unattributed_ones_but_not_the_others(
        sandbox, openai_client, provider, second_project, tenant, monkeypatch):
    monkeypatch.setenv("RL_TEST_SECOND_API_KEY", "sk-revoked")
    services.resources_record(tenant=tenant, openai_project="proj_default", obj={
        "id": "vs_default_gone", "object": "vector_store", "created_at": 1764000000})
    services.resources_record(tenant=tenant, openai_project="proj_second", obj={
        "id": "vs_second", "object": "vector_store", "created_at": 1764000000})
    services.resources_record(tenant=tenant, obj={"id": "vs_unattributed", "object": "vector_store",
                                                  "created_at": 1764000000})

    result = services.inventory_sync(provider=provider)

    assert "proj_second" in result.unreachable and "proj_default" not in result.unreachable
    statuses = dict(VectorStore.objects.for_tenant(tenant).values_list("openai_id", "status"))
    assert statuses == {"vs_default_gone": "deleted", "vs_second": "active", "vs_unattributed": "active"}


def test_recheck_gone_restores_threads_another_project_still_holds_and_the_next_sweep_deletes_them(
        sandbox, openai_client, provider, second_project, retention, capsys):
    from django.core.management import call_command

    held = second_project.client.beta.threads.create()
    really_gone = openai_client.beta.threads.create()
    openai_client.beta.threads.delete(really_gone.id)
    _taken_for_gone(retention, (held, really_gone))

    call_command("recheck_gone", "--dry-run")
    assert f"would restore {held.id} (OpenAI project proj_second)" in capsys.readouterr().out
    assert not Thread.objects.for_tenant(retention).filter(status="active").exists()

    call_command("recheck_gone")
    out = capsys.readouterr().out
    assert "2 gone thread(s) asked, 1 restored." in out
    rows = {t.openai_id: (t.status, t.openai_project) for t in Thread.objects.for_tenant(retention)}
    assert rows == {held.id: ("active", "proj_second"), really_gone.id: ("deleted", "proj_default")}
    assert AuditEvent.objects.get(action="lifecycle.thread.restore").target_id == held.id

    sandbox.advance(31 * DAY)
    item = SweepItem.objects.unscoped().get(sweep=_sweep(sandbox, provider, "threads"))
    assert (item.openai_id, item.outcome) == (held.id, Outcome.DELETED) and held.id not in sandbox.state.threads


def test_staff_delete_of_a_store_recorded_under_the_wrong_project_deletes_it_in_its_own(
        sandbox, provider, second_project, staff_user):
    store = second_project.client.vector_stores.create(name="theirs")
    services.resources_record(tenant=None, openai_project="proj_default", obj=store.to_dict())
    row = VectorStore.objects.unscoped().get(openai_id=store.id)

    outcome = services.resource_delete(resource_type="vector_store", pk=row.pk, actor=staff_user, provider=provider)

    row.refresh_from_db()
    assert (outcome, row.status, row.openai_project) == (Outcome.DELETED, "deleted", "proj_second")
    assert store.id not in sandbox.state.vector_stores
    corrected = AuditEvent.objects.get(action="lifecycle.resource.project_correct")
    assert (corrected.target_id, corrected.actor_id, corrected.data["previous"]) == (store.id, staff_user.pk,
                                                                                     "proj_default")


def test_recheck_gone_continues_after_a_limit_and_leaves_out_a_project_whose_key_is_refused(
        sandbox, openai_client, provider, second_project, retention, monkeypatch):
    threads = [second_project.client.beta.threads.create() for _ in range(3)]
    _taken_for_gone(retention, threads)

    first = services.threads_recheck_gone(limit=2)
    assert first.asked == 2 and len(first.restored) == 2
    rest = services.threads_recheck_gone(after=first.last_pk)
    assert rest.asked == 1 and [openai_id for openai_id, _ in rest.restored] == [threads[2].id]
    assert not Thread.objects.for_tenant(retention).filter(status="deleted").exists()

    _marked_gone(retention, sweep=2)
    monkeypatch.setenv("RL_TEST_SECOND_API_KEY", "sk-revoked")
    refused = services.threads_recheck_gone()
    assert refused.asked == 3 and refused.restored == [] and "proj_second" in refused.unreachable


def test_a_404_is_not_gone_while_another_projects_key_is_refused(sandbox, openai_client, provider, second_project,
                                                                 retention, monkeypatch):
    thread = openai_client.beta.threads.create()
    _ingest(retention, thread.to_dict(), "proj_default")
    openai_client.beta.threads.delete(thread.id)
    monkeypatch.setenv("RL_TEST_SECOND_API_KEY", "sk-revoked")
    sandbox.advance(31 * DAY)

    item = SweepItem.objects.unscoped().get(sweep=_sweep(sandbox, provider, "threads"))

    assert item.outcome == Outcome.FAILED and item.detail.startswith("kept: not found in OpenAI project proj_default")
    assert "proj_second could not be asked" in item.detail
    assert Thread.objects.for_tenant(retention).get(openai_id=thread.id).status == Thread.Status.ACTIVE


def test_recheck_gone_stops_before_the_thread_openai_failed_on_and_says_where_to_continue(
        sandbox, openai_client, provider, second_project, retention, capsys):
    from django.core.management import call_command

    threads = [second_project.client.beta.threads.create() for _ in range(2)]
    _taken_for_gone(retention, threads)
    first, second = Thread.objects.for_tenant(retention).order_by("pk")
    sandbox.faults.server_error(path=f"^/v1/threads/{threads[1].id}$", times=None, status=503)

    call_command("recheck_gone")

    out = capsys.readouterr().out
    assert "1 gone thread(s) asked, 1 restored." in out  # the first, before OpenAI failed on the second
    assert f"run again later with --after {first.pk}" in out
    sandbox.faults.clear()
    result = services.threads_recheck_gone(after=first.pk)
    assert (result.asked, result.restored, result.stopped) == (1, [(second.openai_id, "proj_second")], "")
