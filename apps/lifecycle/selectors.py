"""Reads of the lifecycle app, always through a viewer's TenantScope: staff (every tenant) also see
orphans and sweeps over every tenant; a member sees only rows of their tenants."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, QuerySet, Sum
from django.utils import timezone

from apps.core.money import ZERO, allocate
from apps.tenants.scoping import TenantScope, TenantScopeError

from .models import (
    ArchivedItem,
    Container,
    Outcome,
    ResourceStatus,
    StorageDailyTotal,
    StorageMeter,
    StoredFile,
    Sweep,
    SweepItem,
    VectorStore,
    VectorStoreDay,
)

AUDIT_OUTCOMES = (Outcome.DELETED, Outcome.ALREADY_GONE, Outcome.SKIPPED_ACTIVE, Outcome.SKIPPED_ATTACHED,
                  Outcome.SKIPPED_LEGAL_HOLD, Outcome.FAILED)


def sweeps_visible(*, scope: TenantScope) -> QuerySet:
    return Sweep.objects.in_scope(scope).select_related("tenant", "requested_by")


def sweep_get_visible(*, scope: TenantScope, pk: int) -> Sweep | None:
    return sweeps_visible(scope=scope).filter(pk=pk).first()


def _with_archive_flag(items: QuerySet) -> QuerySet:
    """Items with `has_archive`: a copy of the thread's messages (conversation's items) was kept before it was
    deleted, so the page can link to it. By thread id: a retried delete keeps the first copy, made by the item
    of an earlier attempt."""
    return items.annotate(has_archive=Exists(
        ArchivedItem.unscoped_objects.filter(thread_openai_id=OuterRef("openai_id"))))


def sweep_items_visible(*, scope: TenantScope, sweep: Sweep) -> QuerySet:
    """A sweep's items the viewer may see (a member viewing a tenant-filtered sweep sees its items)."""
    return _with_archive_flag(SweepItem.objects.in_scope(scope).filter(sweep=sweep).select_related("tenant")
                              .order_by("pk"))


def archived_items_visible(*, scope: TenantScope, thread_openai_id: str) -> QuerySet:
    """What was kept of one deleted thread or conversation (archive_before_delete), oldest first, if the viewer
    may see its tenant (staff: any, orphans' too)."""
    return ArchivedItem.objects.in_scope(scope).filter(thread_openai_id=thread_openai_id).order_by("position")


def deletion_audit(*, scope: TenantScope, outcome: str = "", resource_type: str = "") -> QuerySet:
    """Everything real sweeps did, newest first: one row per resource per sweep."""
    rows = _with_archive_flag(
        SweepItem.objects.in_scope(scope).filter(dry_run=False, outcome__in=AUDIT_OUTCOMES)
        .select_related("tenant", "sweep").order_by("-processed_at", "-pk")
    )
    if outcome:
        rows = rows.filter(outcome=outcome)
    if resource_type:
        rows = rows.filter(resource_type=resource_type)
    return rows


def latest_preview(*, scope: TenantScope, kind: str | None = None) -> Sweep | None:
    previews = sweeps_visible(scope=scope).filter(dry_run=True)
    if kind:
        previews = previews.filter(kind=kind)
    return previews.order_by("-created_at", "-pk").first()


def upcoming_deletions(*, scope: TenantScope) -> QuerySet:
    """What the latest finished dry run of each kind listed, not yet confirmed."""
    latest_ids = []
    for kind in ("threads", "vector_stores", "files", "containers"):
        preview = sweeps_visible(scope=scope).filter(dry_run=True, kind=kind, status=Sweep.Status.FINISHED).first()
        if preview is not None and not preview.confirmations.exists():
            latest_ids.append(preview.pk)
    return (SweepItem.objects.in_scope(scope).filter(sweep_id__in=latest_ids, outcome=Outcome.WOULD_DELETE)
            .select_related("tenant", "sweep").order_by("sweep_id", "pk"))


@dataclass(frozen=True)
class Orphan:
    resource_type: str
    pk: int
    openai_id: str
    openai_project: str
    name: str
    usage_bytes: int
    created_at: dt.datetime
    last_active_at: dt.datetime | None
    cost_usd_per_day: Decimal


def orphans(*, scope: TenantScope, on_date: dt.date) -> list[Orphan]:
    """Live resources with no tenant (staff only: a member's scope never includes them), with what each
    costs per day: a store's marginal share of the day's storage bill; files and containers cost nothing
    while idle (file bytes are billed through the stores that hold them)."""
    if not scope.is_every_tenant:
        return []
    from .services import billed_storage_bytes, storage_daily_saving, storage_rate

    # OpenAI stops billing a store at its expires_at: an expired one costs nothing, nor counts in the bill.
    now = timezone.now()
    total = billed_storage_bytes(now)
    rate = storage_rate(on_date)  # once for every store (the price book read per store was 2 queries each)
    rows: list[Orphan] = []
    for store in VectorStore.objects.unassigned().filter(status=ResourceStatus.ACTIVE).order_by("-usage_bytes", "pk"):
        expired = store.expires_at is not None and store.expires_at <= now
        rows.append(Orphan("vector_store", store.pk, store.openai_id, store.openai_project, store.name,
                           store.usage_bytes, store.created_at, store.last_active_at,
                           ZERO if expired else storage_daily_saving(total, store.usage_bytes, rate)))
    for file in StoredFile.objects.unassigned().filter(status=ResourceStatus.ACTIVE).order_by("-bytes", "pk"):
        rows.append(Orphan("file", file.pk, file.openai_id, file.openai_project, file.filename, file.bytes,
                           file.created_at, None, ZERO))
    for container in Container.objects.unassigned().filter(status=ResourceStatus.ACTIVE).order_by("pk"):
        rows.append(Orphan("container", container.pk, container.openai_id, container.openai_project,
                           container.name, 0, container.created_at,
                           container.last_active_at, ZERO))
    return rows


@dataclass(frozen=True)
class StorageDay:
    day: dt.date
    gb_days: Decimal
    cost_usd: Decimal
    saved_usd: Decimal


def tenant_storage_meters(*, scope: TenantScope | None = None, tenant=None) -> QuerySet:
    """The tenants' daily storage meters (one row per tenant and metered UTC day: day, cost_usd, ...) in a
    scope or of one tenant, for the ledger's spend figures. The unassigned stores' meter belongs to no tenant
    and is left out (the orphans page shows it)."""
    if tenant is not None:
        return StorageMeter.objects.for_tenant(tenant)
    if scope is None:
        raise ValueError("Pass a scope or a tenant.")
    return StorageMeter.objects.in_scope(scope).filter(tenant__isnull=False)


def storage_daily_totals(*, scope: TenantScope, start: dt.date, end: dt.date) -> dict[dt.date, Decimal]:
    """{day: every tenant's storage cost} of the days metered for a tenant from start to end (inclusive): what
    summing tenant_storage_meters of a scope of every tenant per day gives, from one row a day. Only for a
    scope of every tenant: the totals hold every tenant's storage."""
    if not scope.is_every_tenant:
        raise TenantScopeError("The storage totals over every tenant are for a scope of every tenant only.")
    return dict(StorageDailyTotal.objects.filter(day__gte=start, day__lte=end).values_list("day", "cost_usd"))


def storage_by_day(*, scope: TenantScope, start: dt.date, end: dt.date, tenant=None) -> list[StorageDay]:
    """GB-days, cost and money saved per UTC day in [start, end), summed over the viewer's tenants (staff
    also count the unassigned stores)."""
    rows = StorageMeter.objects.in_scope(scope).filter(day__gte=start, day__lt=end)
    if tenant is not None:
        rows = rows.filter(tenant=tenant)
    sums = rows.values("day").annotate(gb=Sum("gb_days"), cost=Sum("cost_usd"), saved=Sum("saved_usd")).order_by("day")
    return [StorageDay(r["day"], r["gb"] or ZERO, r["cost"] or ZERO, r["saved"] or ZERO) for r in sums]


def storage_cost_by_project(*, scope: TenantScope, start: dt.date, end: dt.date) -> dict[tuple[dt.date, str], Decimal]:
    """Metered vector-storage cost per (UTC day, OpenAI project) in [start, end), over the scope's tenants.
    OpenAI bills storage per project while the meter rates tenants: each tenant's day is split across projects
    in proportion to the bytes the meter counted in each, by largest remainder, so the projects add up to the
    meter exactly. A byte counts in the project now recorded for its store (OpenAI objects never move between
    projects, so a corrected project re-attributes past days when they are reconciled again); a store recorded
    without one, and bytes the day's snapshot no longer accounts for, count in the default project
    (OPENAI_PROJECT_ID). Two queries; rows per tenant-day with storage."""
    default = settings.OPENAI_PROJECT_ID
    snapshot: dict[tuple[dt.date, int], dict[str, int]] = {}
    for row in (VectorStoreDay.objects.in_scope(scope).filter(day__gte=start, day__lt=end)
                .values("day", "tenant_id", "vector_store__openai_project").annotate(usage_bytes=Sum("usage_bytes"))
                .order_by()):
        project = row["vector_store__openai_project"] or default
        weights = snapshot.setdefault((row["day"], row["tenant_id"]), {})
        weights[project] = weights.get(project, 0) + row["usage_bytes"]
    costs: dict[tuple[dt.date, str], Decimal] = {}
    for day, tenant_id, usage_bytes, cost_usd in (StorageMeter.objects.in_scope(scope)
                                                  .filter(day__gte=start, day__lt=end)
                                                  .values_list("day", "tenant_id", "usage_bytes", "cost_usd")):
        weights = dict(snapshot.get((day, tenant_id), {}))
        unaccounted = usage_bytes - sum(weights.values())
        if unaccounted > 0:
            weights[default] = weights.get(default, 0) + unaccounted
        parts = allocate(cost_usd, weights) if sum(weights.values()) else {default: cost_usd}
        for project, amount in parts.items():
            costs[(day, project)] = costs.get((day, project), ZERO) + amount
    return costs


def storage_by_tenant(*, scope: TenantScope, start: dt.date, end: dt.date) -> list[dict]:
    return list(
        StorageMeter.objects.in_scope(scope).filter(day__gte=start, day__lt=end)
        .values("tenant__slug").annotate(gb_days=Sum("gb_days"), cost_usd=Sum("cost_usd"), saved_usd=Sum("saved_usd"))
        .order_by("-cost_usd", "tenant__slug")
    )


def resource_counts(*, scope: TenantScope) -> dict[str, int]:
    return {
        "vector_stores": VectorStore.objects.in_scope(scope).filter(status=ResourceStatus.ACTIVE).count(),
        "files": StoredFile.objects.in_scope(scope).filter(status=ResourceStatus.ACTIVE).count(),
        "containers": Container.objects.in_scope(scope).filter(status=ResourceStatus.ACTIVE).count(),
    }


def deletions_by_outcome(*, scope: TenantScope, since: dt.datetime) -> dict[str, int]:
    rows = (SweepItem.objects.in_scope(scope).filter(dry_run=False, processed_at__gte=since)
            .values("outcome").annotate(n=Count("pk")))
    return {row["outcome"]: row["n"] for row in rows}
