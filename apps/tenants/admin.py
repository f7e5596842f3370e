from django.contrib import admin, messages

from apps.core.admin import AuditedAdminMixin

from .models import ApiKey, Membership, Tenant
from .services import api_key_create, api_key_revoke, tenant_policy_announce


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ("slug", "name", "status", "thread_retention_days", "vector_store_idle_days",
                    "high_cost_run_usd", "monthly_budget_usd", "legal_hold")
    list_filter = ("status", "legal_hold")
    search_fields = ("slug", "name", "external_id")
    inlines = [MembershipInline]

    def get_readonly_fields(self, request, obj=None):
        # Apps tag their runs with the slug (metadata.tenant) and ingest resolves it; renamed, every later event
        # would be "unknown tenant". The API refuses a new slug too.
        return ("slug",) if obj is not None else ()

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and form.changed_data:
            # Saved here, not through tenant_update: without this, a high-cost threshold changed in the admin
            # left the tenant's runs flagged at the old one, and a lowered budget raised no alert.
            tenant_policy_announce(tenant=obj, changed=set(form.changed_data))


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
    readonly_fields = ("prefix", "key_hash", "created_at", "created_by", "last_used_at", "revoked_at")
    fields = ("name", "scope", "tenant", "prefix", "key_hash", "created_at", "created_by", "last_used_at",
              "revoked_at")
    actions = ["revoke"]

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
