"""Who sees which tenants: staff every tenant, members their own; not-yours is the same 404 as missing."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import Http404

from apps.tenants.selectors import scope_for_user, tenant_get_visible, tenants_visible

pytestmark = pytest.mark.django_db


def test_staff_see_every_tenant(staff_user, tenant, other_tenant):
    assert set(tenants_visible(scope_for_user(staff_user))) == {tenant, other_tenant}


def test_member_sees_only_their_tenant(member_user, tenant, other_tenant):
    scope = scope_for_user(member_user)
    assert list(tenants_visible(scope)) == [tenant]
    assert tenant_get_visible(scope, "acme") == tenant
    with pytest.raises(Http404):
        tenant_get_visible(scope, "globex")
    with pytest.raises(Http404):
        tenant_get_visible(scope, "does-not-exist")


def test_anonymous_sees_nothing(tenant):
    assert list(tenants_visible(scope_for_user(AnonymousUser()))) == []
