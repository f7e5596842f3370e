from django.contrib import admin, messages

from apps.core.admin import AuditedAdminMixin
from apps.ledger.services import RepriceOverflow

from .models import ModelPrice, ToolPrice
from .services import unpriced_runs_rate


@admin.register(ModelPrice)
class ModelPriceAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("model", "effective_from", "input_usd_per_1m", "cached_input_usd_per_1m", "output_usd_per_1m",
                    "cache_write_usd_per_1m", "verify", "source_date")
    list_filter = ("verify",)
    search_fields = ("model", "source")
    date_hierarchy = "effective_from"
    readonly_fields = ("created_at", "created_by")

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        if not change:
            # A new price rates the runs that were stored unpriced for this model (and its snapshots).
            try:
                newly = unpriced_runs_rate(model=obj.model, actor=request.user)
            except RepriceOverflow as error:
                # The admin saved the price in its own transaction; say so, and how to finish the job.
                self.message_user(request, f"The price was saved, but the unpriced runs were not all rated. {error} "
                                  "Then run `manage.py reprice --unpriced`.", level=messages.ERROR)
                return
            if newly:
                self.message_user(request, f"{newly} unpriced runs are now rated.")
        else:
            self.message_user(request, "Price changed: re-rate its period with `manage.py reprice --start … --end …`.")


@admin.register(ToolPrice)
class ToolPriceAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("effective_from", "code_interpreter_session_usd", "file_search_call_usd_per_1k",
                    "web_search_call_usd_per_1k", "vector_storage_usd_per_gb_day", "vector_storage_free_gb", "verify")
    readonly_fields = ("created_at", "created_by")

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
