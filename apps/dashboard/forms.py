"""Filters (always GET, so a filtered view is a shareable URL) and the tenant policy form (POST, CSRF)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError
from django.utils.html import conditional_escape as escape
from django.utils.safestring import mark_safe

from apps.core.forms import BoundedDateField, SeenValuesFormMixin
from apps.ledger.models import RunStatus
from apps.tenants.models import STAFF_POLICY_FIELDS, Tenant

DEFAULT_PERIOD_DAYS = 30
MAX_PERIOD_DAYS = 366


class PeriodForm(forms.Form):
    """An inclusive range of UTC days; defaults to the last 30 days ending today."""

    start = BoundedDateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = BoundedDateField(required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, data, *, today: dt.date, **kwargs):
        self.today = today
        # Fill the defaults into the data, so the inputs show the period actually displayed.
        data = data.copy() if data is not None else {}
        if not data.get("end"):
            data["end"] = today.isoformat()
        if not data.get("start"):
            try:
                # Read as the end field reads it (it also takes 10/01/2026): by ISO alone, such an end got a start
                # 30 days before today, and a 400 about a start nobody gave.
                start = self.base_fields["end"].to_python(data["end"]) - dt.timedelta(days=DEFAULT_PERIOD_DAYS - 1)
            except (ValidationError, OverflowError):  # the end field reports it
                start = today - dt.timedelta(days=DEFAULT_PERIOD_DAYS - 1)
            data["start"] = start.isoformat()
        # Written back as ISO when the fields read them: <input type="date"> shows nothing else, and a shared
        # ?start=10/01/2026 showed the right period over blank date pickers, whose Apply sent an empty start.
        for name in ("start", "end"):
            try:
                data[name] = self.base_fields[name].to_python(data[name]).isoformat()
            except (ValidationError, OverflowError):  # left as given: the field names it in its error
                pass
        super().__init__(data, **kwargs)

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        end = cleaned.get("end") or self.today
        start = cleaned.get("start") or end - dt.timedelta(days=DEFAULT_PERIOD_DAYS - 1)
        if start > end:
            raise ValidationError({"start": "Start must be on or before end."})
        if (end - start).days + 1 > MAX_PERIOD_DAYS:
            raise ValidationError({"start": f"A period can span at most {MAX_PERIOD_DAYS} days."})
        cleaned["start"], cleaned["end"] = start, end
        return cleaned

    def period(self) -> tuple[dt.date, dt.date]:
        if self.is_valid():
            return self.cleaned_data["start"], self.cleaned_data["end"]
        return self.today - dt.timedelta(days=DEFAULT_PERIOD_DAYS - 1), self.today


class ManyOptionsSelect(forms.Select):
    """A <select> that writes its options in Python. Django's Select renders every option through its own
    template include, ~30 µs each, after making a dict per option (optgroups, ~13 µs): the runs page's tenant
    filter lists every tenant, and at 1,000 tenants that was half of the page's 60 ms (issue #9). Same markup,
    less the whitespace between tags (a test compares), for string labels: unlike Django's template it does
    not localize numbers or dates."""

    def render(self, name, value, attrs=None, renderer=None):
        # Widget's context, not Select's: only the name, the value as strings and the attributes.
        widget = forms.Widget.get_context(self, name, value, attrs)["widget"]
        chosen, has_selected = widget["value"], False

        def option(option_value, label) -> str:
            nonlocal has_selected
            # As Select.optgroups: one option selected at most, the first whose value matches.
            selected = (not has_selected or self.allow_multiple_selected) and str(option_value) in chosen
            has_selected |= selected
            return f'<option value="{escape(option_value)}"{" selected" if selected else ""}>{escape(label)}</option>'

        html = [f'<select name="{escape(widget["name"])}"{_attributes(widget["attrs"])}>']
        for option_value, label in self.choices:
            if option_value is None:
                option_value = ""
            if isinstance(label, (list, tuple)):
                html.append(f'<optgroup label="{escape(option_value)}">')
                html.extend(option(sub_value, sub_label) for sub_value, sub_label in label)
                html.append("</optgroup>")
            else:
                html.append(option(option_value, label))
        html.append("</select>")
        return mark_safe("".join(html))  # every value above went through escape()


def _attributes(attrs: dict) -> str:
    # As django/forms/widgets/attrs.html writes them: in order, True as a bare name, False left out.
    return "".join(f" {escape(name)}" if value is True else f' {escape(name)}="{escape(value)}"'
                   for name, value in attrs.items() if value is not False)


class RunFilterForm(PeriodForm):
    # Not echoing the slug: an unknown tenant and one you may not see read the same.
    tenant = forms.ChoiceField(required=False, widget=ManyOptionsSelect,
                               error_messages={"invalid_choice": "No such tenant."})
    model = forms.ChoiceField(required=False, widget=ManyOptionsSelect)
    feature = forms.ChoiceField(required=False, widget=ManyOptionsSelect)
    status = forms.ChoiceField(required=False, choices=[("", "any status"), *RunStatus.choices])
    min_cost = forms.DecimalField(
        required=False, min_value=Decimal("0"), max_digits=14, decimal_places=6, label="Minimum cost (USD)",
        help_text="Empty: runs over their tenant's high-cost threshold.",
        widget=forms.NumberInput(attrs={"step": "0.01", "inputmode": "decimal", "placeholder": "tenant threshold"}),
    )

    field_order = ["tenant", "model", "feature", "status", "start", "end", "min_cost"]

    def __init__(self, data, *, today: dt.date, tenant_slugs: list[str], models: list[str], features: list[str], **kwargs):
        super().__init__(data, today=today, **kwargs)
        # Keep a value from a shared URL selectable even if the period has no such runs any more.
        self.fields["tenant"].choices = [("", "all tenants"), *((slug, slug) for slug in tenant_slugs)]
        self.fields["model"].choices = [("", "all models"), *((m, m) for m in _with(models, data.get("model")))]
        self.fields["feature"].choices = [("", "all features"), *((f, f) for f in _with(features, data.get("feature")))]


def _with(values: list[str], extra: str | None) -> list[str]:
    return sorted({*values, extra}) if extra else values


class TenantSearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=100, label="Search tenants",
                        widget=forms.SearchInput(attrs={"placeholder": "name or slug"}))




class TenantPolicyForm(SeenValuesFormMixin, forms.ModelForm):
    class Meta:
        model = Tenant
        fields = STAFF_POLICY_FIELDS
        labels = {
            "monthly_budget_usd": "Monthly budget (USD)",
            "high_cost_run_usd": "High-cost run threshold (USD)",
            "thread_retention_days": "Delete threads idle for (days)",
            "vector_store_idle_days": "Delete vector stores idle for (days)",
            "markup_percent": "Markup on statements (%)",
        }
        help_texts = {
            "monthly_budget_usd": "This month's spend at cost, before any markup; alerts at 50%, 80% and 100%. "
                                  "Empty: no budget alerts.",
            "archive_before_delete": "Copy a thread's messages/items into RunLedger before deleting it at OpenAI; "
                                     "download the copy from the deletion audit.",
        }

    def __init__(self, *args, staff: bool, **kwargs):
        super().__init__(*args, **kwargs)
        if not staff:
            del self.fields["markup_percent"]
        # The model's validators hold the bounds; the browser's number inputs should say the same (a positive
        # integer field's own min is 0, which the server then refuses).
        for name in ("thread_retention_days", "vector_store_idle_days"):
            self.fields[name].widget.attrs["min"] = 1
        self.send_seen_values()

    def changes(self) -> dict:
        """The fields this person changed (every field when the page's values were not sent, as before)."""
        return {name: self.cleaned_data[name] for name in self.fields
                if not self.sent_seen_value(name) or name in self.changed_data}

    def refuse_changes_made_meanwhile(self, stored: Tenant) -> bool:
        """Refuse each field this person changed that someone else changed too since the page was shown."""
        return self.refuse_changed_meanwhile(self.changes(), stored)


class AlertFilterForm(forms.Form):
    """The alerts page's filters: open alerts by default (acknowledged ones are still open: nobody fixed them)."""

    STATES = [("open", "open"), ("unacknowledged", "unacknowledged"), ("resolved", "resolved"), ("all", "all")]
    state = forms.ChoiceField(required=False, choices=STATES, initial="open")
    kind = forms.ChoiceField(required=False)
    # Not echoing the slug: an unknown tenant and one you may not see read the same.
    tenant = forms.ChoiceField(required=False, widget=ManyOptionsSelect,
                               error_messages={"invalid_choice": "No such tenant."})

    def __init__(self, data, *, tenant_slugs: list[str], every_kind: bool = True, **kwargs):
        """`every_kind`: offer the kinds that belong to no tenant too (staff); a tenant's members never see
        those alerts, so filtering on one could only ever show them an empty list."""
        from apps.alerts.models import Alert

        super().__init__(data, **kwargs)
        kinds = [kind for kind in Alert.Kind.values if every_kind or kind not in Alert.KINDS_WITHOUT_TENANT]
        self.fields["kind"].choices = [("", "all kinds"), *((kind, kind.replace("_", " ")) for kind in kinds)]
        self.fields["tenant"].choices = [("", "all tenants"), *((slug, slug) for slug in tenant_slugs)]

    def clean_state(self) -> str:
        return self.cleaned_data.get("state") or "open"
