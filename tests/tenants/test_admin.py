"""The admin index speaks RunLedger: its own name in the header and title, API keys spelled as such."""

from __future__ import annotations

import pytest


def test_admin_index_is_branded_and_names_api_keys(client, staff_user, db):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    html = client.get("/admin/").content.decode()
    assert "RunLedger administration" in html and "Django administration" not in html
    assert "<title>Site administration | RunLedger admin</title>" in html
    assert ">API keys</a>" in html and "Api keys" not in html


def test_a_policy_changed_in_the_admin_acts_as_through_the_api(client, staff_user, tenant,
                                                                django_capture_on_commit_callbacks):
    # The admin saved the row itself, not through tenant_update: a new high-cost threshold left the tenant's
    # runs flagged at the old one, and a budget lowered below the month's spend raised no alert.
    import datetime as dt

    import time_machine

    from apps.alerts.models import Alert
    from apps.ledger.models import Run
    from apps.ledger.services import ingest_events
    from tests import builders

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    when = dt.datetime(2026, 11, 10, 9, tzinfo=dt.UTC)
    with time_machine.travel(when, tick=False):
        ingest_events(events=[{"tenant": "acme", "object": builders.response(
            response_id=f"resp_{tokens}", created_at=when, model="gpt-5.4", input_tokens=tokens, output_tokens=0)}
            for tokens in (20_000, 2_000_000)])  # $0.05 and $5.00 at $2.50 per 1M input tokens
        assert sorted(Run.objects.for_tenant(tenant).filter(is_high_cost=True).values_list("openai_id", flat=True)) == [
            "resp_2000000"]  # over the default $0.10
        form = {field: getattr(tenant, field) for field in ("slug", "name", "external_id", "status",
                                                             "thread_retention_days", "vector_store_idle_days")}
        form.update({"high_cost_run_usd": "0.02", "monthly_budget_usd": "6.00", "markup_percent": "",
                     "memberships-TOTAL_FORMS": 0, "memberships-INITIAL_FORMS": 0})
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", form)
        assert response.status_code == 302, response.content[:2000]

    assert sorted(Run.objects.for_tenant(tenant).filter(is_high_cost=True).values_list("openai_id", flat=True)) == [
        "resp_20000", "resp_2000000"]
    budget = Alert.objects.for_tenant(tenant).filter(cause_key__startswith="budget:")
    assert sorted(budget.values_list("cause_key", flat=True)) == [
        f"budget:{tenant.pk}:2026-11:{percent}:6" for percent in (50, 80)]  # $5.00 of $6.00: 83%


def test_a_tenants_slug_cannot_be_changed_in_the_admin(client, staff_user, tenant):
    """Apps tag their runs with the slug (metadata.tenant) and ingest resolves it: a slug renamed in the admin
    made every later event for the tenant 'unknown tenant', and the API says a slug cannot be changed."""
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    form = {field: getattr(tenant, field) for field in ("name", "external_id", "status", "thread_retention_days",
                                                         "vector_store_idle_days", "high_cost_run_usd")}
    form.update({"slug": "acme-renamed", "monthly_budget_usd": "", "markup_percent": "",
                 "memberships-TOTAL_FORMS": 0, "memberships-INITIAL_FORMS": 0})
    response = client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", form)
    assert response.status_code == 302, response.content[:2000]
    tenant.refresh_from_db()
    assert tenant.slug == "acme"
    add = client.get("/admin/tenants/tenant/add/").content.decode()
    assert 'name="slug"' in add  # a new tenant still gets one


def test_a_role_changed_in_the_tenants_membership_inline_is_audited_with_its_old_and_new_value(
        client, staff_user, tenant, member_user):
    """A viewer made tenant admin on the tenant's admin page was audited as `changed: ["role"]`: who had which
    role before could not be read from the log."""
    from apps.core.models import AuditEvent
    from apps.tenants.models import Membership

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    membership = Membership.objects.get(user=member_user, tenant=tenant)
    form = {field: getattr(tenant, field) for field in ("name", "external_id", "status", "thread_retention_days",
                                                         "vector_store_idle_days", "high_cost_run_usd")}
    form.update({"monthly_budget_usd": "", "markup_percent": "",
                 "memberships-TOTAL_FORMS": 1, "memberships-INITIAL_FORMS": 1,
                 "memberships-0-id": membership.pk, "memberships-0-tenant": tenant.pk,
                 "memberships-0-user": member_user.pk, "memberships-0-role": "admin"})
    response = client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", form)
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(action="admin.membership.update")
    assert event.data["before"] == {"role": "viewer"} and event.data["after"] == {"role": "admin"}
    assert event.actor == staff_user and event.tenant_id == tenant.pk


def _stale_change_form(client, tenant) -> dict:
    """The tenant's admin change page as opened now: every field with the value shown, and the page's record of
    that value (the hidden initial-<field> input the browser sends back)."""
    import re

    html = client.get(f"/admin/tenants/tenant/{tenant.pk}/change/").content.decode()
    assert 'name="initial-monthly_budget_usd"' in html
    data = {"memberships-TOTAL_FORMS": 0, "memberships-INITIAL_FORMS": 0}
    for field in ("name", "external_id", "status", "thread_retention_days", "vector_store_idle_days",
                  "high_cost_run_usd", "monthly_budget_usd", "markup_percent"):
        shown = "" if getattr(tenant, field) is None else str(getattr(tenant, field))
        data[field] = data[f"initial-{field}"] = shown
    for field in ("legal_hold", "archive_before_delete"):
        if getattr(tenant, field):
            data[field] = "on"
        data[f"initial-{field}"] = str(getattr(tenant, field))
    assert re.search(r'name="initial-status" value="active"', html)
    return data


def test_a_tenant_change_form_opened_before_an_api_change_does_not_put_the_old_values_back(
        client, staff_user, tenant, django_capture_on_commit_callbacks):
    """The admin saved every field it showed: a page opened before an API change of the budget, saved to rename
    the tenant, silently set the budget back (and audited a 'before' that was not the stored value)."""
    from decimal import Decimal

    from apps.core.models import AuditEvent
    from apps.tenants.services import tenant_update

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    form = _stale_change_form(client, tenant)
    tenant_update(tenant=tenant, monthly_budget_usd=Decimal("500.00"), legal_hold=True)  # meanwhile, by the API

    form["name"] = "Acme Corporation"
    response = client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", form)
    assert response.status_code == 302, response.content[:2000]
    tenant.refresh_from_db()
    assert (tenant.name, tenant.monthly_budget_usd, tenant.legal_hold) == ("Acme Corporation", Decimal("500.00"), True)
    event = AuditEvent.objects.get(action="admin.tenant.update")
    assert event.actor == staff_user
    assert event.data == {"before": {"name": "Acme Corp"}, "after": {"name": "Acme Corporation"}}


def test_a_tenant_field_changed_in_the_admin_and_by_someone_else_meanwhile_is_refused_then_replaceable(
        client, staff_user, tenant, django_capture_on_commit_callbacks):
    """Both changed the same field: the admin's save is refused naming the stored value, nothing is written; the
    page now shows the stored value as the one seen, so saving again replaces it knowingly (and is announced)."""
    from decimal import Decimal
    from unittest import mock

    from apps.tenants.services import tenant_policy_changed, tenant_update

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    form = _stale_change_form(client, tenant)
    tenant_update(tenant=tenant, high_cost_run_usd=Decimal("0.50"))  # meanwhile, by the API

    form.update({"high_cost_run_usd": "0.02", "name": "Acme Corporation"})
    response = client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", form)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Someone else changed this to 0.5000 after you opened this page" in html
    assert 'name="initial-high_cost_run_usd" value="0.5000"' in html
    tenant.refresh_from_db()
    assert (tenant.name, tenant.high_cost_run_usd) == ("Acme Corp", Decimal("0.5000"))

    form["initial-high_cost_run_usd"] = "0.5000"  # as the page now sends it
    listener = mock.Mock()
    tenant_policy_changed.connect(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", form)
    finally:
        tenant_policy_changed.disconnect(listener)
    assert response.status_code == 302, response.content[:2000]
    tenant.refresh_from_db()
    assert (tenant.name, tenant.high_cost_run_usd) == ("Acme Corporation", Decimal("0.0200"))
    assert listener.call_args.kwargs["changed"] == {"name", "high_cost_run_usd"}


def test_deleting_a_tenant_or_price_with_runs_in_the_admin_is_refused_without_loading_its_runs(
        client, staff_user, tenant, other_tenant):
    """The delete page of a tenant (or of the price version its runs were rated with) listed every protected run
    by name: Django loads them all to say why it cannot delete, which for a big tenant is millions of rows in one
    request. It now says which kinds of rows hold it, from one EXISTS each, and still refuses."""
    import datetime as dt

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.ledger.models import Run
    from apps.ledger.services import ingest_events
    from apps.tenants.models import Tenant
    from tests import builders

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    when = dt.datetime(2026, 11, 10, 9, tzinfo=dt.UTC)
    ingest_events(events=[{"tenant": "acme", "object": builders.response(
        response_id=f"resp_{n}", created_at=when, model="gpt-5.4")} for n in range(3)])
    price_id = Run.objects.for_tenant(tenant).values_list("model_price_id", flat=True).first()
    assert price_id is not None

    for url in (f"/admin/tenants/tenant/{tenant.pk}/delete/", f"/admin/pricing/modelprice/{price_id}/delete/"):
        with CaptureQueriesContext(connection) as queries:
            page = client.get(url)
        assert page.status_code == 200
        html = page.content.decode()
        assert "resp_0" not in html and "runs" in html
        run_rows = [q["sql"] for q in queries.captured_queries
                    if 'FROM "ledger_run"' in q["sql"] and "LIMIT 1" not in q["sql"]]
        assert run_rows == [], url

    refused = client.post(f"/admin/tenants/tenant/{tenant.pk}/delete/", {"post": "yes"})
    assert refused.status_code == 200 and "acme: runs refer to it" in refused.content.decode()
    assert client.post("/admin/tenants/tenant/", {"action": "delete_selected", "_selected_action": [tenant.pk],
                                                  "post": "yes"}).status_code in (200, 302)
    assert Tenant.objects.filter(pk=tenant.pk).exists() and Run.objects.for_tenant(tenant).count() == 3
    # A tenant nothing refers to is deleted as before.
    assert client.post(f"/admin/tenants/tenant/{other_tenant.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Tenant.objects.filter(pk=other_tenant.pk).exists()


def test_an_issued_keys_tenant_cannot_be_changed_in_the_admin(client, staff_user, tenant, other_tenant):
    """A key issued for one tenant (handed to that tenant's systems) could be re-bound in the admin to another
    tenant, or unbound to see every tenant: whoever held it then read other tenants' runs and statements. A key
    for another tenant is a new key; the binding is shown, not editable."""
    from apps.tenants.models import ApiKey
    from apps.tenants.services import api_key_create

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    key, _ = api_key_create(name="acme billing", scope="billing", tenant=tenant)
    for rebound in (other_tenant.pk, ""):
        response = client.post(f"/admin/tenants/apikey/{key.pk}/change/",
                               {"name": "acme billing", "scope": "billing", "tenant": rebound})
        assert response.status_code == 302, response.content[:2000]
        assert ApiKey.objects.get(pk=key.pk).tenant_id == tenant.pk
    add = client.get("/admin/tenants/apikey/add/").content.decode()
    assert 'name="tenant"' in add  # a new key is still bound where it is created


def test_a_new_keys_plaintext_is_shown_once_and_never_kept_in_a_cookie(client, staff_user, tenant):
    # The default message storage put the message naming it in a cookie.
    from apps.tenants.models import ApiKey

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)

    redirect = client.post("/admin/tenants/apikey/add/", {"name": "acme billing", "scope": "billing",
                                                         "tenant": tenant.pk})
    # Signed and compressed there, but anyone holding the browser could decode it.
    assert "messages" not in redirect.cookies

    page = client.get(redirect["Location"]).content.decode()
    plaintext = page.split("will not be shown again: ", 1)[1].split("<", 1)[0].strip()
    assert plaintext.startswith(ApiKey.objects.get(name="acme billing").prefix)
    assert plaintext not in client.get("/admin/tenants/apikey/").content.decode()  # once


def _tenant_with_keys_and_members(tenant, django_user_model):
    from apps.tenants.services import api_key_create, api_key_revoke, membership_set

    billing, _ = api_key_create(name="acme billing", scope="billing", tenant=tenant)
    ingest, _ = api_key_create(name="acme ingest", scope="ingest", tenant=tenant)
    api_key_revoke(key=ingest)
    alice = django_user_model.objects.create_user("alice", password="pw-alice-1")
    bob = django_user_model.objects.create_user("bob", password="pw-bob-1")
    membership_set(user=alice, tenant=tenant, role="admin")
    membership_set(user=bob, tenant=tenant, role="viewer")
    return {billing.prefix: billing, ingest.prefix: ingest}, {"alice": alice, "bob": bob}


@pytest.mark.parametrize("path", ["change page", "bulk action"])
def test_deleting_a_tenant_in_the_admin_audits_each_key_membership_and_alert_deleted_with_it(
        client, staff_user, tenant, other_tenant, django_user_model, path):
    """Its keys, memberships and alerts went by cascade with only the tenant's own deletion audited: which keys
    stopped working, who lost access and which alerts went could not be read from the log. Each now has its
    record, from either delete."""
    from apps.alerts.models import Alert
    from apps.alerts.services import alert_raise
    from apps.core.models import AuditEvent
    from apps.tenants.models import ApiKey, Membership, Tenant
    from apps.tenants.services import api_key_create, membership_set

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    keys, users = _tenant_with_keys_and_members(tenant, django_user_model)
    kept_key, _ = api_key_create(name="globex billing", scope="billing", tenant=other_tenant)
    unbound, _ = api_key_create(name="ops", scope="admin")
    membership_set(user=users["alice"], tenant=other_tenant, role="viewer")
    alert_raise(kind="budget", cause_key="budget:acme:2026-11:100", tenant=tenant, title="acme at 100% of budget")
    alert_raise(kind="budget", cause_key="budget:globex:2026-11:100", tenant=other_tenant, title="globex at 100%")

    if path == "change page":
        response = client.post(f"/admin/tenants/tenant/{tenant.pk}/delete/", {"post": "yes"})
    else:
        response = client.post("/admin/tenants/tenant/", {"action": "delete_selected", "_selected_action": [tenant.pk],
                                                          "post": "yes"})
    assert response.status_code == 302, response.content[:2000]
    assert not Tenant.objects.filter(pk=tenant.pk).exists()
    assert set(ApiKey.objects.values_list("prefix", flat=True)) == {kept_key.prefix, unbound.prefix}
    assert list(Membership.objects.values_list("tenant__slug", "user__username")) == [("globex", "alice")]

    assert AuditEvent.objects.get(action="admin.tenant.delete").target_id == "acme"
    key_events = {event.target_id: event for event in AuditEvent.objects.filter(action="admin.apikey.delete")}
    assert set(key_events) == set(keys)
    for prefix, key in keys.items():
        event = key_events[prefix]
        assert (event.target_type, event.tenant_id, event.actor) == ("apikey", tenant.pk, staff_user)
        assert (event.data["name"], event.data["scope"], event.data["deleted_with"]) == (key.name, key.scope, "tenant acme")
        assert bool(event.data["revoked_at"]) == (key.scope == "ingest")
    members = {event.data["user"]: event for event in AuditEvent.objects.filter(action="admin.membership.delete")}
    assert set(members) == {"alice", "bob"}
    assert (members["alice"].data["role"], members["alice"].data["user_id"]) == ("admin", users["alice"].pk)
    assert members["bob"].data["role"] == "viewer"
    assert all(event.tenant_id == tenant.pk and event.actor == staff_user and event.data["deleted_with"] == "tenant acme"
               for event in members.values())
    assert list(Alert.unscoped_objects.values_list("title", flat=True)) == ["globex at 100%"]
    alert_event = AuditEvent.objects.get(action="admin.alert.delete")
    assert (alert_event.tenant_id, alert_event.actor, alert_event.data["deleted_with"]) == (tenant.pk, staff_user,
                                                                                          "tenant acme")
    assert (alert_event.data["kind"], alert_event.data["title"], alert_event.data["acknowledged_at"]) == (
        "budget", "acme at 100% of budget", "")


def test_a_bulk_tenant_delete_that_fails_leaves_no_audit_record_of_deletions_that_did_not_happen(
        client, staff_user, tenant, django_user_model, monkeypatch):
    """The list's "delete selected" wrote its audit records outside any transaction: a delete refused at the last
    moment (a run arrived after the confirmation page, and PROTECTs the tenant) left records of a tenant, keys
    and memberships that were all still there. The records and the delete are now one transaction, and the
    refusal is a message on the list, not a 500."""
    import datetime as dt

    from apps.core.models import AuditEvent
    from apps.ledger.services import ingest_events
    from apps.tenants.admin import TenantAdmin
    from apps.tenants.models import ApiKey, Membership, Tenant
    from tests import builders

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    _tenant_with_keys_and_members(tenant, django_user_model)
    ingest_events(events=[{"tenant": "acme", "object": builders.response(
        response_id="resp_late", created_at=dt.datetime(2026, 11, 10, 9, tzinfo=dt.UTC), model="gpt-5.4")}])
    # As if the run arrived after the confirmation page checked that nothing refers to the tenant.
    monkeypatch.setattr(TenantAdmin, "get_deleted_objects", lambda self, objs, request: ([], {}, set(), []))

    response = client.post("/admin/tenants/tenant/", {"action": "delete_selected", "_selected_action": [tenant.pk],
                                                      "post": "yes"}, follow=True)
    assert response.redirect_chain == [("/admin/tenants/tenant/", 302)]
    assert [str(message) for message in response.context["messages"]] == [
        "Nothing was deleted: rows referring to it arrived after the confirmation (daily rollups, end user daily "
        "rollups, end user month part rollups, end user monthly rollups, prompt size rollups, runs, tenant daily "
        "rollups). Delete or move them first, then try again."]
    assert Tenant.objects.filter(pk=tenant.pk).exists()
    assert ApiKey.objects.filter(tenant=tenant).count() == 2 and Membership.objects.filter(tenant=tenant).count() == 2
    assert not AuditEvent.objects.filter(action__endswith=".delete").exists()


def test_a_tenant_delete_refused_at_the_last_moment_says_why_on_its_page_instead_of_a_500(
        client, staff_user, tenant, monkeypatch):
    import datetime as dt

    from apps.core.models import AuditEvent
    from apps.ledger.services import ingest_events
    from apps.tenants.admin import TenantAdmin
    from apps.tenants.models import Tenant
    from tests import builders

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    ingest_events(events=[{"tenant": "acme", "object": builders.response(
        response_id="resp_late", created_at=dt.datetime(2026, 11, 10, 9, tzinfo=dt.UTC), model="gpt-5.4")}])
    monkeypatch.setattr(TenantAdmin, "get_deleted_objects", lambda self, objs, request: ([], {}, set(), []))

    response = client.post(f"/admin/tenants/tenant/{tenant.pk}/delete/", {"post": "yes"}, follow=True)
    assert response.redirect_chain == [(f"/admin/tenants/tenant/{tenant.pk}/change/", 302)]
    assert [str(message) for message in response.context["messages"]] == [
        "Nothing was deleted: rows referring to it arrived after the confirmation (daily rollups, end user daily "
        "rollups, end user month part rollups, end user monthly rollups, prompt size rollups, runs, tenant daily "
        "rollups). Delete or move them first, then try again."]
    assert Tenant.objects.filter(pk=tenant.pk).exists()
    assert not AuditEvent.objects.filter(action__endswith=".delete").exists()


def test_deleting_a_user_in_the_admin_audits_each_membership_deleted_with_them(
        client, staff_user, tenant, other_tenant, django_user_model):
    """Their memberships went by cascade with only the user's own deletion audited: who lost access to which
    tenant could not be read from the log."""
    from apps.core.models import AuditEvent
    from apps.tenants.services import membership_set

    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    carol = django_user_model.objects.create_user(username="carol", password="x")
    membership_set(user=carol, tenant=tenant, role="admin")
    membership_set(user=carol, tenant=other_tenant, role="viewer")

    response = client.post(f"/admin/auth/user/{carol.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302, response.content[:2000]
    assert not django_user_model.objects.filter(pk=carol.pk).exists()
    events = {event.data["tenant"]: event for event in AuditEvent.objects.filter(action="admin.membership.delete")}
    assert {slug: event.data["role"] for slug, event in events.items()} == {str(tenant): "admin",
                                                                            str(other_tenant): "viewer"}
    assert all(event.data["deleted_with"] == "user carol" and event.actor == staff_user for event in events.values())
