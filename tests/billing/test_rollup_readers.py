"""Statements and usage read rollups since issue #9: the documents are byte for byte what the raw-run
readers gave (tool fees per kind, usage by end user), and the fast usage rendering equals the serializer's."""

from __future__ import annotations

import datetime as dt

import pytest

from apps.billing import selectors as billing_selectors
from apps.billing.serializers import UsageSerializer, usage_representation
from apps.core.timeutils import next_month
from apps.ledger import selectors as ledger_selectors
from tests.conftest import bearer
from tests.ledger.test_selectors_rollups import raw_tool_usage_by_kind, raw_usage_by_user


def _statement(api_client, key, path):
    response = api_client.get(path, **bearer(key))
    assert response.status_code == 200
    return response.content


def test_statements_are_identical_to_the_raw_run_figures(api_client, billing_key, tenant, ledger, monkeypatch):
    paths = ["/api/v1/tenants/acme/statements/2026-01/", "/api/v1/tenants/acme/statements/2026-01.csv",
             "/api/v1/tenants/acme/statements/2026-02/", "/api/v1/tenants/globex/statements/2026-01/"]
    from_rollups = [_statement(api_client, billing_key, path) for path in paths]
    def raw_by_month(*, tenant, start, end):
        months, month = {}, start
        while month < end:
            months[month] = raw_tool_usage_by_kind(tenant, month, next_month(month))
            month = next_month(month)
        return months

    monkeypatch.setattr(ledger_selectors, "tool_usage_by_kind_by_month", raw_by_month)
    from_runs = [_statement(api_client, billing_key, path) for path in paths]
    assert from_rollups == from_runs
    assert b"Code interpreter sessions" in from_rollups[0] and b"Web search calls" in from_rollups[0]


def test_usage_by_end_user_is_identical_to_the_raw_run_figures(tenant, other_tenant, ledger):
    for owner in (tenant, other_tenant):
        for start, end in ((dt.date(2026, 1, 1), dt.date(2026, 2, 1)), (dt.date(2026, 1, 6), dt.date(2026, 2, 2)),
                           (dt.date(2025, 12, 1), dt.date(2026, 3, 1))):
            lines = ledger_selectors.usage_lines(tenant=owner, start=start, end=end, group_by="user")
            assert lines == raw_usage_by_user(owner, start, end)


def test_usage_representation_equals_the_serializer(tenant, ledger):
    for group_by in ("day", "model", "feature", "user"):
        usage = billing_selectors.tenant_usage(tenant=tenant, start=dt.date(2026, 1, 1), end=dt.date(2026, 3, 1),
                                               group_by=group_by)
        assert usage["lines"]
        # The view adds `next` (null without a limit): the representation leaves it to the view.
        assert {**usage_representation(usage), "next": None} == UsageSerializer(usage).data


def test_usage_by_end_user_never_shows_another_tenants_users(api_client, billing_key, tenant, ledger):
    response = api_client.get("/api/v1/tenants/acme/usage/?group_by=user&start=2026-01-01&end=2026-03-01",
                              **bearer(billing_key))
    assert response.status_code == 200
    assert [line["key"] for line in response.json()["lines"]] == ["u1", "u2", "u3"]
    assert b"globex" not in response.content


@pytest.mark.postgres
def test_usage_by_end_user_from_postgres_text_equals_the_decimal_document(tenant, other_tenant, ledger):
    """On PostgreSQL the database sums and formats usage by end user itself; the document must be byte for
    byte the one the Decimal path renders: odd user ids (empty, non-ASCII, U+2028, code-point order), amounts
    too small for str() without an exponent, an unpriced run, and every kind of range (whole months, a
    ragged month read as monthly minus days, inside days, a range with no runs)."""
    from apps.billing.serializers import usage_document
    from apps.core.api_support import json_bytes
    from tests.billing.conftest import at, response

    for day, user_id, tokens in ((3, "", 1), (4, "Zoë", 20_000), (4, "zoe", 2), (10, "ünïcode ☕", 7),
                                  (12, "line\u2028sep", 300), (20, "Zoë", 1), (28, "a", 1_234_567)):
        response(tenant, at(2026, 3, day), input_tokens=tokens, output_tokens=tokens // 3,
                 attribution={"user_id": user_id})
    response(tenant, at(2026, 3, 15), model="unpriced-model", attribution={"user_id": "zoe"})
    ranges = [(dt.date(2026, 1, 1), dt.date(2026, 4, 1)), (dt.date(2026, 3, 1), dt.date(2026, 4, 1)),
              (dt.date(2026, 3, 5), dt.date(2026, 4, 1)), (dt.date(2026, 3, 11), dt.date(2026, 3, 21)),
              (dt.date(2026, 2, 20), dt.date(2026, 3, 20)), (dt.date(2026, 1, 31), dt.date(2026, 2, 2)),
              (dt.date(2026, 6, 1), dt.date(2026, 7, 1))]
    for owner in (tenant, other_tenant):
        for start, end in ranges:
            text_path = usage_document(tenant=owner, start=start, end=end, group_by="user")
            decimal_path = usage_representation(
                billing_selectors.tenant_usage(tenant=owner, start=start, end=end, group_by="user"))
            assert json_bytes(text_path) == json_bytes(decimal_path), (owner.slug, start, end)
    # Paged, the database's pages are the Decimal path's pages, cut at the same keys.
    from apps.billing.serializers import usage_page
    from apps.ledger import selectors as ledger_selectors

    def pages(limit: int) -> list[tuple[bytes, str | None]]:
        walked, after = [], None
        while True:
            document, after = usage_page(tenant=tenant, start=dt.date(2026, 1, 1), end=dt.date(2026, 4, 1),
                                         group_by="user", after=after, limit=limit)
            walked.append((json_bytes(document), after))
            if after is None:
                return walked

    users = len(usage_document(tenant=tenant, start=dt.date(2026, 1, 1), end=dt.date(2026, 4, 1), group_by="user")["lines"])
    for limit in (1, 2, 4, users - 1, users, users + 1):
        text_pages = pages(limit)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ledger_selectors, "end_user_usage_text", lambda **kwargs: None)  # the Decimal path
            assert pages(limit) == text_pages, limit
        assert len(text_pages) == -(-users // limit)
    march = usage_document(tenant=tenant, start=dt.date(2026, 3, 1), end=dt.date(2026, 4, 1), group_by="user")
    assert [line["key"] for line in march["lines"]] == ["", "Zoë", "a", "line\u2028sep", "zoe", "ünïcode ☕"]
    assert march["runs"] == 8 and march["unpriced_runs"] == 1
    assert march["lines"][0]["cost_usd"] != "0.00" and "E" not in march["lines"][0]["cost_usd"]
