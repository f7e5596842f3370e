"""Billing API views: usage by period, the runs list and detail, monthly statements (JSON, CSV, close) and
reconciliation. Thin: parse and validate, resolve the tenant within the key's scope, call selectors/services."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import renderers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from apps.core.api import error_body
from apps.core.api_support import (
    ERROR_400,
    ERROR_404,
    ERROR_409,
    IF_NONE_MATCH,
    NOT_MODIFIED,
    READ_ERRORS,
    ApiCursorPagination,
    KnownQueryParametersMixin,
    etag_for,
    etag_response,
    json_bytes,
)
from apps.ledger import selectors as ledger_selectors
from apps.ledger.models import Run
from apps.tenants.api import TenantScopedAPIMixin
from apps.tenants.authentication import IsAdminKey

from . import selectors, services
from .serializers import (
    RunQuerySerializer,
    RunSerializer,
    StatementCloseSerializer,
    StatementSerializer,
    UsageQuerySerializer,
    UsageSerializer,
    usage_cursor,
    usage_page,
)

SLUG = OpenApiParameter("slug", OpenApiTypes.STR, OpenApiParameter.PATH, description="Tenant slug.")
PERIOD = OpenApiParameter(
    "period", OpenApiTypes.STR, OpenApiParameter.PATH, description="The month, YYYY-MM (UTC).",
    pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
)


class CsvRenderer(renderers.BaseRenderer):
    """Lets `?format=csv` and `Accept: text/csv` through content negotiation; statements write the CSV themselves."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, (bytes, str)) else b""


class JsonErrorsMixin:
    """Error bodies are always JSON, whichever renderer negotiation picked for the success body."""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(response, Response) and response.status_code >= 400:
            response.accepted_renderer = renderers.JSONRenderer()
            response.accepted_media_type = "application/json"
            response["Content-Type"] = "application/json"
        return response


# --- usage ----------------------------------------------------------------------------------------------


class TenantUsageView(KnownQueryParametersMixin, TenantScopedAPIMixin, APIView):
    query_serializer_class = UsageQuerySerializer

    @extend_schema(
        operation_id="tenant_usage",
        summary="A tenant's usage and cost for a period, grouped by day, model, feature or end user",
        parameters=[SLUG, UsageQuerySerializer, IF_NONE_MATCH],
        responses={200: UsageSerializer, **NOT_MODIFIED, **ERROR_400, **READ_ERRORS, **ERROR_404},
        tags=["usage"],
    )
    def get(self, request, slug: str):
        tenant = self.get_tenant(slug)
        query = self.validated_query()
        document, last_key = usage_page(tenant=tenant, start=query["start"], end=query["end"],
                                        group_by=query["group_by"], after=query["cursor"], limit=query.get("limit"))
        next_url = None
        if last_key is not None:
            # With the period written out: left to the defaults, the next page of a walk over the month's turn would
            # read another month (its cursor would be refused).
            next_url = request.build_absolute_uri()
            for name, value in (("start", query["start"].isoformat()), ("end", query["end"].isoformat()),
                                ("cursor", usage_cursor(query["group_by"], query["start"], query["end"], last_key))):
                next_url = replace_query_param(next_url, name, value)
        document["next"] = next_url
        content = json_bytes(document)
        return etag_response(request, content, "application/json")


# --- runs -----------------------------------------------------------------------------------------------


class RunPagination(ApiCursorPagination):
    ordering = ("-created_at", "-id")


class RunListView(KnownQueryParametersMixin, TenantScopedAPIMixin, GenericAPIView):
    query_serializer_class = RunQuerySerializer
    scoped_model = Run
    serializer_class = RunSerializer
    pagination_class = RunPagination

    @extend_schema(
        operation_id="runs_list",
        summary="Runs the key may see, newest first, filtered",
        parameters=[RunQuerySerializer],
        responses={200: RunSerializer(many=True), **ERROR_400, **READ_ERRORS, **ERROR_404},
        tags=["runs"],
    )
    def get(self, request):
        query = self.validated_query()
        tenant = self.get_tenant(query["tenant"]) if query.get("tenant") else None
        runs = ledger_selectors.runs_search(
            scope=self.tenant_scope, tenant=tenant, status=query.get("status", ""), model=query.get("model", ""),
            feature=query.get("feature"), user_id=query.get("user"), min_cost_usd=query.get("min_cost"),
            created_from=query.get("start"), created_before=query.get("end"), high_cost=query.get("high_cost"),
        )
        page = self.paginator.paginate_queryset(runs, request, view=self)
        return self.paginator.get_paginated_response(RunSerializer(page, many=True).data)


class RunDetailView(KnownQueryParametersMixin, TenantScopedAPIMixin, APIView):
    @extend_schema(
        operation_id="runs_retrieve",
        summary="One run by its OpenAI id",
        parameters=[OpenApiParameter("openai_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="run_… or resp_…")],
        responses={200: RunSerializer, **READ_ERRORS, **ERROR_404},
        tags=["runs"],
    )
    def get(self, request, openai_id: str):
        run = ledger_selectors.run_get_visible(scope=self.tenant_scope, openai_id=openai_id)
        if run is None:
            raise NotFound("Not found.")
        return Response(RunSerializer(run).data)


# --- statements -----------------------------------------------------------------------------------------


def _parse_period(text: str):
    try:
        return selectors.parse_period(text)
    except selectors.PeriodError as error:
        raise ValidationError({"period": str(error)}) from error


_STATEMENT_EXAMPLE = OpenApiExample(
    "An open statement",
    value={
        "tenant": "acme", "external_id": "cus_acme", "period": "2026-03", "period_start": "2026-03-01",
        "period_end": "2026-04-01", "status": "open", "closed_at": None, "currency": "USD", "runs": 2,
        "unpriced_runs": 0,
        "lines": [{
            "type": "model", "description": "gpt-5.4", "source_period": None, "model": "gpt-5.4", "tool": None,
            "runs": 2, "input_tokens": 2000, "cached_input_tokens": 0, "output_tokens": 200, "reasoning_tokens": 0,
            "quantity": None, "unit": None, "cost_input_usd": "0.005", "cost_cached_input_usd": "0.00",
            "cost_output_usd": "0.003", "amount_usd": "0.01", "exact_amount_usd": "0.008",
        }],
        "subtotal_usd": "0.01", "markup_percent": None, "markup_usd": "0.00", "total_usd": "0.01",
    },
    response_only=True,
)


class StatementView(JsonErrorsMixin, KnownQueryParametersMixin, TenantScopedAPIMixin, APIView):
    renderer_classes = [renderers.JSONRenderer, CsvRenderer]

    @extend_schema(
        operation_id="tenant_statement",
        summary="A tenant's monthly statement (open: live; closed: frozen). ?format=csv for CSV",
        parameters=[SLUG, PERIOD, IF_NONE_MATCH],
        responses={
            (200, "application/json"): StatementSerializer,
            (200, "text/csv"): OpenApiTypes.STR,
            **NOT_MODIFIED, **ERROR_400, **READ_ERRORS, **ERROR_404,
        },
        examples=[_STATEMENT_EXAMPLE],
        tags=["statements"],
    )
    def get(self, request, slug: str, period: str):
        return self._respond(request, slug, period, as_csv=request.accepted_renderer.format == "csv")

    def _respond(self, request, slug: str, period: str, *, as_csv: bool):
        tenant = self.get_tenant(slug)
        month = _parse_period(period)
        rendered = selectors.statement_rendered(tenant=tenant, period=month)
        # str(): a model choice is a str subclass, and WSGI servers such as wsgiref (runserver) refuse any
        # header value that is not exactly str (a 500).
        headers = {"X-Statement-Status": str(rendered.status)}
        if as_csv:
            headers["Content-Disposition"] = f'attachment; filename="{tenant.slug}-{month:%Y-%m}.csv"'
            return etag_response(request, rendered.csv.encode(), "text/csv; charset=utf-8", headers=headers)
        return etag_response(request, rendered.json.encode(), "application/json", headers=headers)


class StatementCsvView(StatementView):
    renderer_classes = [CsvRenderer, renderers.JSONRenderer]

    @extend_schema(
        operation_id="tenant_statement_csv",
        summary="A tenant's monthly statement as CSV",
        parameters=[SLUG, PERIOD, IF_NONE_MATCH],
        responses={(200, "text/csv"): OpenApiTypes.STR, **NOT_MODIFIED, **ERROR_400, **READ_ERRORS, **ERROR_404},
        tags=["statements"],
    )
    def get(self, request, slug: str, period: str):
        if request.query_params.get("format", "csv") not in ("", "csv"):
            # The .csv address serves CSV only: `?format=json` answered CSV with a 200 (docs/api.md: a format an
            # endpoint does not serve is a 404). Its JSON renderer is there for the error answers.
            raise NotFound("This address serves the statement as CSV only; the JSON is at the address without .csv.")
        return self._respond(request, slug, period, as_csv=True)


class StatementCloseView(KnownQueryParametersMixin, TenantScopedAPIMixin, APIView):
    permission_classes = [IsAdminKey]

    @extend_schema(
        operation_id="tenant_statement_close",
        summary="Close (freeze) a month's statement; idempotent",
        description=(
            "Freezes the statement: its JSON and CSV never change again. Only months that have ended can be "
            "closed. Runs that arrive later for this month appear as adjustment lines on the tenant's next open "
            "statement. Closing a closed month returns it unchanged."
        ),
        parameters=[SLUG, PERIOD],
        request=StatementCloseSerializer,
        responses={200: StatementSerializer, **ERROR_400, **READ_ERRORS, **ERROR_404, **ERROR_409},
        tags=["statements"],
    )
    def post(self, request, slug: str, period: str):
        tenant = self.get_tenant(slug)
        month = _parse_period(period)
        options = StatementCloseSerializer(data=request.data)
        options.is_valid(raise_exception=True)
        try:
            statement, closed_now = services.statement_close(
                tenant=tenant, period=month, actor=request.user, allow_unpriced=options.validated_data["allow_unpriced"]
            )
        except services.StatementCloseError as error:
            return Response(error_body(error.code, error.message), status=status.HTTP_409_CONFLICT)
        response = HttpResponse(statement.frozen_json.encode(), content_type="application/json")
        response["ETag"] = etag_for(statement.frozen_json.encode())
        response["X-Statement-Status"] = str(statement.status)  # exactly str, as above
        response["X-Closed-Now"] = "true" if closed_now else "false"
        return response


class StatementCloseSlashView(StatementCloseView):
    """The same endpoint with a trailing slash (kept out of the schema)."""

    @extend_schema(exclude=True)
    def post(self, request, slug: str, period: str):
        return super().post(request, slug, period)
