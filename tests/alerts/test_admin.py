"""Alerts in the admin: acknowledging, editing or deleting one is audited like every other admin change."""

from __future__ import annotations

from apps.alerts.models import Alert
from apps.core.models import AuditEvent


def test_alerts_acknowledged_or_deleted_in_the_admin_are_audited(client, staff_user, tenant):
    """The acknowledge action and deletes wrote no AuditEvent: who silenced or removed a budget alert could not
    be told."""
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
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
