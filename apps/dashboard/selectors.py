"""Reads the dashboard needs from apps that have no selectors of their own yet (alerts, prices)."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet

from apps.alerts.models import Alert
from apps.pricing.models import ModelPrice, ToolPrice
from apps.tenants.scoping import TenantScope


def alerts_recent(*, scope: TenantScope | None = None, tenant=None) -> QuerySet:
    """Latest opened first (raised, or opened again when its cause came back). A member's scope never includes
    tenant-less alerts (unpriced models, unattributed spend); staff see them."""
    alerts = Alert.objects.for_tenant(tenant) if tenant is not None else Alert.objects.in_scope(scope)
    return alerts.select_related("tenant").order_by("-opened_at", "-id")


def alerts_filtered(*, scope: TenantScope, state: str = "open", kind: str = "", tenant_id: int | None = None
                    ) -> QuerySet:
    """The scope's alerts (a member's never include tenant-less ones), latest opened first: open ones
    (acknowledged and reopened included), open ones nobody acknowledged, resolved ones, or all."""
    alerts = alerts_recent(scope=scope)
    if state == "open":
        alerts = alerts.filter(resolved_at__isnull=True)
    elif state == "unacknowledged":
        alerts = alerts.filter(resolved_at__isnull=True, acknowledged_at__isnull=True)
    elif state == "resolved":
        alerts = alerts.filter(resolved_at__isnull=False)
    if kind:
        alerts = alerts.filter(kind=kind)
    if tenant_id is not None:
        alerts = alerts.filter(tenant_id=tenant_id)
    return alerts


def price_book_current(*, today: dt.date) -> list[ModelPrice]:
    """Per model, the version in effect today (a model priced only from a future date is listed too,
    as upcoming), ordered by model."""
    current: dict[str, ModelPrice] = {}
    upcoming: dict[str, ModelPrice] = {}
    for price in ModelPrice.objects.order_by("model", "-effective_from"):
        if price.effective_from <= today:
            current.setdefault(price.model, price)
        else:
            upcoming[price.model] = price  # ordered newest first, so the last seen is the nearest upcoming
    for model, price in upcoming.items():
        current.setdefault(model, price)
    return [current[model] for model in sorted(current)]


def model_price_versions(*, model: str = "") -> QuerySet:
    prices = ModelPrice.objects.select_related("created_by").order_by("model", "-effective_from")
    return prices.filter(model=model) if model else prices


def price_version_counts() -> dict[str, int]:
    from django.db.models import Count

    return dict(ModelPrice.objects.values_list("model").annotate(versions=Count("pk")).order_by())


def tool_price_versions() -> QuerySet:
    return ToolPrice.objects.order_by("-effective_from")
