from django.contrib import admin, messages
from django.http import HttpResponseRedirect

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

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # Both ways of adding a price (the add form, and "save as new" on a change form) end here.
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except RepriceOverflow as error:
            self.message_user(request, f"The price was not added (nothing changed). {error} Add a corrected one.",
                              level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        if not change:
            # A new price rates the runs that were stored unpriced for this model (and its snapshots).
            # RepriceOverflow leaves through the admin's transaction (it undoes the price and every batch rated
            # with it) to changeform_view, which says so.
            newly = unpriced_runs_rate(model=obj.model, actor=request.user)
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
