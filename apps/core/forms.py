"""Form fields shared by the pages."""

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
