from django.contrib import admin
from django.utils import timezone

from apps.core.admin import AuditedAdminMixin

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
        now = timezone.now()
        # One audit record per alert silenced, as a change made on its page is (who acknowledged what, when).
        for alert in queryset.filter(acknowledged_at__isnull=True):
            alert.acknowledged_at = now
            alert.save(update_fields=["acknowledged_at"])
            self._audit(request, alert, "acknowledge", {"after": {"acknowledged_at": str(now)}})
