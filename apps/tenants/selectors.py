"""Who may see which tenants; the lookups every page and endpoint uses to turn a URL slug into a tenant."""

from __future__ import annotations

from django.http import Http404

from .models import ApiKey, Membership, Tenant
from .scoping import TenantScope


def scope_for_user(user) -> TenantScope:
    return _membership_scope(user)


def admin_scope_for_user(user) -> TenantScope:
    """The tenants whose settings and alerts this user may change: staff every tenant, others the tenants they
    are an admin of (a subset of scope_for_user's)."""
    return _membership_scope(user, role=Membership.Role.ADMIN)


def _membership_scope(user, **membership) -> TenantScope:
    """Nothing for an anonymous user, every tenant for staff, else the tenants of the user's memberships that
    match `membership` (a role)."""
    if not getattr(user, "is_authenticated", False):
        return TenantScope.of([])
    if user.is_staff or user.is_superuser:
        return TenantScope.every_tenant()
    return TenantScope.of(Membership.objects.filter(user=user, **membership).values_list("tenant_id", flat=True))


def scope_for_api_key(key: ApiKey) -> TenantScope:
    return TenantScope.of([key.tenant_id]) if key.tenant_id else TenantScope.every_tenant()


def tenants_visible(scope: TenantScope):
    return scope.apply(Tenant.objects.all(), field="id")


def tenant_get_visible(scope: TenantScope, slug: str) -> Tenant:
    """The tenant with this slug if the scope allows it. Missing and not-yours are the same 404,
    so slugs cannot be probed."""
    tenant = tenants_visible(scope).filter(slug=slug).first()
    if tenant is None:
        raise Http404("Not found.")
    return tenant


def user_is_tenant_admin(user, tenant: Tenant) -> bool:
    return admin_scope_for_user(user).allows(tenant)
