"""Orphan alerts: one per OpenAI project whose vector stores with no tenant the organisation pays for, raised by
the inventory sync and resolved once no such store costs anything (assigned, deleted, expired, or within the
free GB). Before, `orphaned_resource` was an alert kind nothing raised: a store nobody owns was billed every
day until someone happened to open the orphans page."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client

from apps.alerts.models import Alert
from apps.core.models import AuditEvent
from apps.lifecycle import services
from apps.lifecycle.models import VectorStore
from apps.sandbox import objects
from tests import builders

pytestmark = pytest.mark.django_db

GIB = 1024**3
NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


def _store(tenant, store_id: str, usage_bytes: int, *, project: str = "", expires_at: dt.datetime | None = None):
    obj = builders.vector_store(vector_store_id=store_id, usage_bytes=usage_bytes, created_at=NOW - dt.timedelta(days=3))
    if expires_at:
        obj.update(status="expired", expires_at=int(expires_at.timestamp()))
    services.resources_record(tenant=tenant, obj=obj, openai_project=project)
    return VectorStore.objects.unscoped().get(openai_id=store_id)


def _orphan_alerts() -> dict[str, Alert]:
    return {alert.cause_key: alert for alert in Alert.unscoped_objects.filter(kind=Alert.Kind.ORPHANED_RESOURCE)}


def test_stores_with_no_tenant_billed_above_the_free_gb_raise_one_alert_per_project(tenant, settings):
    settings.OPENAI_PROJECT_ID = "proj_default"
    _store(tenant, "vs_owned", GIB)
    _store(None, "vs_orphan_a", GIB)  # recorded without a project: the default one
    _store(None, "vs_orphan_b", 2 * GIB, project="proj_default")
    _store(None, "vs_orphan_c", GIB, project="proj_second")

    refreshed = services.orphan_alerts_refresh(now=NOW)

    alerts = _orphan_alerts()
    assert set(alerts) == {"orphaned_resource:proj_default", "orphaned_resource:proj_second"}
    assert sorted(refreshed.raised) == sorted(alert.pk for alert in alerts.values())
    default = alerts["orphaned_resource:proj_default"]
    # 5 GiB stored, 1 free, at $0.10 per GB-day: $0.40 a day; without the default project's 3 GiB orphans, $0.10.
    assert default.tenant_id is None
    assert default.title == "Vector stores with no tenant are billed in OpenAI project proj_default"
    assert default.message.startswith("When raised: 2 stores with no tenant, 3.00 GB, $0.30 a day of the storage bill.")
    assert default.data == {"openai_project": "proj_default", "vector_stores": 2, "usage_bytes": 3 * GIB,
                            "usd_per_day": "0.3000000000"}
    assert Decimal(alerts["orphaned_resource:proj_second"].data["usd_per_day"]) == Decimal("0.1")

    # Once per cause: the next sync raises nothing new while the stores are still there.
    assert services.orphan_alerts_refresh(now=NOW).raised == []
    assert Alert.unscoped_objects.count() == 2


def test_stores_that_cost_nothing_raise_no_alert(tenant):
    _store(tenant, "vs_owned", GIB // 2)
    _store(None, "vs_within_free_gb", GIB // 2)  # the organisation's 1 GiB is free
    _store(None, "vs_expired", 5 * GIB, expires_at=NOW - dt.timedelta(days=1))  # OpenAI stopped billing it
    _store(None, "vs_empty", 0)
    services.resources_record(tenant=None, obj=builders.file(file_id="file_loose", created_at=NOW))  # free while idle

    assert services.orphan_alerts_refresh(now=NOW) == services.OrphanAlerts(raised=[], resolved=[])
    assert not _orphan_alerts()

    _store(tenant, "vs_owned_big", 10 * GIB)  # now the orphan's half GiB is billed
    assert len(services.orphan_alerts_refresh(now=NOW).raised) == 1


def test_a_projects_alert_resolves_when_its_orphans_are_assigned_and_opens_again_when_one_comes_back(
        tenant, staff_user, settings):
    settings.OPENAI_PROJECT_ID = "proj_default"
    first = _store(None, "vs_orphan", 3 * GIB)
    _store(None, "vs_elsewhere", 3 * GIB, project="proj_second")
    services.orphan_alerts_refresh(now=NOW)

    services.resource_assign(resource_type="vector_store", pk=first.pk, tenant=tenant, actor=staff_user)

    alerts = _orphan_alerts()
    resolved = alerts["orphaned_resource:proj_default"]
    assert resolved.resolved_at is not None and "No vector store of the project without a tenant" in resolved.resolution
    assert alerts["orphaned_resource:proj_second"].resolved_at is None  # the other project's stores are still there
    assert AuditEvent.objects.filter(action="alert.resolve", target_id=str(resolved.pk)).exists()

    _store(None, "vs_new_orphan", 2 * GIB)
    services.orphan_alerts_refresh(now=NOW)
    reopened = Alert.unscoped_objects.get(pk=resolved.pk)
    assert (reopened.resolved_at, reopened.times_reopened) == (None, 1)
    assert reopened.message.startswith("When raised: 1 store with no tenant, 2.00 GB,")


def test_the_inventory_sync_raises_it_and_deleting_the_orphan_resolves_it(sandbox, provider, staff_user):
    """End to end: the store is listed from the sandbox through the OpenAI SDK with no tenant in its metadata."""
    sandbox.clock.set(NOW.timestamp())
    created = int(NOW.timestamp()) - 3 * 86400
    store = objects.vector_store(vector_store_id="vs_nobodys", created_at=created, name="left behind",
                                 usage_bytes=4 * GIB, file_counts={}, last_active_at=created, metadata={})
    sandbox.state.add_vector_store(store, project_id="proj_default")

    output = io.StringIO()
    call_command("inventory_sync", stdout=output)  # the hourly task's work, with the sandbox as OpenAI
    (alert,) = _orphan_alerts().values()
    assert (alert.cause_key, alert.resolved_at) == ("orphaned_resource:proj_default", None)
    assert "orphan alerts: 1 raised, 0 resolved." in output.getvalue()
    synced = AuditEvent.objects.get(action="lifecycle.inventory_sync")
    assert synced.data["orphan_alerts"] == {"raised": [alert.pk], "resolved": []}

    orphan = VectorStore.objects.unassigned().get(openai_id="vs_nobodys")
    assert services.resource_delete(resource_type="vector_store", pk=orphan.pk, actor=staff_user,
                                    provider=provider) == "deleted"
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert "vs_nobodys" not in sandbox.state.vector_stores


def test_the_alert_links_to_the_orphans_page_for_staff_and_members_never_see_it(staff_user, member_user):
    _store(None, "vs_orphan", 3 * GIB)
    services.orphan_alerts_refresh(now=NOW)

    staff = Client()
    staff.force_login(staff_user)
    page = staff.get("/alerts/").content.decode()
    assert "Vector stores with no tenant are billed" in page
    assert 'href="/lifecycle/orphans/"' in page

    member = Client()
    member.force_login(member_user)
    assert "Vector stores with no tenant" not in member.get("/alerts/").content.decode()


def test_the_inventory_command_fails_when_no_project_could_be_listed(db, monkeypatch):
    # It printed "inventory synced" and exited 0 with OpenAI unreachable.
    from django.core.management.base import CommandError

    from apps.lifecycle.management.commands import inventory_sync as command

    nothing_listed = services.InventoryResult(counts={}, orphans=0, gone=0, listed=[], unreachable={
        "proj_default": "could not reach OpenAI at http://127.0.0.1:9/v1/ (Connection error.)"})
    monkeypatch.setattr(command, "inventory_sync_exclusive", lambda progress: nothing_listed)

    with pytest.raises(CommandError, match=r"No OpenAI project could be listed, so no resource was recorded or "
                                           r"marked gone \(proj_default: could not reach OpenAI at "
                                           r"http://127\.0\.0\.1:9/v1/"):
        call_command("inventory_sync", stdout=io.StringIO())
