"""Tenant writes: what tenant_update stores and audits when its caller's copy of the tenant is stale."""

from __future__ import annotations

from decimal import Decimal

from apps.core.models import AuditEvent
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_update


def test_two_updates_of_different_fields_from_stale_copies_both_stand_and_audit_the_stored_before(tenant):
    """Two PATCHes (or a PATCH and a settings form) that loaded the tenant before either saved: the second
    wrote every field of its copy, putting the first one's budget back, unaudited."""
    first_copy = Tenant.objects.get(pk=tenant.pk)
    second_copy = Tenant.objects.get(pk=tenant.pk)
    tenant_update(tenant=first_copy, monthly_budget_usd=Decimal("2500.00"))
    tenant_update(tenant=second_copy, thread_retention_days=14)
    tenant.refresh_from_db()
    assert tenant.monthly_budget_usd == Decimal("2500.00") and tenant.thread_retention_days == 14
    second_copy = Tenant.objects.get(pk=tenant.pk)
    stale = Tenant.objects.get(pk=tenant.pk)
    tenant_update(tenant=second_copy, monthly_budget_usd=Decimal("100.00"))
    tenant_update(tenant=stale, monthly_budget_usd=Decimal("300.00"))
    last = AuditEvent.objects.filter(action="tenant.update").order_by("-pk").first()
    assert last.data == {"before": {"monthly_budget_usd": "100.00"}, "after": {"monthly_budget_usd": "300.00"}}


def test_tenant_update_returns_the_stored_tenant_with_other_writers_changes(tenant):
    stale = Tenant.objects.get(pk=tenant.pk)
    tenant_update(tenant=Tenant.objects.get(pk=tenant.pk), legal_hold=True)
    updated = tenant_update(tenant=stale, thread_retention_days=30)
    assert updated.legal_hold is True and updated.thread_retention_days == 30
