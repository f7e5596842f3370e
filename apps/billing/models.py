"""Monthly statements: open ones are computed live from the ledger; a closed one is frozen bytes that never change."""

from django.db import models

from apps.core.money import MONEY_FIELD_KWARGS
from apps.tenants.scoping import TenantOwnedModel, tenant_key_led_index


class Statement(TenantOwnedModel):
    """A tenant's statement for one calendar month (UTC). A row exists once the month is closed.

    At close the JSON and CSV documents are rendered once and stored as text together with their
    SHA-256, so every later read serves exactly the same bytes; `document` keeps the exact (unrounded)
    per-component amounts that adjustments on later statements are computed against."""

    tenant = tenant_key_led_index()  # statement_unique_tenant_period, statement_tenant_status_period

    class Status(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    period = models.DateField(help_text="First day of the month (UTC).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.CharField(max_length=120, blank=True, default="")
    total_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    document = models.JSONField(default=dict, blank=True)
    frozen_json = models.TextField(blank=True, default="")
    frozen_csv = models.TextField(blank=True, default="")
    content_hash = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "period"], name="statement_unique_tenant_period"),
        ]
        indexes = [models.Index(fields=["tenant", "status", "period"], name="statement_tenant_status_period")]
        ordering = ["tenant_id", "period"]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.period:%Y-%m} ({self.status})"
