"""The Tenant resource of the REST API (field names are a contract other systems are written against)."""

from __future__ import annotations

from decimal import Decimal

from rest_framework import serializers

from apps.core.api_support import KnownBodyFieldsMixin

from .models import MAX_MARKUP_PERCENT, MAX_POLICY_DAYS, Tenant, slug_validator

CONTRACT_FIELDS = [
    "slug", "name", "external_id", "thread_retention_days", "vector_store_idle_days", "high_cost_run_usd",
    "monthly_budget_usd", "legal_hold",
]
EXTRA_FIELDS = ["markup_percent", "archive_before_delete", "status", "created_at", "updated_at"]


class TenantSerializer(KnownBodyFieldsMixin, serializers.ModelSerializer):
    """Validation mirrors the model's; writes go through tenants.services (audited)."""

    slug = serializers.CharField(max_length=63, validators=[slug_validator],
                                 help_text="Lowercase letters, digits and dashes; cannot be changed later.")
    name = serializers.CharField(max_length=200)
    external_id = serializers.CharField(max_length=200, required=False, allow_blank=True,
                                        help_text="The tenant's id in the billing system.")
    thread_retention_days = serializers.IntegerField(min_value=1, max_value=MAX_POLICY_DAYS, required=False)
    vector_store_idle_days = serializers.IntegerField(min_value=1, max_value=MAX_POLICY_DAYS, required=False)
    high_cost_run_usd = serializers.DecimalField(max_digits=12, decimal_places=4, min_value=Decimal("0"), required=False,
                                                 coerce_to_string=True)
    monthly_budget_usd = serializers.DecimalField(max_digits=14, decimal_places=2, min_value=Decimal("0"), required=False,
                                                  allow_null=True, coerce_to_string=True)
    legal_hold = serializers.BooleanField(required=False)
    markup_percent = serializers.DecimalField(max_digits=6, decimal_places=2, min_value=Decimal("0"),
                                              max_value=MAX_MARKUP_PERCENT, required=False, allow_null=True,
                                              coerce_to_string=True, help_text="Adds a markup line to statements.")
    archive_before_delete = serializers.BooleanField(required=False)

    class Meta:
        model = Tenant
        fields = CONTRACT_FIELDS + EXTRA_FIELDS
        read_only_fields = ["status", "created_at", "updated_at"]

    def unknown_field_errors(self, data) -> dict[str, list[str]]:
        # A `status` ignored with a 200 left the caller believing it had suspended a tenant; the unchanged
        # status of a body read from this resource and sent back still passes.
        errors = super().unknown_field_errors(data)
        current_status = self.instance.status if self.instance is not None else Tenant.Status.ACTIVE
        if hasattr(data, "keys") and "status" in data.keys() and data["status"] != current_status:
            errors["status"] = ["status is set in the Django admin, not through the API."]
        return errors

    def validate_slug(self, value):
        if self.instance is not None and value != self.instance.slug:
            raise serializers.ValidationError("A tenant's slug cannot be changed.")
        if self.instance is None and Tenant.objects.filter(slug=value).exists():
            raise serializers.ValidationError("A tenant with this slug already exists.")
        return value

    def validate_external_id(self, value):
        # The constraint's own error names no field (it is conditional), and a race still ends in its 409.
        others = Tenant.objects.exclude(pk=self.instance.pk) if self.instance is not None else Tenant.objects.all()
        if value and others.filter(external_id=value).exists():
            raise serializers.ValidationError("Another tenant already has this external billing id.")
        return value


class TenantUpdateSerializer(TenantSerializer):
    """PATCH: every field optional."""

    slug = serializers.CharField(max_length=63, required=False)
    name = serializers.CharField(max_length=200, required=False)
