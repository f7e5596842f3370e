"""Request id on every log line, a retryable 503 when the database is down, the viewer's timezone."""

import logging
import re
import uuid
import zoneinfo

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import JsonResponse
from django.utils import timezone

from .logging import request_id_var

logger = logging.getLogger(__name__)
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-Id", "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-Id"] = request_id
        return response


class ServiceUnavailableMiddleware:
    """A lost database connection is the server's problem, not the client's and not a bug: answer 503
    with Retry-After so well-behaved clients (the ingest SDKs, the billing system) try again."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, (OperationalError, InterfaceError)) or (
            isinstance(exception, DatabaseError) and "connection" in str(exception).lower()
        ):
            logger.warning("database unavailable: %s", exception)
            response = JsonResponse(
                {"error": {"code": "service_unavailable", "message": "Database unavailable; retry shortly."}},
                status=503,
            )
            response["Retry-After"] = "5"
            return response
        return None


class ViewerTimezoneMiddleware:
    """Pages show times in the viewer's timezone (a cookie set by the browser); storage stays UTC."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        name = request.COOKIES.get("tz", "")
        try:
            timezone.activate(zoneinfo.ZoneInfo(name)) if name else timezone.deactivate()
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            timezone.deactivate()
        return self.get_response(request)
