"""Form fields and form behaviour shared by the pages and the admin."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from .timeutils import EARLIEST_DAY, LATEST_DAY

DAY_OUT_OF_RANGE = f"Use a date from {EARLIEST_DAY:%b %-d, %Y} to {LATEST_DAY:%b %-d, %Y}."


class BoundedDateField(forms.DateField):
    """A UTC day from EARLIEST_DAY to LATEST_DAY, the API's bounds: pages add and subtract days from the ones
    asked for, and a day in year 1 or 9999 would overflow that arithmetic (a 500) instead of being refused."""

    def validate(self, value):
        super().validate(value)
        if value is not None and not EARLIEST_DAY <= value <= LATEST_DAY:
            raise ValidationError(DAY_OUT_OF_RANGE, code="out_of_range")


class SeenValuesFormMixin:
    """An edit form that also sends each value as the page showed it (a hidden `initial-` input per field), so a
    save can write only what this person changed and notice what someone else changed since the page was
    shown: saving every field of an older page put another person's edit back silently. Call
    `send_seen_values()` in __init__ (the form's data must be mutable: pass `request.POST.copy()` or let it copy)."""

    def send_seen_values(self) -> None:
        for field in self.fields.values():
            field.show_hidden_initial = True
        if self.is_bound and not getattr(self.data, "_mutable", True):
            self.data = self.data.copy()  # a refused field's seen value is replaced (refuse_changed_meanwhile)

    def sent_seen_value(self, name: str) -> bool:
        return self[name].html_initial_name in self.data

    def refuse_changed_meanwhile(self, names, stored) -> bool:
        """Mark each of these fields whose stored value is no longer the one the page showed, naming the value
        now stored; the page then shows that value as the one seen, so saving again replaces it knowingly."""
        refused = False
        for name in names:
            if not self.sent_seen_value(name):
                continue
            field, initial_name = self.fields[name], self[name].html_initial_name
            try:
                seen = field.to_python(field.hidden_widget().value_from_datadict(self.data, self.files, initial_name))
            except ValidationError:
                seen = None
            now = getattr(stored, name)
            if seen != now:
                shown = "empty" if now is None else ("on" if now is True else "off" if now is False else now)
                self.add_error(name, f"Someone else changed this to {shown} after you opened this page; save "
                                     f"again to replace it with your value.")
                self.data[initial_name] = "" if now is None else str(field.prepare_value(now))
                refused = True
        return refused
