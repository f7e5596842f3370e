"""The price admin: a new price rates the runs stored unpriced for its model, and says so; a tool price version
a run was rated with keeps its fees."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.contrib.messages import get_messages

from apps.core.models import AuditEvent
from apps.ledger.models import Run
from apps.ledger.selectors import tool_usage_by_kind
from apps.ledger.services import ingest_events, ledger_check
from apps.pricing.models import TOOL_RUN_FEE_FIELDS, TOOL_RUN_FEES_LOCKED, ModelPrice, ToolPrice
from tests import builders

FORM = {"model": "admin-model", "effective_from": "2026-01-01", "input_usd_per_1m": "1.00",
        "cached_input_usd_per_1m": "", "output_usd_per_1m": "4.00", "source": "test", "source_date": "2026-01-01"}


def _superuser_login(client, staff_user) -> None:
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)


def _unpriced(tenant, output_tokens: int) -> None:
    ingest_events(events=[{"tenant": tenant.slug, "object": builders.response(
        created_at=dt.datetime(2026, 6, 2, tzinfo=dt.UTC), model="admin-model", input_tokens=1,
        output_tokens=output_tokens)}])


def test_a_new_price_rates_the_unpriced_runs_and_says_how_many(client, staff_user, tenant):
    _unpriced(tenant, 1_000_000)
    _superuser_login(client, staff_user)

    response = client.post("/admin/pricing/modelprice/add/", FORM, follow=True)

    assert response.status_code == 200
    assert "1 unpriced runs are now rated." in [str(m) for m in get_messages(response.wsgi_request)]
    assert Run.objects.for_tenant(tenant).get().priced is True


def test_a_price_whose_re_rating_would_overflow_is_not_added_and_nothing_changes(client, staff_user, tenant,
                                                                                   monkeypatch):
    # A small run, then one of 10**12 output tokens (the most ingest takes): at $1,000 per million a billion
    # USD, past what an end user's month can hold. One run a batch, so the small one is rated first.
    monkeypatch.setattr("apps.ledger.services.REPRICE_BATCH", 1)
    _unpriced(tenant, 1_000_000)
    _unpriced(tenant, 10**12)
    _superuser_login(client, staff_user)

    response = client.post("/admin/pricing/modelprice/add/", {**FORM, "output_usd_per_1m": "1000"}, follow=True)

    assert response.status_code == 200
    shown = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert [level for level, _ in shown] == ["error"]  # and no "was added successfully"
    assert "The price was not added (nothing changed)" in shown[0][1] and "Add a corrected one" in shown[0][1]
    assert not ModelPrice.objects.filter(model="admin-model").exists()
    assert not Run.objects.for_tenant(tenant).filter(priced=True).exists()
    assert not AuditEvent.objects.filter(action__in=["admin.modelprice.create", "ledger.reprice"]).exists()
    assert ledger_check() == []


def test_save_as_new_with_an_overflowing_price_is_refused_the_same_way(client, staff_user, tenant):
    existing = ModelPrice.objects.create(model="admin-model", effective_from=dt.date(2026, 1, 1),
                                         input_usd_per_1m=1, output_usd_per_1m=4)
    _unpriced(tenant, 10**12)  # priced by `existing` at $4 per million: 4 million USD
    ModelPrice.objects.filter(pk=existing.pk).update(effective_from=dt.date(2026, 7, 1))  # so June is unpriced
    Run.objects.for_tenant(tenant).update(priced=False, model_price_id=None, cost_input_usd=0, cost_output_usd=0,
                                          cost_cached_input_usd=0, cost_tools_usd=0, cost_total_usd=0)
    ledger_check(fix=True)
    _superuser_login(client, staff_user)

    response = client.post(f"/admin/pricing/modelprice/{existing.pk}/change/",
                           {**FORM, "output_usd_per_1m": "1000", "_saveasnew": "1"}, follow=True)

    assert response.status_code == 200
    assert [m.level_tag for m in get_messages(response.wsgi_request)] == ["error"]
    assert list(ModelPrice.objects.values_list("pk", flat=True).filter(model="admin-model")) == [existing.pk]
    assert ledger_check() == []


# --- tool price versions: fees fixed once a run was rated with them --------------------------------------

TOOL_FORM = {"effective_from": "2024-01-01", "code_interpreter_session_usd": "0.03",
             "file_search_call_usd_per_1k": "2.50", "web_search_call_usd_per_1k": "25.00",
             "vector_storage_usd_per_gb_day": "0.10", "vector_storage_free_gb": "1", "source": "corrected"}


def _web_search_run(tenant) -> Run:
    ingest_events(events=[{"tenant": tenant.slug, "object": builders.response(
        response_id="resp_tools", created_at=dt.datetime(2026, 1, 12, tzinfo=dt.UTC), model="gpt-4.1",
        web_search_calls=4)}])
    return Run.objects.for_tenant(tenant).get(openai_id="resp_tools")


def test_a_tool_price_version_a_run_was_rated_with_shows_its_fees_read_only_and_says_to_add_a_version(
        client, staff_user, tenant):
    run = _web_search_run(tenant)
    price = ToolPrice.objects.get(pk=run.tool_price_id)
    _superuser_login(client, staff_user)

    page = client.get(f"/admin/pricing/toolprice/{price.pk}/change/")
    shown = [(m.level_tag, str(m)) for m in get_messages(page.wsgi_request)]
    assert shown == [("warning", TOOL_RUN_FEES_LOCKED)]
    assert "Add a new version effective from the date" in TOOL_RUN_FEES_LOCKED
    assert "manage.py reprice" in TOOL_RUN_FEES_LOCKED
    form = page.context["adminform"].form
    assert not set(TOOL_RUN_FEE_FIELDS) & set(form.fields)
    assert "vector_storage_usd_per_gb_day" in form.fields  # storage is metered and stored per day

    saved = client.post(f"/admin/pricing/toolprice/{price.pk}/change/", TOOL_FORM, follow=True)

    assert saved.status_code == 200
    price.refresh_from_db()
    assert price.web_search_call_usd_per_1k == Decimal("10.000000")  # the posted 25.00 is not read
    assert price.source == "corrected"
    assert run.cost_tools_usd == Decimal("0.04") == tool_usage_by_kind(
        tenant=tenant, start=dt.date(2026, 1, 1), end=dt.date(2026, 2, 1))["web_search"]["cost_usd"]


def test_a_tool_price_version_no_run_was_rated_with_can_have_its_fees_corrected(client, staff_user, tenant):
    _web_search_run(tenant)  # rated with the 2024 version, not this one
    future = ToolPrice.objects.create(effective_from=dt.date(2027, 1, 1), code_interpreter_session_usd=Decimal("0.03"),
                                      file_search_call_usd_per_1k=Decimal("2.50"),
                                      web_search_call_usd_per_1k=Decimal("99.00"),
                                      vector_storage_usd_per_gb_day=Decimal("0.10"), vector_storage_free_gb=1)
    _superuser_login(client, staff_user)

    assert client.get(f"/admin/pricing/toolprice/{future.pk}/change/").context["adminform"].form.fields.keys() >= set(
        TOOL_RUN_FEE_FIELDS)
    saved = client.post(f"/admin/pricing/toolprice/{future.pk}/change/",
                        {**TOOL_FORM, "effective_from": "2027-01-01"}, follow=True)

    assert saved.status_code == 200
    future.refresh_from_db()
    assert future.web_search_call_usd_per_1k == Decimal("25.000000")
    assert "Price changed: re-rate its period with `manage.py reprice --start … --end …`." in [
        str(m) for m in get_messages(saved.wsgi_request)]


def test_long_context_pricing_added_in_the_admin_needs_all_three_fields(client, staff_user, db):
    _superuser_login(client, staff_user)
    half = {**FORM, "long_context_above_tokens": "272000", "long_context_input_multiplier": "2"}
    response = client.post("/admin/pricing/modelprice/add/", half)
    assert response.status_code == 200  # the form again, with the error on the missing field
    assert response.context["adminform"].form.errors == {
        "long_context_output_multiplier": ["Set with the other long-context fields, or leave all three empty."]}
    assert not ModelPrice.objects.filter(model="admin-model").exists()

    whole = {**half, "long_context_output_multiplier": "1.5"}
    assert client.post("/admin/pricing/modelprice/add/", whole).status_code == 302
    assert ModelPrice.objects.get(model="admin-model").long_context_text == (
        "above 272K: ×2 in, ×1.5 out")
