"""Stored OpenAI resources (vector stores, files, containers), the sweeps that delete them, the deletion
audit, daily vector-storage metering and the archive of thread contents kept before a delete."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.core.money import MONEY_FIELD_KWARGS
from apps.tenants.scoping import TenantScopedManager


class MaybeUnassignedManager(TenantScopedManager):
    """The tenancy manager for resources whose tenant may be unknown (an "orphan" listed at OpenAI with no
    tenant in its metadata). Orphans have tenant NULL: `for_tenant()` and a member's `in_scope()` never
    return them; only an every-tenant scope (staff) or `unscoped()` does."""

    def unassigned(self) -> models.QuerySet:
        return self._all_rows().filter(tenant__isnull=True)

    def create(self, **kwargs):
        return self._all_rows().create(**kwargs)

    def bulk_create(self, objs, **kwargs):
        return self._all_rows().bulk_create(objs, **kwargs)


class ResourceType(models.TextChoices):
    THREAD = "thread"
    CONVERSATION = "conversation"
    VECTOR_STORE = "vector_store"
    FILE = "file"
    CONTAINER = "container"


class ResourceStatus(models.TextChoices):
    ACTIVE = "active"
    DELETED = "deleted"


def _maybe_unassigned_tenant(*, own_index: bool = True) -> models.ForeignKey:
    """The tenant key, NULL for an unassigned resource. `own_index=False` where one of the table's indexes leads
    with tenant (NULLs included): the key's own index would be a redundant copy of its prefix."""
    return models.ForeignKey("tenants.Tenant", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                             db_index=own_index)


class MaybeUnassignedModel(models.Model):
    tenant = _maybe_unassigned_tenant()

    unscoped_objects = models.Manager()
    objects = MaybeUnassignedManager()

    class Meta:
        abstract = True


class OpenAIResource(MaybeUnassignedModel):
    """What every listed OpenAI resource has: its id as given, when it was created and seen, and whether
    RunLedger (or someone else) deleted it."""

    openai_id = models.CharField(max_length=100, unique=True)
    openai_project = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=ResourceStatus.choices, default=ResourceStatus.ACTIVE)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deletion_reason = models.CharField(max_length=200, blank=True, default="")
    # How the tenant was decided: "metadata", "ingest", "vector_store", "thread", "staff" or "" (unassigned).
    tenant_source = models.CharField(max_length=20, blank=True, default="")
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    raw = models.JSONField(default=dict, blank=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.openai_id


class VectorStore(OpenAIResource):
    tenant = _maybe_unassigned_tenant(own_index=False)  # vs_tenant_status_active
    name = models.CharField(max_length=300, blank=True, default="")
    usage_bytes = models.BigIntegerField(default=0)
    last_active_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    openai_status = models.CharField(max_length=20, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    # Threads whose tool_resources.file_search names this store (a store used by a live thread is kept).
    thread_openai_ids = models.JSONField(default=list, blank=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "status", "last_active_at"], name="vs_tenant_status_active")]


class StoredFile(OpenAIResource):
    tenant = _maybe_unassigned_tenant(own_index=False)  # file_tenant_status_created
    filename = models.CharField(max_length=300, blank=True, default="")
    bytes = models.BigIntegerField(default=0)
    purpose = models.CharField(max_length=40, blank=True, default="")
    expires_at = models.DateTimeField(null=True, blank=True)
    vector_store_openai_ids = models.JSONField(default=list, blank=True)
    thread_openai_ids = models.JSONField(default=list, blank=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "status", "created_at"], name="file_tenant_status_created")]


class Container(OpenAIResource):
    tenant = _maybe_unassigned_tenant(own_index=False)  # container_tenant_status_active
    name = models.CharField(max_length=300, blank=True, default="")
    last_active_at = models.DateTimeField(null=True, blank=True)
    openai_status = models.CharField(max_length=20, blank=True, default="")
    expires_after_minutes = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "status", "last_active_at"], name="container_tenant_status_active")]


class SweepKind(models.TextChoices):
    THREADS = "threads"
    VECTOR_STORES = "vector_stores"
    FILES = "files"
    CONTAINERS = "containers"


class Sweep(models.Model):
    """One sweep of one kind. Its items are planned once (so a dry run and the run confirming it list the
    same resources), then processed in bounded, claimed batches; a killed worker leaves a stale heartbeat
    that the reaper notices, and the next batch carries on where it stopped."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"

    kind = models.CharField(max_length=20, choices=SweepKind.choices)
    # NULL: every tenant not on legal hold. Members see only sweeps filtered to their tenant.
    tenant = models.ForeignKey("tenants.Tenant", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    dry_run = models.BooleanField(default=False)
    # The dry run this sweep confirms: it deletes that preview's list (each re-checked), nothing else.
    preview_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="confirmations")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # The moment rules are measured from ("older than N days" means older than as_of - N days).
    as_of = models.DateTimeField()
    planned_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    planned_count = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(default=list, blank=True)
    # Planning progress: the last primary key examined, so a huge plan resumes instead of restarting.
    cursor = models.CharField(max_length=100, blank=True, default="")
    claimed_by = models.CharField(max_length=120, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Batches in a row that raised outside the per-item handling; at LIFECYCLE_MAX_BATCH_FAILURES the sweep fails.
    batch_failures = models.PositiveSmallIntegerField(default=0)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    requested_label = models.CharField(max_length=120, blank=True, default="")

    unscoped_objects = models.Manager()
    objects = MaybeUnassignedManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["kind", "status"], name="sweep_kind_status")]
        # Enforced by the database too: two requests at once (a double-clicked confirm) would both pass
        # sweep_create's checks, which read rows the other had not written yet.
        constraints = [
            models.UniqueConstraint(fields=["preview_of"], condition=models.Q(status__in=["pending", "running"]),
                                    name="sweep_one_confirmation_per_preview"),
            models.UniqueConstraint(fields=["kind"], condition=models.Q(dry_run=False, status__in=["pending", "running"]),
                                    name="sweep_one_real_sweep_per_kind_at_a_time"),
        ]

    def __str__(self) -> str:
        return f"sweep {self.pk} {self.kind}{' (dry run)' if self.dry_run else ''}"

    @property
    def is_done(self) -> bool:
        return self.status in (self.Status.FINISHED, self.Status.FAILED)


class Outcome(models.TextChoices):
    DELETED = "deleted"
    WOULD_DELETE = "would_delete"
    ALREADY_GONE = "already_gone"
    SKIPPED_ACTIVE = "skipped_active"
    SKIPPED_ATTACHED = "skipped_attached"
    SKIPPED_LEGAL_HOLD = "skipped_legal_hold"
    FAILED = "failed"


class SweepItem(MaybeUnassignedModel):
    """One resource in one sweep, and, once processed, its line in the deletion audit. Unique per
    (sweep, resource), and claimed with a conditional UPDATE before anything is deleted, so a resumed
    or doubly-delivered batch never deletes the same resource twice."""

    class State(models.TextChoices):
        PENDING = "pending"
        CLAIMED = "claimed"
        DONE = "done"

    tenant = _maybe_unassigned_tenant(own_index=False)  # sweepitem_tenant_processed
    # sweepitem_unique_resource and sweepitem_sweep_state_id lead with it: its own index would be one more
    # written for each of a sweep's million items, and read by nothing.
    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="items", db_index=False)
    resource_type = models.CharField(max_length=20, choices=ResourceType.choices)
    openai_id = models.CharField(max_length=100)
    # The OpenAI project the resource lives in, as the ledger recorded it ("" = the default project): the
    # item is re-checked and deleted with that project's key, since OpenAI answers 404 to any other.
    openai_project = models.CharField(max_length=100, blank=True, default="")
    rule = models.CharField(max_length=300)
    dry_run = models.BooleanField(default=False)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True, default="")
    detail = models.CharField(max_length=500, blank=True, default="")
    last_activity_at = models.DateTimeField(null=True, blank=True)
    usage_bytes = models.BigIntegerField(default=0)
    # What deleting this vector store saves per day at the price in force, with the free GB applied to the
    # whole organisation (the drop in the daily bill), so savings are never overstated.
    saved_usd_per_day = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    archived = models.BooleanField(default=False)
    # Conversation items carry no timestamps: the newest item's id when a dry run looked, so the run that
    # confirms it can tell the conversation was used in between.
    fingerprint = models.CharField(max_length=120, blank=True, default="")
    # Transient failures (rate limits, 5xx) put an item back; after a few it is recorded as failed.
    attempts = models.PositiveSmallIntegerField(default=0)
    # A delete call went out but OpenAI answered it with an error: a later "not found" is this sweep's own
    # delete having gone through, not someone else's.
    delete_sent = models.BooleanField(default=False)
    claimed_by = models.CharField(max_length=120, blank=True, default="")
    claimed_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["sweep", "resource_type", "openai_id"], name="sweepitem_unique_resource"),
        ]
        indexes = [
            models.Index(fields=["tenant", "processed_at"], name="sweepitem_tenant_processed"),
            # With id last, "the next pending items of this sweep" is an ordered index scan: at a million items
            # (sweep, state) alone made every claim read and sort all pending items (~0.45 s each).
            models.Index(fields=["sweep", "state", "id"], name="sweepitem_sweep_state_id"),
            # A conversation's re-check reads the fingerprint an earlier sweep recorded for it.
            models.Index(fields=["openai_id", "processed_at"], name="sweepitem_resource_processed"),
        ]

    def __str__(self) -> str:
        return f"{self.resource_type} {self.openai_id} {self.outcome or self.state}"


class StorageMeter(MaybeUnassignedModel):
    """Vector storage of one tenant (or of the unassigned stores) on one UTC day: GB-days, its share of
    the organisation's free GB and what it costs. One row per (tenant, day); re-metering a day replaces it."""

    tenant = _maybe_unassigned_tenant(own_index=False)  # storagemeter_unique_tenant_day
    day = models.DateField()
    usage_bytes = models.BigIntegerField(default=0)
    store_count = models.PositiveIntegerField(default=0)
    gb_days = models.DecimalField(max_digits=24, decimal_places=10, default=0)
    free_gb_share = models.DecimalField(max_digits=24, decimal_places=10, default=0)
    cost_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    # Money saved that day by stores RunLedger deleted earlier (each deleted store's daily cost at deletion).
    saved_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    price_version = models.CharField(max_length=60, blank=True, default="")
    rule = models.CharField(max_length=300, blank=True, default="")
    metered_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["day"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day"], name="storagemeter_unique_tenant_day"),
            models.UniqueConstraint(
                fields=["day"], condition=models.Q(tenant__isnull=True), name="storagemeter_unique_unassigned_day"
            ),
        ]
        # The pages that read every tenant's storage over a period (the overview's month and chart, the
        # lifecycle page) sum these from the index alone (PostgreSQL; a day's rows are written once, so the
        # columns carried cost no update its in-place path): read from the table, 30 days of 1,000 tenants
        # were ~1,300 pages to visit per read (issue #9).
        indexes = [models.Index(fields=["day", "tenant"], include=["cost_usd", "gb_days", "saved_usd"],
                                name="storagemeter_day_tenant")]

    def __str__(self) -> str:
        return f"{self.tenant_id or 'unassigned'} {self.day} {self.gb_days} GB-days"


class StorageDailyTotal(models.Model):
    """The tenants' metered vector storage cost of one UTC day, added up (the unassigned stores left out, as
    the spend pages leave them): the staff overview's chart and month figures read it, 90 rows for 90 days,
    instead of summing 90,000 tenant meters (issue #9). A row exists for each day with a tenant's meter row;
    storage_meter_day writes it with them, in the same transaction. Not a tenant's data: only a scope of every
    tenant reads it (apps.ledger.selectors.spend_days)."""

    day = models.DateField(unique=True)
    cost_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)

    def __str__(self) -> str:
        return f"{self.day} {self.cost_usd}"


class VectorStoreDay(MaybeUnassignedModel):
    """A store's size on a day, as metered: the input to StorageMeter, kept so any day can be re-rated."""

    day = models.DateField()
    # vsday_unique_store_day leads with it.
    vector_store = models.ForeignKey(VectorStore, on_delete=models.CASCADE, related_name="days", db_index=False)
    usage_bytes = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["vector_store", "day"], name="vsday_unique_store_day")]
        indexes = [models.Index(fields=["day", "tenant"], name="vsday_day_tenant")]

    def __str__(self) -> str:
        return f"{self.vector_store_id} {self.day} {self.usage_bytes} bytes"


class ArchivedItem(MaybeUnassignedModel):
    """A thread's message or a conversation's item, copied before the thread was deleted at OpenAI."""

    thread_openai_id = models.CharField(max_length=100)  # archiveditem_unique_item leads with it
    item_openai_id = models.CharField(max_length=100)
    position = models.PositiveIntegerField()
    item_created_at = models.DateTimeField(null=True, blank=True)
    data = models.JSONField()
    archived_at = models.DateTimeField(auto_now_add=True)
    sweep_item = models.ForeignKey(SweepItem, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["thread_openai_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["thread_openai_id", "item_openai_id"], name="archiveditem_unique_item"),
        ]

    def __str__(self) -> str:
        return f"{self.thread_openai_id} #{self.position}"
