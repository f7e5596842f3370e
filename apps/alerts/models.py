"""Alerts: one row per cause (a run, a budget threshold in a month, a model, a reconciliation day)."""

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from apps.tenants.scoping import TenantScopedManager


class Alert(models.Model):
    class Kind(models.TextChoices):
        HIGH_COST_RUN = "high_cost_run"
        BUDGET = "budget"
        UNPRICED_MODEL = "unpriced_model"
        REQUIRES_ACTION_EXPIRING = "requires_action_expiring"
        WASTED_SPEND = "wasted_spend"
        RECONCILIATION_DRIFT = "reconciliation_drift"
        RECONCILIATION_FAILED = "reconciliation_failed"
        ORPHANED_RESOURCE = "orphaned_resource"

    # Causes that belong to no tenant (a model, an OpenAI project, the whole organisation): only staff see them.
    KINDS_WITHOUT_TENANT = frozenset({Kind.UNPRICED_MODEL, Kind.RECONCILIATION_DRIFT, Kind.RECONCILIATION_FAILED,
                                      Kind.ORPHANED_RESOURCE})

    class Severity(models.TextChoices):
        INFO = "info"
        WARNING = "warning"
        CRITICAL = "critical"

    # Nullable: some causes belong to no tenant (an unpriced model, unattributed spend at OpenAI).
    # Members see only their tenant's alerts through the scoped manager; staff see all. A tenant deleted in the
    # admin takes its alerts with it, each audited (TenantAdmin.audit_cascade reads them through `alerts`).
    tenant = models.ForeignKey("tenants.Tenant", null=True, blank=True, on_delete=models.CASCADE,
                               related_name="alerts", db_index=False)  # alert_tenant_opened leads with it
    kind = models.CharField(max_length=40, choices=Kind.choices)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    # Unique: an alert fires once per cause, however often the cause is seen again.
    cause_key = models.CharField(max_length=255, unique=True)
    title = models.CharField(max_length=300)
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    # When the cause first raised it.
    created_at = models.DateTimeField(auto_now_add=True)
    # When it was last opened: raised, or opened again because its cause came back after it was resolved. The
    # pages list alerts by it (a cause that is back is news), and delivery counts its backoff and age from it.
    # db_default too: a process still running the code before this column (during a deploy) inserts alerts with
    # raw SQL that does not name it, inside its ingest batch.
    opened_at = models.DateTimeField(default=timezone.now, db_default=Now(), db_index=True)
    # How often it was opened again. A reopened alert is delivered again; receivers that dedupe by `id` dedupe
    # by (`id`, `times_reopened`) to see each opening once.
    times_reopened = models.PositiveIntegerField(default=0, db_default=0)
    emailed_at = models.DateTimeField(null=True, blank=True)
    webhook_delivered_at = models.DateTimeField(null=True, blank=True)
    delivery_attempts = models.PositiveSmallIntegerField(default=0)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    # Set when the cause went away (a price added, the day reconciled clean, the run answered): the alert stays
    # as history; a cause that comes back opens it again (services.alerts_resolve, _reopen).
    resolved_at = models.DateTimeField(null=True, blank=True)
    # db_default: alerts are inserted in bulk with raw SQL that names only the columns a new alert sets.
    resolution = models.CharField(max_length=300, blank=True, db_default="", help_text="Why it was resolved.")

    unscoped_objects = models.Manager()
    objects = TenantScopedManager()

    class Meta:
        ordering = ["-opened_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "opened_at"], name="alert_tenant_opened"),
            # The open alerts of a kind, which each resolution reads (per-run alerts make the table large).
            models.Index(fields=["kind"], condition=Q(resolved_at__isnull=True), name="alert_open_kind"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def state(self) -> str:
        """open, reopened (its cause came back after it was resolved), acknowledged (someone has seen it since it
        last opened) or resolved (its cause went away)."""
        if self.resolved_at is not None:
            return "resolved"
        if self.acknowledged_at is not None:
            return "acknowledged"
        return "reopened" if self.times_reopened else "open"
