"""Cells of the CSV exports (dashboard tables, billing statements): one rule for how values read in a
spreadsheet, and for keeping text that ingest recorded (model names, features, ids) from running as a formula."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.http import JsonResponse
from django.utils import timezone

from .money import usd_string


def csv_value(value, kind: str) -> str:
    """Exact values for spreadsheets: full-precision money, ISO 8601 times in the viewer's timezone."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return usd_string(value) if kind in {"money", "price"} else format(value.normalize(), "f")
    if isinstance(value, dt.datetime):
        return timezone.localtime(value).isoformat() if timezone.is_aware(value) else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " ".join(csv_value(item, "text") for item in value)
    text = str(value)
    # Spreadsheet formula injection: a cell starting with = + - @ would be evaluated by Excel/Sheets.
    if text[:1] in {"=", "+", "-", "@", "\t", "\r"} and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except Exception:
        return False
    return True


def invalid_export_response(field: str, message: str) -> JsonResponse:
    """A CSV export's answer to filters it cannot honour: 400 naming the field (docs/ui.md), never the rows of
    other filters."""
    return JsonResponse({"error": {"code": "invalid", "message": message, "field": field}}, status=400)


def invalid_form_export_response(form) -> JsonResponse:
    """invalid_export_response for the first field of a filter form that does not validate."""
    field, errors = next(iter(form.errors.items()))
    return invalid_export_response(field, errors[0])
