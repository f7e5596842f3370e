"""The audit log as the Django admin shows it: readable by staff, never rewritten or erased there."""

from __future__ import annotations

from apps.core.models import AuditEvent
from apps.core.services import audit_record


def test_audit_events_cannot_be_deleted_in_the_admin(client, staff_user, tenant):
    """A superuser could delete audit records from their admin page or with the list's "delete selected" action,
    erasing the record of what they had just done (a price edited, a key's scope raised)."""
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    event = audit_record(action="admin.apikey.update", target_type="apikey", target_id="rl_abc", actor=staff_user,
                         tenant_id=tenant.pk, data={"before": {"scope": "billing"}, "after": {"scope": "admin"}})

    client.post(f"/admin/core/auditevent/{event.pk}/delete/", {"post": "yes"})
    client.post("/admin/core/auditevent/", {"action": "delete_selected", "_selected_action": [event.pk],
                                            "post": "yes"})

    assert AuditEvent.objects.filter(pk=event.pk).exists()
    assert client.get(f"/admin/core/auditevent/{event.pk}/delete/").status_code == 403
    page = client.get("/admin/core/auditevent/")
    assert page.status_code == 200 and 'value="delete_selected"' not in page.content.decode()
