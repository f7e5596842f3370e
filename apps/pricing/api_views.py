"""Prices over the REST API: the model price book, listed by anyone who may read, versions added by admin keys."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from apps.core.api_support import (
    ERROR_400,
    ERROR_409,
    READ_ERRORS,
    ApiCursorPagination,
    Conflict,
    KnownBodyFieldsMixin,
    KnownQueryParametersMixin,
    LenientDateField,
)
from apps.ledger.services import RepriceOverflow
from apps.tenants.authentication import CanRead

from .models import LONG_CONTEXT_FIELDS, MULTIPLIER_FIELD_KWARGS, ModelPrice
from .services import model_price_add

_PRICE_AMOUNTS = ("input_usd_per_1m", "cached_input_usd_per_1m", "output_usd_per_1m", "cache_write_usd_per_1m")
_PRICE = {"max_digits": 14, "decimal_places": 6, "min_value": Decimal("0"), "coerce_to_string": True}
_MULTIPLIER = {**MULTIPLIER_FIELD_KWARGS, "min_value": Decimal("0"), "coerce_to_string": True, "required": False,
               "allow_null": True}


class PriceSerializer(KnownBodyFieldsMixin, serializers.ModelSerializer):
    """USD per 1M tokens as decimal strings. A null cached (or cache-write) price bills those tokens at the input price."""

    model = serializers.CharField(max_length=255, help_text="A model family (gpt-5.4) or a dated snapshot.")
    input_usd_per_1m = serializers.DecimalField(**_PRICE)
    cached_input_usd_per_1m = serializers.DecimalField(**_PRICE, required=False, allow_null=True)
    output_usd_per_1m = serializers.DecimalField(**_PRICE)
    effective_from = LenientDateField(help_text="UTC date; applies to runs created on or after it.")
    cache_write_usd_per_1m = serializers.DecimalField(**_PRICE, required=False, allow_null=True)
    long_context_above_tokens = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=2**31 - 1,
        help_text="A request with more input tokens than this bills all its tokens at the long-context multipliers "
                  "(OpenAI's current models: 272000). Null: no long-context pricing.")
    long_context_input_multiplier = serializers.DecimalField(
        **_MULTIPLIER, help_text="Multiplies the input, cached-input and cache-write prices of a long-context request.")
    long_context_output_multiplier = serializers.DecimalField(
        **_MULTIPLIER, help_text="Multiplies the output price of a long-context request.")
    source = serializers.CharField(max_length=300, required=False, allow_blank=True)
    verify = serializers.BooleanField(required=False)

    class Meta:
        model = ModelPrice
        fields = [
            "model", "input_usd_per_1m", "cached_input_usd_per_1m", "output_usd_per_1m", "effective_from",
            "cache_write_usd_per_1m", *LONG_CONTEXT_FIELDS, "source", "verify", "created_at",
        ]
        read_only_fields = ["created_at"]
        validators = []  # model + effective_from clash is a 409 in the view, not a 400

    def validate_model(self, value):
        value = value.strip()
        if not value:
            raise serializers.ValidationError("Name the model.")
        return value

    def validate(self, attrs):
        missing = [name for name in LONG_CONTEXT_FIELDS if attrs.get(name) is None]
        if missing and len(missing) < len(LONG_CONTEXT_FIELDS):
            raise serializers.ValidationError(
                {name: ["Set with the other long-context fields, or leave all three null."] for name in missing})
        return attrs


class PriceQuerySerializer(serializers.Serializer):
    model = serializers.CharField(required=False, max_length=255, help_text="Only this model's price versions.")


class PricePagination(ApiCursorPagination):
    ordering = ("model", "-effective_from")


PriceCreatedSerializer = inline_serializer(
    "PriceCreated",
    fields={
        **{name: field for name, field in PriceSerializer().get_fields().items()},
        "repriced_runs": serializers.IntegerField(allow_null=True, help_text="Unpriced runs rated by this price (null: re-pricing unavailable)."),
    },
)


class PriceListView(KnownQueryParametersMixin, GenericAPIView):
    query_serializer_class = PriceQuerySerializer
    permission_classes = [CanRead]
    serializer_class = PriceSerializer
    pagination_class = PricePagination

    @extend_schema(
        operation_id="prices_list",
        summary="Model price versions, by model then newest first",
        parameters=[PriceQuerySerializer],
        responses={200: PriceSerializer(many=True), **ERROR_400, **READ_ERRORS},
        tags=["prices"],
    )
    def get(self, request):
        query = self.validated_query()
        prices = ModelPrice.objects.all()
        if query.get("model"):
            prices = prices.filter(model=query["model"])
        page = self.paginator.paginate_queryset(prices, request, view=self)
        return self.paginator.get_paginated_response(PriceSerializer(page, many=True).data)

    @extend_schema(
        operation_id="prices_create",
        summary="Add a price version for a model (admin key); unpriced runs of that model are re-rated",
        request=PriceSerializer,
        responses={201: PriceCreatedSerializer, **ERROR_400, **READ_ERRORS, **ERROR_409},
        tags=["prices"],
    )
    def post(self, request):
        if not request.user.tenant_scope.is_every_tenant:
            # A price applies to every tenant and re-rates their unpriced runs: not for a key bound to one.
            raise exceptions.PermissionDenied("A tenant-bound key cannot add prices: they apply to every tenant.")
        serializer = PriceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if ModelPrice.objects.filter(model=data["model"], effective_from=data["effective_from"]).exists():
            raise Conflict(f"{data['model']} already has a price from {data['effective_from']}; prices are versions, add a later date.")
        try:
            price, repriced_runs = model_price_add(actor=request.user, **data)
        except DjangoValidationError as error:
            raise exceptions.ValidationError(error.message_dict if hasattr(error, "error_dict") else error.messages) from error
        except IntegrityError as error:
            raise Conflict("This model already has a price from that date.") from error
        except RepriceOverflow as error:
            # Named: the largest amount sent, which is what an absurd price (per token entered per million) is.
            field = max((name for name in _PRICE_AMOUNTS if data.get(name) is not None), key=lambda name: data[name])
            raise exceptions.ValidationError(
                {field: [f"{error} The price was not added (nothing changed); post a corrected one."]}) from error
        body = PriceSerializer(price).data
        body["repriced_runs"] = repriced_runs
        return Response(body, status=status.HTTP_201_CREATED)
