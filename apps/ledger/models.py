"""The ledger: one row per run (Assistants run or Responses response), per thread (thread or
conversation), and daily rollups per (tenant, day, model, feature) that charts and billing read."""

import bisect

from django.db import models

from apps.core.money import MONEY_FIELD_KWARGS
from apps.core.timeutils import next_month
from apps.tenants.scoping import TenantOwnedModel, tenant_key_led_index


class Api(models.TextChoices):
    ASSISTANTS = "assistants"
    RESPONSES = "responses"


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    REQUIRES_ACTION = "requires_action"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    EXPIRED = "expired"


TERMINAL_STATUSES = frozenset(
    {RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.COMPLETED, RunStatus.INCOMPLETE, RunStatus.EXPIRED}
)
# Runs that cost money but produced nothing usable: counted as wasted spend.
WASTED_STATUSES = frozenset({RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.EXPIRED})
# How far along a run is; a state never overwrites one with a higher rank (an older report arriving late).
# An Assistants run goes back from requires_action to in_progress when its tool outputs are submitted, and
# may wait again: the two share a rank, and their order is the run's expires_at, which each of those moves
# sets later (services._progress_key).
STATUS_RANK = {
    RunStatus.QUEUED: 0,
    RunStatus.IN_PROGRESS: 1,
    RunStatus.REQUIRES_ACTION: 1,
    RunStatus.CANCELLING: 3,
    RunStatus.CANCELLED: 4,
    RunStatus.FAILED: 4,
    RunStatus.COMPLETED: 4,
    RunStatus.INCOMPLETE: 4,
    RunStatus.EXPIRED: 4,
}


# Log-spaced prompt-size bins of the tenant page's histogram (PromptSizeRollup.size_bin indexes them): 1-2-5
# steps per decade, so the long tail stays readable on a log axis. Bin i holds edges[i] <= tokens < edges[i+1].
PROMPT_TOKEN_EDGES = [0, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000]


class ThreadKind(models.TextChoices):
    THREAD = "thread"
    CONVERSATION = "conversation"


# Why a row is deleted when OpenAI, not RunLedger, made it go (a 404 to a sweep, or no longer listed). Such a
# finding can be wrong (one spurious 404): a thread reported active after it is brought back by ingest.
GONE_REASON = "gone at OpenAI"


class Thread(TenantOwnedModel):
    """An Assistants thread or a Responses conversation. Conversations cannot be listed at OpenAI:
    this row is the only way anyone will ever find one again to delete it."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        DELETED = "deleted"

    tenant = tenant_key_led_index()  # thread_tenant_status_activity
    openai_id = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=ThreadKind.choices)
    openai_project = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField()
    last_activity_at = models.DateTimeField()
    run_count = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    metadata = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deletion_reason = models.CharField(max_length=200, blank=True, default="")
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "status", "last_activity_at"], name="thread_tenant_status_activity"),
        ]

    def __str__(self) -> str:
        return self.openai_id


class ThreadToolResource(TenantOwnedModel):
    """A vector store or file that a thread's tool_resources name (file_search.vector_store_ids,
    code_interpreter.file_ids), recorded when the thread is ingested: whether or not the store or file is in
    the ledger yet, a sweep never deletes one that a live thread uses."""

    class Kind(models.TextChoices):
        VECTOR_STORE = "vector_store"
        FILE = "file"

    # Derived from thread reports, like a rollup row (see _rollup_tenant): no index of its own, no constraint.
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="+", db_index=False,
                               db_constraint=False)
    thread_openai_id = models.CharField(max_length=100)
    resource_openai_id = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Leads with the resource: a sweep asks "which threads name this store or file?".
            models.UniqueConstraint(fields=["resource_openai_id", "thread_openai_id"], name="thread_tool_resource_key"),
        ]

    def __str__(self) -> str:
        return f"{self.thread_openai_id} -> {self.resource_openai_id}"


# What the runs pages filter high-cost runs on besides tenant, key columns of every high-cost partial index
# (the period first: run_high_cost_by_created leads with it).
HIGH_COST_FILTER_COLUMNS = ("created_at", "status", "model", "feature")


class Run(TenantOwnedModel):
    tenant = tenant_key_led_index()  # run_tenant_created, run_high_cost_of_tenant
    openai_id = models.CharField(max_length=100, unique=True)
    api = models.CharField(max_length=16, choices=Api.choices)
    openai_project = models.CharField(max_length=100, blank=True, default="")
    thread = models.ForeignKey(Thread, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    thread_openai_id = models.CharField(max_length=100, blank=True, default="")
    assistant_id = models.CharField(max_length=100, blank=True, default="")
    prompt_id = models.CharField(max_length=100, blank=True, default="")
    model = models.CharField(max_length=255)
    service_tier = models.CharField(max_length=16, blank=True, default="")
    status = models.CharField(max_length=20, choices=RunStatus.choices)
    status_rank = models.PositiveSmallIntegerField(default=0)

    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True, default="")
    incomplete_reason = models.CharField(max_length=64, blank=True, default="")

    # Tokens as OpenAI reports them: input includes cached and cache-write; output includes reasoning.
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)

    code_interpreter_sessions = models.PositiveIntegerField(default=0)
    file_search_calls = models.PositiveIntegerField(default=0)
    web_search_calls = models.PositiveIntegerField(default=0)
    function_calls = models.PositiveIntegerField(default=0)

    # Attribution inside the tenant.
    user_id = models.CharField(max_length=200, blank=True, default="")
    session_id = models.CharField(max_length=200, blank=True, default="")
    feature = models.CharField(max_length=100, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)

    cost_input_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    cost_cached_input_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    cost_output_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    cost_tools_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    cost_total_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    # False when no price covers the model at created_at: never rated $0, re-rated once priced.
    priced = models.BooleanField(default=False)
    # No index and no database constraint: nothing looks runs up by price, and a price row is never deleted
    # while runs point at it (Django's PROTECT checks with one rare query). Two indexes per insert, and two
    # deferred constraint checks per run at COMMIT inside the ingest lock, are not worth that (issue #9).
    model_price = models.ForeignKey("pricing.ModelPrice", null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+", db_index=False, db_constraint=False)
    tool_price = models.ForeignKey("pricing.ToolPrice", null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+", db_index=False, db_constraint=False)
    is_high_cost = models.BooleanField(default=False)

    recorded_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # The runs pages (all tenants, one tenant, the tenant page's table) list high-cost runs in a period by
        # cost or by time, count them (capped) and plot the costliest; filters on status, model and feature.
        # The three partial indexes (~5% of runs) carry what those filters read as key columns, so the scan
        # tests them in the index and visits the table only for runs that match: the count of one tenant's
        # high-cost runs visited the heap for each (250 ms at 10M runs), the "failed" filter for every high-cost
        # run of the period (800 ms). Ties break on id, not openai_id, as the API's list does: an id is 8 bytes,
        # an OpenAI id up to 60. run_high_cost_of_tenant replaced run_tenant_cost (tenant and cost of every run,
        # 32 bytes a run, for these same reads): the run table went from 599 to 574 MB per 1M runs (issue #9).
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="run_tenant_created"),
            models.Index(fields=["created_at", "cost_total_usd"], name="run_created_cost"),
            models.Index(fields=["tenant", "-cost_total_usd", "-id", *HIGH_COST_FILTER_COLUMNS],
                         condition=models.Q(is_high_cost=True), name="run_high_cost_of_tenant"),
            # Across tenants; tenant last, for a scope of several tenants and for whichever index the planner
            # takes for one tenant's runs by time.
            models.Index(fields=["-cost_total_usd", "-id", *HIGH_COST_FILTER_COLUMNS, "tenant"],
                         condition=models.Q(is_high_cost=True), name="run_high_cost_by_cost"),
            models.Index(fields=["-created_at", "-id", *HIGH_COST_FILTER_COLUMNS[1:], "tenant"],
                         condition=models.Q(is_high_cost=True), name="run_high_cost_by_created"),
        ]

    def __str__(self) -> str:
        return self.openai_id

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def _rollup_tenant() -> models.ForeignKey:
    """A rollup's tenant: no index of its own (every rollup index leads with tenant) and no database
    constraint. A rollup row is derived from runs, whose own tenant key is constrained (ledger_check
    recomputes every rollup from them), and Django's PROTECT still refuses to delete a tenant that has
    rows. A constraint costs a deferred check per inserted row at COMMIT, inside the ingest lock: ~2 µs
    each, five per run (issue #9)."""
    return models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="+", db_index=False,
                             db_constraint=False)


class DailyRollup(TenantOwnedModel):
    """Sums of runs per (tenant, UTC day of created_at, OpenAI project, model, feature), maintained by the ingest path
    as deltas; `ledger_check` recomputes them from the runs to prove they agree."""

    tenant = _rollup_tenant()
    day = models.DateField()
    openai_project = models.CharField(max_length=100, blank=True, default="")
    model = models.CharField(max_length=255)
    feature = models.CharField(max_length=100, blank=True, default="")
    runs = models.BigIntegerField(default=0)
    unpriced_runs = models.BigIntegerField(default=0)
    high_cost_runs = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    code_interpreter_sessions = models.BigIntegerField(default=0)
    file_search_calls = models.BigIntegerField(default=0)
    web_search_calls = models.BigIntegerField(default=0)
    cost_input_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    cost_cached_input_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    cost_output_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    cost_tools_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    cost_total_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)
    wasted_cost_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day", "openai_project", "model", "feature"], name="rollup_unique_key"),
        ]
        indexes = [
            models.Index(fields=["day", "tenant"], name="rollup_day_tenant"),
            # The runs page's model and feature choices over every tenant skip from one pair to the next along
            # it (a few dozen pairs) instead of reading every row of the period (selectors, issue #9).
            models.Index(fields=["model", "feature", "day"], name="rollup_model_feature_day"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day} {self.model} {self.feature}"


class TenantDailyRollup(TenantOwnedModel):
    """A tenant's runs and spend per UTC day, over all its projects, models and features: what the pages that
    read many tenants at once sum (the overview's chart and figures, the tenants list, budgets). The daily
    rollup keeps a row per project, model and feature, and realistic traffic (each feature on its model, a
    thousand tenants) puts about five of them in every tenant-day: 90 days of it were ~430,000 rows at 1M runs
    to read, against at most 90,000 here (issue #9). Maintained by the ingest path as deltas, with the others;
    `ledger_check` recomputes it from the runs."""

    tenant = _rollup_tenant()
    day = models.DateField()
    runs = models.BigIntegerField(default=0)
    unpriced_runs = models.BigIntegerField(default=0)
    cost_total_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "day"], name="tenant_day_unique_key")]
        indexes = [models.Index(fields=["day", "tenant"], name="tenant_day_by_day")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day}"


class EveryTenantDailyRollup(models.Model):
    """Runs and spend per UTC day over every tenant: the tenant-day rollup's rows of a day, added up. The staff
    overview's chart and month figures read it (90 rows for 90 days) instead of summing 90,000 tenant-days
    (issue #9); a member's overview, which covers only their tenants, reads the tenant-day rows. Not a tenant's
    data, so not tenant-owned: only a scope of every tenant may read it (apps.ledger.selectors.spend_days).
    Maintained by the ingest path as deltas, with the others; `ledger_check` recomputes it from the runs."""

    day = models.DateField(unique=True)
    runs = models.BigIntegerField(default=0)
    unpriced_runs = models.BigIntegerField(default=0)
    cost_total_usd = models.DecimalField(**MONEY_FIELD_KWARGS, default=0)

    def __str__(self) -> str:
        return str(self.day)


class _EndUserSums(TenantOwnedModel):
    """What the usage API and the tenant page show per end user (attribution user_id, "" = unknown). Money is
    kept in whole ledger units (apps.core.money.LEDGER_UNITS_PER_USD, 10**-10 USD: the ledger's amounts
    exactly), not numeric: usage by end user sums tens of thousands of these rows per request, and
    PostgreSQL sums bigint about a third faster than numeric (issue #9, docs/benchmarks-history.md)."""

    tenant = _rollup_tenant()
    user_id = models.CharField(max_length=200, blank=True, default="")
    runs = models.BigIntegerField(default=0)
    unpriced_runs = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost_input_units = models.BigIntegerField(default=0)
    cost_cached_input_units = models.BigIntegerField(default=0)
    cost_output_units = models.BigIntegerField(default=0)
    cost_tools_units = models.BigIntegerField(default=0)
    cost_total_units = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


def end_user_units_column(money: str) -> str:
    """The end-user rollups' column holding `money` (an amount's name, cost_X_usd) as ledger units."""
    return money.removesuffix("_usd") + "_units"


# What the end-user rollups sum: counts, and amounts (named as share rows and usage lines name them; stored in
# the END_USER_UNITS columns).
END_USER_COUNTS = ("runs", "unpriced_runs", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
END_USER_MONEY = ("cost_input_usd", "cost_cached_input_usd", "cost_output_usd", "cost_tools_usd", "cost_total_usd")
END_USER_UNITS = tuple(map(end_user_units_column, END_USER_MONEY))


class EndUserDailyRollup(_EndUserSums):
    """Sums of runs per (tenant, UTC day of created_at, end user), maintained by ingest as deltas like
    DailyRollup. Read for the ragged ends of a period and for an end user's last active day."""

    day = models.DateField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day", "user_id"], name="enduser_day_unique_key"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day} {self.user_id}"


class EndUserMonthlyRollup(_EndUserSums):
    """The same sums per (tenant, UTC month of created_at, end user); `month` is the month's first day. A
    big tenant has thousands of end users a day: a whole month read from daily rows would be ~100k rows,
    from these a few thousand (issue #9: usage by end user < 50 ms at 10M runs)."""

    month = models.DateField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "month", "user_id"], name="enduser_month_unique_key"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.month:%Y-%m} {self.user_id}"


# The first days of the four parts of every month: days 1-8, 9-15, 16-23 and 24 to the month's end.
MONTH_PART_FIRST_DAYS = (1, 9, 16, 24)


def month_part_start(day):
    """The first day of the part of the month holding `day` (MONTH_PART_FIRST_DAYS)."""
    return day.replace(day=MONTH_PART_FIRST_DAYS[bisect.bisect_right(MONTH_PART_FIRST_DAYS, day.day) - 1])


def month_parts(month) -> list[tuple]:
    """(first day, day after the last) of each part of the month whose first day is `month`."""
    starts = [month.replace(day=first) for first in MONTH_PART_FIRST_DAYS]
    return list(zip(starts, [*starts[1:], next_month(month)], strict=True))


class EndUserMonthPartRollup(_EndUserSums):
    """The same sums per (tenant, part of a month of created_at, end user); `part` is the part's first day (the
    1st, 9th, 16th or 24th). A range whose ends fall mid-month then reads a part's row per user and at most
    four days of daily rows at each end, instead of up to two weeks of them (issue #9: usage by end user over
    30 days ragged in two months; half-months, migration 0009, still left a week at each end)."""

    part = models.DateField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "part", "user_id"], name="enduser_part_unique_key"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.part} {self.user_id}"


class ToolUsageRollup(TenantOwnedModel):
    """Billable tool use of priced runs per (tenant, UTC day of created_at, tool price version the runs were
    rated with): code-interpreter sessions, file-search calls under the Responses API (Assistants
    file_search had no per-call fee) and web-search calls. Statements price each kind as quantity times
    that version's fee, exactly as rating does, without reading the runs. That equals the runs' stored
    cost_tools_usd only while the fee is the one they were rated with, so a version any run was rated with
    never has its fees changed in place (the admin shows them read-only, load_price_book refuses): a
    correction is a new version and `manage.py reprice`, which moves the runs and these rows by deltas.
    Unpriced runs are not here (DailyRollup counts all tool use)."""

    tenant = _rollup_tenant()
    day = models.DateField()
    # The pricing.ToolPrice id, without a foreign key: a row whose runs were all re-rated to another version
    # stays (at zero) and must not block that version's removal.
    tool_price_id = models.BigIntegerField()
    code_interpreter_sessions = models.BigIntegerField(default=0)
    billable_file_search_calls = models.BigIntegerField(default=0)
    web_search_calls = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day", "tool_price_id"], name="toolusage_unique_key"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day} tools@{self.tool_price_id}"


class PromptSizeRollup(TenantOwnedModel):
    """Runs per (tenant, UTC day of created_at, prompt-size bin); `size_bin` indexes
    selectors.PROMPT_TOKEN_EDGES. max_input_tokens is the largest prompt any run of the row reported: it is
    kept with GREATEST, because a maximum cannot be taken back by a delta. A run's token counts only grow as
    it progresses (queued and in-progress reports carry no usage), so the largest max among a period's
    rows with runs > 0 is the exact largest prompt; ledger_check proves it against the runs."""

    tenant = _rollup_tenant()
    day = models.DateField()
    size_bin = models.PositiveSmallIntegerField()
    runs = models.BigIntegerField(default=0)
    max_input_tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day", "size_bin"], name="promptsize_unique_key"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day} bin {self.size_bin}"


class RollupCompaction(models.Model):
    """One period of one end-user rollup table rewritten tenant by tenant (apps.ledger.compaction): what the
    nightly compaction did, and how it knows a period is done (finished_at, set once the period is closed and
    a pass has rewritten it whole) or where to go on after stopping part way (every tenant id below
    next_tenant_id is done in the pass under way). An open month or month part is rewritten every night:
    rewritten_at says when a pass last finished it. Ledger maintenance over every tenant, not a tenant's data:
    staff see it in the admin."""

    table = models.CharField(max_length=63)  # the rollup's database table
    period = models.DateField()  # the day, the part's first day or the month's first day
    next_tenant_id = models.BigIntegerField(default=0)
    # Whether the pass under way (or the last one) began after the period closed: a pass stopped while the
    # period was open is not resumed once it has closed, nor on a later day, since rows added meanwhile sit
    # after the tenants it had done.
    period_closed = models.BooleanField(default=True)
    rows_moved = models.BigIntegerField(default=0)  # over every pass
    started_at = models.DateTimeField()  # when the pass under way (or the last one) began
    rewritten_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["table", "period"], name="rollupcompaction_unique_period")]

    def __str__(self) -> str:
        return f"{self.table} {self.period}"
