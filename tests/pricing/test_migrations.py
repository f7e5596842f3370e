"""The data migration that gives the shipped price book's versions their long-context pricing, run forwards on
the test database (PostgreSQL or SQLite)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from apps.ledger.models import Run
from apps.ledger.services import ingest_events
from apps.pricing.models import ModelPrice
from tests import builders
from tests.ledger.migrations import migrate_app_to, migrate_ledger_to_latest

pytestmark = pytest.mark.django_db(transaction=True)  # SQLite refuses schema changes inside a transaction

LONG_CONTEXT = (272_000, Decimal("2"), Decimal("1.5"))


def _long_context(model: str) -> tuple:
    return tuple(ModelPrice.objects.filter(model=model).values_list(
        "long_context_above_tokens", "long_context_input_multiplier", "long_context_output_multiplier").get())


def test_0005_sets_long_context_pricing_except_on_a_version_that_already_rated_a_long_prompt(tenant, capsys):
    """Such a version's runs were stored without the surcharge, and a version must rate its runs as they are
    stored: it is left for `load_price_book` and `reprice` (docs/pricing.md)."""
    migrate_app_to("pricing", "0004_model_price_long_context")
    try:
        # As a deployment upgraded from before the fields: every version without long-context pricing, and one
        # long prompt rated by gpt-6.1-sol's version, one short one by gpt-6-luna's.
        ModelPrice.objects.update(long_context_above_tokens=None, long_context_input_multiplier=None,
                                  long_context_output_multiplier=None)
        created = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)
        ingest_events(events=[{"tenant": tenant.slug, "object": builders.response(
            response_id=f"resp_{model}", created_at=created, model=model, input_tokens=tokens)}
            for model, tokens in (("gpt-6.1-sol", 300_000), ("gpt-6-luna", 272_000))])
        long_prompt = Run.objects.for_tenant(tenant).get(openai_id="resp_gpt-6.1-sol")
        assert long_prompt.cost_input_usd == Decimal("0.6")  # rated without the surcharge
    finally:
        migrate_ledger_to_latest()

    assert _long_context("gpt-6.1-sol") == (None, None, None)
    said = capsys.readouterr().out
    assert "gpt-6.1-sol@2026-09-01 already rated runs past 272,000 input tokens" in said
    assert "python manage.py reprice --start 2026-09-01" in said and "gpt-6-luna" not in said
    assert _long_context("gpt-6-luna") == LONG_CONTEXT
    assert _long_context("gpt-6.2-astra") == LONG_CONTEXT
    assert _long_context("gpt-5.4") == (None, None, None)  # the file gives it none


def test_0005_gives_exactly_the_versions_the_shipped_price_book_gives_long_context_pricing():
    """The migration writes its values itself (a later edit of the file must not change what it did); at this
    release they are the file's."""
    import importlib

    from apps.pricing.seed import PRICE_BOOK_FILE, read_price_book

    migration = importlib.import_module("apps.pricing.migrations.0005_long_context_from_the_price_book")
    shipped = {(entry["model"], dt.date.fromisoformat(entry["effective_from"])): entry["long_context"]
               for entry in read_price_book(PRICE_BOOK_FILE)["models"] if entry.get("long_context")}
    assert set(shipped) == set(migration.VERSIONS)
    for rule in shipped.values():
        assert (rule["above_input_tokens"], Decimal(rule["input_multiplier"]), Decimal(rule["output_multiplier"])) == (
            migration.LONG_CONTEXT["long_context_above_tokens"],
            migration.LONG_CONTEXT["long_context_input_multiplier"],
            migration.LONG_CONTEXT["long_context_output_multiplier"])
