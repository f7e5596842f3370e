"""Lifecycle web pages: overview (upcoming deletions, recent sweeps, storage chart, orphans), sweep detail
with its dry-run preview and confirm button, the deletion audit (paginated, CSV) and the orphans list.
Staff see everything and act; a tenant member sees only their tenant's rows and cannot act. A sweep, item
or resource outside the viewer's scope is a 404, the same as a missing one."""

from __future__ import annotations

import datetime as dt
import logging
from functools import cached_property

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import Http404, HttpResponseRedirect, StreamingHttpResponse
from django.urls import reverse
from django.views import View

from apps.core.api_support import json_bytes
from apps.dashboard.tables import Column, Table
from apps.dashboard.views import DashboardView
from apps.provider.client import ProviderError
from apps.tenants.models import Tenant
from apps.tenants.selectors import scope_for_user, tenants_visible

from . import selectors, services
from .figures import storage_figure
from .models import Outcome, ResourceType, SweepKind

logger = logging.getLogger(__name__)

STORAGE_DAYS = 30
AUDIT_PAGE = 50


def _sweep_url(sweep) -> str:
    return reverse("lifecycle:sweep-detail", args=[sweep.pk])


def _tenant_label(row) -> str:
    tenant = getattr(row, "tenant", None)
    return tenant.slug if tenant is not None else "unassigned"


def _items_columns(*, with_sweep: bool) -> list[Column]:
    columns = [
        # A deleted thread whose messages were archived first links to that copy (archive_before_delete).
        Column("openai_id", "OpenAI id", "code",
               link=lambda i: reverse("lifecycle:archive", args=[i.openai_id]) if getattr(i, "has_archive", False)
               else None),
        Column("resource_type", "Type", "status"),
        Column("tenant", "Tenant", value=_tenant_label),
        Column("outcome", "Outcome", "status", value=lambda i: i.outcome or i.state),
        # The two times may wrap before their clock time: unwrapped, with a conversation's badge and a tenant
        # slug of 8 letters, the table still ran 27 px past the screen's edge at 1280 px (the demo's upcoming
        # deletions, their rule and detail cut off).
        Column("last_activity_at", "Last activity", "datetime", wrap=True),
        Column("processed_at", "When", "datetime", wrap=True),
        # One wrapped column on the page: as two, each at least 220 px wide, the table ran past the screen's
        # edge at 1280 px. Two in the CSV, where each is a value of its own.
        Column("rule_and_detail", "Rule · detail", "longtext", csv=False,
               value=lambda i: " · ".join(part for part in (i.rule, i.detail) if part)),
        Column("rule", "Rule", page=False),
        Column("detail", "Detail", page=False),
    ]
    if with_sweep:
        columns.insert(1, Column("sweep_id", "Sweep", value=lambda i: f"#{i.sweep_id}",
                                 link=lambda i: reverse("lifecycle:sweep-detail", args=[i.sweep_id])))
    return columns


def _sweeps_table(rows, *, paginate_by: int | None = 20) -> Table:
    return Table(
        name="sweeps", title="Recent sweeps", rows=rows, paginate_by=paginate_by, page_param="sweeps_page",
        columns=[
            Column("pk", "Sweep", value=lambda s: f"#{s.pk}", link=_sweep_url),
            Column("kind", "Kind", "status"),
            Column("dry_run", "Dry run", "bool"),
            Column("tenant", "Tenant", value=lambda s: s.tenant.slug if s.tenant_id else "all"),
            Column("status", "Status", "status"),
            Column("created_at", "Created", "datetime"),
            Column("finished_at", "Finished", "datetime"),
            Column("counts", "Outcomes",
                   value=lambda s: " · ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted((s.counts or {}).items()))),
        ],
        empty="No sweeps yet. Staff start one with a dry run (Preview a sweep), or the nightly schedule runs them.",
    )


class LifecycleView(DashboardView):
    nav_section = "lifecycle"


class OverviewView(LifecycleView):
    template_name = "lifecycle/overview.html"
    page_title = "Lifecycle"
    export_basename = "lifecycle"

    @property
    def storage_window(self) -> dict[str, dt.date]:
        """The last STORAGE_DAYS UTC days, today included (start inclusive, end exclusive)."""
        return {"start": self.today - dt.timedelta(days=STORAGE_DAYS - 1), "end": self.today + dt.timedelta(days=1)}

    def get_tables(self):
        tables = {
            "upcoming": Table(
                name="upcoming", title="Upcoming deletions (latest dry run of each kind)",
                rows=selectors.upcoming_deletions(scope=self.scope), paginate_by=10, page_param="upcoming_page",
                columns=_items_columns(with_sweep=True),
                empty="No unconfirmed dry run lists anything. Start a dry run to preview what the next sweep deletes.",
            ),
            "sweeps": _sweeps_table(selectors.sweeps_visible(scope=self.scope)),
            "storage_by_tenant": Table(
                name="storage_by_tenant", title=f"Vector storage, last {STORAGE_DAYS} days",
                rows=selectors.storage_by_tenant(scope=self.scope, **self.storage_window),
                columns=[
                    Column("tenant__slug", "Tenant", value=lambda r: r["tenant__slug"] or "unassigned"),
                    Column("gb_days", "GB-days", "number"),
                    Column("cost_usd", "Cost", "money"),
                    Column("saved_usd", "Saved by deletions", "money"),
                ],
                empty="No storage metered yet: the meter runs nightly (manage.py meter_storage).",
                # One row per tenant with storage: a deployment's thousand tenants were a thousand rows here.
                paginate_by=20, page_param="storage_page",
            ),
        }
        return tables

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        days = selectors.storage_by_day(scope=self.scope, **self.storage_window)
        orphans = selectors.orphans(scope=self.scope, on_date=self.today)
        context.update(
            tables=self.render_tables(),
            storage_figure=storage_figure(days),
            storage_cost_usd=sum((d.cost_usd for d in days), start=services.ZERO),
            storage_saved_usd=sum((d.saved_usd for d in days), start=services.ZERO),
            counts=selectors.resource_counts(scope=self.scope),
            orphan_count=len(orphans),
            orphan_cost_usd=sum((o.cost_usd_per_day for o in orphans), start=services.ZERO),
            kinds=SweepKind.choices,
            tenants=tenants_visible(self.scope).filter(legal_hold=False) if self.is_staff else [],
        )
        return context


class SweepDetailView(LifecycleView):
    template_name = "lifecycle/sweep_detail.html"
    export_basename = "sweep"

    @cached_property
    def sweep(self):
        sweep = selectors.sweep_get_visible(scope=self.scope, pk=self.kwargs["pk"])
        if sweep is None:
            raise Http404("Not found.")
        return sweep

    @property
    def page_title(self) -> str:
        return f"Sweep #{self.sweep.pk}"

    def get_tables(self):
        return {"items": Table(
            name="items", title="Items", rows=selectors.sweep_items_visible(scope=self.scope, sweep=self.sweep),
            paginate_by=AUDIT_PAGE, columns=_items_columns(with_sweep=False),
            empty="Nothing matched this sweep's rules." if self.sweep.planned_at else "Planning…",
        )}

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        sweep = self.sweep
        context.update(
            sweep=sweep, tables=self.render_tables(), counts=services.sweep_counts(sweep),
            can_confirm=(self.is_staff and sweep.dry_run and sweep.status == sweep.Status.FINISHED
                         and not sweep.confirmations.exists()
                         and sweep.counts.get(Outcome.WOULD_DELETE, 0) > 0),
            confirmation=sweep.confirmations.first() if sweep.dry_run else None,
            refresh=not sweep.is_done,
        )
        return context


class AuditView(LifecycleView):
    template_name = "lifecycle/audit.html"
    page_title = "Deletion audit"
    export_basename = "deletion-audit"

    offered_params = ("outcome", "resource_type")

    @cached_property
    def outcome(self) -> str:
        return self.offered("outcome", selectors.AUDIT_OUTCOMES, "",
                            instead="not an outcome the audit records; showing every outcome")

    @cached_property
    def resource_type(self) -> str:
        return self.offered("type", ResourceType.values, "", instead="not a kind of resource; showing every kind")

    def get_tables(self):
        outcome, resource_type = self.outcome, self.resource_type
        return {"audit": Table(
            name="audit", title="Deletion audit", paginate_by=AUDIT_PAGE,
            rows=selectors.deletion_audit(scope=self.scope, outcome=outcome, resource_type=resource_type),
            columns=_items_columns(with_sweep=True),
            empty=("No audit entries match these filters." if outcome or resource_type else
                   "No sweep has deleted or skipped anything yet. Confirm a dry run on the Lifecycle page to start."
                   if self.is_staff else "No sweep has deleted or skipped anything of your tenants yet."),
        )}

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(tables=self.render_tables(), outcomes=selectors.AUDIT_OUTCOMES, types=ResourceType.values,
                       outcome=self.outcome, type=self.resource_type)
        return context


class StaffOnlyMixin:
    """Orphans have no tenant, so only staff may see them; for anyone else the page does not exist."""

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated and not (request.user.is_staff or request.user.is_superuser):
            raise Http404("Not found.")
        return super().dispatch(request, *args, **kwargs)


class OrphansView(StaffOnlyMixin, LifecycleView):
    template_name = "lifecycle/orphans.html"
    page_title = "Orphaned resources"
    export_basename = "orphans"

    def get_tables(self):
        return {"orphans": Table(
            name="orphans", title="Resources with no tenant", paginate_by=50,
            rows=selectors.orphans(scope=self.scope, on_date=self.today),
            columns=[
                Column("openai_id", "OpenAI id", "code"),
                Column("resource_type", "Type", "status"),
                Column("openai_project", "OpenAI project"),
                Column("name", "Name"),
                Column("usage_bytes", "Bytes", "int"),
                Column("created_at", "Created", "datetime"),
                Column("last_active_at", "Last active", "datetime"),
                Column("cost_usd_per_day", "Cost per day", "money"),
            ],
            empty="No orphans: every listed vector store, file and container has a tenant.",
        )}

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(tables=self.render_tables(), tenants=Tenant.objects.order_by("slug"))
        return context


class ArchiveDownloadView(LoginRequiredMixin, View):
    """What archive_before_delete kept of one deleted thread or conversation, as a JSON download: its messages
    (items) oldest first, each as OpenAI answered it. Streamed, a page of rows at a time: an archive holds up to
    LIFECYCLE_ARCHIVE_MAX_ITEMS of them. A thread outside the viewer's tenants is a 404, as a missing one."""

    def get(self, request, openai_id: str):
        rows = selectors.archived_items_visible(scope=scope_for_user(request.user), thread_openai_id=openai_id)
        first = rows.first()
        if first is None:
            raise Http404("Not found.")
        response = StreamingHttpResponse(_archive_json(openai_id, first, rows), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="archive-{openai_id}.json"'
        return response


def _archive_json(openai_id: str, first, rows):
    head = {"thread": openai_id, "tenant": first.tenant.slug if first.tenant_id else None,
            "archived_at": first.archived_at.isoformat()}
    yield json_bytes(head)[:-1] + b',"items":['
    for number, row in enumerate(rows.iterator(chunk_size=500)):
        item = {"position": row.position, "id": row.item_openai_id,
                "created_at": row.item_created_at.isoformat() if row.item_created_at else None, "data": row.data}
        yield (b"," if number else b"") + json_bytes(item)
    yield b"]}"


class StaffActionView(LoginRequiredMixin, StaffOnlyMixin, View):
    """POST-only staff actions (CSRF-protected by the middleware); each is audited by its service."""

    http_method_names = ["post"]


class SweepCreateView(StaffActionView):
    def post(self, request):
        kind = request.POST.get("kind", "")
        slug = request.POST.get("tenant", "")
        tenant = Tenant.objects.filter(slug=slug).first() if slug else None
        if slug and tenant is None:
            messages.error(request, f"No tenant {slug!r}.")
            return HttpResponseRedirect(reverse("lifecycle:overview"))
        try:
            sweep = services.sweep_create(kind=kind, tenant=tenant, dry_run=True, requested_by=request.user)
        except services.LifecycleError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(reverse("lifecycle:overview"))
        _enqueue(sweep)
        messages.success(request, f"Dry run #{sweep.pk} started: it deletes nothing. Review its list, then confirm.")
        return HttpResponseRedirect(_sweep_url(sweep))


class SweepConfirmView(StaffActionView):
    def post(self, request, pk):
        preview = selectors.sweep_get_visible(scope=scope_for_user(request.user), pk=pk)
        if preview is None:
            raise Http404("Not found.")
        try:
            sweep = services.sweep_create(kind=preview.kind, preview_of=preview, requested_by=request.user)
        except services.LifecycleError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(_sweep_url(preview))
        _enqueue(sweep)
        messages.success(request, f"Sweep #{sweep.pk} deletes what dry run #{preview.pk} listed, re-checking each first.")
        return HttpResponseRedirect(_sweep_url(sweep))


class OrphanActionView(StaffActionView):
    def post(self, request, resource_type, pk, action):
        if resource_type not in services.RESOURCE_MODELS:
            raise Http404("Not found.")
        try:
            if action == "assign":
                slug = request.POST.get("tenant", "").strip()
                tenant = Tenant.objects.filter(slug=slug).first() if slug else None
                if tenant is None:
                    messages.error(request, f"No tenant has the slug {slug[:100]!r}: choose one from the list."
                                   if slug else "Choose the tenant to assign it to.")
                    return HttpResponseRedirect(reverse("lifecycle:orphans"))
                resource = services.resource_assign(resource_type=resource_type, pk=pk, tenant=tenant, actor=request.user)
                messages.success(request, f"{resource.openai_id} now belongs to {tenant.slug}.")
            elif action == "delete":
                outcome = services.resource_delete(resource_type=resource_type, pk=pk, actor=request.user)
                messages.success(request, f"{resource_type} {pk}: {outcome.replace('_', ' ')}.")
            else:
                raise Http404("Not found.")
        except services.RESOURCE_MODELS[resource_type].DoesNotExist as exc:
            raise Http404("Not found.") from exc
        except services.DeleteOutcomeUnknown as exc:
            messages.warning(request, str(exc))  # not "nothing changed": OpenAI may have deleted it
        except services.LifecycleError as exc:
            messages.error(request, str(exc))
        except ProviderError as exc:
            # OpenAI refused before doing anything (a 4xx, or a 429 after the client's retries with no 5xx or
            # timeout before it): nothing was deleted or recorded.
            messages.error(request, f"OpenAI did not delete it ({exc}). Nothing changed; try again later.")
        return HttpResponseRedirect(reverse("lifecycle:orphans"))


def _enqueue(sweep) -> None:
    from kombu.exceptions import OperationalError

    from .tasks import sweep_batch

    try:
        sweep_batch.apply_async((sweep.pk,))
    except (OSError, OperationalError):
        # The sweep is created (and shown) already; the reaper enqueues a sweep whose first batch never
        # started once the broker is back. So a click never becomes a 500, nor a retried click a second sweep.
        logger.warning("sweep %s: broker unavailable, left for the reaper to enqueue", sweep.pk, exc_info=True)
