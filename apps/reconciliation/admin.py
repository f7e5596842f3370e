"""Admin: ops configure the OpenAI projects to reconcile (key variable NAMES only) and browse results."""

import os

from django.contrib import admin

from apps.core.admin import AuditedAdminMixin, ReadOnlyAdmin

from .models import LateLedgerDay, OpenAIProject, ReconciliationLine, ReconciliationRun


@admin.register(OpenAIProject)
class OpenAIProjectAdmin(AuditedAdminMixin, admin.ModelAdmin):
    # Audited: which variable's key is sent to OpenAI, and how much drift passes unflagged, are ops decisions.
    list_display = ("project_id", "name", "admin_key_env", "admin_key_present", "base_url", "is_active")
    list_filter = ("is_active",)
    search_fields = ("project_id", "name")
    fields = ("project_id", "name", "admin_key_env", "api_key_env", "base_url", "tolerance_percent",
              "tolerance_usd", "is_active", "admin_key_present", "api_key_present")
    readonly_fields = ("admin_key_present", "api_key_present")

    # Whether this process can see the variable: a yes/no, never the value.
    @admin.display(boolean=True, description="admin key set in this process")
    def admin_key_present(self, obj):
        return bool(obj and obj.admin_key_env and os.environ.get(obj.admin_key_env))

    @admin.display(boolean=True, description="API key set in this process")
    def api_key_present(self, obj):
        return bool(obj and obj.api_key_env and os.environ.get(obj.api_key_env))


class ReconciliationLineInline(admin.TabularInline):
    model = ReconciliationLine
    extra = 0
    can_delete = False
    fields = ("line", "kind", "unit", "ledger_value", "openai_value", "difference", "difference_pct", "status")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(admin.ModelAdmin):
    list_display = ("day", "openai_project", "status", "is_current", "flagged_count", "ledger_total_usd",
                    "openai_total_usd", "unattributed_usd", "started_at", "trigger")
    list_filter = ("status", "is_current", "openai_project")
    date_hierarchy = "day"
    inlines = [ReconciliationLineInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Attempts are the history of a day's reconciliation: deleting the current one made the day read as never
        # reconciled, its drift gone, with no trace. A day is reconciled again by re-running it, which keeps both.
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in ReconciliationRun._meta.fields]


@admin.register(LateLedgerDay)
class LateLedgerDayAdmin(ReadOnlyAdmin):
    """What the hourly task will compare again: read-only, since a mark deleted by hand would leave its day's
    result comparing OpenAI with the ledger as it was before the late runs."""

    list_display = ("day", "openai_project", "marked_at")
    list_filter = ("openai_project",)
    date_hierarchy = "day"
