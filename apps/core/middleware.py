"""Request id on every log line, /healthz for health checks whatever the host, NUL characters and unread chunked bodies refused, a retryable 503 when the
database is down, the viewer's timezone."""

import logging
import re
import uuid
import zoneinfo

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.utils import timezone

from .logging import request_id_var

logger = logging.getLogger(__name__)
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def is_api_request(request) -> bool:
    """A request to the REST API (everything under /api/): it answers in the API's JSON error shape and
    writes times in UTC, whatever the pages do."""
    return request.path_info.startswith("/api/")


def parameter_holds_nul(name: str, values) -> bool:
    """Whether a query or form parameter's name or any of its values holds a NUL character, which PostgreSQL
    refuses in a query (psycopg raises before sending it: a 500). NulRefusedMiddleware asks it of a page's
    parameters, KnownQueryParametersMixin of the REST API's."""
    return "\x00" in name or any("\x00" in value for value in values)


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


class NulRefusedMiddleware:
    """No page or endpoint takes a NUL character, and PostgreSQL refuses one in a query (psycopg raises before
    sending it: a 500). So it is refused here, once for every view: in the path, 404 like any other unknown
    value; in a page's query or form parameter, 400 naming the parameter. API paths answer in the API's error
    shape; the REST API's own query parameters are checked by its views, after authentication."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        api = is_api_request(request)
        if "\x00" in request.path:
            if api:
                return JsonResponse({"error": {"code": "not_found", "message": "Not found."}}, status=404)
            raise Http404("Not found.")
        # Form fields only on pages, which post forms: the API reads its own bodies (ingest takes the raw body
        # whatever its content type, and parsing it here as a form consumed or misread it). The REST API's
        # views check their query parameters themselves, after authentication (KnownQueryParametersMixin):
        # a 401, 403 or 429 comes first there (docs/api.md).
        form = request.method == "POST" and not api
        query = not request.path_info.startswith("/api/v1/")
        for params in (*([request.GET] if query else []), *([request.POST] if form else [])):
            for name, values in params.lists():
                if parameter_holds_nul(name, values):
                    message = f"{name!r} must not contain NUL characters."
                    if api:
                        return JsonResponse({"error": {"code": "invalid", "message": message, "field": name}},
                                            status=400)
                    return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


class LengthRequiredMiddleware:
    """A chunked request body without a Content-Length is refused with 411, and a Content-Length that is not
    a whole number of bytes with 400. Django reads a WSGI body only up to its Content-Length, so behind a
    server that passes chunked bodies on (gunicorn) such a body read as empty: a PATCH answered 200 having
    changed nothing (a requested legal hold silently not set), ingest said "not valid JSON". Every client
    library sends Content-Length when asked to. An unreadable length (`abc`, `13, 13`) read as no body too,
    and reading the body then raised (a 500 from ingest)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared <= 0:
                message = "Send the body with a Content-Length header; chunked request bodies are not read."
                if is_api_request(request):
                    return JsonResponse({"error": {"code": "length_required", "message": message, "field": "body"}},
                                        status=411)
                return HttpResponse(message, status=411, content_type="text/plain; charset=utf-8")
        declared_length = request.META.get("CONTENT_LENGTH") or ""
        if declared_length and not (declared_length.isascii() and declared_length.isdigit()):
            message = "Content-Length must be the body's size as a whole number of bytes."
            if is_api_request(request):
                return JsonResponse({"error": {"code": "invalid", "message": message, "field": "Content-Length"}},
                                    status=400)
            return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


def _database_unavailable(exception: Exception) -> HttpResponse | None:
    """The 503 (with Retry-After) for an exception that says the database cannot be reached, else None."""
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


class HealthCheckMiddleware:
    """/healthz, answered before the host check and the HTTPS redirect of the middleware after this one. Health
    checks call it by address over plain HTTP (docker-compose's asks http://127.0.0.1:8000/healthz inside the
    web container): production answered them 400, 127.0.0.1 not being an allowed host (or, allowed, a redirect
    to https), so the web container never read healthy. It tells nothing but that the app reaches its database."""

    def __init__(self, get_response):
        self.get_response = get_response
        # Answered here, the response skips every middleware after this one, and with them the headers the
        # rest of the site carries (HSTS, nosniff, Referrer-Policy, COOP, X-Frame-Options, Content-Length).
        # Their response halves read neither the host nor the scheme's redirect: run those here.
        self._header_steps = (SecurityMiddleware(get_response).process_response,
                              XFrameOptionsMiddleware(get_response).process_response)

    def __call__(self, request):
        if request.path_info != "/healthz" or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        from .views import healthz  # views import this module's helpers

        try:
            response = healthz(request)
        except DatabaseError as exc:
            response = _database_unavailable(exc)
            if response is None:
                raise
        for step in self._header_steps:
            response = step(request, response)
        response.headers.setdefault("Content-Length", str(len(response.content)))  # as CommonMiddleware sets it
        return response


class ServiceUnavailableMiddleware:
    """A lost database connection is the server's problem, not the client's and not a bug: answer 503
    with Retry-After so well-behaved clients (the ingest SDKs, the billing system) try again."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        return _database_unavailable(exception)


class ViewerTimezoneMiddleware:
    """Pages show times in the viewer's timezone (a cookie set by the browser); storage stays UTC. The API
    always writes UTC (docs/api.md): a caller on the dashboard's origin (the Swagger page's "Try it out")
    carries the cookie too, and a billing client must not get other offsets from it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        name = "" if is_api_request(request) else request.COOKIES.get("tz", "")
        try:
            timezone.activate(zoneinfo.ZoneInfo(name)) if name else timezone.deactivate()
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            timezone.deactivate()
        return self.get_response(request)
