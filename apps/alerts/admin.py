from django.contrib import admin

from apps.core.admin import AuditedAdminMixin

from .models import Alert
from .services import alerts_acknowledge


@admin.register(Alert)
class AlertAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("opened_at", "severity", "kind", "tenant", "title", "emailed_at", "webhook_delivered_at",
                    "acknowledged_at", "resolved_at", "times_reopened")
    list_filter = ("kind", "severity", ("resolved_at", admin.EmptyFieldListFilter))
    search_fields = ("title", "cause_key", "tenant__slug")
    list_select_related = ("tenant",)
    actions = ["acknowledge"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Alert._meta.fields if f.name != "acknowledged_at"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Acknowledge selected alerts")
    def acknowledge(self, request, queryset):
        # One audit record per alert silenced, named as the admin's changes are (who acknowledged what, when).
        alerts_acknowledge(alerts=queryset, actor=request.user, audit_action="admin.alert.acknowledge", limit=None)
