"""Lifecycle pages: staff see and act on everything; a tenant member sees only their tenant's rows, never
orphans, and another tenant's sweep is a 404. Staff actions are POST + CSRF and audited."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.test import Client

from apps.core.models import AuditEvent
from apps.ledger.models import Thread
from apps.lifecycle import services
from apps.lifecycle.figures import storage_figure
from apps.lifecycle.models import Outcome, SweepItem, VectorStore
from apps.lifecycle.selectors import StorageDay
from tests import builders

from .fakes import FakeProvider

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def world(tenant, other_tenant, monkeypatch):
    """Each tenant has an old thread swept by its own tenant-filtered sweep, and there is one orphan store."""
    provider = FakeProvider()
    monkeypatch.setattr(services, "_default_provider", lambda: provider)
    sweeps = {}
    for t in (tenant, other_tenant):
        last = NOW - dt.timedelta(days=90)
        Thread.objects.create(tenant=t, openai_id=f"thread_{t.slug}", kind="thread", created_at=last, last_activity_at=last)
        provider.add_thread(f"thread_{t.slug}", last)
        sweep = services.sweep_create(kind="threads", tenant=t, as_of=NOW)
        services.sweep_run_to_completion(sweep_id=sweep.pk, provider=provider)
        sweeps[t.slug] = sweep
    services.resources_record(tenant=None, obj=builders.vector_store(vector_store_id="vs_orphan", created_at=NOW,
                                                                     usage_bytes=3 * 1024**3))
    return sweeps, provider


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_an_empty_audit_tells_a_member_nothing_only_staff_can_do(tenant, member_user, staff_user):
    # "Confirm a dry run on the Lifecycle page" is for staff; a member has no such control.
    member_page = _client(member_user).get("/lifecycle/audit/").content.decode()
    staff_page = _client(staff_user).get("/lifecycle/audit/").content.decode()

    assert "No sweep has deleted or skipped anything of your tenants yet." in member_page
    assert "Confirm a dry run" not in member_page and "Confirm a dry run on the Lifecycle page" in staff_page


def test_member_sees_own_sweep_and_audit_but_not_other_tenants(world, member_user):
    sweeps, _ = world
    client = _client(member_user)
    assert client.get(f"/lifecycle/sweeps/{sweeps['acme'].pk}/").status_code == 200
    assert client.get(f"/lifecycle/sweeps/{sweeps['globex'].pk}/").status_code == 404
    assert client.get("/lifecycle/sweeps/999999/").status_code == 404
    audit = client.get("/lifecycle/audit/").content.decode()
    assert "thread_acme" in audit and "thread_globex" not in audit
    csv = client.get("/lifecycle/audit/?format=csv&table=audit").getvalue().decode()
    assert "thread_acme" in csv and "thread_globex" not in csv
    overview = client.get("/lifecycle/")
    assert overview.status_code == 200 and "vs_orphan" not in overview.content.decode()
    assert client.get("/lifecycle/orphans/").status_code == 404


def test_the_audit_shows_rule_and_detail_in_one_column_and_exports_them_apart(world, staff_user):
    import csv as csv_module

    client = _client(staff_user)
    page = client.get("/lifecycle/audit/")
    headers = [header["column"].header for header in page.context["tables"]["audit"].headers]
    assert "Rule · detail" in headers and "Rule" not in headers and "Detail" not in headers
    rows = list(csv_module.reader(client.get("/lifecycle/audit/?format=csv&table=audit").getvalue().decode().splitlines()))
    assert "Rule" in rows[0] and "Detail" in rows[0] and "Rule · detail" not in rows[0]


def test_what_archive_before_delete_kept_is_a_download_linked_from_the_audit_within_the_viewers_tenants(
        world, member_user, staff_user):
    import json

    from apps.lifecycle.models import ArchivedItem

    sweeps, _ = world
    for item in SweepItem.objects.unscoped().filter(outcome=Outcome.DELETED):
        for position, text in enumerate(("hello", "hi there")):  # stored oldest first, as the sweep copies them
            ArchivedItem.objects.create(tenant_id=item.tenant_id, thread_openai_id=item.openai_id, sweep_item=item,
                                        item_openai_id=f"msg_{item.openai_id}_{position}", position=position,
                                        data={"role": "user", "content": text})
    member = _client(member_user)

    download = member.get("/lifecycle/archives/thread_acme.json")
    assert download.status_code == 200 and download["Content-Disposition"] == (
        'attachment; filename="archive-thread_acme.json"')
    document = json.loads(b"".join(download.streaming_content))
    assert (document["thread"], document["tenant"]) == ("thread_acme", "acme")
    assert [(i["position"], i["id"], i["data"]["content"]) for i in document["items"]] == [
        (0, "msg_thread_acme_0", "hello"), (1, "msg_thread_acme_1", "hi there")]
    assert 'href="/lifecycle/archives/thread_acme.json"' in member.get("/lifecycle/audit/").content.decode()
    assert 'href="/lifecycle/archives/thread_acme.json"' in member.get(
        f"/lifecycle/sweeps/{sweeps['acme'].pk}/").content.decode()
    # Another tenant's archive is a 404, the same as one that does not exist; staff read any.
    assert member.get("/lifecycle/archives/thread_globex.json").status_code == 404
    assert member.get("/lifecycle/archives/thread_nowhere.json").status_code == 404
    assert _client(staff_user).get("/lifecycle/archives/thread_globex.json").status_code == 200
    assert Client().get("/lifecycle/archives/thread_acme.json").status_code == 302


def test_member_cannot_start_confirm_or_touch_orphans(world, member_user):
    client = _client(member_user)
    store = VectorStore.objects.unassigned().get()
    assert client.post("/lifecycle/sweeps/new/", {"kind": "threads"}).status_code == 404
    assert client.post(f"/lifecycle/orphans/vector_store/{store.pk}/delete/").status_code == 404
    assert client.post(f"/lifecycle/orphans/vector_store/{store.pk}/assign/", {"tenant": "acme"}).status_code == 404
    store.refresh_from_db()
    assert store.tenant_id is None and store.status == "active"


def test_staff_dry_run_then_confirm_from_the_ui_is_audited(world, staff_user, tenant):
    _, provider = world
    last = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    Thread.objects.create(tenant=tenant, openai_id="thread_ui", kind="thread", created_at=last, last_activity_at=last)
    provider.add_thread("thread_ui", last)
    client = _client(staff_user)
    response = client.post("/lifecycle/sweeps/new/", {"kind": "threads", "tenant": "acme"})
    assert response.status_code == 302
    preview = services.Sweep.objects.unscoped().filter(dry_run=True).get()
    assert "thread_ui" in provider.threads
    page = client.get(response["Location"]).content.decode()
    assert "thread_ui" in page and "Delete these 1 resource" in page
    confirmed = client.post(f"/lifecycle/sweeps/{preview.pk}/confirm/")
    assert confirmed.status_code == 302 and "thread_ui" not in provider.threads
    assert SweepItem.objects.for_tenant(tenant).get(openai_id="thread_ui", dry_run=False).outcome == Outcome.DELETED
    actions = list(AuditEvent.objects.filter(actor=staff_user).values_list("action", flat=True))
    assert actions.count("lifecycle.sweep.create") == 2


def test_staff_actions_need_csrf(world, staff_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    assert client.post("/lifecycle/sweeps/new/", {"kind": "threads"}).status_code == 403


def test_staff_assigns_and_deletes_orphans(world, staff_user, tenant):
    _, provider = world
    client = _client(staff_user)
    page = client.get("/lifecycle/orphans/").content.decode()
    assert "vs_orphan" in page and "$0.20" in page  # 3 GiB alone: 2 billable GiB at $0.10
    store = VectorStore.objects.unassigned().get()
    client.post(f"/lifecycle/orphans/vector_store/{store.pk}/assign/", {"tenant": "acme"})
    store.refresh_from_db()
    assert store.tenant_id == tenant.pk and store.tenant_source == "staff"
    provider.vector_stores["vs_orphan"] = {"id": "vs_orphan"}
    client.post(f"/lifecycle/orphans/vector_store/{store.pk}/delete/")
    store.refresh_from_db()
    assert store.status == "deleted" and "vs_orphan" not in provider.vector_stores
    assert AuditEvent.objects.filter(action="lifecycle.resource.delete", target_id="vs_orphan").exists()
    # In the deletion audit beside the sweeps' deletions, page and CSV, with who asked.
    item = SweepItem.objects.for_tenant(tenant).get(openai_id="vs_orphan")
    assert (item.outcome, item.sweep.requested_by, item.sweep.status) == ("deleted", staff_user, "finished")
    assert item.saved_usd_per_day > 0
    assert "vs_orphan" in client.get("/lifecycle/audit/").content.decode()
    assert "vs_orphan" in client.get("/lifecycle/audit/?format=csv&table=audit").getvalue().decode()


def test_orphan_delete_that_openai_refuses_is_a_message_not_a_500(world, staff_user, monkeypatch):
    """OpenAI refuses the delete (a 4xx): the page says so and nothing is marked deleted or audited."""
    from apps.provider.client import ProviderBadRequest

    class Down:
        def _fail(self, openai_id):
            raise ProviderBadRequest("delete: OpenAI answered 400: invalid id", status_code=400)

        delete_thread = delete_conversation = delete_vector_store = delete_file = delete_container = _fail

    monkeypatch.setattr(services, "_default_provider", lambda: Down())
    store = VectorStore.objects.unassigned().get()
    response = _client(staff_user).post(f"/lifecycle/orphans/vector_store/{store.pk}/delete/", follow=True)
    assert response.status_code == 200
    assert "OpenAI did not delete it" in response.content.decode()
    store.refresh_from_db()
    assert store.status == "active"
    assert not AuditEvent.objects.filter(action="lifecycle.resource.delete", target_id="vs_orphan").exists()


def _sandbox_orphan_store(sandbox, openai_client, provider, monkeypatch):
    """An orphan vector store at the sandbox and in the ledger; staff deletes reach it with the test's provider
    (the real client: its retries, and its classification of a delete's failure)."""
    store = openai_client.vector_stores.create(name="kb")
    monkeypatch.setattr(services, "_default_provider", lambda: provider)
    services.resources_record(tenant=None, obj=store.to_dict())
    return store, VectorStore.objects.unassigned().get(openai_id=store.id)


def test_staff_delete_answered_by_5xx_says_the_outcome_is_unknown_not_that_nothing_changed(
        sandbox, openai_client, provider, staff_user, monkeypatch):
    """A 5xx (or a timeout) can come after OpenAI deleted the object: "Nothing changed" was a guess. The page
    says the outcome is unknown, that the row stays as it was and what settles it; nothing is recorded."""
    store, row = _sandbox_orphan_store(sandbox, openai_client, provider, monkeypatch)
    sandbox.faults.add("server_error", path=rf"^/v1/vector_stores/{store.id}$", method="DELETE", times=None, status=502)

    response = _client(staff_user).post(f"/lifecycle/orphans/vector_store/{row.pk}/delete/", follow=True)

    assert response.status_code == 200
    shown = [(message.level_tag, str(message)) for message in response.context["messages"]]
    assert len(shown) == 1 and shown[0][0] == "warning", shown
    text = shown[0][1]
    assert f"Whether OpenAI deleted {store.id} is unknown" in text and "502" in text
    assert "row stays as it was" in text and "inventory sync settles it" in text
    assert "Nothing changed" not in text
    row.refresh_from_db()
    assert row.status == "active"
    assert not AuditEvent.objects.filter(action="lifecycle.resource.delete", target_id=store.id).exists()
    assert not SweepItem.objects.unscoped().filter(openai_id=store.id).exists()


def test_staff_delete_refused_with_a_4xx_still_says_nothing_changed(sandbox, openai_client, provider, staff_user,
                                                                    monkeypatch):
    """A 4xx refusal before anything happened: "Nothing changed" is true there, and stays."""
    store, row = _sandbox_orphan_store(sandbox, openai_client, provider, monkeypatch)
    sandbox.faults.add("server_error", path=rf"^/v1/vector_stores/{store.id}$", method="DELETE", times=None, status=403)

    response = _client(staff_user).post(f"/lifecycle/orphans/vector_store/{row.pk}/delete/", follow=True)

    shown = [(message.level_tag, str(message)) for message in response.context["messages"]]
    assert len(shown) == 1 and shown[0][0] == "error" and "Nothing changed" in shown[0][1], shown
    row.refresh_from_db()
    assert row.status == "active"
    assert openai_client.vector_stores.retrieve(store.id).id == store.id  # still there


def test_starting_a_sweep_with_the_broker_down_creates_it_for_the_reaper(world, staff_user, monkeypatch):
    """The sweep row is the record of the request: with the broker down the click still lands (no 500) and
    the reaper enqueues the sweep once the broker is back."""
    from apps.lifecycle import tasks
    from apps.lifecycle.models import Sweep

    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks.sweep_batch, "apply_async", broker_down)
    before = Sweep.objects.unscoped().count()
    response = _client(staff_user).post("/lifecycle/sweeps/new/", {"kind": "vector_stores"})
    assert response.status_code in (302, 303)
    assert Sweep.objects.unscoped().count() == before + 1


def test_anonymous_visitors_are_sent_to_login(db):
    assert Client().get("/lifecycle/").status_code == 302


def test_storage_figure_is_a_pure_function_of_the_days():
    assert storage_figure([]) is None
    from decimal import Decimal

    figure = storage_figure([StorageDay(dt.date(2026, 6, 1), Decimal("5"), Decimal("0.4"), Decimal("0.1"))])
    assert [trace["name"] for trace in figure["data"]] == ["storage cost", "saved by deletions", "GB-days"]
    assert figure["data"][0]["y"] == [0.4] and figure["data"][0]["text"] == ["$0.40"]


def test_storage_figure_gb_days_axis_has_its_own_round_ticks():
    """plotly.js syncs an overlaying axis's ticks to the main axis's gridlines by default, so GB-days read
    20.9, 41.8, 62.8 beside $2, $4, $6; "auto" gives the right-hand axis round ticks of its own."""
    from decimal import Decimal

    figure = storage_figure([StorageDay(dt.date(2026, 6, 1), Decimal("62.8"), Decimal("6.28"), Decimal("0"))])
    assert figure["layout"]["yaxis2"]["tickmode"] == "auto"
    assert figure["layout"]["yaxis2"]["title"]["text"] == "GB-days"


def test_storage_figure_gb_days_line_rides_clear_of_the_bar_tops():
    """Cost is GB-days times a price: with both axes autoscaled from zero, each day's GB-days point sat exactly
    on its cost bar's top and the two series read as one. Each axis now has its own range, the line's point
    well above its bar's top, and the line is dotted."""
    from decimal import Decimal

    days = [StorageDay(dt.date(2026, 6, day), Decimal(gb), Decimal(gb) * Decimal("0.1"), Decimal("0"))
            for day, gb in ((1, "20"), (2, "62.8"), (3, "41"))]
    figure = storage_figure(days)
    usd_top, gb_top = figure["layout"]["yaxis"]["range"][1], figure["layout"]["yaxis2"]["range"][1]
    bars, line = figure["data"][0]["y"], figure["data"][2]["y"]
    # Heights on the plot as fractions of it: every point half as high again as its bar, the tallest well clear.
    for bar, point in zip(bars, line, strict=True):
        assert point / gb_top > 1.4 * (bar / usd_top)
    assert max(line) / gb_top - max(bars) / usd_top > 0.3
    assert figure["data"][2]["line"]["dash"] == "dot"
    zero = storage_figure([StorageDay(dt.date(2026, 6, 1), Decimal("0"), Decimal("0"), Decimal("0"))])
    assert "range" not in zero["layout"]["yaxis"] and "range" not in zero["layout"]["yaxis2"]  # never [0, 0]


def test_sweep_command_dry_run_lists_and_deletes_nothing(tenant, monkeypatch, capsys):
    provider = FakeProvider()
    monkeypatch.setattr(services, "_default_provider", lambda: provider)
    last = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    Thread.objects.create(tenant=tenant, openai_id="thread_cli", kind="thread", created_at=last, last_activity_at=last)
    provider.add_thread("thread_cli", last)
    call_command("sweep", "--kind", "threads", "--tenant", "acme", "--dry-run")
    out = capsys.readouterr().out
    assert "would_delete: thread thread_cli" in out and "--confirm" in out
    assert "thread_cli" in provider.threads


def test_an_inventory_sync_delivered_while_another_runs_does_nothing(monkeypatch):
    """Beat sends one an hour and the broker redelivers one that outlasts its visibility timeout."""
    from django.core.cache import cache

    from apps.lifecycle import tasks

    calls = []
    monkeypatch.setattr(services, "inventory_sync",
                        lambda **kwargs: calls.append(1) or services.InventoryResult(counts={}, orphans=0, gone=0))
    cache.add(tasks.INVENTORY_LOCK, "another-worker", 60)
    assert tasks.inventory_sync() == {"skipped": "another inventory sync is running"} and calls == []
    cache.delete(tasks.INVENTORY_LOCK)
    assert "counts" in tasks.inventory_sync() and calls == [1]
    assert cache.get(tasks.INVENTORY_LOCK) is None  # released for the next hour's


def test_manage_py_inventory_sync_holds_the_hourly_tasks_lock_so_the_task_skips_meanwhile(monkeypatch, capsys):
    """The command took no lock: run beside the hourly task, both listed everything (every OpenAI call twice)."""
    from django.core.cache import cache

    from apps.lifecycle import tasks

    during = []

    def listing(**kwargs):
        during.append((cache.get(tasks.INVENTORY_LOCK) is not None, tasks.inventory_sync()))
        return services.InventoryResult(counts={"files": 2}, orphans=0, gone=0)

    monkeypatch.setattr(services, "inventory_sync", listing)
    call_command("inventory_sync")
    assert during == [(True, {"skipped": "another inventory sync is running"})]
    assert cache.get(tasks.INVENTORY_LOCK) is None  # released when the command is done
    assert "inventory synced" in capsys.readouterr().out


def test_manage_py_inventory_sync_while_the_task_runs_exits_non_zero_naming_it_and_lists_nothing(monkeypatch,
                                                                                                  capsys):
    """A sync already running (the hourly task holds the lock): the command says which and what to do, exits
    with status 1, and asks OpenAI nothing."""
    from django.core.cache import cache
    from django.core.management import ManagementUtility

    from apps.lifecycle import tasks

    calls = []
    monkeypatch.setattr(services, "inventory_sync", lambda **kwargs: calls.append(1))
    cache.add(tasks.INVENTORY_LOCK, "the-hourly-task", 60)
    try:
        with pytest.raises(SystemExit) as exited:
            ManagementUtility(["manage.py", "inventory_sync"]).execute()
    finally:
        cache.delete(tasks.INVENTORY_LOCK)
    assert exited.value.code == 1 and calls == []
    error = capsys.readouterr().err
    assert "lifecycle.inventory_sync" in error and "Wait for it to finish, or run this again later" in error


def test_an_inventory_sync_longer_than_its_lease_keeps_its_lock_by_its_heartbeat(monkeypatch, time_machine,
                                                                                 settings):
    """A killed worker's lock blocks the hourly sync for one lease at most, yet a live sync that lists for
    longer keeps it: its heartbeat renews it."""
    from django.core.cache import cache

    from apps.lifecycle import tasks

    # Expiry read on the test's clock: Redis keeps its own, which time_machine cannot move.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    time_machine.move_to("2026-11-01T00:00:00Z", tick=False)
    held = []

    def listing_for_an_hour(*, heartbeat, **_):
        for _ in range(4):
            time_machine.shift(tasks.INVENTORY_LEASE_SECONDS * 3 // 4)
            heartbeat()
            held.append(cache.get(tasks.INVENTORY_LOCK) is not None)
        time_machine.shift(tasks.INVENTORY_LEASE_SECONDS + 1)  # as if the worker died: no progress
        held.append(cache.get(tasks.INVENTORY_LOCK) is not None)
        return services.InventoryResult(counts={}, orphans=0, gone=0)

    monkeypatch.setattr(services, "inventory_sync", listing_for_an_hour)
    assert "counts" in tasks.inventory_sync()
    assert held == [True, True, True, True, False]
    assert tasks.INVENTORY_LEASE_SECONDS <= 30 * 60


def test_an_inventory_sync_keeps_its_lock_while_it_lists_the_files_of_few_big_stores(monkeypatch, time_machine,
                                                                                     settings, db):
    """Progress is reported every 500 listed objects, but each store listed also lists its files (up to 10,000:
    100 pages each): three stores whose files take 20 minutes each went an hour without a renewal, and the
    lease lapsed under a live sync, letting the next hour's run in beside it."""
    from django.core.cache import cache

    from apps.lifecycle import tasks

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    time_machine.move_to("2026-11-01T00:00:00Z", tick=False)
    held = []

    class BigStores(FakeProvider):
        def list_vector_store_files(self, vs_id):
            for page in range(4):  # 20 minutes of pages
                time_machine.shift(5 * 60)
                yield {"id": f"file-{vs_id}-{page}"}
            held.append(cache.get(tasks.INVENTORY_LOCK) is not None)

    provider = BigStores()
    for number in range(3):
        provider.vector_stores[f"vs_{number}"] = {"id": f"vs_{number}", "object": "vector_store", "name": "kb",
                                                  "created_at": 1_790_000_000, "usage_bytes": 0}
    monkeypatch.setattr(services, "_default_provider", lambda: provider)
    assert "counts" in tasks.inventory_sync()
    assert held == [True, True, True]


def test_a_staff_delete_of_an_orphan_stays_out_of_a_members_audit_and_sweeps(world, staff_user, member_user):
    _, provider = world
    store = VectorStore.objects.unassigned().get()
    provider.vector_stores["vs_orphan"] = {"id": "vs_orphan"}
    _client(staff_user).post(f"/lifecycle/orphans/vector_store/{store.pk}/delete/")
    item = SweepItem.objects.unscoped().get(openai_id="vs_orphan")

    member = _client(member_user)
    assert "vs_orphan" not in member.get("/lifecycle/audit/").content.decode()
    assert "vs_orphan" not in member.get("/lifecycle/audit/?format=csv&table=audit").getvalue().decode()
    assert member.get(f"/lifecycle/sweeps/{item.sweep_id}/").status_code == 404


def test_the_storage_by_tenant_table_is_paginated(staff_user, db):
    # One row per tenant with storage: a deployment's thousand tenants were a thousand rows on one page.
    from decimal import Decimal

    from apps.tenants.models import Tenant

    today = dt.datetime.now(dt.UTC).date()
    for index in range(25):
        owner = Tenant.objects.create(slug=f"store-{index:02d}", name=f"Store {index}")
        builders.storage_meter(tenant=owner, day=today, usage_bytes=1, cost_usd=Decimal(index + 1))
    client = _client(staff_user)
    first = client.get("/lifecycle/").context["tables"]["storage_by_tenant"]
    assert (first.page.paginator.count, len(first.page_rows)) == (25, 20)
    assert first.page_rows[0]["tenant__slug"] == "store-24"  # costliest first
    second = client.get("/lifecycle/?storage_page=2").context["tables"]["storage_by_tenant"]
    assert [row["tenant__slug"] for row in second.page_rows] == [f"store-{i:02d}" for i in range(4, -1, -1)]


def test_the_storage_window_is_the_last_30_days_today_included(staff_user, db):
    # It read from 30 days before today to today: 31 days under a "last 30 days" title.
    from decimal import Decimal

    from apps.tenants.models import Tenant

    today = dt.datetime.now(dt.UTC).date()
    owner = Tenant.objects.create(slug="stored", name="Stored")
    for days_ago, cost in ((0, "1.00"), (29, "2.00"), (30, "40.00")):
        builders.storage_meter(tenant=owner, day=today - dt.timedelta(days=days_ago), usage_bytes=1,
                               cost_usd=Decimal(cost))
    response = _client(staff_user).get("/lifecycle/")
    (row,) = response.context["tables"]["storage_by_tenant"].page_rows
    assert row["cost_usd"] == Decimal("3.00")
    assert response.context["storage_cost_usd"] == Decimal("3.00")
    assert "Vector storage, last 30 days" in response.content.decode()


def test_the_orphans_page_lists_the_tenants_once_for_every_rows_assign_field(world, staff_user, tenant):
    """A select per orphan repeated every tenant: 50 rows of a deployment's 1,000 tenants were 50,000 options
    on one page. One datalist serves every row's field, escaped like any text."""
    from apps.tenants.models import Tenant

    Tenant.objects.create(slug="evil", name="<b>Evil</b> & Co")
    for number in range(3):
        services.resources_record(tenant=None, obj=builders.vector_store(
            vector_store_id=f"vs_more_{number}", created_at=NOW, usage_bytes=1))
    page = _client(staff_user).get("/lifecycle/orphans/").content.decode()
    assert page.count('<datalist id="orphan-tenants">') == 1
    assert page.count('list="orphan-tenants"') == 4 and page.count('<option value="acme">') == 1
    assert '<option value="evil">&lt;b&gt;Evil&lt;/b&gt; &amp; Co</option>' in page


def test_assigning_an_orphan_to_a_slug_no_tenant_has_says_so_and_changes_nothing(world, staff_user):
    client = _client(staff_user)
    store = VectorStore.objects.unassigned().get()
    answer = client.post(f"/lifecycle/orphans/vector_store/{store.pk}/assign/", {"tenant": "acmee"}, follow=True)
    assert "No tenant has the slug &#x27;acmee&#x27;: choose one from the list." in answer.content.decode()
    store.refresh_from_db()
    assert store.tenant_id is None
    answer = client.post(f"/lifecycle/orphans/vector_store/{store.pk}/assign/", {"tenant": " acme "}, follow=True)
    store.refresh_from_db()
    assert store.tenant.slug == "acme"


def test_the_sweep_forms_tenant_list_names_each_tenant_not_on_legal_hold_once(world, staff_user, tenant):
    from apps.tenants.models import Tenant

    Tenant.objects.filter(pk=tenant.pk).update(legal_hold=True)
    page = _client(staff_user).get("/lifecycle/").content.decode()
    assert '<option value="globex">' in page and '<option value="acme">' not in page
    assert "docs/lifecycle.md" not in page  # the chart's caption speaks to users, not to the repository
