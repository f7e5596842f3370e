"""Ops web pages. Thin: each view turns the URL into a scope, a tenant and filters, calls selectors, hands
their output to pure figure builders, and lists its tables (HTML page or `?format=csv&table=<name>`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import quote

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.db.models import F, Q
from django.http import Http404, HttpResponseBadRequest, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import escape_uri_path, iri_to_uri
from django.utils.http import RFC3986_SUBDELIMS, url_has_allowed_host_and_scheme, urlencode
from django.views.generic import TemplateView, View

from apps.alerts import services as alert_services
from apps.alerts.models import Alert
from apps.alerts.services import alerts_acknowledge
from apps.core.exports import invalid_export_response, invalid_form_export_response
from apps.core.money import money_text
from apps.core.timeutils import UTC
from apps.ledger import selectors as ledger
from apps.ledger.models import Run
from apps.pricing.rating import multiple_text
from apps.pricing.selectors import model_rate_from_price
from apps.tenants.models import Tenant
from apps.tenants.scoping import TenantScope
from apps.tenants.selectors import (
    admin_scope_for_user,
    scope_for_user,
    tenant_get_visible,
    tenants_visible,
    user_is_tenant_admin,
)
from apps.tenants.services import tenant_update

from . import figures
from .forms import AlertFilterForm, PeriodForm, RunFilterForm, TenantPolicyForm, TenantSearchForm
from .nav import nav_for
from .selectors import (
    alerts_filtered,
    alerts_recent,
    model_price_versions,
    price_book_current,
    price_version_counts,
    tool_price_versions,
)
from .tables import Column, IdInText, Table, csv_response
from .templatetags.dashboard import price

TOP_TENANTS_IN_CHART = 5
SPARKLINE_DAYS = 30
SCATTER_POINTS = 1000


_URL_SENTINEL = "RUNID"


def _run_page_urls() -> Callable[[str], str | None]:
    """Run page URLs for many runs from one reverse(): reverse() matches the URL patterns on every call (~65 µs)
    and the runs page's scatter links 1,000 runs (70 ms of the page at 10M runs, issue #9). The id is quoted
    as reverse() quotes the whole path, character by character; None for an id no run page could have (empty,
    or a "/" in it, recorded before ingest checked ids), where reverse() raised NoReverseMatch."""
    head, tail = reverse("dashboard:run-detail", args=[_URL_SENTINEL]).rsplit(_URL_SENTINEL, 1)

    def url(openai_id: str) -> str | None:
        if not openai_id or "/" in openai_id:
            return None
        return f"{head}{quote(openai_id, safe=RFC3986_SUBDELIMS + '/~:@')}{tail}"

    return url


def _run_page_url(openai_id: str) -> str | None:
    return _run_page_urls()(openai_id)


def _run_url(run) -> str | None:
    return _run_page_url(run["openai_id"] if isinstance(run, dict) else run.openai_id)


def _alert_run_id(alert) -> str:
    """The id of the run an alert is about (high-cost run, wasted spend, requires_action), "" if none."""
    run = (alert.data or {}).get("run") if isinstance(alert.data, dict) else None
    return run if isinstance(run, str) else ""


def _alert_url(alert) -> str | None:
    """Where to act on an alert: the run's page, or the orphans page for vector stores billed with no tenant
    (a tenant-less alert, which only staff see, as they do that page)."""
    if alert.kind == Alert.Kind.ORPHANED_RESOURCE:
        return reverse("lifecycle:orphans")
    run = _alert_run_id(alert)
    return _run_page_url(run) if run else None


@dataclass(frozen=True)
class IgnoredParam:
    """A query parameter whose value names nothing the page offers (DashboardView.offered)."""

    name: str
    value: str
    instead: str  # what the page shows instead, as a clause
    offered: tuple[str, ...]

    @property
    def notice(self) -> str:
        return f"Ignored {self.name}={self.value[:40]!r}: {self.instead}."

    @property
    def export_error(self) -> str:
        return f"{self.name}={self.value[:40]!r} is not offered here; use one of: {', '.join(self.offered)}."


def _tenant_url(slug: str) -> str:
    return reverse("dashboard:tenant-detail", args=[slug])


class DashboardView(LoginRequiredMixin, TemplateView):
    """Base page: login required, the viewer's scope, navigation, and CSV export of any listed table."""

    nav_section = ""
    page_title = ""
    export_basename = "runledger"

    @cached_property
    def scope(self):
        return scope_for_user(self.request.user)

    @cached_property
    def admin_scope(self) -> TenantScope:
        """The tenants whose alerts and settings the viewer may change."""
        return admin_scope_for_user(self.request.user)

    @cached_property
    def now(self) -> dt.datetime:
        return timezone.now()

    @cached_property
    def today(self) -> dt.date:
        """Rollups are keyed by UTC day, so "today" for the ledger is the UTC date."""
        return self.now.astimezone(UTC).date()

    @cached_property
    def is_staff(self) -> bool:
        return bool(self.request.user.is_staff or self.request.user.is_superuser)

    def get_tables(self) -> dict[str, Table]:
        return {}

    # The cached properties that read a query parameter through offered(): offered_response reads them first,
    # so a value they ignored is known before the page or the export is made.
    offered_params: tuple[str, ...] = ()

    @cached_property
    def ignored_params(self) -> dict[str, IgnoredParam]:
        """{parameter: what was asked and what the page shows instead} for values that name nothing the page
        offers."""
        return {}

    def offered(self, name: str, choices, default, *, parse=str, instead: str, empty=None):
        """The query parameter `name` parsed, if it is one of `choices`; otherwise `default`, and the value is
        noted in ignored_params (a page says so above its content; an export answers 400 naming it) rather
        than silently replaced: ?days=15 showed 30 days under a link that said 15. Absent, or present and
        empty: `default` (or `empty`, when given, for the latter)."""
        raw = self.request.GET.get(name, "")
        if raw == "":
            return default if empty is None or name not in self.request.GET else empty
        try:
            value = parse(raw)
        except ValueError:
            value = None
        if value in choices:
            return value
        self.ignored_params[name] = IgnoredParam(name, raw, instead, tuple(str(c) for c in choices if c != ""))
        return default

    @cached_property
    def offered_response(self) -> JsonResponse | None:
        """Once per request, before any page or export is made (every get() starts here): an export asking
        for a choice the page does not offer is a 400 naming it, never rows of another choice; a page shows
        the default with a notice per ignored value. None: go on."""
        for name in self.offered_params:
            getattr(self, name)
        if self.request.GET.get("format") == "csv" and self.ignored_params:
            ignored = next(iter(self.ignored_params.values()))
            return invalid_export_response(ignored.name, ignored.export_error)
        for ignored in self.ignored_params.values():
            messages.warning(self.request, ignored.notice)
        return None

    @cached_property
    def visible_tenant_ids(self) -> dict[str, int]:
        """{slug: id} of the tenants a page's tenant filter offers: every tenant for staff, 1,000 at the bench's
        scale, where model instances took ~10 ms of the page (issue #9)."""
        return dict(tenants_visible(self.scope).order_by("slug").values_list("slug", "id"))

    def filter_form(self):
        """The page's filter form, if it has one. One that does not validate makes the page a 400 showing its
        errors over the default view (not a dead end), and an export a 400 naming the field: an export is
        data for the filters asked, never another's."""
        return None

    def get(self, request, *args, **kwargs):
        if self.offered_response is not None:
            return self.offered_response
        form = self.filter_form()
        if form is not None and not form.is_valid():
            if request.GET.get("format") == "csv":
                return invalid_form_export_response(form)
            return self.render_to_response(self.get_context_data(**kwargs), status=400)
        if request.GET.get("format") == "csv":
            tables = self.get_tables()
            name = request.GET.get("table") or next(iter(tables), "")
            if name not in tables:
                raise Http404("No such table on this page.")
            return csv_response(tables[name], filename=f"{self.export_basename}-{name}-{self.today.isoformat()}.csv")
        return super().get(request, *args, **kwargs)

    @cached_property
    def page_path(self) -> str:
        """Where the page's own links and GET forms go (tables' pages, sorts and exports, the period). The
        request's path, except for a page drawn in answer to a form posted elsewhere (the tenant page after
        a refused settings change): relative `?…` links there asked the POST-only address, a 405. Quoted as
        get_full_path() quotes it: a run id may hold "#", "?" or "%"."""
        return escape_uri_path(self.request.path)

    @property
    def page_url(self) -> str:
        """page_path with the request's query string, as get_full_path() writes it: where a form posted from
        the page (an alert's Acknowledge) comes back to."""
        query = self.request.META.get("QUERY_STRING", "")
        return f"{self.page_path}?{iri_to_uri(query)}" if query else self.page_path

    def render_tables(self) -> dict[str, Table]:
        tables = self.get_tables()
        for table in tables.values():
            # Without the values the page ignored, its links (export, pages, sorts) ask for what it shows.
            table.paginate(self.request, path=self.page_path, drop=self.ignored_params)
        return tables

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(
            nav_items=nav_for(self.request.user, self.nav_section),
            page_title=self.page_title,
            is_staff=self.is_staff,
            today=self.today,
            scope_label="all tenants" if self.scope.is_every_tenant else "your tenants",
            page_path=self.page_path,
            page_url=self.page_url,
        )
        return context


# --- overview -------------------------------------------------------------------------------------


class OverviewView(DashboardView):
    template_name = "dashboard/overview.html"
    nav_section = "overview"
    page_title = "Overview"
    export_basename = "overview"
    PERIODS = (7, 30, 90)
    offered_params = ("days",)

    @cached_property
    def days(self) -> int:
        return self.offered("days", self.PERIODS, 30, parse=int,
                            instead="the chart covers 7, 30 or 90 days; showing the last 30")

    @cached_property
    def chart_start(self) -> dt.date:
        return self.today - dt.timedelta(days=self.days - 1)

    @cached_property
    def tenants_spend(self) -> ledger.TenantSpend:
        """Each tenant's spend in the chart's period and this month: the chart's ranking and the top tenants."""
        return ledger.tenant_spend(scope=self.scope, start=self.chart_start, end=self.today, today=self.today)

    def get_tables(self):
        top_tenants = ledger.top_tenants_this_month(scope=self.scope, today=self.today,
                                                    month_to_date=self.tenants_spend.month_to_date)
        return {
            "top_tenants": Table(
                name="top_tenants", title="Top tenants this month", rows=top_tenants,
                columns=[
                    Column("name", "Tenant", link=lambda t: _tenant_url(t.slug)),
                    Column("month_to_date_usd", "Month to date", "money"),
                    Column("monthly_budget_usd", "Budget", "money"),
                    Column("budget_used_percent", "Budget used", "percent"),
                ],
                empty="No tenants yet. Create one in the admin, then send its runs to POST /api/v1/ingest/.",
            ),
            # Half the page wide: without the kind code the alert text wraps inside the card instead of
            # running out of it (the title already says what happened; the tenant page lists kinds).
            "alerts": _alerts_table(alerts_recent(scope=self.scope)[:10], with_tenant=True, with_kind=False,
                                    with_state=False),
        }

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        start = self.chart_start
        # The scope's spend per day, read once for the month's figures and the chart's days.
        days = ledger.spend_days(scope=self.scope, start=min(start, ledger.spend_summary_start(self.today)),
                                 end=self.today)
        series = ledger.cost_by_day_by_tenant(scope=self.scope, start=start, end=self.today, top=TOP_TENANTS_IN_CHART,
                                              days=days, tenants_spend=self.tenants_spend)
        context.update(
            summary=ledger.spend_summary(scope=self.scope, today=self.today, now=self.now, days=days),
            tables=self.render_tables(),
            days=self.days,
            periods=self.PERIODS,
            period_start=start,
            # Tenants by name, as in the tables beside the chart; series stay keyed (and coloured) by slug.
            daily_figure=(figures.daily_stacked_cost_figure(series, name_labels=series.labels)
                          if series.total_usd else None),
            # Said only when there is a rest: a member of one tenant read "the rest are grouped" under one bar.
            daily_caption=("Top five tenants by spend in the period; the rest are grouped as “(others)”."
                           if ledger.OTHERS_LABEL in series.series else "Spend per tenant per day."),
            period_total=series.total_usd,
        )
        return context


# --- tenants --------------------------------------------------------------------------------------

TENANT_SORTS = {
    "name": ("name", "slug"), "-name": ("-name", "-slug"),
    "mtd": ("month_to_date_usd", "slug"), "-mtd": ("-month_to_date_usd", "slug"),
    "budget": ("budget_used_percent", "slug"), "-budget": ("-budget_used_percent", "slug"),
}


class TenantListView(DashboardView):
    template_name = "dashboard/tenant_list.html"
    nav_section = "tenants"
    page_title = "Tenants"
    export_basename = "tenants"

    offered_params = ("sort",)

    @cached_property
    def sort(self) -> str:
        return self.offered("sort", TENANT_SORTS, "-mtd",
                            instead="not a sort this table offers; sorted by month to date, highest first")

    @cached_property
    def search_form(self) -> TenantSearchForm:
        return TenantSearchForm(self.request.GET)

    def filter_form(self):
        # Invalid only from a hand-made URL (the input holds 100 characters): it listed every tenant.
        return self.search_form

    def tenant_rows(self):
        tenants = tenants_visible(self.scope)
        if not self.search_form.is_valid():
            return tenants.none()
        query = self.search_form.cleaned_data.get("q", "").strip()
        if query:
            tenants = tenants.filter(Q(name__icontains=query) | Q(slug__icontains=query) | Q(external_id__icontains=query))
        ordering = TENANT_SORTS[self.sort]
        if self.sort in ("budget", "-budget"):
            # Tenants without a budget last either way, said on both databases: SQLite sorts NULL first going
            # up, so ?sort=budget opened on a page of tenants with no budget at all.
            budget = F("budget_used_percent")
            ordering = (budget.desc(nulls_last=True) if self.sort == "-budget" else budget.asc(nulls_last=True), "slug")
        return ledger.tenants_with_spend(tenants, scope=self.scope, today=self.today).order_by(*ordering)

    def get_tables(self):
        return {
            "tenants": Table(
                name="tenants", title="Tenants", rows=self.tenant_rows(), paginate_by=25, sort=self.sort,
                columns=[
                    # Money first after the name: on a phone those columns are visible without scrolling.
                    Column("name", "Tenant", link=lambda t: _tenant_url(t.slug), sort="name"),
                    Column("month_to_date_usd", "Month to date", "money", sort="-mtd"),
                    Column("budget_used_percent", "Budget used", "percent", sort="-budget"),
                    Column("trend", f"Last {SPARKLINE_DAYS} days", "sparkline", csv=False),
                    Column("monthly_budget_usd", "Budget", "money"),
                    Column("slug", "Slug", "code"),
                    Column("status", "Status", "status"),
                ],
                empty="No tenant matches. Clear the search, or create tenants in the admin.",
            )
        }

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        tables = self.render_tables()
        table = tables["tenants"]
        # Sparklines for the tenants on this page only: one rollup query, however many rows.
        rows = table.page_rows
        trends = ledger.daily_cost_for_tenants(
            scope=self.scope, tenant_ids=[tenant.pk for tenant in rows],
            start=self.today - dt.timedelta(days=SPARKLINE_DAYS - 1), end=self.today,
        )
        for tenant in rows:
            tenant.trend = trends.get(tenant.pk, [])
        context.update(tables=tables, sort=self.sort, search_form=self.search_form)
        return context


def _alerts_table(alerts, *, with_tenant: bool, with_kind: bool = True, with_state: bool = True,
                  name: str = "alerts", paginate_by: int | None = None, admin_scope: TenantScope | None = None
                  ) -> Table:
    """The alerts as the pages list them. With `admin_scope` (the tenants the viewer administers), the open
    alerts of those tenants have an Acknowledge button (tenant-less ones only for staff); the page must hold
    the form the buttons submit (dashboard/_acknowledge_form.html)."""
    # What happened right after when: on a phone the columns past the first few are off-screen until scrolled.
    columns = [
        # May break before its time: the run id in the text beside it is a 30-character unbroken block now.
        # When it opened: raised, or opened again when its cause came back (State says "reopened"; the CSV has both).
        Column("opened_at", "When", "datetime", wrap=True),
        # The run's id in the title shortened as in other tables (the full id in its tooltip, on the run's page
        # the title links to, and in the CSV, which keeps the title as stored).
        Column("title", "Alert", "idtext", value=lambda a: IdInText(a.title, _alert_run_id(a)), link=_alert_url,
               csv_get=lambda a: a.title, csv_kind="text"),
        # Resolved: its cause went away (a price added, the day reconciled clean); the reason is in the CSV. The
        # overview's half-width card has no room for a State column: there a resolved alert says "resolved"
        # where its severity was (the CSV keeps both).
        *([Column("severity", "Severity", "status"), Column("state", "State", "status")] if with_state else [
            Column("severity", "Severity", "status", value=lambda a: "resolved" if a.resolved_at else a.severity,
                   csv_get=lambda a: a.severity),
            Column("state", "State", "status", page=False)]),
        Column("resolution", "Resolution", "text", page=False),
        Column("times_reopened", "Times reopened", "int", page=False),
        Column("created_at", "First raised", "datetime", page=False),
    ]
    if with_kind:
        columns.append(Column("kind", "Kind", "code"))
    if admin_scope is not None and not admin_scope.is_empty:
        columns.append(Column("acknowledge", "Action", "acknowledge", csv=False,
                              value=lambda a: a.pk if _acknowledgeable(a, admin_scope) else None))
    if with_tenant:
        columns.insert(2, Column("tenant", "Tenant", value=lambda a: a.tenant.slug if a.tenant_id else "—",
                                 link=lambda a: _tenant_url(a.tenant.slug) if a.tenant_id else None))
    pages = {"paginate_by": paginate_by, "page_param": f"{name}_page"} if paginate_by else {}
    return Table(name=name, title="Alerts", rows=alerts, columns=columns, **pages,
                 empty="No alerts. Alerts appear here when a run crosses its tenant's high-cost threshold, "
                       "a budget threshold is reached or a model has no price.")


# --- alerts ---------------------------------------------------------------------------------------


class AlertListView(DashboardView):
    template_name = "dashboard/alert_list.html"
    nav_section = "alerts"
    page_title = "Alerts"
    export_basename = "alerts"

    @cached_property
    def form(self) -> AlertFilterForm:
        return AlertFilterForm(self.request.GET, tenant_slugs=list(self.visible_tenant_ids),
                               every_kind=self.scope.is_every_tenant)

    def filter_form(self):
        return self.form

    def alerts(self):
        if not self.form.is_valid():
            return alerts_filtered(scope=self.scope).none()
        return _alerts_matching(self.scope, self.form.cleaned_data, self.visible_tenant_ids)

    @property
    def has_filters(self) -> bool:
        return any(self.request.GET.get(name) for name in ("state", "kind", "tenant"))

    def get_tables(self):
        table = _alerts_table(self.alerts(), with_tenant=True, paginate_by=50, admin_scope=self.admin_scope)
        table.count_cap = RUN_COUNT_CAP  # one alert per high-cost run: as many as the runs page lists
        if not self.form.is_valid():
            table.empty = "No alerts shown: correct the filter named above."
        elif self.has_filters:
            table.empty = "No alerts match these filters."
        else:
            table.empty = "No open alerts. Choose State: resolved or all to see the others."
        return {"alerts": table}

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        tables = self.render_tables()
        data = self.form.cleaned_data if self.form.is_valid() else None
        # "Acknowledge all matching": while some listed alert is one the viewer may acknowledge.
        can_acknowledge_all = bool(data and any(_acknowledgeable(alert, self.admin_scope)
                                                for alert in tables["alerts"].page_rows))
        context.update(tables=tables, form=self.form, has_filters=self.has_filters,
                       acknowledge_all_filters=[(name, data[name]) for name in ("kind", "tenant") if data[name]]
                       if can_acknowledge_all else None,
                       retention_days=settings.ALERT_RETENTION_DAYS)
        return context


def _acknowledgeable(alert: Alert, admin_scope: TenantScope) -> bool:
    """Whether someone who administers `admin_scope` can acknowledge this alert now: it is open, nobody has, and
    its tenant is theirs (a tenant-less one: staff's)."""
    return alert.resolved_at is None and alert.acknowledged_at is None and admin_scope.allows_owner(alert.tenant_id)


def _alerts_matching(scope: TenantScope, data: dict, visible_tenant_ids: dict[str, int], *, state: str | None = None):
    """The alerts the alerts page's filters (AlertFilterForm's cleaned data) pick from the scope's, with
    another state if given."""
    return alerts_filtered(scope=scope, state=state or data["state"], kind=data["kind"],
                           tenant_id=visible_tenant_ids[data["tenant"]] if data["tenant"] else None)


class AlertAcknowledgeView(LoginRequiredMixin, View):
    """POST only: someone who may change an alert's tenant (its admins, staff; a tenant-less alert: staff) marks
    it seen, from the alerts page or the tenant page, and goes back there; or, with `all`, every open alert nobody
    acknowledged that the alerts page's filters (state aside) match among those they may change, at most
    ACKNOWLEDGE_AT_MOST a click. Audited by alerts_acknowledge. An alert the viewer cannot see is a 404,
    whoever's it is."""

    http_method_names = ["post"]

    def post(self, request):
        scope, admin_scope = scope_for_user(request.user), admin_scope_for_user(request.user)
        place = "alerts" if request.POST.get("place") == "alerts" else ""  # the tenant page's alerts card
        if "all" in request.POST:
            refused = self._acknowledge_matching(request, scope, admin_scope)
            if refused is not None:
                return refused
        else:
            raw = request.POST.get("alert", "")
            if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
                return _bad_request("alert: give the id of an alert (the page's Acknowledge button does).")
            alert = Alert.objects.in_scope(scope).filter(pk=int(raw)).first()
            if alert is None:
                raise Http404("No such alert.")
            if not admin_scope.allows_owner(alert.tenant_id):
                raise PermissionDenied("Only this tenant's admins can acknowledge its alerts.")
            if alert.resolved_at is not None:  # a page opened before its cause went away
                messages.info(request, "That alert is resolved: its cause went away.", extra_tags=place)
            elif alerts_acknowledge(alerts=Alert.unscoped_objects.filter(pk=alert.pk), actor=request.user):
                messages.success(request, f"Acknowledged: {alert.title}", extra_tags=place)
            else:
                messages.info(request, "That alert was acknowledged already.", extra_tags=place)
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()},
                                               require_https=request.is_secure()):
            back = reverse("dashboard:alerts")
        return HttpResponseRedirect(back)

    def _acknowledge_matching(self, request, scope: TenantScope, admin_scope: TenantScope):
        if admin_scope.is_empty:
            raise PermissionDenied("Only staff and tenant admins can acknowledge alerts.")
        visible = dict(tenants_visible(scope).values_list("slug", "id"))
        form = AlertFilterForm(request.POST, tenant_slugs=list(visible), every_kind=scope.is_every_tenant)
        if not form.is_valid():
            field, errors = next(iter(form.errors.items()))
            return _bad_request(f"{field}: {' '.join(errors)}")
        alerts = admin_scope.apply(_alerts_matching(scope, form.cleaned_data, visible, state="unacknowledged"))
        at_most = alert_services.ACKNOWLEDGE_AT_MOST
        done = alerts_acknowledge(alerts=alerts, actor=request.user, limit=at_most)
        more = alerts.exists()  # the unacknowledged ones, read again after this click
        messages.success(request, f"Acknowledged {len(done):,} alert{'s' if len(done) != 1 else ''}." + (
            f" More match these filters: acknowledge all again for the next {at_most:,}." if more else ""))
        return None


def _bad_request(message: str) -> HttpResponseBadRequest:
    return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")


def _runs_columns(*, with_tenant: bool) -> list[Column]:
    # Cost right after the run: it is what these lists are about, and on a phone the columns past the first
    # few are off-screen until scrolled.
    columns = [
        Column("openai_id", "Run", "code", link=_run_url),
        Column("cost_total_usd", "Cost", "money", sort="-cost"),
        Column("created_at", "Created", "datetime", sort="-created"),
        Column("model", "Model"),
        Column("feature", "Feature"),
        Column("status", "Status", "status"),
        Column("input_tokens", "Prompt tokens", "int", sort="-prompt"),
        Column("output_tokens", "Output tokens", "int"),
    ]
    if with_tenant:
        columns.insert(2, Column("tenant", "Tenant", value=lambda r: r.tenant.slug, link=lambda r: _tenant_url(r.tenant.slug)))
    return columns


class TenantDetailView(DashboardView):
    template_name = "dashboard/tenant_detail.html"
    nav_section = "tenants"

    @cached_property
    def tenant(self) -> Tenant:
        return tenant_get_visible(self.scope, self.kwargs["slug"])

    @property
    def page_title(self) -> str:
        return self.tenant.name

    @property
    def export_basename(self) -> str:
        return self.tenant.slug

    @cached_property
    def period_form(self) -> PeriodForm:
        return PeriodForm(self.request.GET, today=self.today)

    @cached_property
    def period(self):
        return self.period_form.period()

    offered_params = ("threads_status",)

    @cached_property
    def threads_status(self) -> str:
        return self.offered("threads", ("active", "deleted", ""), "active", empty="",  # "": every thread
                            instead="threads are active or deleted; showing the active ones")

    def filter_form(self):
        return self.period_form  # a bad period: the page shows the last 30 days under the error

    def get(self, request, *args, **kwargs):
        self.tenant  # noqa: B018  (404 before anything else when the slug is not visible)
        return super().get(request, *args, **kwargs)

    def get_tables(self):
        start, end = self.period
        tenant = self.tenant
        now = timezone.now()

        def retention(thread):
            return ledger.thread_retention_status(
                thread, retention_days=tenant.thread_retention_days, legal_hold=tenant.legal_hold, now=now)

        threads_status = self.threads_status
        return {
            "features": Table(
                name="features", title="Cost by feature", rows=ledger.cost_by_feature(tenant=tenant, start=start, end=end),
                columns=[
                    Column("feature", "Feature", value=lambda r: r["feature"] or "(none)"),
                    Column("runs", "Runs", "int"),
                    Column("high_cost_runs", "High-cost runs", "int"),
                    Column("wasted_cost_usd", "Wasted", "money"),
                    Column("cost_usd", "Cost", "money"),
                ],
                empty="No runs in this period. Set metadata.feature on runs to split cost by feature.",
            ),
            "users": Table(
                name="users", title="Cost by end user", paginate_by=10, page_param="users_page",
                rows=ledger.cost_by_end_user(tenant=tenant, start=start, end=end),
                columns=[
                    Column("user_id", "End user", "code", value=lambda r: r["user_id"] or "(unknown)"),
                    Column("runs", "Runs", "int"),
                    # The last UTC day in the period with a run of this user (from the end-user rollups).
                    Column("last_active_day", "Last active", "date"),
                    Column("cost_usd", "Cost", "money"),
                ],
                empty="No runs in this period. Set metadata.user_id on runs to see cost per end user.",
            ),
            "runs": Table(
                name="runs", title="High-cost runs", paginate_by=10, page_param="runs_page", count_cap=RUN_COUNT_CAP,
                rows=ledger.runs_filtered(scope=self.scope, filters=ledger.RunFilters(start=start, end=end, tenant=tenant)),
                columns=_runs_columns(with_tenant=False),
                empty=f"No run in this period cost more than this tenant's threshold "
                      f"({money_text(tenant.high_cost_run_usd)}).",
            ),
            "threads": Table(
                # A big tenant has hundreds of thousands of threads: count at most RUN_COUNT_CAP of them, as the
                # runs page does (an exact COUNT took ~200-450 ms at 10M runs, issue #9).
                name="threads", title="Threads and conversations", paginate_by=10, page_param="threads_page",
                count_cap=RUN_COUNT_CAP,
                rows=ledger.threads_with_retention(tenant=tenant, status=threads_status),
                columns=[
                    Column("openai_id", "Thread", "code"),
                    Column("kind", "Kind"),
                    Column("last_activity_at", "Last activity", "datetime"),
                    Column("run_count", "Runs", "int"),
                    Column("cost_usd", "Cumulative cost", "money"),
                    Column("retention_state", "Retention", "status", value=lambda t: retention(t)["state"]),
                    # Active threads: when the retention sweep will delete them (overdue: a past date); deleted
                    # ones: when they were. One label for both read as if active threads were already gone.
                    Column("deletes_at", {"active": "Deletes on", "deleted": "Deleted on"}.get(threads_status, "Deletion"),
                           "datetime",
                           value=lambda t: retention(t)["deletes_at"] or t.deleted_at),
                    Column("days_left", "Days left", "int", value=lambda t: retention(t)["days_left"]),
                ],
                empty="No thread or conversation of this tenant has been deleted yet." if threads_status == "deleted"
                else "No threads recorded. Report each thread or conversation id with its runs so it can be "
                     "deleted on time.",
            ),
            "alerts": _alerts_table(alerts_recent(tenant=tenant), with_tenant=False, paginate_by=10,
                                    admin_scope=self.admin_scope),
        }

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        tenant = self.tenant
        start, end = self.period
        tables = self.render_tables()
        by_model = ledger.cost_by_day_by_model(tenant=tenant, start=start, end=end)
        histogram = ledger.prompt_token_histogram(tenant=tenant, start=start, end=end)
        wasted = ledger.wasted_summary(tenant=tenant, start=start, end=end)
        users_top = tables["users"].page_rows if tables["users"].page and tables["users"].page.number == 1 else list(
            ledger.cost_by_end_user(tenant=tenant, start=start, end=end)[:10])
        can_edit = self.admin_scope.allows(tenant)  # the alerts table's admin scope: one read of the memberships
        summary = ledger.spend_summary(tenant=tenant, today=self.today, now=self.now)
        context.update(
            tenant=tenant,
            tables=tables,
            period_form=self.period_form,
            period_start=start,
            period_end=end,
            summary=summary,
            budget_used_percent=(summary.month_to_date_usd * 100 / tenant.monthly_budget_usd)
            if tenant.monthly_budget_usd else None,
            wasted=wasted,
            histogram=histogram,
            model_figure=figures.daily_stacked_cost_figure(by_model) if by_model.total_usd else None,
            feature_figure=figures.horizontal_cost_bar_figure(tables["features"].page_rows, label_key="feature")
            if tables["features"].page_rows else None,
            user_figure=figures.horizontal_cost_bar_figure(users_top, label_key="user_id", empty_label="(unknown)")
            if users_top else None,
            histogram_figure=figures.prompt_token_histogram_figure(histogram) if histogram.total_runs else None,
            wasted_figure=figures.wasted_daily_figure(ledger.wasted_by_day(tenant=tenant, start=start, end=end))
            if wasted.total_usd else None,
            can_edit_policy=can_edit,
            policy_form=kwargs.get("policy_form") or (TenantPolicyForm(instance=tenant, staff=self.is_staff) if can_edit else None),
            threads_filter=self.threads_status,
            # The period form sends the page's other choices again (the threads shown), less the values the
            # page ignored and the tables' page numbers: a new period starts every table on its first page.
            period_keep=[(name, value) for name, values in self.request.GET.lists()
                         if name not in {"start", "end", *self.ignored_params, *(t.page_param for t in tables.values())}
                         for value in values],
            runs_link=reverse("dashboard:runs") + f"?tenant={tenant.slug}&start={start}&end={end}",
        )
        return context


class TenantPolicyView(LoginRequiredMixin, View):
    """POST only: tenant admins (and staff) change policy settings; every change is audited by tenant_update."""

    http_method_names = ["post"]

    def post(self, request, slug):
        scope = scope_for_user(request.user)
        tenant = tenant_get_visible(scope, slug)
        if not user_is_tenant_admin(request.user, tenant):
            raise PermissionDenied("Only this tenant's admins can change its settings.")
        staff = bool(request.user.is_staff or request.user.is_superuser)
        # The form validates against a copy (it writes cleaned values into its instance); `tenant` stays as stored.
        stored = Tenant.objects.filter(pk=tenant.pk).first()
        if stored is None:  # deleted in the admin since it was read: gone, as the page now is
            raise Http404("No such tenant.")
        form = TenantPolicyForm(request.POST.copy(), instance=stored, staff=staff)
        valid = form.is_valid()
        if not valid or form.refuse_changes_made_meanwhile(tenant):
            view = TenantDetailView()
            view.setup(request, slug=slug)
            view.page_path = reverse("dashboard:tenant-detail", args=[tenant.slug])
            context = view.get_context_data(policy_form=form)
            return view.render_to_response(context, status=400 if not valid else 409)
        try:
            tenant_update(tenant=tenant, actor=request.user, **form.changes())
        except Tenant.DoesNotExist as gone:  # deleted between the form's read and the write's row lock
            raise Http404("No such tenant.") from gone
        # Shown in the settings card: the redirect lands there (#settings), out of sight of the page's top.
        messages.success(request, "Policy settings saved.", extra_tags="settings")
        return HttpResponseRedirect(reverse("dashboard:tenant-detail", args=[tenant.slug]) + "#settings")


# --- runs -----------------------------------------------------------------------------------------


# The runs table counts at most this many matches (a full count at 10M runs takes seconds; issue #9).
RUN_COUNT_CAP = 10_000


class RunListView(DashboardView):
    template_name = "dashboard/run_list.html"
    nav_section = "runs"
    page_title = "High-cost runs"
    export_basename = "runs"

    @cached_property
    def form(self) -> RunFilterForm:
        # The choices cover the last 90 days and the period asked for: a model retired last spring is still a
        # choice when last spring is the period. The period as PeriodForm reads it (a bad one: the default
        # 30 days), so each read covers at most a period's length of rollups.
        recent_start = self.today - dt.timedelta(days=89)
        models, features = ledger.models_and_features(scope=self.scope, start=recent_start, end=self.today)
        start, end = PeriodForm(self.request.GET, today=self.today).period()
        if start < recent_start or end > self.today:
            more_models, more_features = ledger.models_and_features(scope=self.scope, start=start, end=end)
            models, features = sorted({*models, *more_models}), sorted({*features, *more_features})
        return RunFilterForm(
            self.request.GET, today=self.today, tenant_slugs=list(self.visible_tenant_ids),
            models=models, features=features,
        )

    offered_params = ("sort",)

    @cached_property
    def sort(self) -> str:
        return self.offered("sort", ledger.RUN_ORDERINGS, "-cost",
                            instead="not a sort this table offers; sorted by cost, highest first")

    @cached_property
    def filters(self) -> ledger.RunFilters | None:
        if not self.form.is_valid():
            return None
        data = self.form.cleaned_data
        tenant = self.visible_tenant_ids.get(data["tenant"]) if data["tenant"] else None
        return ledger.RunFilters(
            start=data["start"], end=data["end"], tenant=tenant, model=data["model"], feature=data["feature"],
            status=data["status"], min_cost_usd=data["min_cost"],
        )

    def runs(self):
        if self.filters is None:
            return Run.objects.in_scope(self.scope).none()
        return ledger.runs_filtered(scope=self.scope, filters=self.filters, ordering=self.sort)

    def get_tables(self):
        return {
            "runs": Table(
                name="runs", title="Runs", rows=self.runs(), paginate_by=25, sort=self.sort, count_cap=RUN_COUNT_CAP,
                columns=_runs_columns(with_tenant=True),
                # A filter that did not parse lists nothing (a 400): widening the dates would not help.
                empty="No runs shown: correct the filter named above." if self.filters is None
                else "No runs match these filters. Widen the dates, lower the minimum cost, or clear a filter.",
            )
        }

    def filter_form(self):
        return self.form

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        tables = self.render_tables()
        scatter_rows = ledger.top_runs_for_scatter(self.runs(), limit=SCATTER_POINTS) if self.filters else []
        # A log axis cannot draw $0 (an unpriced run, one of no tokens): Plotly dropped those points without a
        # word, and runs of an unpriced model drew blank axes above the table listing them. Plotted: the rest;
        # the page says how many are only in the table.
        plotted = [row for row in scatter_rows if row["cost_total_usd"] > 0]
        context.update(
            tables=tables,
            form=self.form,
            sort=self.sort,
            scatter_figure=figures.cost_scatter_figure(plotted, run_url=_run_page_urls()) if plotted else None,
            scatter_unplotted=len(scatter_rows) - len(plotted),
            scatter_limited=len(scatter_rows) >= SCATTER_POINTS,
            scatter_limit=SCATTER_POINTS,
            has_filters=any(self.request.GET.get(name) for name in ("tenant", "model", "feature", "status", "start", "end", "min_cost")),
        )
        return context


class RunDetailView(DashboardView):
    template_name = "dashboard/run_detail.html"
    nav_section = "runs"

    @cached_property
    def run(self):
        run = ledger.run_get_visible(scope=self.scope, openai_id=self.kwargs["openai_id"])
        if run is None:
            raise Http404("Not found.")
        return run

    @property
    def page_title(self) -> str:
        return self.run.openai_id

    @property
    def export_basename(self) -> str:
        return self.run.openai_id

    def get(self, request, *args, **kwargs):
        self.run  # noqa: B018  (404 first)
        return super().get(request, *args, **kwargs)

    def get_tables(self):
        run = self.run
        tables = {
            "tokens": Table(
                name="tokens", title="Tokens by kind", rows=[{"kind": k, "tokens": v} for k, v in ledger.run_tokens_by_kind(run)],
                columns=[Column("kind", "Kind"), Column("tokens", "Tokens", "int")],
            ),
            "costs": Table(
                name="costs", title="Cost breakdown", rows=[
                    {"line": "input (uncached + cache write)", "cost": run.cost_input_usd},
                    {"line": "cached input", "cost": run.cost_cached_input_usd},
                    {"line": "output (incl. reasoning)", "cost": run.cost_output_usd},
                    {"line": "tools", "cost": run.cost_tools_usd},
                    {"line": "total", "cost": run.cost_total_usd},
                ],
                columns=[Column("line", "Line"), Column("cost", "Cost", "money"), Column("cost", "Exact", "exact_money", csv=False)],
                # Rounded one by one, $0.07 + $0.04 read as a total of $0.10 with nothing to say why.
                caption="Each cost is rounded on its own; the exact amounts add up to the total.",
            ),
            "timeline": Table(
                name="timeline", title="Status timeline",
                rows=[{"event": name, "at": moment} for name, moment in ledger.run_timeline(run)],
                columns=[Column("event", "Event", "status"), Column("at", "At", "datetime")],
            ),
        }
        if run.thread_id:
            tables["thread_runs"] = Table(
                name="thread_runs", title="Runs in this thread", rows=ledger.thread_runs(thread=run.thread),
                paginate_by=25, page_param="thread_page", count_cap=RUN_COUNT_CAP,
                columns=[c for c in _runs_columns(with_tenant=False) if c.key != "feature"],
            )
        return tables

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        run = self.run
        tables = self.render_tables()
        context.update(
            run=run,
            tables=tables,
            tokens_figure=figures.tokens_by_kind_figure(ledger.run_tokens_by_kind(run)),
            tool_usage=[
                ("code interpreter sessions", run.code_interpreter_sessions), ("file search calls", run.file_search_calls),
                ("web search calls", run.web_search_calls), ("function calls", run.function_calls),
            ],
            metadata_items=sorted((run.metadata or {}).items()),
            thread=run.thread,
            # As the tenant page's threads table says it: "active" alone read as if the thread were kept, beside
            # a tenant page listing it overdue for deletion.
            thread_retention=ledger.thread_retention_status(
                run.thread, retention_days=run.tenant.thread_retention_days, legal_hold=run.tenant.legal_hold,
                now=self.now) if run.thread_id else None,
            long_context=_long_context_applied(run),
        )
        return context


def _long_context_applied(run) -> dict | None:
    """The long-context pricing the run was rated at, if its prompt passed its price version's threshold (the
    multiples as plain numbers: "2", "1.5"); None otherwise."""
    if run.model_price is None:
        return None
    rule = model_rate_from_price(run.model_price).long_context
    if rule is None or not rule.applies(run.input_tokens):
        return None
    return {"above_input_tokens": rule.above_input_tokens, "input_multiplier": multiple_text(rule.input_multiplier),
            "output_multiplier": multiple_text(rule.output_multiplier)}


# --- prices ---------------------------------------------------------------------------------------


def _long_context_columns(*, on_page: bool = True) -> list[Column]:
    """The page says it in words; the CSV keeps the threshold and the multipliers as numbers."""
    return [
        *([Column("long_context_text", "Long context", "text", csv=False, wrap=True)] if on_page else []),
        Column("long_context_above_tokens", "Long context above (input tokens)", "int", page=False),
        Column("long_context_input_multiplier", "Long-context input multiplier", "number", page=False),
        Column("long_context_output_multiplier", "Long-context output multiplier", "number", page=False),
    ]


def _or_input_price_column(attribute: str, header: str) -> Column:
    """A price table's cached-input or cache-write column. An empty price bills those tokens at the input
    price, which the page says ("$2.50 (input price)") instead of a bare dash, read as "free" or "not
    applicable"; the CSV keeps the stored value (empty)."""

    def shown(model_price) -> str:
        billed = price(model_price.billed_per_1m(attribute))
        return billed if getattr(model_price, attribute) is not None else f"{billed} (input\u00a0price)"

    # wrap: "(input price)" may go under the amount when the table is tight; two such columns on one line
    # pushed the price history's last column off the screen at 1280 px.
    return Column(attribute, header, value=shown, numeric=True, csv_get=lambda model_price: getattr(model_price, attribute),
                  csv_kind="price", wrap=True)


class PriceListView(DashboardView):
    template_name = "dashboard/prices.html"
    nav_section = "prices"
    page_title = "Prices"
    export_basename = "prices"

    @cached_property
    def model(self) -> str:
        return self.request.GET.get("model", "")[:100]

    def get_tables(self):
        per_1m = "USD per 1M tokens"
        counts = price_version_counts()
        return {
            "book": Table(
                name="book", title="Price book (in effect today)", rows=price_book_current(today=self.today),
                columns=[
                    # Quoted: a model name is free text ("gpt-x+audio" asked for "gpt-x audio", an empty history).
                    Column("model", "Model", "code",
                           link=lambda p: reverse("dashboard:prices") + f"?{urlencode({'model': p.model})}#history"),
                    Column("effective_from", "Since", "date"),
                    Column("input_usd_per_1m", f"Input ({per_1m})", "price"),
                    _or_input_price_column("cached_input_usd_per_1m", "Cached input"),
                    _or_input_price_column("cache_write_usd_per_1m", "Cache write"),
                    Column("output_usd_per_1m", "Output", "price"),
                    *_long_context_columns(),
                    Column("versions", "Versions", "int", value=lambda p: counts.get(p.model, 0)),
                    Column("verify", "Needs checking", "bool"),
                ],
                empty="The price book is empty. Load it with `manage.py migrate` (initial prices) or add prices in the admin.",
            ),
            "history": Table(
                name="history", title="Price history", rows=model_price_versions(model=self.model), paginate_by=50,
                page_param="history_page",
                columns=[
                    # On the page the version (model@effective date, what a run's page says it was rated with)
                    # stands in for the model: as a column of its own after the wrapped Source, it sat past the
                    # table's right edge at 1280 px. The CSV keeps its columns as they were.
                    Column("version", "Version", "code", csv=False),
                    Column("model", "Model", "code", page=False),
                    Column("effective_from", "Effective from", "date"),
                    Column("input_usd_per_1m", "Input", "price"),
                    _or_input_price_column("cached_input_usd_per_1m", "Cached input"),
                    _or_input_price_column("cache_write_usd_per_1m", "Cache write"),
                    Column("output_usd_per_1m", "Output", "price"),
                    # CSV only: one column more and every model's history no longer fit at 1280 px (the book
                    # above says it for each version in effect).
                    *_long_context_columns(on_page=False),
                    Column("source", "Source", "longtext"),  # free text: wraps, so the columns after it stay on screen
                    Column("source_date", "Checked", "date"),
                    Column("version", "Version", "code", page=False),
                ],
                empty="No price versions for this model.",
            ),
            "tools": Table(
                name="tools", title="Tool and storage prices", rows=tool_price_versions(),
                columns=[
                    Column("effective_from", "Effective from", "date"),
                    Column("code_interpreter_session_usd", "Code interpreter (per session)", "price"),
                    Column("file_search_call_usd_per_1k", "File search (per 1k calls)", "price"),
                    Column("web_search_call_usd_per_1k", "Web search (per 1k calls)", "price"),
                    Column("vector_storage_usd_per_gb_day", "Vector storage (per GB-day)", "price"),
                    Column("vector_storage_free_gb", "Free GB", "number"),
                    Column("source", "Source", "longtext"),  # free text: wraps, so the columns after it stay on screen
                ],
                empty="No tool prices yet.",
            ),
        }

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        tables = self.render_tables()
        history_figure = None
        if self.model:
            versions = list(model_price_versions(model=self.model))
            if versions:
                history_figure = figures.price_history_figure(versions, today=self.today)
        context.update(tables=tables, model=self.model, history_figure=history_figure,
                       models=[p.model for p in tables["book"].page_rows])
        return context
