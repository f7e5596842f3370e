"""The reconciliation admin: which project's key is used and how much drift is tolerated are audited changes;
reconciliation attempts are history, not editable or deletable."""

from __future__ import annotations

import datetime as dt

from apps.core.models import AuditEvent
from apps.reconciliation.models import OpenAIProject, ReconciliationRun


def _superuser_client(client, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    return client


def test_an_openai_project_changed_in_the_admin_is_audited_with_before_and_after(client, staff_user, db):
    """Pointing a project at another key variable, or widening its tolerance so drift stops being flagged, left
    no trace: the project admin was the one admin that did not audit."""
    client = _superuser_client(client, staff_user)
    form = {"project_id": "proj_1", "name": "prod", "admin_key_env": "OPENAI_ADMIN_KEY", "api_key_env": "",
            "base_url": "", "tolerance_percent": "", "tolerance_usd": "", "is_active": "on"}
    assert client.post("/admin/reconciliation/openaiproject/add/", form).status_code == 302
    project = OpenAIProject.objects.get(project_id="proj_1")
    form.update({"admin_key_env": "OPENAI_ADMIN_KEY_OTHER", "tolerance_percent": "50"})
    assert client.post(f"/admin/reconciliation/openaiproject/{project.pk}/change/", form).status_code == 302

    assert AuditEvent.objects.filter(action="admin.openaiproject.create", actor=staff_user).exists()
    event = AuditEvent.objects.get(action="admin.openaiproject.update")
    assert event.actor == staff_user
    assert event.data == {"before": {"admin_key_env": "OPENAI_ADMIN_KEY", "tolerance_percent": ""},
                          "after": {"admin_key_env": "OPENAI_ADMIN_KEY_OTHER", "tolerance_percent": "50"}}


def test_a_reconciliation_run_cannot_be_deleted_in_the_admin(client, staff_user, db):
    """A superuser could delete a day's current reconciliation (and its lines) without a trace: the day then
    read as never reconciled, its drift gone."""
    client = _superuser_client(client, staff_user)
    run = ReconciliationRun.objects.create(day=dt.date(2026, 11, 1), openai_project="proj_1", status="complete",
                                           is_current=True, started_at=dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
    client.post(f"/admin/reconciliation/reconciliationrun/{run.pk}/delete/", {"post": "yes"})
    client.post("/admin/reconciliation/reconciliationrun/", {"action": "delete_selected",
                                                             "_selected_action": [run.pk], "post": "yes"})
    assert ReconciliationRun.objects.filter(pk=run.pk).exists()


def test_late_ledger_days_are_listed_in_the_admin_and_cannot_be_deleted_there(client, staff_user, db):
    """A mark deleted by hand would leave its day's result comparing OpenAI with the ledger before the late runs."""
    from django.utils import timezone

    from apps.reconciliation.models import LateLedgerDay

    client = _superuser_client(client, staff_user)
    mark = LateLedgerDay.objects.create(openai_project="proj_1", day=dt.date(2026, 10, 1), marked_at=timezone.now())
    listing = client.get("/admin/reconciliation/lateledgerday/")
    assert listing.status_code == 200 and "proj_1" in listing.content.decode()
    client.post(f"/admin/reconciliation/lateledgerday/{mark.pk}/delete/", {"post": "yes"})
    client.post("/admin/reconciliation/lateledgerday/", {"action": "delete_selected",
                                                        "_selected_action": [mark.pk], "post": "yes"})
    assert LateLedgerDay.objects.filter(pk=mark.pk).exists()
