"""The Tenant model's own rules, which the dashboard's policy form, the admin and the API all inherit: policy days
bounded to a century, markup from 0 to 1000 %, one tenant per external billing id."""

from __future__ import annotations

import importlib
from decimal import Decimal

import pytest
from django.apps import apps as django_apps
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import Client

from apps.core.models import AuditEvent
from apps.tenants.models import Tenant

pytestmark = pytest.mark.django_db

POLICY = {"monthly_budget_usd": "", "high_cost_run_usd": "0.10", "thread_retention_days": "60",
          "vector_store_idle_days": "30"}


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("field", ["thread_retention_days", "vector_store_idle_days"])
def test_a_tenant_admin_cannot_set_policy_days_past_a_century_on_the_dashboard(tenant_admin_user, tenant, field):
    # Before the bound, 1,000,000 days was saved and the nightly sweep over every tenant overflowed on it.
    answer = logged_in(tenant_admin_user).post("/tenants/acme/settings/", {**POLICY, field: "36501"})
    assert answer.status_code == 400 and answer.context["policy_form"].errors[field]
    tenant.refresh_from_db()
    assert (tenant.thread_retention_days, tenant.vector_store_idle_days) == (60, 30)
    assert not AuditEvent.objects.filter(action="tenant.update").exists()


def test_a_century_of_policy_days_is_still_allowed(tenant_admin_user, tenant):
    answer = logged_in(tenant_admin_user).post(
        "/tenants/acme/settings/", {**POLICY, "thread_retention_days": "36500", "vector_store_idle_days": "36500"})
    assert answer.status_code == 302
    tenant.refresh_from_db()
    assert (tenant.thread_retention_days, tenant.vector_store_idle_days) == (36500, 36500)


@pytest.mark.parametrize("markup", ["-50", "1000.01"])
def test_staff_cannot_set_a_markup_outside_0_to_1000_percent_on_the_dashboard(staff_user, tenant, markup):
    answer = logged_in(staff_user).post("/tenants/acme/settings/", {**POLICY, "markup_percent": markup})
    assert answer.status_code == 400 and answer.context["policy_form"].errors["markup_percent"]
    tenant.refresh_from_db()
    assert tenant.markup_percent is None


def test_staff_may_set_a_markup_of_1000_percent(staff_user, tenant):
    assert logged_in(staff_user).post("/tenants/acme/settings/", {**POLICY, "markup_percent": "1000"}).status_code == 302
    tenant.refresh_from_db()
    assert tenant.markup_percent == Decimal("1000")


def test_the_migration_clamps_stored_policy_days_to_a_century_and_leaves_the_rest(tenant, other_tenant):
    migration = importlib.import_module("apps.tenants.migrations.0002_policy_day_and_markup_bounds")
    Tenant.objects.filter(pk=tenant.pk).update(thread_retention_days=1_000_000, vector_store_idle_days=36_501)
    migration.clamp_policy_days(django_apps, None)
    tenant.refresh_from_db()
    other_tenant.refresh_from_db()
    assert (tenant.thread_retention_days, tenant.vector_store_idle_days) == (36500, 36500)
    assert (other_tenant.thread_retention_days, other_tenant.vector_store_idle_days) == (60, 30)


def test_two_tenants_cannot_share_an_external_billing_id_but_may_both_have_none(tenant, other_tenant):
    Tenant.objects.create(slug="initech", name="Initech")
    Tenant.objects.create(slug="hooli", name="Hooli")  # blank ids repeat
    with pytest.raises(ValidationError):
        Tenant(slug="copycat", name="Copycat", external_id="cus_acme").full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        Tenant.objects.create(slug="copycat", name="Copycat", external_id="cus_acme")


@pytest.mark.postgres
def test_the_unique_external_id_migration_names_the_tenants_that_share_one_instead_of_failing_on_a_constraint(
        tenant, other_tenant):
    from django.db import connection

    migration = importlib.import_module("apps.tenants.migrations.0003_tenant_unique_external_id")
    constraint = next(c for c in Tenant._meta.constraints if c.name == "tenant_unique_external_id")
    with connection.schema_editor() as editor:  # the database as it was before the migration
        editor.remove_constraint(Tenant, constraint)
    Tenant.objects.filter(pk=other_tenant.pk).update(external_id=tenant.external_id or "cus_shared")
    Tenant.objects.filter(pk=tenant.pk).update(external_id=tenant.external_id or "cus_shared")
    with pytest.raises(RuntimeError, match=r"share an external billing id.*'cus_\w+': acme, globex"):
        migration.refuse_shared_ids(django_apps, None)


def test_a_value_stored_before_its_validator_does_not_block_an_unrelated_change(tenant, tenant_admin_user):
    """A markup saved as a discount (-10%) before markups were bounded: a tenant admin can still set a legal hold."""
    Tenant.objects.filter(pk=tenant.pk).update(markup_percent=Decimal("-10"))
    client = Client()
    client.force_login(tenant_admin_user)
    response = client.post(f"/tenants/{tenant.slug}/settings/", {
        "monthly_budget_usd": "", "high_cost_run_usd": "0.10", "thread_retention_days": "60",
        "vector_store_idle_days": "30", "legal_hold": "on"})
    assert response.status_code == 302
    tenant.refresh_from_db()
    assert tenant.legal_hold and tenant.markup_percent == Decimal("-10")
