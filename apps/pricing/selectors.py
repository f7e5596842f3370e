"""Reads of the price book."""

from __future__ import annotations

from django.db.models import Count, Max

from .models import ModelPrice, ToolPrice
from .pricebook import PriceBook
from .rating import LongContextRate, ModelRate, ToolRate


def model_rate_from_price(price: ModelPrice) -> ModelRate:
    return ModelRate(
        model=price.model,
        effective_from=price.effective_from,
        input_usd_per_1m=price.input_usd_per_1m,
        output_usd_per_1m=price.output_usd_per_1m,
        cached_input_usd_per_1m=price.cached_input_usd_per_1m,
        cache_write_usd_per_1m=price.cache_write_usd_per_1m,
        price_id=price.pk,
        long_context=None if price.long_context_above_tokens is None else LongContextRate(
            above_input_tokens=price.long_context_above_tokens,
            input_multiplier=price.long_context_input_multiplier,
            output_multiplier=price.long_context_output_multiplier,
        ),
    )


def tool_rate_from_price(price: ToolPrice) -> ToolRate:
    return ToolRate(
        effective_from=price.effective_from,
        code_interpreter_session_usd=price.code_interpreter_session_usd,
        file_search_call_usd_per_1k=price.file_search_call_usd_per_1k,
        web_search_call_usd_per_1k=price.web_search_call_usd_per_1k,
        vector_storage_usd_per_gb_day=price.vector_storage_usd_per_gb_day,
        vector_storage_free_gb=price.vector_storage_free_gb,
        price_id=price.pk,
    )


def model_rates_all() -> list[ModelRate]:
    return [model_rate_from_price(price) for price in ModelPrice.objects.all()]


def tool_rates_all() -> list[ToolRate]:
    return [tool_rate_from_price(price) for price in ToolPrice.objects.all()]


def price_book_version() -> tuple:
    """Which price versions exist, in two small aggregates: (count, highest id) of the model prices and of the
    tool prices. Adding a version or removing one — what re-rates stored runs by itself — always changes it
    (ids only grow). Editing a version in place does not; that is re-rated by `manage.py reprice`."""
    return tuple((totals["versions"], totals["highest"])
                 for totals in (ModelPrice.objects.aggregate(versions=Count("id"), highest=Max("id")),
                                ToolPrice.objects.aggregate(versions=Count("id"), highest=Max("id"))))


def price_book_current() -> PriceBook:
    """A fresh in-memory price book; load it once per batch, not per run."""
    return PriceBook.load()
