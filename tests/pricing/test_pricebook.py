"""The price book: seeded in every database, loaded from a file without changing the fees runs were rated with,
effective dates, snapshot families, never $0 for unknown models."""

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.core.models import AuditEvent
from apps.ledger.models import Run
from apps.ledger.selectors import tool_usage_by_kind
from apps.ledger.services import ingest_events
from apps.pricing.models import TOOL_RUN_FEES_LOCKED, ModelPrice, ToolPrice
from apps.pricing.pricebook import PriceBook, model_family
from apps.pricing.rating import ModelRate
from apps.pricing.seed import PRICE_BOOK_FILE, read_price_book
from apps.pricing.selectors import price_book_current
from apps.pricing.services import price_book_load
from tests import builders


def _rate(model, day, price):
    return ModelRate(model=model, effective_from=day, input_usd_per_1m=Decimal(price), output_usd_per_1m=Decimal(price))


def test_fresh_database_holds_the_shipped_price_book(db):
    data = read_price_book(PRICE_BOOK_FILE)
    assert ModelPrice.objects.count() == len(data["models"])
    assert ToolPrice.objects.count() == len(data["tools"])
    gpt54 = ModelPrice.objects.get(model="gpt-5.4")
    assert (gpt54.input_usd_per_1m, gpt54.output_usd_per_1m) == (Decimal("2.50"), Decimal("15.00"))
    assert gpt54.source and not gpt54.verify


def test_the_current_models_bill_long_prompts_at_their_long_context_multiples_and_older_ones_do_not(db, tenant):
    """OpenAI's current models bill a request past 272K input tokens at 2x input and 1.5x output (shared
    reference, section 6); the seeded book says so, and ingest rates by it."""
    sol = ModelPrice.objects.get(model="gpt-6.1-sol")
    assert (sol.long_context_above_tokens, sol.long_context_input_multiplier, sol.long_context_output_multiplier) == (
        272_000, Decimal("2"), Decimal("1.5"))
    assert sol.long_context_text == "above 272K: ×2 in, ×1.5 out"
    assert ModelPrice.objects.get(model="gpt-5.4").long_context_above_tokens is None
    created = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)
    ingest_events(events=[{"tenant": tenant.slug, "object": builders.response(
        response_id=response_id, created_at=created, model=model, input_tokens=tokens, output_tokens=10_000,
        service_tier="default")} for response_id, model, tokens in (
            ("resp_long", "gpt-6.1-sol", 300_000), ("resp_short", "gpt-6.1-sol", 272_000),
            ("resp_old_model", "gpt-5.4", 300_000))])
    costs = dict(Run.objects.for_tenant(tenant).values_list("openai_id", "cost_total_usd"))
    assert costs == {"resp_long": Decimal("1.35"),  # 300,000 × $2 / 1M × 2 + 10,000 × $10 / 1M × 1.5
                     "resp_short": Decimal("0.644"),  # at the threshold: list prices
                     "resp_old_model": Decimal("0.9")}  # gpt-5.4 has no long-context pricing


def test_load_price_book_is_idempotent_and_refreshes_changed_values(db, capsys):
    call_command("load_price_book")
    assert "0 created, 0 updated" in capsys.readouterr().out
    ModelPrice.objects.filter(model="gpt-5.4").update(input_usd_per_1m=Decimal("9"))
    call_command("load_price_book")
    assert "1 updated" in capsys.readouterr().out
    assert ModelPrice.objects.get(model="gpt-5.4").input_usd_per_1m == Decimal("2.50")
    assert ModelPrice.objects.count() == len(read_price_book(PRICE_BOOK_FILE)["models"])


def _book_with_changed_fees(tmp_path, **tool_fees) -> Path:
    """The shipped price book with gpt-5.4's input price and the 2024 tool version's fees changed."""
    data = read_price_book(PRICE_BOOK_FILE)
    next(entry for entry in data["models"] if entry["model"] == "gpt-5.4")["input_usd_per_1m"] = "9.00"
    data["tools"][0].update(tool_fees)
    path = tmp_path / "price_book.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_price_book_refuses_to_change_the_fees_of_a_tool_price_version_a_run_was_rated_with(
        db, tenant, tmp_path, capsys):
    ingest_events(events=[{"tenant": tenant.slug, "object": builders.response(
        response_id="resp_tools", created_at=dt.datetime(2026, 1, 12, tzinfo=dt.UTC), model="gpt-4.1",
        web_search_calls=4)}])
    path = _book_with_changed_fees(tmp_path, web_search_call_usd_per_1k="25.00", source="corrected")

    with pytest.raises(CommandError, match="1 price versions were left as they are"):
        call_command("load_price_book", str(path))

    output = capsys.readouterr()
    assert f"refused  tools@2024-01-01: {TOOL_RUN_FEES_LOCKED}" in output.err
    assert "1 updated" in output.out and "1 refused" in output.out
    tools = ToolPrice.objects.get(effective_from=dt.date(2024, 1, 1))
    assert (tools.web_search_call_usd_per_1k, tools.source) == (Decimal("10.000000"), read_price_book()["tools"][0]["source"])
    assert ModelPrice.objects.get(model="gpt-5.4").input_usd_per_1m == Decimal("9.00")  # the rest of the file loads
    run = Run.objects.for_tenant(tenant).get(openai_id="resp_tools")
    assert run.cost_tools_usd == Decimal("0.04") == tool_usage_by_kind(
        tenant=tenant, start=dt.date(2026, 1, 1), end=dt.date(2026, 2, 1))["web_search"]["cost_usd"]
    [audit] = AuditEvent.objects.filter(action="price_book.load")
    assert audit.data["refused"] == ["tools@2024-01-01"]


def test_price_book_load_changes_a_tool_price_version_no_run_was_rated_with(db, tmp_path):
    result = price_book_load(path=_book_with_changed_fees(tmp_path, web_search_call_usd_per_1k="25.00"))

    assert (result.updated, result.refused) == (["gpt-5.4@2024-01-01", "tools@2024-01-01"], {})
    assert ToolPrice.objects.get().web_search_call_usd_per_1k == Decimal("25.00")


def test_price_book_load_still_refreshes_what_is_not_a_run_fee_on_a_rated_tool_price_version(db, tenant, tmp_path):
    ingest_events(events=[{"tenant": tenant.slug, "object": builders.response(
        created_at=dt.datetime(2026, 1, 12, tzinfo=dt.UTC), model="gpt-4.1", web_search_calls=1)}])

    result = price_book_load(path=_book_with_changed_fees(tmp_path, vector_storage_usd_per_gb_day="0.20"))

    assert "tools@2024-01-01" in result.updated and result.refused == {}
    assert ToolPrice.objects.get().vector_storage_usd_per_gb_day == Decimal("0.20")


@pytest.mark.parametrize(("change", "message"), [
    # Finer than the column's 6 places: the database would round it ($0 here), and "update" it on every load.
    ({"input_usd_per_1m": "0.0000004"}, r"models\[0\]\.input_usd_per_1m: must have at most 6 decimal places"),
    ({"cached_input_usd_per_1m": "2.5000001"}, r"models\[0\]\.cached_input_usd_per_1m: must have at most 6 decimal"),
    # Past the column's 8 whole digits: a numeric overflow traceback on PostgreSQL, unreadable on SQLite.
    ({"output_usd_per_1m": "1e9"}, r"models\[0\]\.output_usd_per_1m: must be less than 100000000"),
    ({"model": "m" * 101}, r"models\[0\]\.model: must be a model name of at most 100 characters"),
    ({"model": ["gpt-5.4"]}, r"models\[0\]\.model: must be a model name"),
    ({"long_context": {"above_input_tokens": "272k", "input_multiplier": "2", "output_multiplier": "1.5"}},
     r"models\[0\]\.long_context\.above_input_tokens: must be a whole number of tokens"),
    ({"long_context": {"above_input_tokens": 272000, "input_multiplier": "2"}},
     r"models\[0\]\.long_context\.output_multiplier: must be a decimal number"),
    ({"long_context": {"above_input_tokens": 272000, "input_multiplier": "1.0001", "output_multiplier": "1.5"}},
     r"models\[0\]\.long_context\.input_multiplier: must have at most 3 decimal places"),
    ({"long_context": "2x above 272k"}, r"models\[0\]\.long_context: must be an object"),
    # Stored as given, " gpt-5.4 " would never match a run's model.
    ({"model": " gpt-5.4 "}, r"models\[0\]\.model: must be a model name .*without surrounding spaces"),
])
def test_load_price_book_refuses_an_amount_or_name_its_column_cannot_hold_and_changes_nothing(
        db, tmp_path, change, message):
    data = read_price_book(PRICE_BOOK_FILE)
    data["models"] = [{**data["models"][0], "effective_from": "2026-12-01", **change}, *data["models"]]
    path = tmp_path / "price_book.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    versions = ModelPrice.objects.count()

    with pytest.raises(CommandError, match=message) as raised:
        call_command("load_price_book", str(path))

    assert str(raised.value).endswith("Fix the file and run the command again.")
    assert ModelPrice.objects.count() == versions


@pytest.mark.parametrize(("section", "changed", "message"), [
    ("models", "output_usd_per_1m", r"models\[1\]\.effective_from: gpt-5.5@2024-01-01 is already given at models\[0\]"),
    ("tools", "web_search_call_usd_per_1k", r"tools\[1\]\.effective_from: tools@2024-01-01 is already given at tools\[0\]"),
])
def test_load_price_book_refuses_a_version_given_twice_and_changes_nothing(db, tmp_path, section, changed, message):
    # Loaded, the later entry won, and every load after "updated" the version twice and asked for a re-price.
    data = read_price_book(PRICE_BOOK_FILE)
    data[section] = [data[section][0], {**data[section][0], changed: "11"}, *data[section][1:]]
    path = tmp_path / "price_book.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(CommandError, match=message):
        call_command("load_price_book", str(path))

    assert ModelPrice.objects.get(model="gpt-5.5").output_usd_per_1m == Decimal("25")
    assert ToolPrice.objects.get().web_search_call_usd_per_1k == Decimal("10")


def _book_adding(tmp_path, model: str, output_usd_per_1m: str = "12.00") -> Path:
    """The shipped price book plus a price for `model` from 2026-06-01."""
    data = read_price_book(PRICE_BOOK_FILE)
    data["models"].append({"model": model, "effective_from": "2026-06-01", "input_usd_per_1m": "3.00",
                           "cached_input_usd_per_1m": "0.30", "output_usd_per_1m": output_usd_per_1m})
    path = tmp_path / "price_book.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_a_price_the_file_adds_rates_the_runs_stored_unpriced_for_its_model_and_says_how_many(
        db, tenant, tmp_path, capsys):
    before = builders.response(created_at=dt.datetime(2026, 5, 31, 23, 59, tzinfo=dt.UTC), model="gpt-7-test")
    after = builders.response(created_at=dt.datetime(2026, 6, 1, tzinfo=dt.UTC), model="gpt-7-test-2026-06-01",
                              input_tokens=1_000_000, cached_tokens=200_000, output_tokens=100_000)
    ingest_events(events=[{"tenant": tenant.slug, "object": before}, {"tenant": tenant.slug, "object": after}])

    call_command("load_price_book", str(_book_adding(tmp_path, "gpt-7-test")))

    assert "1 unpriced runs are now rated." in capsys.readouterr().out
    rated = Run.objects.for_tenant(tenant).get(openai_id=after["id"])
    # 800k uncached at $3, 200k cached at $0.30, 100k output at $12 (a dated snapshot bills at its family's price).
    assert (rated.priced, rated.cost_total_usd) == (True, Decimal("2.40") + Decimal("0.06") + Decimal("1.20"))
    assert Run.objects.for_tenant(tenant).get(openai_id=before["id"]).priced is False  # before the price's date
    assert AuditEvent.objects.get(action="ledger.reprice").actor_label == "command:load_price_book"


def test_a_file_whose_new_price_would_overflow_the_ledger_loads_nothing(db, tenant, tmp_path):
    # 10**12 output tokens at $1,000 per million: a billion USD, past the ~922 million an end user's month holds.
    ingest_events(events=[{"tenant": tenant.slug, "object": builders.response(
        created_at=dt.datetime(2026, 6, 2, tzinfo=dt.UTC), model="gpt-7-test", input_tokens=1, output_tokens=10**12)}])
    versions = ModelPrice.objects.count()

    with pytest.raises(CommandError, match=r"^Nothing was loaded: Re-pricing stopped: .*model gpt-7-test"):
        call_command("load_price_book", str(_book_adding(tmp_path, "gpt-7-test", output_usd_per_1m="1000")))

    assert ModelPrice.objects.count() == versions
    assert Run.objects.for_tenant(tenant).get().priced is False


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_runs_a_file_price_rates_go_in_batches_that_let_ingest_in_between(tenant, tmp_path, monkeypatch):
    """As for a price added in the API: each batch of the re-rating holds the ingest lock for a moment. Rated
    inside the load's own transaction, the lock the first batch took was held until the whole backlog was done,
    and every ingest batch (webhooks, collectors) waited for it."""
    import psycopg
    from django.db import connection

    from apps.ledger import bulk
    from apps.ledger import services as ledger_services

    settings = connection.settings_dict
    dsn = psycopg.conninfo.make_conninfo(dbname=settings["NAME"], user=settings["USER"],
                                         password=settings["PASSWORD"] or None, host=settings["HOST"] or None,
                                         port=settings["PORT"] or None)
    ingest_events(events=[{"tenant": tenant.slug, "object": builders.response(
        response_id=f"resp_backlog_{i}", created_at=dt.datetime(2026, 6, 2, tzinfo=dt.UTC), model="gpt-7-test")}
        for i in range(3)])
    monkeypatch.setattr(ledger_services, "REPRICE_BATCH", 1)
    free_before_batch = []
    take_lock = bulk.advisory_xact_lock

    def noting_whether_ingest_could_go_first(key, **kwargs):
        if key == ledger_services.INGEST_LOCK_KEY:
            with psycopg.connect(dsn, autocommit=True) as ingest:
                free = ingest.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]
                if free:
                    ingest.execute("SELECT pg_advisory_unlock(%s)", [key])
            free_before_batch.append(free)
        return take_lock(key, **kwargs)

    monkeypatch.setattr(bulk, "advisory_xact_lock", noting_whether_ingest_could_go_first)
    call_command("load_price_book", str(_book_adding(tmp_path, "gpt-7-test")))

    assert Run.objects.for_tenant(tenant).filter(priced=True).count() == 3
    assert len(free_before_batch) >= 3 and all(free_before_batch)


def test_load_price_book_keeps_an_amount_with_trailing_zeros_past_six_places(db, tmp_path):
    data = read_price_book(PRICE_BOOK_FILE)
    data["models"] = [{**data["models"][0], "effective_from": "2026-12-01", "input_usd_per_1m": "2.500000000"}]
    path = tmp_path / "price_book.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    assert price_book_load(path=path).created == [f"{data['models'][0]['model']}@2026-12-01"]
    assert price_book_load(path=path).unchanged[0] == f"{data['models'][0]['model']}@2026-12-01"
    assert ModelPrice.objects.get(effective_from=dt.date(2026, 12, 1)).input_usd_per_1m == Decimal("2.5")


def test_latest_price_on_or_before_the_date_applies():
    book = PriceBook([_rate("m", dt.date(2026, 1, 1), "1"), _rate("m", dt.date(2026, 3, 15), "2")], [])
    assert book.model_rate("m", dt.date(2025, 12, 31)) is None
    assert book.model_rate("m", dt.date(2026, 3, 14)).input_usd_per_1m == Decimal("1")
    assert book.model_rate("m", dt.date(2026, 3, 15)).input_usd_per_1m == Decimal("2")
    assert book.model_rate("m", dt.datetime(2026, 3, 15, 0, 0, tzinfo=dt.UTC)).input_usd_per_1m == Decimal("2")


def test_dated_snapshot_rates_at_family_price_unless_priced_itself():
    book = PriceBook([_rate("gpt-5.4", dt.date(2024, 1, 1), "2.5"),
                      _rate("gpt-5.4-2026-06-01", dt.date(2026, 6, 1), "3")], [])
    assert model_family("gpt-5.4-2026-03-05") == "gpt-5.4"
    assert model_family("gpt-5.4") is None
    assert model_family("gpt-5.4-\uff12\uff10\uff12\uff16-03-05") is None  # fullwidth digits: no OpenAI snapshot
    assert book.model_rate("gpt-5.4-2026-03-05", dt.date(2026, 4, 1)).model == "gpt-5.4"
    assert book.model_rate("gpt-5.4-2026-06-01", dt.date(2026, 6, 2)).input_usd_per_1m == Decimal("3")
    # before its own price exists the snapshot falls back to the family
    assert book.model_rate("gpt-5.4-2026-06-01", dt.date(2026, 5, 1)).model == "gpt-5.4"


def test_unknown_model_has_no_rate(db):
    book = price_book_current()
    assert book.model_rate("gpt-unknown-9", dt.date(2026, 11, 1)) is None
    assert book.model_rate("gpt-6.2-sol", dt.date(2026, 11, 16)) is None  # before its effective date
    assert book.model_rate("gpt-6.2-sol", dt.date(2026, 11, 17)).input_usd_per_1m == Decimal("2")
    assert book.tool_rate(dt.date(2026, 11, 17)).code_interpreter_session_usd == Decimal("0.03")


def test_a_loaded_book_is_stale_once_a_price_version_is_added_or_removed(db):
    # Ingest rates a batch before it takes the ingest lock and checks this under it (ledger.services).
    book = PriceBook.load(track_changes=True)
    assert not book.is_stale()
    added = ModelPrice.objects.create(model="gpt-7-nova", effective_from=dt.date(2026, 11, 1),
                                      input_usd_per_1m=Decimal("3"), output_usd_per_1m=Decimal("12"))
    assert book.is_stale()
    book = PriceBook.load(track_changes=True)
    added.delete()
    assert book.is_stale()
    book = PriceBook.load(track_changes=True)
    ToolPrice.objects.order_by("pk").last().delete()
    assert book.is_stale()


def test_a_book_that_does_not_track_changes_is_never_stale_and_costs_no_extra_query(db, django_assert_num_queries):
    built = PriceBook([_rate("gpt-x", dt.date(2026, 1, 1), "1")], [])
    with django_assert_num_queries(2):  # the model and the tool price versions: pages load the book this way
        loaded = PriceBook.load()
    ModelPrice.objects.create(model="gpt-7-nova", effective_from=dt.date(2026, 11, 1),
                              input_usd_per_1m=Decimal("3"), output_usd_per_1m=Decimal("12"))
    assert not built.is_stale() and not loaded.is_stale()
