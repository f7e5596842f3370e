"""The base every API view over tenant-owned data uses, so the safe path is the only easy one.

Subclasses may not override get_queryset (refused when the class is created, as PostHog's
TeamAndOrgViewSetMixin does); they set `scoped_model` and narrow with `scoped_queryset()`. The
tenant scope comes from the API key, never from the request body; a slug outside it is a 404."""

from __future__ import annotations

from django.db import models

from .authentication import CanRead
from .models import Tenant
from .scoping import TenantScope
from .selectors import tenant_get_visible


class TenantScopedAPIMixin:
    permission_classes = [CanRead]
    scoped_model: type[models.Model] | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "get_queryset" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__} overrides get_queryset; implement scoped_queryset(queryset) instead so the "
                f"tenant filter is always applied."
            )

    @property
    def tenant_scope(self) -> TenantScope:
        return self.request.user.tenant_scope

    def get_tenant(self, slug: str) -> Tenant:
        return tenant_get_visible(self.tenant_scope, slug)

    def get_queryset(self):
        if self.scoped_model is None:
            raise TypeError(f"{type(self).__name__} must set scoped_model.")
        return self.scoped_queryset(self.scoped_model.objects.in_scope(self.tenant_scope))

    def scoped_queryset(self, queryset):
        return queryset
