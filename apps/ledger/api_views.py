"""`POST /api/v1/ingest/`: the customer's application reports runs, responses and the resources it creates.

The body is parsed by hand (no DRF parser or per-field serializer): one orjson.loads (several times faster
than json.loads on a 1,000-event body), a size check before reading, and clear 4xx answers naming what is
wrong. Per-event validation happens in ingest_events."""

from __future__ import annotations

import json

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api import error_body
from apps.core.api_support import KnownQueryParametersMixin, json_bytes
from apps.tenants.authentication import CanIngest

from .services import ingest_events


class _RawBodyParser(BaseParser):
    """Parses nothing: the view checks the content type and reads request.body itself."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return None


def _is_json(content_type: str) -> bool:
    """`application/json` or a `+json` type, any parameters (`; charset=utf-8`): what every other write accepts."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


_event_schema = inline_serializer(
    name="IngestEvent",
    fields={
        "tenant": serializers.CharField(required=False, help_text="Tenant slug; may be omitted when "
                                        "object.metadata.tenant names it, or when the key is bound to a tenant."),
        "object": serializers.JSONField(help_text="The run (thread.run), response, thread, conversation, vector_store, "
                                        "file or container exactly as OpenAI returned it."),
        "attribution": inline_serializer(name="IngestAttribution", required=False, fields={
            "user_id": serializers.CharField(required=False),
            "session_id": serializers.CharField(required=False),
            "feature": serializers.CharField(required=False),
        }),
        "steps": serializers.ListField(child=serializers.JSONField(), required=False,
                                       help_text="Optional run steps of an Assistants run, for exact tool counts."),
        "openai_project": serializers.CharField(required=False, help_text="OpenAI project id. Left out: a run "
                                                "first seen keeps the server's OPENAI_PROJECT_ID, a recorded one "
                                                "stays where it is."),
    },
)
_request_schema = inline_serializer(
    name="IngestRequest", fields={"events": serializers.ListField(child=_event_schema, max_length=1000)}
)
_result_schema = inline_serializer(
    name="IngestEventResult",
    fields={
        "index": serializers.IntegerField(),
        "id": serializers.CharField(allow_null=True),
        "outcome": serializers.ChoiceField(choices=["created", "updated", "unchanged", "rejected"]),
        "error": inline_serializer(name="IngestEventError", required=False, fields={
            "field": serializers.CharField(required=False), "message": serializers.CharField(),
        }),
    },
)
_response_schema = inline_serializer(
    name="IngestResponse",
    fields={
        "created": serializers.IntegerField(), "updated": serializers.IntegerField(),
        "unchanged": serializers.IntegerField(), "rejected": serializers.IntegerField(),
        "results": serializers.ListField(child=_result_schema),
    },
)
_error_schema = inline_serializer(
    name="IngestError",
    fields={"error": inline_serializer(name="IngestErrorBody", fields={
        "code": serializers.CharField(), "message": serializers.CharField(), "field": serializers.CharField(required=False),
    })},
)


class IngestView(KnownQueryParametersMixin, APIView):
    permission_classes = [CanIngest]
    parser_classes = [_RawBodyParser]

    @extend_schema(
        operation_id="ingest_events",
        summary="Record runs, responses and resources",
        description=(
            "Up to INGEST_MAX_EVENTS (1,000) events per request. Idempotent on the OpenAI id: the same object twice "
            "changes nothing, a later state of a run updates it (and the rollups by the difference), an older state "
            "never overwrites a newer one. A bad event is rejected with its index, field and reason while the good "
            "ones are stored. A tenant-bound key may only write its own tenant. 413 for bodies over "
            "INGEST_MAX_BODY_BYTES or too many events; 400 for malformed JSON."
        ),
        request=_request_schema,
        responses={
            200: _response_schema,
            400: OpenApiResponse(_error_schema, description="Malformed body (not JSON, not UTF-8, no events list)."),
            401: OpenApiResponse(_error_schema, description="Missing or unknown API key."),
            403: OpenApiResponse(_error_schema, description="The key's scope does not allow ingesting."),
            411: OpenApiResponse(_error_schema, description="A chunked body without Content-Length (every write)."),
            413: OpenApiResponse(_error_schema, description="Body or event count over the limit."),
            415: OpenApiResponse(_error_schema, description="A Content-Type other than application/json."),
            # Ingest is the endpoint most likely to meet the per-key rate limit: a client generated from the
            # schema must know to wait and re-send.
            429: OpenApiResponse(_error_schema, description="Rate limit of this API key exceeded; re-send the "
                                 "batch after the Retry-After header's seconds."),
        },
        examples=[OpenApiExample("One run", request_only=True, value={"events": [{
            "tenant": "acme", "attribution": {"user_id": "u_42", "feature": "doc-qa"},
            "object": {"id": "run_abc", "object": "thread.run", "created_at": 1764000000, "thread_id": "thread_abc",
                       "assistant_id": "asst_1", "status": "completed", "model": "gpt-5.4",
                       "usage": {"prompt_tokens": 20000, "completion_tokens": 500, "total_tokens": 20500},
                       "metadata": {}, "tools": []},
        }]})],
        tags=["ingest"],
    )
    def post(self, request):
        if not _is_json(request.content_type or ""):
            # As on every other write (DRF's JSON parser): `curl -d @batch.json` without a header sends a form
            # type, and a client that says form or multipart is not sending what this endpoint reads.
            return Response(
                error_body("unsupported_media_type", f'Unsupported media type "{request.content_type}" in request; '
                           "send the events as JSON with Content-Type: application/json.", "Content-Type"),
                status=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            )
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if limit and declared > limit:
            return _too_large(f"The body is over {limit} bytes; send fewer events per request.")
        try:
            body = request.body
        except RequestDataTooBig:
            return _too_large(f"The body is over {limit} bytes; send fewer events per request.")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            # orjson refuses a few bodies json accepts (lone surrogate escapes, numbers past a float such as
            # 1e400, read as inf: ingest rejects either per event instead, naming the field); json also gives the
            # precise message for a malformed body.
            payload = _UNPARSED
        if payload is _UNPARSED:
            try:
                payload = _loads_slow(body)
            except _NotUtf8 as exc:
                return _bad_request(f"The body is not valid UTF-8 (byte {exc.start}).", "body")
            except json.JSONDecodeError as exc:
                return _bad_request(f"The body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.",
                                    "body")
            except (ValueError, RecursionError) as exc:
                return _bad_request(f"The body is not valid JSON: {exc}.", "body")
        if not isinstance(payload, dict):
            return _bad_request('The body must be a JSON object: {"events": [...]}.', "body")
        events = payload.get("events")
        if not isinstance(events, list):
            return _bad_request("Required: a list of events.", "events")
        unknown = sorted(set(payload) - {"events"})
        if unknown:
            return _bad_request("Unknown field.", unknown[0])
        if len(events) > settings.INGEST_MAX_EVENTS:
            return Response(
                error_body("too_many_events", f"At most {settings.INGEST_MAX_EVENTS} events per request; got "
                           f"{len(events)}.", "events"),
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        result = ingest_events(events=events, key_tenant=request.auth.tenant if request.auth.tenant_id else None)
        # orjson (json_bytes), not DRF's renderer: a thousand results render in a tenth of the time (about 0.3 ms
        # vs 3 ms); an answer naming a lone surrogate the request sent still renders.
        return HttpResponse(json_bytes(result.as_dict()), content_type="application/json", status=status.HTTP_200_OK)


_UNPARSED = object()


class _NotUtf8(Exception):
    def __init__(self, start: int):
        super().__init__(start)
        self.start = start


def _loads_slow(body: bytes):
    """The standard library's parser: the reference behaviour for anything orjson refuses."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _NotUtf8(exc.start) from None
    return json.loads(text, parse_constant=_reject_constant)


def _bad_request(message: str, field: str | None) -> Response:
    return Response(error_body("invalid", message, field), status=status.HTTP_400_BAD_REQUEST)


def _too_large(message: str) -> Response:
    return Response(error_body("too_large", message, "body"), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
