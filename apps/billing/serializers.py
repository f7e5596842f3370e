"""Query-parameter validation and response shapes of the billing API (usage, runs, statements, reconciliation)."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.api_support import (
    DateOrDateTimeField,
    KnownBodyFieldsMixin,
    LenientDateField,
    cursor_payload,
    cursor_token,
    page_size,
)
from apps.core.money import usd_string
from apps.core.timeutils import month_start, next_month
from apps.ledger import selectors as ledger_selectors
from apps.ledger.models import Run, RunStatus
from apps.ledger.selectors import USAGE_GROUPINGS

from . import selectors
from .selectors import MAX_USAGE_DAYS


@extend_schema_field({"type": "string", "format": "decimal", "example": "12.3456"})
class MoneyField(serializers.Field):
    """A Decimal amount as a decimal string ("0.0175"); read-only."""

    def __init__(self, **kwargs):
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value):
        return usd_string(value)


# --- usage ----------------------------------------------------------------------------------------------


MAX_USAGE_LINES_PER_PAGE = 10_000


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_USAGE_LINES_PER_PAGE})
class UsageLimitField(serializers.Field):
    """How many lines a page holds, 1 to MAX_USAGE_LINES_PER_PAGE; empty or absent: every line in one answer."""

    def to_internal_value(self, data):
        return page_size(str(data), MAX_USAGE_LINES_PER_PAGE)


def usage_cursor(group_by: str, start: dt.date, end: dt.date, after_key: str) -> str:
    """The opaque `cursor` of the page after the line keyed `after_key` (keys are unique and sorted) of a query
    grouped by `group_by` over [start, end): a key means nothing in another grouping, and the next keys of another
    period are not the rest of this one's lines (a client that changed its dates between pages would add up
    lines of two periods without a word)."""
    return cursor_token({"group_by": group_by, "start": start.isoformat(), "end": end.isoformat(), "after": after_key})


_USAGE_CURSOR_KEYS = {"group_by", "start", "end", "after"}


@extend_schema_field({"type": "string"})
class UsageCursorField(serializers.Field):
    """A cursor as usage_cursor writes it (UsageQuerySerializer checks its grouping and period against the query's)."""

    def to_internal_value(self, data):
        try:
            payload = cursor_payload(str(data))
            if set(payload) != _USAGE_CURSOR_KEYS or not all(isinstance(value, str) for value in payload.values()):
                raise ValueError("not a usage cursor")
        except ValueError as error:
            raise serializers.ValidationError("Invalid cursor; use the next link as given.") from error
        return payload


class UsageQuerySerializer(serializers.Serializer):
    start = LenientDateField(required=False, help_text="First UTC day, inclusive (default: first day of this month).")
    end = LenientDateField(required=False, help_text="UTC day after the last one, exclusive (default: first day of next month).")
    group_by = serializers.ChoiceField(choices=USAGE_GROUPINGS, default="day", help_text="How lines are grouped.")
    limit = UsageLimitField(required=False, help_text=(
        f"Lines per page, 1 to {MAX_USAGE_LINES_PER_PAGE:,} (default: every line in one answer). The totals are "
        "always the whole period's; `next` links to the page after."))
    cursor = UsageCursorField(required=False, help_text="From the `next` link of the page before; needs `limit`.")

    def validate(self, attrs):
        today = timezone.now().date()
        start = attrs.get("start") or month_start(today)
        end = attrs.get("end") or (next_month(start) if "start" in attrs else next_month(today))
        if start >= end:
            raise serializers.ValidationError({"end": "end must be after start (end is exclusive)."})
        if (end - start).days > MAX_USAGE_DAYS:
            raise serializers.ValidationError({"end": f"The range may span at most {MAX_USAGE_DAYS} days."})
        cursor = attrs.get("cursor")
        if cursor is not None:
            if "limit" not in attrs:
                raise serializers.ValidationError({"limit": "A cursor pages: give the limit its next link came with."})
            if cursor["group_by"] != attrs["group_by"]:
                raise serializers.ValidationError({"cursor": "This cursor pages another grouping; use the next link as "
                                                             "given."})
            if (cursor["start"], cursor["end"]) != (start.isoformat(), end.isoformat()):
                # The `next` links write the period out, so following them never gets here, even over a month's turn.
                raise serializers.ValidationError({"cursor": (
                    f"This cursor pages {cursor['start']} to {cursor['end']}, not {start} to {end}; use the next link "
                    "as given, or start again from the first page.")})
        return {**attrs, "start": start, "end": end, "cursor": cursor["after"] if cursor is not None else None}


_USAGE_NUMBERS = ("runs", "unpriced_runs", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
_USAGE_MONEY = ("cost_input_usd", "cost_cached_input_usd", "cost_output_usd", "cost_tools_usd")


def _usage_fields(money_total_name: str) -> dict:
    fields = {name: serializers.IntegerField() for name in _USAGE_NUMBERS}
    fields.update({name: MoneyField() for name in _USAGE_MONEY})
    fields[money_total_name] = MoneyField()
    return fields


UsageLineSerializer = type(
    "UsageLineSerializer",
    (serializers.Serializer,),
    {"key": serializers.CharField(help_text="The day (YYYY-MM-DD), model, feature or end-user id; \"\" = unattributed."),
     **_usage_fields("cost_usd")},
)

UsageSerializer = type(
    "UsageSerializer",
    (serializers.Serializer,),
    {
        "tenant": serializers.CharField(),
        "start": serializers.DateField(),
        "end": serializers.DateField(),
        "group_by": serializers.CharField(),
        "currency": serializers.CharField(),
        **_usage_fields("total_cost_usd"),
        "lines": UsageLineSerializer(many=True),
        "next": serializers.URLField(allow_null=True, required=False, help_text=(
            "With `limit`: the next page's URL, null on the last page. Without `limit`: null (every line is here).")),
    },
)


def usage_document(*, tenant, start, end, group_by: str) -> dict:
    """The usage endpoint's answer with every line, UsageSerializer's shape (without `next`)."""
    return usage_page(tenant=tenant, start=start, end=end, group_by=group_by)[0]


def usage_page(*, tenant, start, end, group_by: str, after: str | None = None, limit: int | None = None
               ) -> tuple[dict, str | None]:
    """The usage endpoint's answer with the lines keyed after `after`, at most `limit` of them (totals always the
    whole period's), and the key of its last line when more follow (None on the last page).

    By end user on PostgreSQL the database sums and formats the lines itself (ledger_selectors.
    end_user_usage_text): thousands of lines of Decimals made, added and formatted in Python cost more than the
    query (issue #9). Otherwise, and on SQLite, from the Decimal usage. A test holds the two paths byte-equal."""
    if group_by == "user":
        formatted = ledger_selectors.end_user_usage_text(tenant=tenant, start=start, end=end, after=after, limit=limit)
        if formatted is not None:
            rows, totals = formatted
            rows, last_key = _page_of(rows, limit, key=lambda row: row[0])
            return _usage_document(tenant.slug, start, end, group_by,
                                   dict(zip((*_USAGE_NUMBERS, *_USAGE_MONEY, "total_cost_usd"), totals, strict=True)),
                                   [_usage_line_from_text(row) for row in rows]), last_key
    usage = selectors.tenant_usage(tenant=tenant, start=start, end=end, group_by=group_by)
    lines = usage["lines"]
    if after is not None:
        lines = [line for line in lines if str(line["key"]) > after]  # keys sorted in code-point order, as str's <
    usage["lines"], last_key = _page_of(lines, limit, key=lambda line: str(line["key"]))
    return usage_representation(usage), last_key


def _page_of(rows: list, limit: int | None, *, key) -> tuple[list, str | None]:
    """The page's rows (the first `limit`; PostgreSQL's end-user read stops at one more, which says another page
    follows) and, when one does, the key of the page's last row."""
    if limit is None or len(rows) <= limit:
        return rows, None
    return rows[:limit], key(rows[limit - 1])


def usage_representation(usage: dict) -> dict:
    """What UsageSerializer(usage).data gives, built directly: a month by end user is thousands of lines, and
    DRF's per-field machinery cost more than the query (issue #9). A test holds the two equal."""
    totals = {name: int(usage[name]) for name in _USAGE_NUMBERS}
    totals.update({name: usd_string(usage[name]) for name in _USAGE_MONEY})
    totals["total_cost_usd"] = usd_string(usage["total_cost_usd"])
    return _usage_document(usage["tenant"], usage["start"], usage["end"], usage["group_by"], totals,
                           [_usage_line(line) for line in usage["lines"]], currency=usage["currency"])


def _usage_document(tenant_slug: str, start, end, group_by: str, totals: dict, lines: list[dict], *,
                    currency: str = "USD") -> dict:
    return {
        "tenant": str(tenant_slug),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "group_by": str(group_by),
        "currency": str(currency),
        **totals,
        "lines": lines,
    }


def _usage_line(line: dict, usd=usd_string) -> dict:
    # Spelled out rather than built from the name lists: a month by end user is thousands of lines, and a
    # dict literal is the cheapest way to make each (the test against UsageSerializer pins the fields).
    return {
        "key": str(line["key"]), "runs": int(line["runs"]), "unpriced_runs": int(line["unpriced_runs"]),
        "input_tokens": int(line["input_tokens"]), "cached_input_tokens": int(line["cached_input_tokens"]),
        "output_tokens": int(line["output_tokens"]), "reasoning_tokens": int(line["reasoning_tokens"]),
        "cost_input_usd": usd(line["cost_input_usd"]), "cost_cached_input_usd": usd(line["cost_cached_input_usd"]),
        "cost_output_usd": usd(line["cost_output_usd"]), "cost_tools_usd": usd(line["cost_tools_usd"]),
        "cost_usd": usd(line["cost_usd"]),
    }


def _usage_line_from_text(row: tuple) -> dict:
    # end_user_usage_text's row, already in the API's types: (user_id, six counts, five money strings).
    return {
        "key": row[0], "runs": row[1], "unpriced_runs": row[2], "input_tokens": row[3],
        "cached_input_tokens": row[4], "output_tokens": row[5], "reasoning_tokens": row[6],
        "cost_input_usd": row[7], "cost_cached_input_usd": row[8], "cost_output_usd": row[9],
        "cost_tools_usd": row[10], "cost_usd": row[11],
    }


# --- runs -------------------------------------------------------------------------------------------------


class RunQuerySerializer(serializers.Serializer):
    tenant = serializers.CharField(required=False, help_text="Tenant slug.")
    status = serializers.ChoiceField(choices=RunStatus.choices, required=False)
    # Matched exactly as stored and as the usage lines' keys write them: DRF's default trim made `user=u1%20`
    # select u1's runs, and `feature=%20` those without a feature.
    model = serializers.CharField(required=False, max_length=255, trim_whitespace=False)
    # Blank is a value: "" selects runs without that attribution (the usage lines' "" key), not every run.
    feature = serializers.CharField(required=False, allow_blank=True, max_length=100, trim_whitespace=False,
                                    help_text="Feature; empty: runs without one.")
    user = serializers.CharField(required=False, allow_blank=True, max_length=200, trim_whitespace=False,
                                 help_text="End-user id (attribution user_id); empty: runs without one.")
    min_cost = serializers.DecimalField(
        max_digits=24, decimal_places=10, min_value=0, required=False, help_text="Only runs costing at least this (USD)."
    )
    start = DateOrDateTimeField(required=False, help_text="Created at or after (YYYY-MM-DD or ISO 8601 datetime, UTC).")
    end = DateOrDateTimeField(required=False, help_text="Created before (exclusive).")
    high_cost = serializers.BooleanField(required=False, allow_null=True, default=None,
                                         help_text="true: only runs over their tenant's high-cost threshold.")

    def validate(self, attrs):
        if attrs.get("start") and attrs.get("end") and attrs["start"] >= attrs["end"]:
            raise serializers.ValidationError({"end": "end must be after start (end is exclusive)."})
        return attrs


class RunSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="openai_id", help_text="The OpenAI id (run_… or resp_…).")
    tenant = serializers.CharField(source="tenant.slug")
    thread_id = serializers.CharField(source="thread_openai_id")
    cost_input_usd = MoneyField()
    cost_cached_input_usd = MoneyField()
    cost_output_usd = MoneyField()
    cost_tools_usd = MoneyField()
    cost_usd = MoneyField(source="cost_total_usd")
    model_price_version = serializers.SerializerMethodField()
    tool_price_version = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "id", "api", "tenant", "openai_project", "thread_id", "assistant_id", "prompt_id", "model",
            "service_tier", "status", "created_at", "started_at", "completed_at", "failed_at", "cancelled_at",
            "expires_at", "error_code", "incomplete_reason", "input_tokens", "cached_input_tokens",
            "cache_write_tokens", "output_tokens", "reasoning_tokens", "code_interpreter_sessions",
            "file_search_calls", "web_search_calls", "function_calls", "user_id", "session_id", "feature",
            "metadata", "cost_input_usd", "cost_cached_input_usd", "cost_output_usd", "cost_tools_usd", "cost_usd",
            "priced", "model_price_version", "tool_price_version", "is_high_cost",
        ]
        read_only_fields = fields

    def get_model_price_version(self, run) -> str | None:
        return run.model_price.version if run.model_price_id else None

    def get_tool_price_version(self, run) -> str | None:
        return run.tool_price.version if run.tool_price_id else None


# --- statements -------------------------------------------------------------------------------------------


class StatementLineSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["model", "tool", "vector_storage", "adjustment", "markup"])
    description = serializers.CharField()
    source_period = serializers.CharField(allow_null=True, help_text="For adjustments: the closed month they correct.")
    model = serializers.CharField(allow_null=True)
    tool = serializers.CharField(allow_null=True)
    runs = serializers.IntegerField(allow_null=True)
    input_tokens = serializers.IntegerField(allow_null=True)
    cached_input_tokens = serializers.IntegerField(allow_null=True)
    output_tokens = serializers.IntegerField(allow_null=True)
    reasoning_tokens = serializers.IntegerField(allow_null=True)
    quantity = serializers.CharField(allow_null=True, help_text="Sessions, calls, GB-days or percent (see unit).")
    unit = serializers.CharField(allow_null=True)
    cost_input_usd = serializers.CharField(allow_null=True)
    cost_cached_input_usd = serializers.CharField(allow_null=True)
    cost_output_usd = serializers.CharField(allow_null=True)
    amount_usd = serializers.CharField(help_text="Rounded to cents; the subtotal sums these.")
    exact_amount_usd = serializers.CharField(help_text="Unrounded, at the ledger's precision.")


class StatementSerializer(serializers.Serializer):
    tenant = serializers.CharField()
    external_id = serializers.CharField(allow_blank=True)
    period = serializers.CharField(help_text="YYYY-MM")
    period_start = serializers.DateField()
    period_end = serializers.DateField(help_text="Exclusive.")
    status = serializers.ChoiceField(choices=["open", "closed"])
    closed_at = serializers.DateTimeField(allow_null=True)
    currency = serializers.CharField()
    runs = serializers.IntegerField()
    unpriced_runs = serializers.IntegerField()
    lines = StatementLineSerializer(many=True)
    subtotal_usd = serializers.CharField()
    markup_percent = serializers.CharField(allow_null=True)
    markup_usd = serializers.CharField()
    total_usd = serializers.CharField()


class StatementCloseSerializer(KnownBodyFieldsMixin, serializers.Serializer):
    allow_unpriced = serializers.BooleanField(
        default=False, help_text="Close even though some runs have no price yet (they are billed later as an adjustment)."
    )
