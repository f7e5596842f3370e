"""API plumbing every app shares: the one error body shape, and a 404 that never says whose an object is.

Every error is `{"error": {"code", "message", "field"?}}` with the right 4xx status; validation errors
name the first offending field (dotted for nested fields) and carry all of them in `details`."""

import logging

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, parsers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def _first_field_error(detail, prefix: str = "") -> tuple[str | None, str]:
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = key if not prefix else f"{prefix}.{key}"
            if key == "non_field_errors":
                name = prefix or None
            return _first_field_error(value, name or "")
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)):
                return _first_field_error(value, f"{prefix}.{index}" if prefix else str(index))
            return (prefix or None), str(value)
    return (prefix or None), str(detail)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with a body nested deeper than Python's parser can follow (a 2 KB body of a
    thousand `[`) answered like any other unreadable body, a 400 parse_error: DRF catches only ValueError,
    and the RecursionError was a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the body is nested too deeply") from None


def error_body(code: str, message: str, field: str | None = None, **extra) -> dict:
    error = {"code": code, "message": message}
    if field:
        error["field"] = field
    error.update(extra)
    return {"error": error}


def exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        field, message = _first_field_error(exc.detail)
        response.data = error_body("invalid", message, field, details=exc.detail)
    else:
        code = getattr(exc, "default_code", "error")
        detail = getattr(exc, "detail", str(exc))
        response.data = error_body(str(getattr(detail, "code", code) or code), str(detail))
    return response


def not_found() -> Response:
    return Response(error_body("not_found", "Not found."), status=status.HTTP_404_NOT_FOUND)
