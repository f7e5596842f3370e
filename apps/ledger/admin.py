from django.contrib import admin

from .models import DailyRollup, Run, Thread


class ReadOnlyAdmin(admin.ModelAdmin):
    """Ledger rows are written by ingest and re-pricing only (audited paths), never by hand."""

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ("openai_id", "tenant", "api", "model", "status", "created_at", "cost_total_usd", "priced",
                    "is_high_cost", "user_id", "feature")
    list_filter = ("api", "status", "priced", "is_high_cost")
    search_fields = ("openai_id", "tenant__slug", "user_id", "thread_openai_id")
    list_select_related = ("tenant",)
    date_hierarchy = "created_at"
    show_full_result_count = False  # COUNT(*) over millions of runs on every page is not worth it


@admin.register(Thread)
class ThreadAdmin(ReadOnlyAdmin):
    list_display = ("openai_id", "tenant", "kind", "status", "created_at", "last_activity_at", "run_count", "cost_usd")
    list_filter = ("kind", "status")
    search_fields = ("openai_id", "tenant__slug")
    list_select_related = ("tenant",)
    show_full_result_count = False


@admin.register(DailyRollup)
class DailyRollupAdmin(ReadOnlyAdmin):
    list_display = ("day", "tenant", "model", "feature", "runs", "cost_total_usd", "unpriced_runs", "wasted_cost_usd")
    list_filter = ("model",)
    search_fields = ("tenant__slug", "model", "feature")
    list_select_related = ("tenant",)
    date_hierarchy = "day"
