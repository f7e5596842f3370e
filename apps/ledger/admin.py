from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property

# Ledger rows are written by ingest and re-pricing only (audited paths), never by hand.
from apps.core.admin import ReadOnlyAdmin

from .models import DailyRollup, RollupCompaction, Run, Thread

# The run and thread lists count at most this many matches, as the dashboard's run tables do (issue #9).
ADMIN_COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """COUNT over a LIMITed subquery: Django's paginator counts every matching row on each page load, which over
    10M runs is seconds (show_full_result_count only drops the second, unfiltered count). The list then reads
    "10000+ runs" (templates/admin/ledger/pagination.html)."""

    capped = False

    @cached_property
    def count(self) -> int:
        found = self.object_list.order_by()[: ADMIN_COUNT_CAP + 1].count()
        self.capped = found > ADMIN_COUNT_CAP
        return min(found, ADMIN_COUNT_CAP)


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ("openai_id", "tenant", "api", "model", "status", "created_at", "cost_total_usd", "priced",
                    "is_high_cost", "user_id", "feature")
    list_filter = ("api", "status", "priced", "is_high_cost")
    # An exact id, which the unique index answers: a search used to run UPPER(..) LIKE '%q%' over four columns
    # and the tenant's slug, a scan of every run. A tenant's or an end user's runs: the dashboard's runs page.
    search_fields = ("openai_id__exact",)
    list_select_related = ("tenant",)
    # No date_hierarchy: it lists the years with a SELECT DISTINCT over every run on each load. The date filter
    # offers fixed ranges (today, past 7 days, this month, this year) that the created_at index serves.
    list_filter = (*list_filter, "created_at")
    show_full_result_count = False  # COUNT(*) over millions of runs on every page is not worth it
    paginator = CappedCountPaginator


@admin.register(Thread)
class ThreadAdmin(ReadOnlyAdmin):
    list_display = ("openai_id", "tenant", "kind", "status", "created_at", "last_activity_at", "run_count", "cost_usd")
    list_filter = ("kind", "status")
    search_fields = ("openai_id__exact",)  # the unique index: a LIKE over every thread otherwise
    list_select_related = ("tenant",)
    show_full_result_count = False
    paginator = CappedCountPaginator


@admin.register(DailyRollup)
class DailyRollupAdmin(ReadOnlyAdmin):
    list_display = ("day", "tenant", "model", "feature", "runs", "cost_total_usd", "unpriced_runs", "wasted_cost_usd")
    list_filter = ("model",)
    search_fields = ("tenant__slug", "model", "feature")
    list_select_related = ("tenant",)
    date_hierarchy = "day"


@admin.register(RollupCompaction)
class RollupCompactionAdmin(ReadOnlyAdmin):
    """What the nightly compaction did (apps/ledger/compaction.py): a closed period with no finish stopped part
    way; an open one is rewritten each night (rewritten_at) until it closes."""

    list_display = ("table", "period", "rows_moved", "started_at", "rewritten_at", "finished_at")
    list_filter = ("table",)
    date_hierarchy = "period"
