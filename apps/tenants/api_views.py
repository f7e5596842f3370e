"""Tenants over the REST API: list and read within the key's scope; create and change with an admin key."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from apps.core.api import error_body
from apps.core.api_support import (
    ERROR_400,
    ERROR_404,
    ERROR_409,
    ERROR_412,
    IF_MATCH,
    IF_NONE_MATCH,
    NOT_MODIFIED,
    READ_ERRORS,
    ApiCursorPagination,
    Conflict,
    KnownQueryParametersMixin,
    etag_for,
    etag_response,
    if_match_etags,
    if_match_passes,
    json_bytes,
)

from .api import TenantScopedAPIMixin
from .api_serializers import TenantSerializer, TenantUpdateSerializer
from .models import ADMIN_POLICY_FIELDS, Tenant
from .selectors import tenants_visible
from .services import TenantChangedMeanwhile, tenant_create, tenant_update

SLUG = OpenApiParameter("slug", OpenApiTypes.STR, OpenApiParameter.PATH, description="Tenant slug.")


class TenantPagination(ApiCursorPagination):
    ordering = "slug"


def _saved(write):
    """Run a service write, turning the model's own validation into the API's 400/409."""
    try:
        return write()
    except DjangoValidationError as error:
        raise exceptions.ValidationError(error.message_dict if hasattr(error, "error_dict") else error.messages) from error
    except IntegrityError as error:
        raise Conflict("A tenant with this slug or external billing id already exists.") from error
    except Tenant.DoesNotExist as error:
        # Deleted (in the admin) between the view's read and the write's row lock: gone, as a GET would now say.
        raise exceptions.NotFound("Not found.") from error


def _fields_reserved_for_operators(data) -> list[str]:
    """Fields in a PATCH body that a tenant-bound key may not set. Such a key speaks for the tenant, so it gets
    what the tenant's admins get on the dashboard: the operating policies, not the name, markup or billing id
    (a billing id taken from another tenant would post this tenant's charges to that one). The slug is never
    written (changing it is a 400 for every key)."""
    if not hasattr(data, "keys"):
        return []  # not an object: the serializer answers 400
    writable = {name for name, field in TenantUpdateSerializer().fields.items() if not field.read_only}
    return [name for name in data.keys() if name in writable and name not in ADMIN_POLICY_FIELDS and name != "slug"]


def _representation(tenant) -> bytes:
    """The tenant as the API shows it; its ETag is the ETag of the tenant's stored state (timestamps included, so
    every write changes it)."""
    return json_bytes(TenantSerializer(tenant).data)


class TenantListView(KnownQueryParametersMixin, TenantScopedAPIMixin, GenericAPIView):
    serializer_class = TenantSerializer
    pagination_class = TenantPagination

    @extend_schema(
        operation_id="tenants_list",
        summary="Tenants the key may see (a tenant-bound key sees only its own)",
        responses={200: TenantSerializer(many=True), **ERROR_400, **READ_ERRORS},
        tags=["tenants"],
    )
    def get(self, request):
        page = self.paginator.paginate_queryset(tenants_visible(self.tenant_scope).order_by("slug"), request, view=self)
        return self.paginator.get_paginated_response(TenantSerializer(page, many=True).data)

    @extend_schema(
        operation_id="tenants_create",
        summary="Create a tenant (admin key not bound to a tenant); only slug and name are required",
        request=TenantSerializer,
        responses={201: TenantSerializer, **ERROR_400, **READ_ERRORS, **ERROR_409},
        tags=["tenants"],
    )
    def post(self, request):
        if not self.tenant_scope.is_every_tenant:
            raise exceptions.PermissionDenied("A tenant-bound key cannot create tenants.")
        serializer = TenantSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tenant = _saved(lambda: tenant_create(actor=request.user, **serializer.validated_data))
        return Response(TenantSerializer(tenant).data, status=status.HTTP_201_CREATED)


class TenantDetailView(KnownQueryParametersMixin, TenantScopedAPIMixin, GenericAPIView):
    serializer_class = TenantSerializer

    @extend_schema(
        operation_id="tenants_retrieve",
        summary="One tenant",
        parameters=[SLUG, IF_NONE_MATCH],
        responses={200: TenantSerializer, **NOT_MODIFIED, **READ_ERRORS, **ERROR_404},
        tags=["tenants"],
    )
    def get(self, request, slug: str):
        # With an ETag a billing system can PATCH "only if nobody changed it since I read it" (If-Match).
        return etag_response(request, _representation(self.get_tenant(slug)), "application/json")

    @extend_schema(
        operation_id="tenants_partial_update",
        summary="Change a tenant's name, billing id or policies (admin key); with If-Match, only if unchanged since read",
        parameters=[SLUG, IF_MATCH],
        request=TenantUpdateSerializer,
        responses={200: TenantSerializer, **ERROR_400, **READ_ERRORS, **ERROR_404, **ERROR_412},
        tags=["tenants"],
    )
    def patch(self, request, slug: str):
        tenant = self.get_tenant(slug)  # first: another tenant's slug is a 404 whatever the headers say
        if not self.tenant_scope.is_every_tenant:
            refused = _fields_reserved_for_operators(request.data)
            if refused:
                message = f"A tenant-bound key may change only its tenant's policies, not {refused[0]}."
                return Response(error_body("permission_denied", message, refused[0]), status=status.HTTP_403_FORBIDDEN)
        wanted = if_match_etags(request)  # after the 403, as docs/api.md orders the checks
        serializer = TenantUpdateSerializer(tenant, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = {field: value for field, value in serializer.validated_data.items() if field != "slug"}
        # Compared by tenant_update on the row it has locked: checked here, two PATCHes with the same If-Match
        # could both pass before either wrote. Without If-Match the last write wins, as before.
        precondition = None if wanted is None else (
            lambda stored: if_match_passes(wanted, etag_for(_representation(stored))))
        try:
            tenant = _saved(lambda: tenant_update(tenant=tenant, actor=request.user, precondition=precondition, **changes))
        except TenantChangedMeanwhile:
            message = "The tenant has changed since this ETag was read; nothing was changed. GET the tenant again."
            return Response(error_body("precondition_failed", message, "If-Match"),
                            status=status.HTTP_412_PRECONDITION_FAILED)
        content = _representation(tenant)
        return HttpResponse(content, content_type="application/json", headers={"ETag": etag_for(content)})
