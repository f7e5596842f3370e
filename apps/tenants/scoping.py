"""The one tenancy mechanism. A tenant-owned model cannot be queried without saying whose rows:

    Run.objects.for_tenant(tenant)      # one tenant (a page or endpoint under /tenants/<slug>/)
    Run.objects.in_scope(scope)         # what a viewer or API key may see (staff: every tenant)
    Run.objects.unscoped()              # cross-tenant jobs only: sweeps, reconciliation, checks

Anything else (`Run.objects.all()`, `.filter()`, `.get()`) raises TenantScopeError, so a forgotten
filter fails loudly in tests instead of leaking data (the idea of PostHog's TeamScopedManager and
django-scopes). The plain `unscoped_objects` manager is the model's default manager so that the
admin, migrations and related-object lookups keep working.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import models


class TenantScopeError(RuntimeError):
    pass


@dataclass(frozen=True)
class TenantScope:
    """The set of tenants someone may see. `tenant_ids=None` means every tenant (staff, unbound keys)."""

    tenant_ids: frozenset[int] | None

    @classmethod
    def every_tenant(cls) -> TenantScope:
        return cls(tenant_ids=None)

    @classmethod
    def of(cls, tenants: Iterable) -> TenantScope:
        return cls(tenant_ids=frozenset(_tenant_id(t) for t in tenants))

    @property
    def is_every_tenant(self) -> bool:
        return self.tenant_ids is None

    def allows(self, tenant) -> bool:
        return self.tenant_ids is None or _tenant_id(tenant) in self.tenant_ids

    def allows_owner(self, tenant_id: int | None) -> bool:
        """Whether the scope covers an object owned by this tenant, or by none (an unpriced model's alert, an
        unattributed cost): those only the every-tenant scope covers, as apply() leaves them out of the others."""
        return self.is_every_tenant if tenant_id is None else self.allows(tenant_id)

    @property
    def is_empty(self) -> bool:
        return self.tenant_ids is not None and not self.tenant_ids

    def apply(self, queryset: models.QuerySet, field: str = "tenant_id") -> models.QuerySet:
        if self.tenant_ids is None:
            return queryset
        return queryset.filter(**{f"{field}__in": self.tenant_ids})


def _tenant_id(tenant) -> int:
    if tenant is None:
        raise TenantScopeError("A tenant is required here; got None.")
    tenant_id = tenant if isinstance(tenant, int) else tenant.pk
    if tenant_id is None:
        # An unsaved tenant: its None would match the rows that belong to no tenant (staff-only alerts, orphan
        # resources) instead of none.
        raise TenantScopeError("A saved tenant is required here; got one without a primary key.")
    return tenant_id


class TenantScopedManager(models.Manager):
    def get_queryset(self):
        raise TenantScopeError(
            f"{self.model.__name__} is tenant-owned: query it with .for_tenant(tenant), .in_scope(scope) "
            f"or, for a cross-tenant job, .unscoped()."
        )

    def _all_rows(self) -> models.QuerySet:
        return super().get_queryset()

    def for_tenant(self, tenant) -> models.QuerySet:
        return self._all_rows().filter(tenant_id=_tenant_id(tenant))

    def in_scope(self, scope: TenantScope) -> models.QuerySet:
        if not isinstance(scope, TenantScope):
            raise TenantScopeError(f"in_scope() needs a TenantScope, got {type(scope).__name__}.")
        return scope.apply(self._all_rows())

    def unscoped(self) -> models.QuerySet:
        """Every tenant's rows. For cross-tenant background jobs; never for a request's data."""
        return self._all_rows()

    # Writing a row names its tenant in the row itself, so creating needs no scope.
    def create(self, **kwargs):
        if kwargs.get("tenant") is None and kwargs.get("tenant_id") is None:
            raise TenantScopeError(f"{self.model.__name__} rows need a tenant.")
        return self._all_rows().create(**kwargs)

    def bulk_create(self, objs, **kwargs):
        objs = list(objs)
        if any(obj.tenant_id is None for obj in objs):
            raise TenantScopeError(f"{self.model.__name__} rows need a tenant.")
        return self._all_rows().bulk_create(objs, **kwargs)


def tenant_key_led_index() -> models.ForeignKey:
    """TenantOwnedModel's tenant key for a table whose own indexes lead with tenant: the foreign key's index
    would be a redundant copy of their prefix, as big as one of them and written by every insert (issue #9;
    ~200 MB at 10M runs)."""
    return models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="+", db_index=False)


class TenantOwnedModel(models.Model):
    """Base for every tenant-owned table. Tables lead their indexes with tenant, so the ledger can be
    distributed by tenant (Citus) later without a redesign."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="+")

    # Declared first: the default manager (admin, migrations, related lookups).
    unscoped_objects = models.Manager()
    objects = TenantScopedManager()

    class Meta:
        abstract = True
