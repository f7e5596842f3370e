from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db import models, transaction
from django.db.models import ProtectedError
from django.http import HttpResponseRedirect
from django.urls import reverse

from .models import AuditEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows only the application writes, through its audited paths (the ledger's rows, reconciliation's marks):
    listed and opened, never added, changed or deleted by hand."""

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only: the log is the record of what staff did, here included, and whoever it names must not be able
    to erase it."""

    list_display = ("at", "action", "target_type", "target_id", "actor", "actor_label", "tenant_id")
    list_filter = ("action", "target_type")
    search_fields = ("target_id", "actor_label", "action")
    # The actor may be empty (a job, an API key), and Django joins only required foreign keys by itself.
    list_select_related = ("actor",)


def _tenant_id_of(obj) -> int | None:
    from apps.tenants.models import Tenant

    if isinstance(obj, Tenant):
        return obj.pk
    return getattr(obj, "tenant_id", None)


def _value(obj, field: str) -> str:
    value = getattr(obj, field, None)
    if hasattr(value, "all"):  # a many-to-many manager (a user's groups): the names, not the manager's repr
        return _names(value.all())
    return "" if value is None else str(getattr(value, "pk", value))


def _names(objects) -> str:
    return ", ".join(sorted(str(item) for item in objects))


class AuditedAdminMixin:
    """Every add, change and delete made in the Django admin writes an AuditEvent naming the staff user and,
    for a change, each changed field before and after (prices, tenants and their policies, memberships, keys);
    a delete also writes one for each row `audit_cascade` names that is deleted with the object.
    Secrets never reach the log: fields listed in `audit_exclude` are recorded as changed, not by value."""

    audit_exclude: tuple[str, ...] = ("key_hash", "password")
    # Rows deleted by cascade with the object, by related accessor, and the fields their delete record gives: a
    # cascade deletes them without the admin's delete_model, so they would otherwise leave no record.
    audit_cascade: dict[str, tuple[str, ...]] = {}

    def _audit(self, request, obj, verb: str, data: dict) -> None:
        from .services import audit_record

        meta = obj._meta
        audit_record(action=f"admin.{meta.model_name}.{verb}", target_type=meta.model_name,
                     target_id=getattr(obj, "slug", None) or getattr(obj, "prefix", None) or obj.pk,
                     actor=request.user, tenant_id=_tenant_id_of(obj), data=data)

    def _fields_data(self, obj, fields) -> dict:
        return {field: ("(secret)" if field in self.audit_exclude else _value(obj, field)) for field in fields}

    def save_model(self, request, obj, form, change):
        before = {}
        if change and obj.pk:
            previous = type(obj)._base_manager.filter(pk=obj.pk).first()
            if previous is not None:
                before = self._fields_data(previous, form.changed_data)
        super().save_model(request, obj, form, change)
        if change:
            if form.changed_data:
                after = self._fields_data(obj, form.changed_data)
                # Many-to-many values are saved after this (save_related): the form holds what they become.
                after.update({field: _names(form.cleaned_data[field]) for field in form.changed_data
                              if field in after and hasattr(getattr(obj, field, None), "all")})
                self._audit(request, obj, "update", {"before": before, "after": after})
        elif not getattr(self, "audit_create_elsewhere", False):
            self._audit(request, obj, "create", {"after": self._fields_data(obj, [name for name in form.fields
                                                                                  if hasattr(obj, name)])})

    def save_formset(self, request, form, formset, change):
        # Read before saving, as save_model does: an inline change (a membership's role) logged only the field's
        # name, so who had which role before could not be read from the log.
        before = {}
        for inline_form in formset.initial_forms:
            if inline_form.instance.pk and inline_form.has_changed():
                previous = type(inline_form.instance)._base_manager.filter(pk=inline_form.instance.pk).first()
                if previous is not None:
                    before[previous.pk] = previous
        super().save_formset(request, form, formset, change)
        for obj in formset.new_objects:
            self._audit(request, obj, "create", {"inline": True, "object": str(obj)})
        for obj, changed in formset.changed_objects:
            previous = before.get(obj.pk)
            self._audit(request, obj, "update", {
                "inline": True, "object": str(obj), "changed": list(changed),
                "before": self._fields_data(previous, changed) if previous is not None else {},
                "after": self._fields_data(obj, changed),
            })
        for obj in formset.deleted_objects:
            self._audit(request, obj, "delete", {"inline": True, "object": str(obj)})

    def get_deleted_objects(self, objs, request):
        # Rows that PROTECT the object (a tenant's runs, the runs a price version rated) block the delete anyway;
        # Django would load and list every one of them to say so, millions for a big tenant, in one request. One
        # EXISTS per kind of row says the same.
        relations = [rel for rel in self.model._meta.get_fields(include_hidden=True)
                     if rel.auto_created and not rel.concrete and getattr(rel, "on_delete", None) is models.PROTECT]
        held = [f"{obj}: {rel.related_model._meta.verbose_name_plural} refer to it"
                for obj in objs for rel in relations
                if rel.related_model._base_manager.filter(**{rel.field.name: obj}).exists()]
        if held:
            return [], {}, set(), held
        return super().get_deleted_objects(objs, request)

    def delete_model(self, request, obj):
        with transaction.atomic():  # Django's delete page is atomic already; the audit and the delete are one
            self._audit_deletion(request, [obj])
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        # The list's "delete selected" runs outside a transaction: a delete that failed (a run arrived meanwhile
        # and PROTECTs the tenant) left audit records of deletions that never happened.
        with transaction.atomic():
            self._audit_deletion(request, list(queryset))
            super().delete_queryset(request, queryset)

    # A row that PROTECTs the object can arrive after the confirmation page checked (a run ingested meanwhile):
    # the delete then raises ProtectedError inside its transaction, which rolls back the records with it. The
    # staff user gets the reason on the page they came from, not a 500.
    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except ProtectedError as refused:
            opts = self.model._meta
            change_url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[object_id],
                                 current_app=self.admin_site.name)
            return self._delete_refused(request, refused, change_url)

    def changelist_view(self, request, extra_context=None):
        try:
            return super().changelist_view(request, extra_context)
        except ProtectedError as refused:  # "delete selected"
            return self._delete_refused(request, refused, request.get_full_path())

    def _delete_refused(self, request, refused: ProtectedError, back_to: str) -> HttpResponseRedirect:
        kinds = sorted({str(type(row)._meta.verbose_name_plural) for row in refused.protected_objects})
        self.message_user(request, f"Nothing was deleted: rows referring to it arrived after the confirmation "
                                   f"({', '.join(kinds)}). Delete or move them first, then try again.",
                          messages.ERROR)
        return HttpResponseRedirect(back_to)

    def _audit_deletion(self, request, objs) -> None:
        """A delete record for each object and for each row listed in `audit_cascade` that goes with it.
        The objects' rows are locked first: on PostgreSQL a row inserted meanwhile that refers to one of them (a
        new key for the tenant) waits for the lock and then fails, so nothing is deleted without its record."""
        if self.audit_cascade:
            list(self.model._base_manager.select_for_update().filter(pk__in=[obj.pk for obj in objs]))
        for obj in objs:
            self._audit(request, obj, "delete", {"object": str(obj)})
            for accessor, fields in self.audit_cascade.items():
                related = getattr(obj, accessor).all()
                joined = [name for name in fields if related.model._meta.get_field(name).is_relation]
                for row in related.select_related(*joined).select_for_update(of=("self",)).order_by("pk"):
                    self._audit(request, row, "delete", {
                        "object": str(row), "deleted_with": f"{obj._meta.model_name} {obj}",
                        **self._cascade_fields(row, fields)})

    @staticmethod
    def _cascade_fields(row, fields) -> dict:
        data = {}
        for name in fields:
            value = getattr(row, name)
            if isinstance(value, models.Model):  # a user: the name to read, the id if it is renamed later
                data[name], data[f"{name}_id"] = str(value), value.pk
            else:
                data[name] = "" if value is None else str(value)
        return data


# Django's own user admin audited nothing: making someone staff or superuser, giving them a group or setting
# their password left no AuditEvent. The same admin, audited (the password by the fact, never its value); and
# the group admin, whose permissions every member gets.
admin.site.unregister(get_user_model())
admin.site.unregister(Group)


@admin.register(Group)
class AuditedGroupAdmin(AuditedAdminMixin, GroupAdmin):
    pass


@admin.register(get_user_model())
class AuditedUserAdmin(AuditedAdminMixin, UserAdmin):
    # A user deleted here takes their tenant memberships with them by cascade: each says who lost which access.
    audit_cascade = {"memberships": ("tenant", "role")}

    def user_change_password(self, request, id, form_url=""):
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:
            user = self.get_object(request, admin.utils.unquote(id))
            self._audit(request, user, "password", {"changed": ["password"]})
        return response
