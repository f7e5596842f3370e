"""The tenancy mechanism: a tenant-owned model cannot be queried without naming whose rows."""

import datetime as dt

import pytest

from apps.ledger.models import Thread
from apps.tenants.scoping import TenantScope, TenantScopeError

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _thread(tenant, openai_id):
    return Thread.objects.create(
        tenant=tenant, openai_id=openai_id, kind="thread", created_at=NOW, last_activity_at=NOW
    )


def test_unscoped_query_of_tenant_owned_model_raises(tenant):
    _thread(tenant, "thread_a")
    for query in (lambda: list(Thread.objects.all()), lambda: Thread.objects.filter(openai_id="thread_a"),
                  lambda: Thread.objects.get(openai_id="thread_a"), lambda: Thread.objects.count()):
        with pytest.raises(TenantScopeError):
            query()


def test_for_tenant_returns_only_that_tenants_rows(tenant, other_tenant):
    _thread(tenant, "thread_a")
    _thread(other_tenant, "thread_b")
    assert [t.openai_id for t in Thread.objects.for_tenant(tenant)] == ["thread_a"]
    assert [t.openai_id for t in Thread.objects.for_tenant(other_tenant.pk)] == ["thread_b"]


def test_for_tenant_refuses_an_unsaved_tenant_rather_than_match_the_rows_of_no_tenant(db):
    from apps.alerts.models import Alert
    from apps.tenants.models import Tenant

    Alert.unscoped_objects.create(tenant=None, kind=Alert.Kind.UNPRICED_MODEL, cause_key="staff-only", title="staff only")
    with pytest.raises(TenantScopeError, match="saved tenant"):
        list(Alert.objects.for_tenant(Tenant(slug="unsaved")))


def test_in_scope_limits_to_the_scope_and_every_tenant_sees_all(tenant, other_tenant):
    _thread(tenant, "thread_a")
    _thread(other_tenant, "thread_b")
    assert set(Thread.objects.in_scope(TenantScope.of([tenant])).values_list("openai_id", flat=True)) == {"thread_a"}
    assert Thread.objects.in_scope(TenantScope.of([])).count() == 0
    assert Thread.objects.in_scope(TenantScope.every_tenant()).count() == 2


def test_in_scope_refuses_anything_but_a_scope(tenant):
    with pytest.raises(TenantScopeError):
        Thread.objects.in_scope([tenant.pk])


def test_unscoped_escape_hatch_sees_every_tenant(tenant, other_tenant):
    _thread(tenant, "thread_a")
    _thread(other_tenant, "thread_b")
    assert Thread.objects.unscoped().count() == 2


def test_creating_a_row_without_tenant_raises(db):
    with pytest.raises(TenantScopeError):
        Thread.objects.create(openai_id="x", kind="thread", created_at=NOW, last_activity_at=NOW)


def test_admin_and_related_lookups_use_the_plain_default_manager(tenant):
    _thread(tenant, "thread_a")
    assert Thread._default_manager.count() == 1
