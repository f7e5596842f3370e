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


def test_the_audit_and_key_lists_read_actors_and_tenants_in_the_page_query(client, staff_user, tenant,
                                                                           other_tenant, django_user_model):
    """AuditEvent.actor and ApiKey.tenant may be empty, and Django joins only required foreign keys on its own:
    each row of the audit list read its actor, and each key its tenant, with one more query (100 per page)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.tenants.services import api_key_create

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    for n in range(4):
        actor = django_user_model.objects.create_user(f"ops-{n}")
        audit_record(action="tenant.update", target_type="tenant", target_id="acme", actor=actor)
        api_key_create(name=f"key {n}", scope="billing", tenant=(tenant, other_tenant)[n % 2])

    for url, table in (("/admin/core/auditevent/", "auth_user"), ("/admin/tenants/apikey/", "tenants_tenant")):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        one_by_one = [q["sql"] for q in queries.captured_queries
                      if q["sql"].startswith(f'SELECT "{table}"."id"') and f'WHERE "{table}"."id" = ' in q["sql"]]
        assert len(one_by_one) <= (1 if table == "auth_user" else 0), (url, one_by_one)  # the session's own user


def test_a_user_made_superuser_or_given_a_new_password_in_the_admin_is_audited(client, staff_user,
                                                                                 django_user_model):
    """The user admin was Django's own: a staff user could make anyone (themselves included) a superuser, give
    them a group, or set their password, and the audit log had no trace of it."""
    from django.contrib.auth.models import Group

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    other = django_user_model.objects.create_user("night-shift", password="night-password-1", is_staff=True)
    group = Group.objects.create(name="billing ops")
    form = {"username": "night-shift", "first_name": "", "last_name": "", "email": "", "is_active": "on",
            "is_staff": "on", "is_superuser": "on", "groups": [group.pk],
            "last_login_0": "", "last_login_1": "", "date_joined_0": "2026-11-01", "date_joined_1": "09:00:00",
            "initial-date_joined_0": "2026-11-01", "initial-date_joined_1": "09:00:00"}
    other.date_joined = "2026-11-01T09:00:00Z"
    other.save()
    response = client.post(f"/admin/auth/user/{other.pk}/change/", form)
    assert response.status_code == 302, response.content[:3000]
    event = AuditEvent.objects.get(action="admin.user.update")
    assert event.actor == staff_user and event.target_id == str(other.pk)
    assert event.data == {"before": {"is_superuser": "False", "groups": ""},
                          "after": {"is_superuser": "True", "groups": "billing ops"}}

    response = client.post(f"/admin/auth/user/{other.pk}/password/",
                           {"password1": "a-new-password-9", "password2": "a-new-password-9",
                            "usable_password": "true"})
    assert response.status_code == 302, response.content[:3000]
    password = AuditEvent.objects.get(action="admin.user.password")
    assert password.actor == staff_user and password.target_id == str(other.pk)
    assert "a-new-password-9" not in str(password.data) and "pbkdf2" not in str(password.data)


def test_a_groups_permissions_changed_in_the_admin_are_audited(client, staff_user):
    """Giving a group (and so every user in it) a permission left no AuditEvent, like the user admin did."""
    from django.contrib.auth.models import Group, Permission

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    group = Group.objects.create(name="billing ops")
    permission = Permission.objects.get(codename="change_tenant")
    response = client.post(f"/admin/auth/group/{group.pk}/change/", {"name": "billing ops",
                                                                      "permissions": [permission.pk]})
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(action="admin.group.update")
    assert event.actor == staff_user
    assert event.data == {"before": {"permissions": ""}, "after": {"permissions": str(permission)}}
