"""Pieces every /api/v1/ read endpoint shares: cursor pagination, ETag handling, the error body's schema
and the query-parameter validation that names the offending field."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from urllib import parse

import orjson
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse
from django.utils.http import parse_etags, quote_etag
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.pagination import CursorPagination

from apps.core.timeutils import EARLIEST_DAY, LATEST_DAY


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes `Authorization: Bearer rl_…` in the OpenAPI schema (for every view using the API-key auth)."""

    target_class = "apps.tenants.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "rl_<prefix>_<secret>",
            "description": "An API key: scope billing (reads), admin (reads and writes) or ingest (ingest only); "
                           "a key bound to a tenant sees only that tenant.",
        }


class Conflict(APIException):
    status_code = 409
    default_detail = "Conflicts with the current state."
    default_code = "conflict"


class ApiCursorPagination(CursorPagination):
    """Opaque `cursor` links; `limit` from 1 to 500. Stable under inserts, unlike page numbers. Anything but a
    cursor this API wrote, or a `limit` that is not a whole number in range, is a 400 naming the parameter."""

    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500
    ordering = "-id"
    # A cursor is a position in the first ordering field plus how many rows at that position were already
    # returned. OpenAI's created_at has whole seconds, and a busy organisation can start more than DRF's
    # default 1,000 runs in one second: past the cap the offset was cut and pages repeated rows forever. The
    # cap stays (a crafted cursor's OFFSET costs a scan of that many rows), at ten times DRF's.
    offset_cutoff = 10_000

    def _invalid_cursor(self) -> ValidationError:
        return ValidationError({self.cursor_query_param: "Invalid cursor; use the next/previous links as given."})

    def get_page_size(self, request):
        # DRF falls back to the default page size for a limit it cannot read; a typo should not pass silently.
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= self.max_page_size:  # no 4,300-digit int()
            raise ValidationError({self.page_size_query_param: f"A whole number from 1 to {self.max_page_size}."})
        return int(raw)

    def decode_cursor(self, request):
        # DRF answers some garbled cursors with 404 and reads others (base64 that skips bad characters, unknown
        # keys) as the first page. A cursor is valid only if it is exactly what encode_cursor writes for what
        # it decodes to; anything else is bad input.
        given = request.query_params.get(self.cursor_query_param)
        try:
            cursor = super().decode_cursor(request)
        except NotFound as error:
            raise self._invalid_cursor() from error
        if cursor is None:
            return None
        written = parse.parse_qs(parse.urlsplit(self.encode_cursor(cursor)).query).get(self.cursor_query_param)
        if written != [given] or "\x00" in (cursor.position or ""):
            raise self._invalid_cursor()
        return cursor

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except (DjangoValidationError, ValueError, OverflowError) as error:
            # A well-formed cursor whose position is not a value of the ordering field (a crafted one).
            if request.query_params.get(self.cursor_query_param) is None:
                raise
            raise self._invalid_cursor() from error


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    field = serializers.CharField(required=False)
    details = serializers.JSONField(required=False)


ErrorSerializer = inline_serializer("Error", fields={"error": ErrorDetailSerializer()})


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


ERROR_400 = {400: _error("Invalid input; `error.field` names the offending field.")}
ERROR_401 = {401: _error("No API key, or an unknown or revoked one.")}
ERROR_403 = {403: _error("The key's scope does not allow this.")}
ERROR_404 = {404: _error("Not found, or outside the key's tenant (the two are indistinguishable).")}
ERROR_409 = {409: _error("Conflicts with the current state.")}
ERROR_429 = {429: _error("Rate limit of this API key exceeded; retry after the Retry-After header's seconds.")}
READ_ERRORS = {**ERROR_401, **ERROR_403, **ERROR_429}

IF_NONE_MATCH = OpenApiParameter(
    "If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description="An ETag from an earlier response: 304 Not Modified when the content is unchanged.",
)
NOT_MODIFIED = {304: OpenApiResponse(description="Not modified (the If-None-Match ETag still matches).")}


def etag_for(content: bytes) -> str:
    return quote_etag(hashlib.sha256(content).hexdigest())


def json_bytes(data) -> bytes:
    """What DRF's JSONRenderer renders for plain JSON data (dicts, lists, str, int, bool, None): compact,
    UTF-8, with U+2028 and U+2029 escaped as it does — by orjson, ten times faster on a usage document of
    thousands of lines. Anything orjson refuses (an integer past 64 bits, a lone surrogate) goes through DRF's
    renderer, or, for what that cannot encode either, json.dumps with every non-ASCII character escaped."""
    try:
        content = orjson.dumps(data)
    except TypeError:
        from rest_framework.renderers import JSONRenderer

        try:
            return JSONRenderer().render(data)
        except UnicodeEncodeError:
            # A lone surrogate echoed from the request (an ingested id or field name cannot be stored, but the
            # answer names it): written as a \u escape, the answer is still JSON.
            return json.dumps(data, separators=(",", ":"), cls=DjangoJSONEncoder).encode()
    # U+2028 and U+2029 are E2 80 A8 and E2 80 A9 in UTF-8. Looking for the byte E2 alone is a memchr
    # (0.02 ms on a 1.3 MB usage document); the two replaces copy the document twice (2 ms) even when they
    # find nothing, which is almost always.
    if b"\xe2" not in content:
        return content
    return content.replace("\u2028".encode(), b"\\u2028").replace("\u2029".encode(), b"\\u2029")


def etag_response(request, content: bytes, content_type: str, *, headers: dict | None = None) -> HttpResponse:
    """200 with the content and a strong ETag, or 304 when If-None-Match already names it."""
    etag = etag_for(content)
    wanted = request.META.get("HTTP_IF_NONE_MATCH", "")
    if wanted:
        candidates = {tag.removeprefix("W/") for tag in parse_etags(wanted)}
        if "*" in candidates or etag in candidates:
            response = HttpResponse(status=304)
            response["ETag"] = etag
            response["Cache-Control"] = "private, no-cache"
            return response
    response = HttpResponse(content, content_type=content_type)
    response["ETag"] = etag
    response["Cache-Control"] = "private, no-cache"
    for name, value in (headers or {}).items():
        response[name] = value
    return response


_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # [0-9]: \d also takes other scripts' digits ("２０２６")
_OUT_OF_RANGE = f"Use a date from {EARLIEST_DAY.isoformat()} to {LATEST_DAY.isoformat()}."


class LenientDateField(serializers.DateField):
    """A YYYY-MM-DD date (EARLIEST_DAY to LATEST_DAY) whose error message says which format is expected."""

    default_error_messages = {"invalid": "Use a date as YYYY-MM-DD.", "datetime": "Use a date as YYYY-MM-DD, not a datetime.",
                              "range": _OUT_OF_RANGE}

    def __init__(self, **kwargs):
        kwargs.setdefault("input_formats", ["%Y-%m-%d"])
        super().__init__(**kwargs)

    def to_internal_value(self, value):
        day = super().to_internal_value(value)
        if isinstance(value, str) and not _ISO_DAY.fullmatch(value.strip()):  # strptime also takes 2026-3-1
            self.fail("invalid")
        if not EARLIEST_DAY <= day <= LATEST_DAY:
            self.fail("range")
        return day


@extend_schema_field(OpenApiTypes.STR)
class DateOrDateTimeField(serializers.Field):
    """YYYY-MM-DD (midnight UTC) or an ISO 8601 datetime (naive means UTC)."""

    default_error_messages = {"invalid": "Use a date (YYYY-MM-DD) or an ISO 8601 datetime.", "range": _OUT_OF_RANGE}

    def to_internal_value(self, data):
        text = str(data).strip()
        try:
            if len(text) == 10:
                if not _ISO_DAY.fullmatch(text):  # fromisoformat also reads week dates (2026-W09-1)
                    raise ValueError(text)
                day = dt.date.fromisoformat(text)
                moment = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            else:
                moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail("invalid")
        moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
        try:
            in_range = EARLIEST_DAY <= moment.astimezone(dt.UTC).date() <= LATEST_DAY
        except OverflowError:  # 9999-12-31T23:00-05:00 is in year 10000 in UTC
            in_range = False
        if not in_range:
            self.fail("range")
        return moment

    def to_representation(self, value):
        return value.isoformat()


def validate_query(serializer_class, request):
    """Validate query parameters; a ValidationError becomes the standard 400 naming the field."""
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
