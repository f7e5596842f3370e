"""Tenants (our customers' customers), who may see them, and the API keys other systems use."""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

slug_validator = RegexValidator(r"^[a-z0-9][a-z0-9-]{0,62}$", "Lowercase letters, digits and dashes.")
# A century: the lifecycle sweeps subtract these days from today, and a date before year 1 overflows.
MAX_POLICY_DAYS = 36500
# A markup is a share added to a statement: from none to ten times the usage (what the API has always taken).
MAX_MARKUP_PERCENT = Decimal("1000")


# Tenant admins set their own operating policies (dashboard settings, a tenant-bound admin API key); markup is
# a commercial term only staff set.
ADMIN_POLICY_FIELDS = [
    "monthly_budget_usd", "high_cost_run_usd", "thread_retention_days", "vector_store_idle_days",
    "archive_before_delete", "legal_hold",
]
STAFF_POLICY_FIELDS = [*ADMIN_POLICY_FIELDS, "markup_percent"]


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    external_id = models.CharField("external billing id", max_length=200, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)

    # Policies other parts of the product act on.
    thread_retention_days = models.PositiveIntegerField(
        default=60, validators=[MinValueValidator(1), MaxValueValidator(MAX_POLICY_DAYS)]
    )
    vector_store_idle_days = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(MAX_POLICY_DAYS)]
    )
    high_cost_run_usd = models.DecimalField(
        max_digits=12, decimal_places=4, default=Decimal("0.10"), validators=[MinValueValidator(Decimal("0"))]
    )
    monthly_budget_usd = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True, validators=[MinValueValidator(Decimal("0"))]
    )
    legal_hold = models.BooleanField(default=False, help_text="Nothing of this tenant is ever swept.")
    archive_before_delete = models.BooleanField(
        default=False, help_text="Copy a thread's messages/items into RunLedger before deleting it at OpenAI."
    )
    markup_percent = models.DecimalField(
        max_digits=6, decimal_places=2, null=True, blank=True, help_text="Optional markup line on statements.",
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(MAX_MARKUP_PERCENT)],
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            # Statements carry it to the billing system, which would post one tenant's charges to another.
            models.UniqueConstraint(
                fields=["external_id"], condition=~models.Q(external_id=""), name="tenant_unique_external_id",
                violation_error_message="Another tenant already has this external billing id.",
            ),
        ]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer"
        ADMIN = "admin"

    # membership_unique_user_tenant leads with it.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships",
                             db_index=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant")]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant} ({self.role})"


class ApiKey(models.Model):
    """Only a SHA-256 of the key is stored; the plaintext is shown once, at creation."""

    class Scope(models.TextChoices):
        INGEST = "ingest", "ingest (write runs and resources only)"
        BILLING = "billing", "billing (read usage, statements, runs, prices)"
        ADMIN = "admin", "admin (read and write everything)"

    name = models.CharField(max_length=120)
    prefix = models.CharField(max_length=16, unique=True, help_text="Visible start of the key, to identify it.")
    key_hash = models.CharField(max_length=64, unique=True)
    scope = models.CharField(max_length=16, choices=Scope.choices)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys",
        help_text="When set, the key sees and writes only this tenant.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"  # the admin read "Api keys"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…, {self.scope})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
