"""Reconciliation: the OpenAI projects ops configured, one ReconciliationRun per attempt at a (day, project),
and the per-line comparison of the ledger with OpenAI's Costs and Usage API that each complete run holds."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

# Organization-level data: no tenant owns an OpenAI project or its bill, so these tables are not
# tenant-scoped; every surface that shows them is staff / unbound-key only.

env_var_name_validator = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_]{0,99}$",
    "The NAME of an environment variable (letters, digits, underscores), never the key itself.",
)

# Values (tokens, bytes, USD with the ledger's 10 places) fit comfortably in 34 digits.
VALUE_FIELD_KWARGS = {"max_digits": 34, "decimal_places": 10}


class OpenAIProject(models.Model):
    """An OpenAI project to reconcile. Keys are referenced by the name of the environment variable
    that holds them, so a secret is never stored in or shown by RunLedger."""

    project_id = models.CharField("OpenAI project id", max_length=100, unique=True)
    name = models.CharField(max_length=200, blank=True, default="")
    admin_key_env = models.CharField(
        "admin key environment variable", max_length=100, validators=[env_var_name_validator],
        help_text="Name of the environment variable holding this project's admin key (e.g. OPENAI_ADMIN_KEY_PROD).",
    )
    api_key_env = models.CharField(
        "API key environment variable", max_length=100, blank=True, default="", validators=[env_var_name_validator],
        help_text="Name of the environment variable holding this project's API key (optional for reconciliation).",
    )
    base_url = models.URLField(
        "base URL override", max_length=300, blank=True, default="",
        help_text="Empty: the deployment's OPENAI_BASE_URL. Set only to point at the sandbox.",
    )
    tolerance_percent = models.DecimalField(
        max_digits=6, decimal_places=3, null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="Dollar lines match within the larger of this percent and the USD tolerance. Empty: the default (1%).",
    )
    tolerance_usd = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="Empty: the default ($0.01).",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project_id"]
        verbose_name = "OpenAI project"

    def __str__(self) -> str:
        return f"{self.name} ({self.project_id})" if self.name else self.project_id

    def clean(self):
        # The keys this row names are sent to base_url: outside the sandbox it would let whoever edits the row
        # read any environment variable of the workers (projects.ProjectConfig.resolved_base_url ignores it too).
        if self.base_url and not settings.SANDBOX_ENABLED:
            raise ValidationError({"base_url": "Only for the sandbox: leave it empty. This deployment reaches OpenAI "
                                               "at OPENAI_BASE_URL."})


class ReconciliationRun(models.Model):
    """One attempt at reconciling one UTC day of one OpenAI project. Attempts are kept as history; the
    latest complete one is `is_current` (at most one per day and project, enforced by the database)."""

    class Status(models.TextChoices):
        RUNNING = "running"
        COMPLETE = "complete"
        FAILED = "failed"

    day = models.DateField()
    openai_project = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    is_current = models.BooleanField(default=False)
    trigger = models.CharField(max_length=120, blank=True, default="", help_text="task, command or person.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    tolerance_percent = models.DecimalField(max_digits=6, decimal_places=3, default=0)
    tolerance_usd = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    # Summary of the day, so lists and charts need no line scan.
    ledger_total_usd = models.DecimalField(**VALUE_FIELD_KWARGS, default=0)
    openai_total_usd = models.DecimalField(**VALUE_FIELD_KWARGS, default=0)
    unattributed_usd = models.DecimalField(**VALUE_FIELD_KWARGS, default=0)
    line_count = models.PositiveIntegerField(default=0)
    flagged_count = models.PositiveIntegerField(default=0)
    notes = models.JSONField(default=list, blank=True, help_text="What this run could not check, and why.")
    # OpenAI's side of the day that its lines do not hold: spend on line items no ledger line can hold
    # ({"unmapped": {line item: "USD"}}) and the vector-store bytes per project ({"storage_bytes_by_project":
    # {project: bytes}}). With the lines' openai_value, this is every OpenAI figure the day was compared with,
    # so a re-rating can compare the day again without asking OpenAI. Empty on runs saved before it existed.
    openai_extras = models.JSONField(null=True, blank=True)
    # Set on a result computed again with the ledger after a re-rating, from this earlier run's OpenAI figures
    # (no OpenAI call): such a run neither is nor hides a fresh look at OpenAI.
    recompared_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-day", "openai_project", "-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "openai_project"], condition=Q(is_current=True), name="reconrun_one_current_per_day"
            ),
        ]
        indexes = [
            models.Index(fields=["is_current", "day", "openai_project"], name="reconrun_current_day"),
            models.Index(fields=["day", "openai_project", "started_at"], name="reconrun_history"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.openai_project} #{self.pk} ({self.status})"


class LateLedgerDay(models.Model):
    """A day of an OpenAI project whose ledger runs changed after the daily run stopped re-checking it (runs
    reported late, or a late report of an old run). Written by ingest, in the batch's own transaction, so no
    committed change goes unmarked; the hourly `reconciliation.recompare_late_days` task compares the day's
    current result again and deletes the mark (unless a newer change re-marked it meanwhile)."""

    openai_project = models.CharField(max_length=100)
    day = models.DateField()
    # When a run of the day last changed: a mark changed since the task read it is kept for its next pass.
    marked_at = models.DateTimeField()

    class Meta:
        ordering = ["openai_project", "day"]
        constraints = [models.UniqueConstraint(fields=["openai_project", "day"], name="latedays_one_per_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.openai_project} (marked {self.marked_at:%Y-%m-%d %H:%M} UTC)"


class LineKind(models.TextChoices):
    COST = "cost", "cost (USD, Costs API)"
    USAGE = "usage", "usage (count, Usage API)"
    UNATTRIBUTED = "unattributed", "unattributed spend (USD)"


class LineStatus(models.TextChoices):
    MATCHED = "matched"
    DRIFT = "drift"
    MISSING_IN_LEDGER = "missing_in_ledger"
    MISSING_AT_OPENAI = "missing_at_openai"


FLAGGED_STATUSES = frozenset({LineStatus.DRIFT, LineStatus.MISSING_IN_LEDGER, LineStatus.MISSING_AT_OPENAI})


class ReconciliationLine(models.Model):
    """One compared line of one run: a Costs line item (USD), a Usage count, or the day's unattributed spend.
    difference = OpenAI − ledger; difference_pct is relative to OpenAI's value (empty when that is 0)."""

    # reconline_unique_per_run leads with it.
    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="lines", db_index=False)
    day = models.DateField()
    openai_project = models.CharField(max_length=100)
    # Text, not a bounded CharField: line and model names come from OpenAI's Costs and Usage API as sent, and a
    # fine-tuned model's id ("ft:<base>:<org>:<suffix of up to 64 characters>:<id>") runs past 100 characters.
    # A column too short for it failed the day (and every day after it) on PostgreSQL, each time it was re-run.
    line = models.TextField()
    kind = models.CharField(max_length=16, choices=LineKind.choices)
    unit = models.CharField(max_length=16)
    model = models.TextField(blank=True, default="")
    ledger_value = models.DecimalField(**VALUE_FIELD_KWARGS)
    openai_value = models.DecimalField(**VALUE_FIELD_KWARGS)
    difference = models.DecimalField(**VALUE_FIELD_KWARGS)
    difference_pct = models.DecimalField(max_digits=20, decimal_places=4, null=True, blank=True)
    status = models.CharField(max_length=20, choices=LineStatus.choices)

    class Meta:
        ordering = ["day", "openai_project", "kind", "line"]
        constraints = [models.UniqueConstraint(fields=["run", "line"], name="reconline_unique_per_run")]
        indexes = [models.Index(fields=["day", "openai_project", "status"], name="reconline_day_status")]

    def __str__(self) -> str:
        return f"{self.day} {self.openai_project} {self.line}: {self.status}"

    @property
    def is_flagged(self) -> bool:
        return self.status in FLAGGED_STATUSES
