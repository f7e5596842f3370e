from django import forms
from django.contrib import admin, messages
from django.utils.functional import cached_property

from apps.core.admin import AuditedAdminMixin
from apps.core.forms import SeenValuesFormMixin

from .models import STAFF_POLICY_FIELDS, ApiKey, Membership, Tenant
from .services import api_key_create, api_key_revoke, tenant_update


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class TenantAdminForm(SeenValuesFormMixin, forms.ModelForm):
    """A tenant's change page also sends each value as it showed it (as the dashboard settings form does): the
    page may be older than an API or dashboard change, and saving every field it shows put those back silently."""

    class Meta:
        model = Tenant
        fields = ["slug", "name", "external_id", "status", *STAFF_POLICY_FIELDS]  # the policies as the dashboard's form

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.send_seen_values()

    @cached_property
    def changed_data(self):
        # Against the value the page showed; a post without those values is compared with the stored row.
        return [name for name in self.fields if (
            self[name]._has_changed() if self.sent_seen_value(name)
            else self.fields[name].has_changed(self[name].initial, self[name].data))]

    def clean(self):
        # self.instance is still the row as stored when the post arrived (the form's values go in after clean).
        cleaned = super().clean()
        if self.instance.pk is not None:
            self.refuse_changed_meanwhile(self.changed_data, self.instance)
        return cleaned


@admin.register(Tenant)
class TenantAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = TenantAdminForm
    list_display = ("slug", "name", "status", "thread_retention_days", "vector_store_idle_days",
                    "high_cost_run_usd", "monthly_budget_usd", "legal_hold")
    list_filter = ("status", "legal_hold")
    search_fields = ("slug", "name", "external_id")
    inlines = [MembershipInline]
    # A tenant deleted here (only one without runs can be) takes its keys, memberships and alerts with it by
    # cascade; each leaves its own delete record: which key stopped working, who lost access, which alerts went.
    audit_cascade = {"api_keys": ("name", "scope", "revoked_at"), "memberships": ("user", "role"),
                     "alerts": ("kind", "title", "created_at", "acknowledged_at")}

    def get_readonly_fields(self, request, obj=None):
        # Apps tag their runs with the slug (metadata.tenant) and ingest resolves it; renamed, every later event
        # would be "unknown tenant". The API refuses a new slug too.
        return ("slug",) if obj is not None else ()

    def save_model(self, request, obj, form, change):
        if not change:
            super().save_model(request, obj, form, change)
            return
        # Through tenant_update, as the API and the dashboard: only the fields changed on this page are written
        # (the others may be older than the row), "before" is read from the locked row, and a policy change is
        # announced (runs re-flagged at a new high-cost threshold, a lowered budget checked).
        changes = {name: form.cleaned_data[name] for name in form.changed_data}
        if changes:
            tenant_update(tenant=obj, actor=request.user, audit_action="admin.tenant.update", **changes)
        obj.refresh_from_db()


@admin.register(Membership)
class MembershipAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("user__username", "user__email", "tenant__slug")
    autocomplete_fields = ["user", "tenant"]


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdminMixin, admin.ModelAdmin):
    audit_create_elsewhere = True  # api_key_create audits a new key
    list_display = ("name", "prefix", "scope", "tenant", "created_at", "last_used_at", "revoked_at")
    list_filter = ("scope", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "prefix", "tenant__slug")
    list_select_related = ("tenant",)  # may be empty (an unbound key): Django would not join it by itself
    readonly_fields = ("prefix", "key_hash", "created_at", "created_by", "last_used_at", "revoked_at")
    fields = ("name", "scope", "tenant", "prefix", "key_hash", "created_at", "created_by", "last_used_at",
              "revoked_at")
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        # The key was handed to the tenant it is bound to: re-bound (or unbound, every tenant) its holder would
        # read other tenants' data. A key for another tenant is a new key.
        fields = super().get_readonly_fields(request, obj)
        return (*fields, "tenant") if obj is not None else fields

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        key, plaintext = api_key_create(name=obj.name, scope=obj.scope, tenant=obj.tenant, created_by=request.user)
        obj.pk = key.pk
        obj.refresh_from_db()
        messages.warning(request, f"Copy this key now; it is not stored and will not be shown again: {plaintext}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset:
            api_key_revoke(key=key, actor=request.user)
        messages.success(request, f"Revoked {queryset.count()} key(s).")
