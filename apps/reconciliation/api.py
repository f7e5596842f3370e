"""GET /api/v1/reconciliation/?start=&end=&project=&status= — the current result per day, project and line.

Reconciliation is organization-level (OpenAI bills projects, not tenants, and unattributed spend belongs to
nobody), so only keys bound to no tenant may read it: billing and admin keys. A tenant-bound key gets the
same 404 as a missing page, so it cannot learn that the endpoint holds data. `end` is exclusive, like
every range in this API."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api_support import (
    ERROR_400,
    ERROR_404,
    READ_ERRORS,
    KnownQueryParametersMixin,
    LenientDateField,
)
from apps.core.money import usd_string
from apps.core.timeutils import EARLIEST_DAY
from apps.tenants.authentication import CanRead

from .models import LineKind, LineStatus, ReconciliationRun
from .selectors import (
    ResultFilters,
    current_lines,
    current_runs,
    failed_attempts,
    late_days_pending,
    line_row,
)

MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 7


class ReconciliationQuerySerializer(serializers.Serializer):
    start = LenientDateField(required=False, help_text="First UTC day, inclusive (default: 7 days before end).")
    end = LenientDateField(required=False, help_text="UTC day, exclusive (default: today).")
    project = serializers.CharField(required=False, allow_blank=True, max_length=100, help_text="One OpenAI project id.")
    status = serializers.ChoiceField(choices=["all", "flagged"], required=False, default="all",
                                     help_text="flagged: only lines that did not match.")

    def validate(self, attrs):
        end = attrs.get("end") or dt.datetime.now(dt.UTC).date()
        # The default start never falls before the first documented day (end=1970-01-01 answered from 1969-12-25).
        start = attrs.get("start") or max(end - dt.timedelta(days=DEFAULT_RANGE_DAYS), EARLIEST_DAY)
        # Name the date the caller sent: with only one of them, the other is a default they never saw.
        blamed = "end" if "end" in attrs else "start"
        if start >= end:
            message = ("end must be after start (end is exclusive)." if "end" in attrs
                       else "start must be before end, which defaults to today (UTC).")
            raise serializers.ValidationError({blamed: message})
        if (end - start).days > MAX_RANGE_DAYS:
            raise serializers.ValidationError({blamed: f"The range may span at most {MAX_RANGE_DAYS} days."})
        return {**attrs, "start": start, "end": end}


# The answer's shape, for the OpenAPI schema (the view builds the document itself).
def _money(help_text: str) -> serializers.CharField:
    return serializers.CharField(help_text=f"{help_text} USD, a decimal string.")


class ReconciliationSummarySerializer(serializers.Serializer):
    project_days = serializers.IntegerField(help_text="Days x projects with a complete result in the range.")
    failed_project_days = serializers.IntegerField(help_text="Days x projects whose latest attempt failed.")
    late_project_days = serializers.IntegerField(
        help_text="Days x projects with a result that runs reached since (reported late): compared again within the "
                  "hour; until then their ledger figures predate those runs.")
    flagged_lines = serializers.IntegerField()
    ledger_total_usd = _money("The ledger's cost,")
    openai_total_usd = _money("OpenAI's cost (Costs API),")
    unattributed_usd = _money("Cost OpenAI bills that no tenant's runs account for,")


class ReconciliationToleranceSerializer(serializers.Serializer):
    percent = serializers.CharField()
    usd = serializers.CharField()


class ReconciliationDaySerializer(serializers.Serializer):
    day = serializers.DateField()
    project = serializers.CharField()
    run_id = serializers.IntegerField()
    reconciled_at = serializers.DateTimeField(allow_null=True)
    tolerance = ReconciliationToleranceSerializer()
    ledger_total_usd = _money("The ledger's cost,")
    openai_total_usd = _money("OpenAI's cost,")
    unattributed_usd = _money("Unattributed cost,")
    line_count = serializers.IntegerField()
    flagged_count = serializers.IntegerField()
    notes = serializers.ListField(child=serializers.JSONField(), help_text="What this day could not check, and why.")


class ReconciliationFailureSerializer(serializers.Serializer):
    day = serializers.DateField()
    project = serializers.CharField()
    error = serializers.CharField()
    started_at = serializers.DateTimeField()
    trigger = serializers.CharField(allow_blank=True)


class ReconciliationLateDaySerializer(serializers.Serializer):
    day = serializers.DateField()
    project = serializers.CharField()
    marked_at = serializers.DateTimeField(help_text="When runs of the day last reached the ledger late.")


class ReconciliationLineSerializer(serializers.Serializer):
    day = serializers.DateField()
    project = serializers.CharField()
    line = serializers.CharField()
    kind = serializers.ChoiceField(choices=LineKind.choices)
    unit = serializers.CharField()
    model = serializers.CharField(allow_blank=True)
    ledger_value = serializers.CharField(allow_null=True, help_text="USD for cost lines, a count for usage lines.")
    openai_value = serializers.CharField(allow_null=True)
    difference = serializers.CharField(allow_null=True, help_text="OpenAI minus the ledger.")
    difference_percent = serializers.CharField(allow_null=True, help_text="Of OpenAI's value; null when that is 0.")
    status = serializers.ChoiceField(choices=LineStatus.choices)


class ReconciliationSerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField(help_text="Exclusive.")
    project = serializers.CharField(allow_blank=True, help_text="\"\": every project.")
    status = serializers.ChoiceField(choices=["all", "flagged"])
    summary = ReconciliationSummarySerializer()
    days = ReconciliationDaySerializer(many=True)
    failed = ReconciliationFailureSerializer(many=True)
    late = ReconciliationLateDaySerializer(many=True)
    results = ReconciliationLineSerializer(many=True)


def day_json(run: ReconciliationRun) -> dict:
    return {
        "day": run.day.isoformat(),
        "project": run.openai_project,
        "run_id": run.pk,
        "reconciled_at": run.finished_at.isoformat() if run.finished_at else None,
        "tolerance": {"percent": format(run.tolerance_percent.normalize(), "f"), "usd": usd_string(run.tolerance_usd)},
        "ledger_total_usd": usd_string(run.ledger_total_usd),
        "openai_total_usd": usd_string(run.openai_total_usd),
        "unattributed_usd": usd_string(run.unattributed_usd),
        "line_count": run.line_count,
        "flagged_count": run.flagged_count,
        "notes": run.notes,
    }


class _KeyForEveryTenant(BasePermission):
    """Reconciliation spans every tenant: a tenant-bound key gets the 404 of a page that is not there for it
    (before its query parameters are read, so the answer is the same whatever they are)."""

    def has_permission(self, request, view) -> bool:
        if not request.user.tenant_scope.is_every_tenant:
            raise NotFound()
        return True


class ReconciliationView(KnownQueryParametersMixin, APIView):
    permission_classes = [CanRead, _KeyForEveryTenant]
    query_serializer_class = ReconciliationQuerySerializer

    @extend_schema(
        operation_id="reconciliation_results",
        summary="Ledger vs OpenAI's Costs/Usage API per day, project and line",
        parameters=[ReconciliationQuerySerializer],
        responses={200: ReconciliationSerializer, **ERROR_400, **READ_ERRORS, **ERROR_404},
        description="From the latest complete reconciliation of each day. Needs a billing or admin key bound "
                    "to no tenant; tenant-bound keys get 404.",
        tags=["reconciliation"],
    )
    def get(self, request):
        params = self.validated_query()
        filters = ResultFilters(start=params["start"], end=params["end"], project_id=params.get("project") or None,
                                flagged_only=params.get("status") == "flagged")
        runs = list(current_runs(filters))
        failed = failed_attempts(filters)
        late = late_days_pending(filters)
        results = [line_row(line) for line in current_lines(filters)]
        for row in results:
            row["day"] = row["day"].isoformat()
        zero = Decimal("0")
        return Response({
            "start": filters.start.isoformat(),
            "end": filters.end.isoformat(),
            "project": filters.project_id or "",
            "status": params.get("status", "all"),
            "summary": {
                "project_days": len(runs),
                "failed_project_days": len(failed),
                "late_project_days": len(late),
                "flagged_lines": sum(run.flagged_count for run in runs),
                "ledger_total_usd": usd_string(sum((run.ledger_total_usd for run in runs), zero)),
                "openai_total_usd": usd_string(sum((run.openai_total_usd for run in runs), zero)),
                "unattributed_usd": usd_string(sum((run.unattributed_usd for run in runs), zero)),
            },
            "days": [day_json(run) for run in runs],
            # The latest attempt per day and project, where it failed after the result above (or there is none).
            "failed": [{"day": run.day.isoformat(), "project": run.openai_project, "error": run.error,
                        "started_at": run.started_at.isoformat().replace("+00:00", "Z"), "trigger": run.trigger}
                       for run in failed],
            # Days whose results runs reached since: the hourly pass compares them again.
            "late": [{"day": mark.day.isoformat(), "project": mark.openai_project,
                      "marked_at": mark.marked_at.isoformat().replace("+00:00", "Z")} for mark in late],
            "results": results,
        })
