"""Alerts in the admin: acknowledging, editing or deleting one is audited like every other admin change, and
acknowledging takes at most ACKNOWLEDGE_AT_MOST a click, as on the alerts page."""

from __future__ import annotations

import pytest

from apps.alerts import services
from apps.alerts.models import Alert
from apps.core.models import AuditEvent


@pytest.fixture
def superuser_client(client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    return client


def test_alerts_acknowledged_or_deleted_in_the_admin_are_audited(superuser_client, staff_user, tenant):
    """The acknowledge action and deletes wrote no AuditEvent: who silenced or removed a budget alert could not
    be told."""
    client = superuser_client
    first, second = (Alert.unscoped_objects.create(tenant=tenant, kind="budget", cause_key=f"budget:{n}", title=f"Budget {n}")
                     for n in (1, 2))

    response = client.post("/admin/alerts/alert/", {"action": "acknowledge", "_selected_action": [first.pk]})
    assert response.status_code == 302
    first.refresh_from_db()
    assert first.acknowledged_at is not None
    event = AuditEvent.objects.get(action="admin.alert.acknowledge")
    assert (event.actor, event.target_id, event.tenant_id) == (staff_user, str(first.pk), tenant.pk)

    client.post(f"/admin/alerts/alert/{second.pk}/delete/", {"post": "yes"})
    assert not Alert.unscoped_objects.filter(pk=second.pk).exists()
    deleted = AuditEvent.objects.get(action="admin.alert.delete")
    assert (deleted.actor, deleted.target_id, deleted.tenant_id) == (staff_user, str(second.pk), tenant.pk)


def test_acknowledging_everything_selected_stops_at_the_cap_and_says_how_to_go_on(superuser_client, tenant, monkeypatch):
    """"Select all" over every high-cost run's alert (600,000 at 10M runs) wrote one audit record each in one
    request."""
    monkeypatch.setattr(services, "ACKNOWLEDGE_AT_MOST", 3)
    alerts = [Alert.unscoped_objects.create(tenant=tenant, kind="high_cost_run", cause_key=f"run:{n}", title=f"Run {n}")
              for n in range(5)]
    every_alert = {"action": "acknowledge", "select_across": "1", "_selected_action": [alerts[0].pk]}

    response = superuser_client.post("/admin/alerts/alert/", every_alert, follow=True)
    assert Alert.unscoped_objects.filter(acknowledged_at__isnull=False).count() == 3
    assert AuditEvent.objects.filter(action="admin.alert.acknowledge").count() == 3
    assert "Acknowledged 3 alerts. More of those selected are open and unacknowledged: run the action again for " \
           "the next 3." in response.content.decode()

    response = superuser_client.post("/admin/alerts/alert/", every_alert, follow=True)
    assert Alert.unscoped_objects.filter(acknowledged_at__isnull=True).count() == 0
    assert "Acknowledged 2 alerts." in response.content.decode()
    assert "More of those selected" not in response.content.decode()
