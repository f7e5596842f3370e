"""/api/v1/prices/: list with a model filter, admin-only audited price versions that re-rate unpriced runs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from apps.core.models import AuditEvent
from apps.ledger.models import Run
from apps.ledger.services import ingest_events, ledger_check
from apps.pricing.models import ModelPrice
from apps.tenants.models import ApiKey
from tests import builders
from tests.conftest import _key, bearer

pytestmark = pytest.mark.django_db

PRICE = {"model": "gpt-7-test", "input_usd_per_1m": "3.00", "cached_input_usd_per_1m": "0.30",
         "output_usd_per_1m": "12.00", "effective_from": "2026-06-01"}


def test_prices_list_with_the_contract_fields_and_a_model_filter(api_client, billing_key):
    answer = api_client.get("/api/v1/prices/", {"model": "gpt-5.4"}, **bearer(billing_key))
    assert answer.status_code == 200
    [price] = answer.json()["results"]
    assert {k: price[k] for k in PRICE} == {"model": "gpt-5.4", "input_usd_per_1m": "2.500000",
                                           "cached_input_usd_per_1m": None, "output_usd_per_1m": "15.000000",
                                           "effective_from": "2024-01-01"}
    everything = api_client.get("/api/v1/prices/", {"limit": 500}, **bearer(billing_key)).json()["results"]
    assert len(everything) == ModelPrice.objects.count()


def test_a_new_price_is_audited_and_rates_only_unpriced_runs_created_on_or_after_its_date(api_client, admin_key, tenant):
    before = builders.response(created_at=dt.datetime(2026, 5, 31, 23, 59, tzinfo=dt.UTC), model="gpt-7-test")
    after = builders.response(created_at=dt.datetime(2026, 6, 1, 0, 0, tzinfo=dt.UTC), model="gpt-7-test",
                              input_tokens=1_000_000, cached_tokens=200_000, output_tokens=100_000)
    ingest_events(events=[{"tenant": "acme", "object": before}, {"tenant": "acme", "object": after}])
    assert not Run.objects.for_tenant(tenant).filter(priced=True).exists()

    answer = api_client.post("/api/v1/prices/", PRICE, format="json", **bearer(admin_key))
    assert answer.status_code == 201, answer.content
    assert answer.json()["input_usd_per_1m"] == "3.000000" and answer.json()["repriced_runs"] == 1
    rated = Run.objects.for_tenant(tenant).get(openai_id=after["id"])
    assert rated.priced is True
    # 800k uncached at $3, 200k cached at $0.30, 100k output at $12.
    assert rated.cost_total_usd == Decimal("2.40") + Decimal("0.06") + Decimal("1.20")
    assert Run.objects.for_tenant(tenant).get(openai_id=before["id"]).priced is False
    event = AuditEvent.objects.get(action="price.create")
    assert event.target_id == "gpt-7-test@2026-06-01" and event.actor_label.startswith("api-key:")


def test_a_price_with_long_context_pricing_rates_the_unpriced_long_prompts_at_its_multiples(
        api_client, admin_key, tenant):
    long_prompt = builders.response(created_at=dt.datetime(2026, 6, 2, tzinfo=dt.UTC), model="gpt-7-test",
                                    input_tokens=400_000, output_tokens=10_000)
    ingest_events(events=[{"tenant": "acme", "object": long_prompt}])
    body = {**PRICE, "long_context_above_tokens": 272_000, "long_context_input_multiplier": "2",
            "long_context_output_multiplier": "1.5"}
    answer = api_client.post("/api/v1/prices/", body, format="json", **bearer(admin_key))
    assert answer.status_code == 201, answer.content
    assert {name: answer.json()[name] for name in body if name.startswith("long_context")} == {
        "long_context_above_tokens": 272_000, "long_context_input_multiplier": "2.000",
        "long_context_output_multiplier": "1.500"}
    # 400k input at $3 × 2, 10k output at $12 × 1.5.
    assert Run.objects.for_tenant(tenant).get(openai_id=long_prompt["id"]).cost_total_usd == Decimal("2.58")
    assert AuditEvent.objects.get(action="price.create").data["long_context_above_tokens"] == "272000"
    listed = api_client.get("/api/v1/prices/", {"model": "gpt-6.1-sol"}, **bearer(admin_key)).json()["results"]
    assert [price["long_context_above_tokens"] for price in listed] == [272_000]


def test_long_context_pricing_without_all_of_its_fields_is_a_400_naming_the_missing_ones(api_client, admin_key):
    body = {**PRICE, "long_context_above_tokens": 272_000, "long_context_output_multiplier": "1.5"}
    answer = api_client.post("/api/v1/prices/", body, format="json", **bearer(admin_key))
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "long_context_input_multiplier"
    assert not ModelPrice.objects.filter(model="gpt-7-test").exists()


def test_the_same_model_and_date_twice_is_409(api_client, admin_key):
    assert api_client.post("/api/v1/prices/", PRICE, format="json", **bearer(admin_key)).status_code == 201
    again = api_client.post("/api/v1/prices/", PRICE, format="json", **bearer(admin_key))
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


@pytest.mark.parametrize(
    ("change", "field"),
    [({"model": ""}, "model"), ({"input_usd_per_1m": "-1"}, "input_usd_per_1m"),
     ({"output_usd_per_1m": "1.1234567"}, "output_usd_per_1m"), ({"effective_from": "June"}, "effective_from"),
     ({"effective_from": "\uff11\uff19\uff17\uff10-01-01"}, "effective_from"),  # fullwidth digits
     ({"cached_input_usd_per_1m": "x"}, "cached_input_usd_per_1m")],
)
def test_bad_prices_are_400_naming_the_field(api_client, admin_key, change, field):
    answer = api_client.post("/api/v1/prices/", {**PRICE, **change}, format="json", **bearer(admin_key))
    assert answer.status_code == 400 and answer.json()["error"]["field"] == field


def test_a_field_the_price_api_does_not_know_is_a_400_naming_it_and_no_price_is_added(api_client, admin_key):
    # Ignored with a 201, the typo left cached tokens billed at the input price, and the price cannot be
    # corrected for the same date (409).
    answer = api_client.post("/api/v1/prices/", {**PRICE, "cached_input_usd_per_1m": None,
                                                 "cached_input_usd_per_1m_typo": "0.30"},
                             format="json", **bearer(admin_key))

    assert answer.status_code == 400 and answer.json()["error"]["field"] == "cached_input_usd_per_1m_typo"
    assert "this endpoint writes model, input_usd_per_1m" in answer.json()["error"]["message"]
    assert not ModelPrice.objects.filter(model="gpt-7-test").exists()


def test_a_price_read_from_the_api_may_be_sent_back(api_client, admin_key):
    assert api_client.post("/api/v1/prices/", PRICE, format="json", **bearer(admin_key)).status_code == 201
    [listed] = api_client.get("/api/v1/prices/", {"model": "gpt-7-test"}, **bearer(admin_key)).json()["results"]

    again = api_client.post("/api/v1/prices/", {**listed, "effective_from": "2026-07-01"}, format="json",
                            **bearer(admin_key))

    assert again.status_code == 201, again.content


@pytest.mark.parametrize("day", ["0001-01-01", "1969-12-31", "9999-12-31"])
def test_an_effective_from_outside_the_documented_days_is_a_400_naming_it(api_client, admin_key, day):
    answer = api_client.post("/api/v1/prices/", {**PRICE, "effective_from": day}, format="json", **bearer(admin_key))
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "effective_from"
    assert not ModelPrice.objects.filter(model=PRICE["model"]).exists()


@pytest.mark.parametrize("day", ["1970-01-01", "9998-12-31"])
def test_the_first_and_last_documented_days_are_valid_effective_dates(api_client, admin_key, day):
    answer = api_client.post("/api/v1/prices/", {**PRICE, "effective_from": day}, format="json", **bearer(admin_key))
    assert answer.status_code == 201 and answer.json()["effective_from"] == day


def test_only_unbound_admin_keys_add_prices_and_billing_keys_read(api_client, billing_key, tenant_billing_key):
    assert api_client.post("/api/v1/prices/", PRICE, format="json", **bearer(billing_key)).status_code == 403
    assert api_client.get("/api/v1/prices/", **bearer(tenant_billing_key)).status_code == 200


def test_a_tenant_bound_admin_key_cannot_add_a_price_that_would_re_rate_other_tenants(api_client, tenant,
                                                                                      other_tenant):
    run = builders.response(response_id="resp_globex_unpriced", model="gpt-zz-unpriced",
                            created_at=dt.datetime(2026, 11, 3, tzinfo=dt.UTC))
    ingest_events(events=[{"tenant": "globex", "object": run}])
    bound_admin = _key(ApiKey.Scope.ADMIN, tenant)
    price = {**PRICE, "model": "gpt-zz-unpriced", "effective_from": "2026-01-01"}
    answer = api_client.post("/api/v1/prices/", price, format="json", **bearer(bound_admin))
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "permission_denied"
    assert not ModelPrice.objects.filter(model="gpt-zz-unpriced").exists()
    assert Run.objects.for_tenant(other_tenant).get().priced is False


def _unpriced_small_then_huge_run(monkeypatch) -> dict:
    """Two unpriced runs of gpt-7-test, rated one a batch: a small one first, then 10**12 output tokens (the most
    ingest takes), which at $1,000 per million costs a billion USD, past the ~922 million an end user's month
    can hold."""
    monkeypatch.setattr("apps.ledger.services.REPRICE_BATCH", 1)
    when = dt.datetime(2026, 6, 2, tzinfo=dt.UTC)
    ingest_events(events=[{"tenant": "acme", "object": builders.response(created_at=when, model="gpt-7-test")}])
    huge = builders.response(created_at=when, model="gpt-7-test", input_tokens=1, output_tokens=10**12)
    ingest_events(events=[{"tenant": "acme", "object": huge}])
    return huge


def test_a_price_whose_re_rating_would_overflow_the_ledger_is_a_400_naming_it_and_nothing_stays(
        api_client, admin_key, tenant, monkeypatch):
    huge = _unpriced_small_then_huge_run(monkeypatch)

    answer = api_client.post("/api/v1/prices/", {**PRICE, "output_usd_per_1m": "1000"}, format="json",
                             **bearer(admin_key))

    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["field"] == "output_usd_per_1m"
    assert f"run {huge['id']} (model gpt-7-test, tenant acme)" in error["message"]
    assert "The price was not added" in error["message"]
    # Refused before it was stored: checked by rating the backlog without writing.
    assert not ModelPrice.objects.filter(model="gpt-7-test").exists()
    assert not Run.objects.for_tenant(tenant).filter(priced=True).exists()
    assert not AuditEvent.objects.filter(action__startswith="price.").exists()
    assert ledger_check() == []


def test_when_runs_arriving_after_the_check_overflow_the_price_is_withdrawn_and_its_runs_put_back(
        api_client, admin_key, tenant, monkeypatch):
    """The check reads the backlog as it is; a run reported just after it can still overflow the rating. The
    price is then withdrawn, and the runs it had rated go back to how they were."""
    huge = _unpriced_small_then_huge_run(monkeypatch)
    monkeypatch.setattr("apps.ledger.services.reprice_overflow_check", lambda **kwargs: None)  # the race

    answer = api_client.post("/api/v1/prices/", {**PRICE, "output_usd_per_1m": "1000"}, format="json",
                             **bearer(admin_key))

    assert answer.status_code == 400 and f"run {huge['id']}" in answer.json()["error"]["message"]
    assert not ModelPrice.objects.filter(model="gpt-7-test").exists()
    # The small run's batch was rated before the huge one stopped it: withdrawing the price put it back.
    assert not Run.objects.for_tenant(tenant).filter(priced=True).exists()
    assert set(AuditEvent.objects.values_list("action", flat=True)) >= {"price.create", "price.withdraw"}
    assert ledger_check() == []


def test_an_overflow_names_the_largest_price_sent_never_one_left_out(api_client, admin_key, tenant, monkeypatch):
    _unpriced_small_then_huge_run(monkeypatch)
    price = {"model": "gpt-7-test", "input_usd_per_1m": "3.00", "output_usd_per_1m": "1000",
             "effective_from": "2026-06-01"}  # no cached price: cached tokens bill at the input price

    answer = api_client.post("/api/v1/prices/", price, format="json", **bearer(admin_key))

    assert answer.status_code == 400 and answer.json()["error"]["field"] == "output_usd_per_1m"


def test_a_fine_tuned_model_named_past_100_characters_gets_a_price_audited_under_its_version(api_client, admin_key):
    """Model names take 255 characters (a fine-tuned id runs past 100): its price version is audited, not a 500
    from an audit target column of 120."""
    model = f"ft:gpt-4.1-mini-2025-04-14:acme-analytics-incorporated:{'support-triage-' * 4}v2:BkX9a7Qz"
    assert len(f"{model}@2026-06-01") > 120
    answer = api_client.post("/api/v1/prices/", {**PRICE, "model": model}, format="json", **bearer(admin_key))
    assert answer.status_code == 201, answer.content
    assert AuditEvent.objects.get(action="price.create").target_id == f"{model}@2026-06-01"
