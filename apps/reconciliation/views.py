"""The reconciliation page (/reconciliation/): ledger vs OpenAI per day, flagged lines highlighted, filters in
the URL, CSV export. Staff only: reconciliation is organization-level, so a tenant member gets a 404."""

from __future__ import annotations

import csv
import datetime as dt
from functools import cached_property

from django import forms
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.views.generic import TemplateView

from apps.core.exports import csv_value, invalid_form_export_response
from apps.core.forms import BoundedDateField

from .figures import reconciliation_figure
from .models import FLAGGED_STATUSES, LineStatus
from .selectors import (
    ResultFilters,
    current_lines,
    current_runs,
    day_totals,
    failed_attempts,
    late_days_pending,
    reconciliation_project_ids,
    value_text,
)
from .services import default_end_day

DEFAULT_DAYS = 30
MAX_DAYS = 366
# Lines a page: 30 days of one busy project are well over a thousand (every model's cost and usage lines).
LINES_PER_PAGE = 100


class ReconciliationFilterForm(forms.Form):
    start = BoundedDateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From")
    end = BoundedDateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="To (inclusive)")
    project = forms.ChoiceField(required=False, label="OpenAI project")
    status = forms.ChoiceField(required=False, choices=[("flagged", "Flagged only"), ("all", "Every line")],
                               label="Lines")

    def __init__(self, *args, project_ids=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["project"].choices = [("", "All projects"), *[(pid, pid) for pid in project_ids]]

    def clean(self):
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and not end:  # To defaults to yesterday: the cap holds for that range too
            end = default_end_day()
        if start and end and start > end:
            self.add_error("start", "From must be on or before To.")
        elif start and end and (end - start).days >= MAX_DAYS:
            self.add_error("start", f"At most {MAX_DAYS} days at a time.")
        return data


class ReconciliationPageView(LoginRequiredMixin, TemplateView):
    template_name = "reconciliation/reconciliation.html"

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated and not (request.user.is_staff or request.user.is_superuser):
            raise Http404("Not found.")
        return super().dispatch(request, *args, **kwargs)

    @cached_property
    def _filters(self) -> tuple[ReconciliationFilterForm, ResultFilters]:
        yesterday = default_end_day()
        form = ReconciliationFilterForm(self.request.GET or None, project_ids=reconciliation_project_ids())
        data = form.cleaned_data if form.is_bound and form.is_valid() else {}
        end = data.get("end") or yesterday
        start = data.get("start") or end - dt.timedelta(days=DEFAULT_DAYS - 1)
        flagged_only = (data.get("status") or "flagged") == "flagged"
        return form, ResultFilters(start=start, end=end + dt.timedelta(days=1), project_id=data.get("project") or None,
                                   flagged_only=flagged_only)

    def get(self, request, *args, **kwargs):
        form, _ = self._filters
        if form.is_bound and not form.is_valid():
            # One bad field dropped every filter: the export was the default 30 days of flagged lines. The page
            # shows the errors over the defaults, so it is not a dead end.
            if request.GET.get("format") == "csv":
                return invalid_form_export_response(form)
            return self.render_to_response(self.get_context_data(**kwargs), status=400)
        if request.GET.get("format") == "csv":
            return self._csv()
        return super().get(request, *args, **kwargs)

    def _csv(self) -> HttpResponse:
        _, filters = self._filters
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        name = f"reconciliation-{filters.start.isoformat()}-{(filters.end - dt.timedelta(days=1)).isoformat()}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        writer = csv.writer(response)
        writer.writerow(["day", "project", "line", "kind", "unit", "model", "ledger_value", "openai_value",
                         "difference", "difference_percent", "status", "run_id"])
        for line in current_lines(filters).iterator(chunk_size=2000):
            # Line names carry model names, which ingest takes from what a tenant's application reports: escaped
            # like every other export's text, so "=HYPERLINK(…)" is text in the spreadsheet, not a formula.
            writer.writerow([
                line.day.isoformat(), csv_value(line.openai_project, "text"), csv_value(line.line, "text"),
                line.kind, line.unit, csv_value(line.model, "text"),
                value_text(line.ledger_value, line.unit), value_text(line.openai_value, line.unit),
                value_text(line.difference, line.unit),
                "" if line.difference_pct is None else format(line.difference_pct.normalize(), "f"),
                line.status, line.run_id,
            ])
        return response

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        form, filters = self._filters
        totals = day_totals(filters)
        runs = list(current_runs(filters))
        lines_page = Paginator(current_lines(filters), LINES_PER_PAGE).get_page(self.request.GET.get("lines_page"))
        failed = failed_attempts(filters)
        late = late_days_pending(filters)
        query = self.request.GET.copy()
        query.pop("lines_page", None)
        query["format"] = "csv"
        try:
            from apps.dashboard.nav import nav_for

            nav_items = nav_for(self.request.user, "reconciliation")
        except ImportError:  # the dashboard is optional for this page
            nav_items = []
        context.update(
            page_title="Reconciliation",
            nav_items=nav_items,
            is_staff=True,
            scope_label="all tenants",
            form=form,
            filters=filters,
            last_day=filters.end - dt.timedelta(days=1),
            figure=reconciliation_figure(totals),
            runs=runs,
            failed=failed,
            late=late,
            lines=lines_page.object_list,
            lines_page=lines_page,
            flagged_statuses=sorted(FLAGGED_STATUSES),
            matched=LineStatus.MATCHED,
            csv_query=query.urlencode(),
            flagged_total=sum(run.flagged_count for run in runs),
            unattributed_total=sum((run.unattributed_usd for run in runs), start=0),
            ledger_total=sum((run.ledger_total_usd for run in runs), start=0),
            openai_total=sum((run.openai_total_usd for run in runs), start=0),
        )
        return context
