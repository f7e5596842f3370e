from django.contrib import admin, messages
from django.http import HttpResponseRedirect

from apps.core.admin import AuditedAdminMixin
from apps.ledger.selectors import tool_price_rated
from apps.ledger.services import RepriceOverflow

from .models import REPRICE_COMMAND, TOOL_RUN_FEE_FIELDS, TOOL_RUN_FEES_LOCKED, ModelPrice, ToolPrice
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
            self.message_user(request, f"Price changed: re-rate its period with {REPRICE_COMMAND}.")


@admin.register(ToolPrice)
class ToolPriceAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("effective_from", "code_interpreter_session_usd", "file_search_call_usd_per_1k",
                    "web_search_call_usd_per_1k", "vector_storage_usd_per_gb_day", "vector_storage_free_gb", "verify")
    # In the model's order whether the fees are editable or not: read-only fields otherwise move to the end.
    fields = ("effective_from", *TOOL_RUN_FEE_FIELDS, "vector_storage_usd_per_gb_day", "vector_storage_free_gb",
              "source", "source_date", "verify", "created_at", "created_by")
    readonly_fields = ("created_at", "created_by")

    def _fees_locked(self, obj) -> bool:
        if obj is None or obj.pk is None:
            return False
        # Kept on the instance: one change page asks several times, and the answer is a scan of the runs.
        if not hasattr(obj, "_runs_rated_with_it"):
            obj._runs_rated_with_it = tool_price_rated(tool_price_id=obj.pk)
        return obj._runs_rated_with_it

    def get_readonly_fields(self, request, obj=None):
        # Asked again when the form is posted, so a form opened before the first run was rated with the
        # version cannot change its fees either.
        fields = super().get_readonly_fields(request, obj)
        return (*fields, *TOOL_RUN_FEE_FIELDS) if self._fees_locked(obj) else fields

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if change and self._fees_locked(obj):
            self.message_user(request, TOOL_RUN_FEES_LOCKED, level=messages.WARNING)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        if change:
            self.message_user(request, f"Price changed: re-rate its period with {REPRICE_COMMAND}.")
