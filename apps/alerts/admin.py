from django.contrib import admin, messages

from apps.core.admin import AuditedAdminMixin

from . import services
from .models import Alert


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
        # At most ACKNOWLEDGE_AT_MOST a click, as on the alerts page: "select all" over every high-cost run's
        # alert would write hundreds of thousands of audit records in one request.
        at_most = services.ACKNOWLEDGE_AT_MOST
        done = services.alerts_acknowledge(alerts=queryset, actor=request.user, audit_action="admin.alert.acknowledge",
                                           limit=at_most)
        more = services.alerts_awaiting_acknowledgement(queryset).exists()
        self.message_user(request, f"Acknowledged {len(done):,} alert{'s' if len(done) != 1 else ''}." + (
            f" More of those selected are open and unacknowledged: run the action again for the next {at_most:,}."
            if more else ""), messages.SUCCESS)
