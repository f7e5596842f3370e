"""Pieces every /api/v1/ read endpoint shares: cursor pagination, ETag handling, the error body's schema
and the query-parameter validation that names the offending field."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
from urllib import parse

import orjson
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Q
from django.http import HttpResponse
from django.utils.http import ETAG_MATCH, parse_etags, quote_etag
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.settings import api_settings
from rest_framework.utils.urls import replace_query_param

from apps.core.middleware import parameter_holds_nul
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


def cursor_token(payload: dict) -> str:
    """An opaque `cursor`: the payload as JSON in URL-safe base64."""
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode("ascii")


def cursor_payload(token: str) -> dict:
    """What cursor_token wrote into `token`; ValueError for anything it did not write, however well it decodes
    (another padding, other JSON spacing, not an object), and for a NUL anywhere in it: no stored text holds one,
    and PostgreSQL refuses it as a parameter (a 500, not the 400 a bad cursor is)."""
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (UnicodeError, binascii.Error, orjson.JSONDecodeError) as error:
        raise ValueError("not a cursor") from error
    if not isinstance(payload, dict) or cursor_token(payload) != token or _holds_nul(payload):
        raise ValueError("not a cursor")
    return payload


def _holds_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(map(_holds_nul, value))
    return False


def page_size(raw: str, maximum: int) -> int:
    """A `limit` query parameter: a whole number from 1 to `maximum`, or a serializers.ValidationError saying so
    (a typo must not pass silently as the default)."""
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= maximum:  # no 4,300-digit int()
        raise serializers.ValidationError(f"A whole number from 1 to {maximum:,}.")
    return int(raw)


class ApiCursorPagination(CursorPagination):
    """Opaque `cursor` links; `limit` from 1 to 500. A cursor is the position of the last row returned in every
    ordering field (keyset pagination), so a walk never repeats or skips a row whatever is inserted
    meanwhile. DRF's own cursor is a position in the first ordering field plus how many rows at that
    position were already returned: runs share `created_at` seconds, and a run inserted at that second
    shifted the count, so the next page repeated a run (a client summing costs counted it twice). Anything
    but a cursor this API wrote, or a `limit` that is not a whole number in range, is a 400 naming the
    parameter. Every ordering field must be non-null and the last one unique (views end on `id`, `slug`...)."""

    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500
    ordering = "-id"

    def _invalid_cursor(self) -> ValidationError:
        return ValidationError({self.cursor_query_param: "Invalid cursor; use the next/previous links as given."})

    def get_page_size(self, request):
        # DRF falls back to the default page size for a limit it cannot read; a typo should not pass silently.
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            return page_size(raw, self.max_page_size)
        except serializers.ValidationError as error:
            raise ValidationError({self.page_size_query_param: error.detail}) from error

    def _paginate(self, queryset, request, view=None):
        self.request = request
        self.page_size = self.get_page_size(request)
        self.base_url = request.build_absolute_uri()
        self.ordering = self.get_ordering(request, queryset, view)
        self._fields = [queryset.model._meta.get_field(name.lstrip("-")) for name in self.ordering]
        backwards, position = self.decode_cursor(request) or (False, None)
        rows, more = self._rows(queryset, backwards, position)
        if backwards and not rows:
            # Nothing before the cursor any more (those rows were deleted): the list now starts where the
            # cursor points, so this is its first page, not an empty one that would read as the end.
            backwards, position = False, None
            rows, more = self._rows(queryset, backwards, position)
        self.page = rows
        # Going forward there is a previous page once a cursor brought us here; coming back, there is a next one.
        self.has_next = more if not backwards else True
        self.has_previous = (position is not None) if not backwards else more
        return self.page

    def _rows(self, queryset, backwards: bool, position: list | None) -> tuple[list, bool]:
        """A page of rows in the list's order after (or, backwards, before) `position`, and whether more follow."""
        order = [name[1:] if name.startswith("-") else f"-{name}" for name in self.ordering] if backwards else list(self.ordering)
        queryset = queryset.order_by(*order)
        if position is not None:
            queryset = queryset.filter(self._after(order, position))
        rows = list(queryset[: self.page_size + 1])
        page = rows[: self.page_size]
        if backwards:
            page.reverse()
        return page, len(rows) > self.page_size

    def _after(self, order: list[str], position: list) -> Q:
        """Rows strictly after `position` in `order`: the first field's range inclusive (an index range
        PostgreSQL can scan), minus the rows of that first value not past the rest of the position."""
        name, value = order[0].lstrip("-"), position[0]
        beyond = "lt" if order[0].startswith("-") else "gt"
        inclusive = Q(**{f"{name}__{beyond}e": value})
        if len(order) == 1:
            return Q(**{f"{name}__{beyond}": value})
        return inclusive & (Q(**{f"{name}__{beyond}": value}) | (Q(**{name: value}) & self._after(order[1:], position[1:])))

    def _position(self, row) -> list:
        return [getattr(row, field.attname) for field in self._fields]

    def get_next_link(self):
        if not self.has_next or not self.page:
            return None
        return self._link(False, self._position(self.page[-1]))

    def get_previous_link(self):
        if not self.has_previous or not self.page:
            return None
        return self._link(True, self._position(self.page[0]))

    def _link(self, backwards: bool, position: list) -> str:
        values = [value.isoformat() if isinstance(value, dt.date) else value for value in position]
        return replace_query_param(self.base_url, self.cursor_query_param,
                                   cursor_token({"b": int(backwards), "p": values}))

    def decode_cursor(self, request) -> tuple[bool, list] | None:
        """(backwards, position in the ordering's fields) of the cursor given, None without one. A cursor is
        valid only if it is exactly what _link writes for what it decodes to."""
        given = request.query_params.get(self.cursor_query_param)
        if given is None:
            return None
        try:
            decoded = cursor_payload(given)
            backwards, values = decoded["b"], decoded["p"]
            if set(decoded) != {"b", "p"} or backwards not in (0, 1) or len(values) != len(self._fields):
                raise ValueError("not a cursor")
            position = [field.to_python(value) for field, value in zip(self._fields, values, strict=True)]
            if any(value is None for value in position):
                raise ValueError("not a cursor")
            if not all(map(self._written_by_us, self._fields, position)):
                raise ValueError("not a cursor")
            rewritten = parse.parse_qs(parse.urlsplit(self._link(bool(backwards), position)).query)
        except (ValueError, TypeError, KeyError, UnicodeError, OverflowError, DjangoValidationError, binascii.Error,
                orjson.JSONDecodeError) as error:
            raise self._invalid_cursor() from error
        if rewritten.get(self.cursor_query_param) != [given]:
            raise self._invalid_cursor()
        return bool(backwards), position

    @staticmethod
    def _written_by_us(field, value) -> bool:
        """Whether a value could be a stored row's: times in UTC (as the database gives them back), whole
        numbers in BIGINT's range, text within the column's length. A cursor holding anything else was not
        written by this API, however well it decodes."""
        if isinstance(value, dt.datetime):
            return value.utcoffset() == dt.timedelta(0)
        if isinstance(value, int):
            return -(2**63) <= value < 2**63
        if isinstance(value, str):
            return field.max_length is None or len(value) <= field.max_length
        return True

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return self._paginate(queryset, request, view)
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
IF_MATCH = OpenApiParameter(
    "If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description="The ETag of the state this change is based on (from a GET or an earlier write): the change is made "
                "only if the resource is still in that state, else 412. `*` matches any state. Without it the last "
                "write wins.",
)
ERROR_412 = {412: _error("Changed since the If-Match ETag was read (`precondition_failed`); nothing was changed. "
                         "GET it again, then decide and retry with the new ETag.")}


def etag_for(content: bytes) -> str:
    return quote_etag(hashlib.sha256(content).hexdigest())


def if_match_etags(request) -> frozenset[str] | None:
    """The ETags a write's If-Match header names ({"*"} for `*`), or None without the header. Read before the
    write, compared (if_match_passes) where the write holds its lock. A header that is not a list of quoted ETags
    is a 400 naming it: Django's parse_etags drops what it cannot read, and an unquoted ETag (a client that
    stripped the quotes) would otherwise be a 412 forever, however often the client read the resource again."""
    given = request.META.get("HTTP_IF_MATCH")
    if given is None:
        return None
    if given.strip() == "*":
        return frozenset({"*"})
    items = [item.strip() for item in given.split(",")]
    if not items or not all(ETAG_MATCH.fullmatch(item) for item in items):
        raise ValidationError({"If-Match": 'Send the ETag as the API gave it, in double quotes ("…"), or *.'})
    return frozenset(items)


def if_match_passes(wanted: frozenset[str], etag: str) -> bool:
    """Strong comparison, as RFC 9110 requires for If-Match: a weak ETag (W/"…") never matches, since it does not
    promise the same bytes. The API sends only strong ones."""
    return "*" in wanted or etag in wanted


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
    """200 with the content and a strong ETag, or 304 when If-None-Match already names it. `headers` go on
    both: a 304 stands for the 200 the client holds, and describes it as that would (X-Statement-Status)."""
    etag = etag_for(content)
    wanted = request.META.get("HTTP_IF_NONE_MATCH", "")
    candidates = {tag.removeprefix("W/") for tag in parse_etags(wanted)} if wanted else set()
    if "*" in candidates or etag in candidates:
        response = HttpResponse(status=304)
    else:
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


class KnownBodyFieldsMixin:
    """A request body's serializer: a field it does not know is a 400 naming it, with the fields it writes.
    Ignored, a typo was answered as if it had been applied: a price's `cached_input_usd_per_1m_typo` left cached
    tokens billed at the input price (201), a close's misspelt option closed the month for good without it.
    Read-only fields are known: a body read from the resource and sent back still passes."""

    def to_internal_value(self, data):
        errors = self.unknown_field_errors(data)
        if errors:
            raise serializers.ValidationError(errors)
        return super().to_internal_value(data)

    def unknown_field_errors(self, data) -> dict[str, list[str]]:
        if not hasattr(data, "keys"):  # not an object: the serializer's own error says so
            return {}
        writable = ", ".join(name for name, field in self.fields.items() if not field.read_only)
        return {name: [f"Unknown field; this endpoint writes {writable}."]
                for name in data.keys() if name not in self.fields}


def validate_query(serializer_class, request):
    """Validate query parameters; a ValidationError becomes the standard 400 naming the field."""
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class KnownQueryParametersMixin:
    """Every /api/v1/ view: a query parameter the endpoint does not read is a 400 naming it. Ignored, a billing
    client's typo answered for something else without a word: `?grup_by=end_user` summed by day, and
    `?ende=2026-11-15` summed to today. The check runs after authentication, permissions and throttling (so
    401/403/429 come first) and before the handler, so an unknown parameter answers the same 400 whether the
    tenant in the path exists, is visible to the key or not (nothing about it is disclosed).

    A parameter the endpoint reads but given more than once is a 400 naming it, at the same point: DRF reads
    the last value, so `?group_by=model&group_by=day` answered by day, and `?start=2026-01-01&start=` (an
    empty value counts as not given) answered for this month, when a client appended a parameter to a URL
    that already carried it.

    An endpoint reads the fields of its `query_serializer_class` (read them with `validated_query()`), its
    paginator's `cursor` and `limit`, and DRF's `format`."""

    query_serializer_class: type[serializers.Serializer] | None = None

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # OPTIONS describes the endpoint whatever it is asked, and a method the endpoint lacks is a 405 first.
        if request.method == "OPTIONS" or not hasattr(self, request.method.lower()):
            return
        known = self.query_parameter_names()
        given = request.query_params
        unknown_message = f"Unknown query parameter; this endpoint reads: {', '.join(sorted(known))}."
        errors = {}
        for name in sorted(given):  # the error's `field` is the first in name order
            if parameter_holds_nul(name, given.getlist(name)):
                errors[name] = ["Must not contain NUL characters."]
            elif name not in known:
                errors[name] = [unknown_message]
            elif len(given.getlist(name)) > 1:
                errors[name] = ["Query parameter given more than once; give it once."]
        if errors:
            raise ValidationError(errors)

    def query_parameter_names(self) -> set[str]:
        names = {api_settings.URL_FORMAT_OVERRIDE}
        if self.query_serializer_class is not None:
            names.update(self.query_serializer_class().fields)
        paginator = getattr(self, "paginator", None)  # GenericAPIView's; None without a pagination_class
        if paginator is not None:
            names.update({paginator.cursor_query_param, paginator.page_size_query_param})
        return names

    def validated_query(self) -> dict:
        return validate_query(self.query_serializer_class, self.request)
