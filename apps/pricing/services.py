"""Writes to the price book."""

from __future__ import annotations

from pathlib import Path

from django.db import transaction

from apps.core.services import audit_record

from .models import LONG_CONTEXT_FIELDS, ModelPrice, ToolPrice
from .seed import PRICE_BOOK_FILE, LoadResult, price_book_apply, read_price_book


def price_book_load(*, path: Path | str = PRICE_BOOK_FILE, overwrite: bool = True, actor=None,
                    actor_label: str = "command:load_price_book") -> LoadResult:
    """Load a price book file idempotently: new versions are created, changed ones updated (with overwrite),
    except a tool price version runs were rated with whose fees the file changes: it is left as it is and
    listed in the result's `refused`, with the reason and what to do instead. A model price version it
    creates rates the runs stored unpriced for its model, as one added in the admin or the API does; all or
    nothing: a price that would take a stored total past what the ledger holds raises RepriceOverflow and
    nothing of the file is loaded. That is checked before the load commits, by rating the backlog without
    writing; the rating itself comes after it, in batches that each hold the ingest lock for a moment (inside
    the load's transaction the first batch's lock was held until the whole backlog was rated, and ingest
    waited for all of it)."""
    from apps.ledger.selectors import tool_price_rated
    from apps.ledger.services import models_unpriced_of_family, reprice_overflow_check, runs_reprice_unpriced

    from .pricebook import PriceBook

    with transaction.atomic():
        data = read_price_book(path)
        result = price_book_apply(data, model_price_cls=ModelPrice, tool_price_cls=ToolPrice, overwrite=overwrite,
                                  tool_price_rated=lambda price: tool_price_rated(tool_price_id=price.pk))
        if result.created or result.updated or result.refused:
            audit_record(
                action="price_book.load", target_type="price_book", target_id=str(path), actor=actor,
                actor_label=actor_label if actor is None else "",
                data={"created": result.created, "updated": result.updated, "refused": sorted(result.refused)},
            )
        if result.created_models:
            models = sorted({name for model in result.created_models for name in models_unpriced_of_family(model)})
            stopped = reprice_overflow_check(models=models, book=PriceBook.load())
            if stopped is not None:
                raise stopped
    if result.created_models:
        # The unpriced-model alert says "add its price; unpriced runs are then re-rated": a price added from a
        # file left them unpriced (billed $0) until someone thought of `reprice --unpriced`.
        rated = runs_reprice_unpriced(models=result.created_models, actor=actor, actor_label=actor_label)
        result.newly_priced_runs = sum(diff.newly_priced_runs for diff in rated.tenants)
    return result


def price_book_seed_if_empty() -> LoadResult | None:
    """A database with no prices at all (fresh, or flushed by a test) gets the shipped price book."""
    if ModelPrice.objects.exists() or ToolPrice.objects.exists():
        return None
    data = read_price_book(PRICE_BOOK_FILE)
    with transaction.atomic():
        return price_book_apply(data, model_price_cls=ModelPrice, tool_price_cls=ToolPrice, overwrite=False)


@transaction.atomic
def model_price_create(
    *,
    model: str,
    effective_from,
    input_usd_per_1m,
    output_usd_per_1m,
    cached_input_usd_per_1m=None,
    cache_write_usd_per_1m=None,
    long_context_above_tokens: int | None = None,
    long_context_input_multiplier=None,
    long_context_output_multiplier=None,
    source: str = "",
    verify: bool = False,
    actor=None,
) -> ModelPrice:
    """Add a price version for a model (it applies to runs created on or after `effective_from`), audited."""
    price = ModelPrice(
        model=model, effective_from=effective_from, input_usd_per_1m=input_usd_per_1m,
        cached_input_usd_per_1m=cached_input_usd_per_1m, output_usd_per_1m=output_usd_per_1m,
        cache_write_usd_per_1m=cache_write_usd_per_1m, long_context_above_tokens=long_context_above_tokens,
        long_context_input_multiplier=long_context_input_multiplier,
        long_context_output_multiplier=long_context_output_multiplier, source=source, verify=verify,
        created_by=actor if getattr(actor, "pk", None) else None,
    )
    price.full_clean()
    price.save()
    audit_record(
        action="price.create", target_type="model_price", target_id=price.version, actor=actor,
        data={field: str(getattr(price, field)) for field in (
            "input_usd_per_1m", "cached_input_usd_per_1m", "output_usd_per_1m", "cache_write_usd_per_1m",
            *LONG_CONTEXT_FIELDS)},
    )
    return price


def model_price_add(*, actor=None, **fields) -> tuple[ModelPrice, int]:
    """Add a price version and rate the runs stored unpriced for its model; (the price, runs newly priced).
    All or nothing: a price that would take a stored total past what the ledger holds raises RepriceOverflow.
    It is checked first, by rating the backlog without writing, so such a price is normally refused before
    anyone sees it. If runs that arrived meanwhile still overflow the real rating, the price is withdrawn
    and the runs it rated put back. (Rating goes in batches that each hold the ingest lock for a moment, so
    ingest never waits for the whole backlog.)"""
    from apps.ledger.services import RepriceOverflow, models_unpriced_of_family, reprice_overflow_check

    from .pricebook import PriceBook
    from .selectors import model_rate_from_price, model_rates_all, tool_rates_all

    candidate = model_rate_from_price(ModelPrice(**fields))
    book = PriceBook([*model_rates_all(), candidate], tool_rates_all())
    stopped = reprice_overflow_check(models=models_unpriced_of_family(fields["model"]), book=book)
    if stopped is not None:
        raise stopped
    price = model_price_create(actor=actor, **fields)
    try:
        return price, unpriced_runs_rate(model=price.model, actor=actor)
    except RepriceOverflow:
        _model_price_withdraw(price, actor=actor)
        raise


def _model_price_withdraw(price: ModelPrice, *, actor=None) -> None:
    """Undo a price version just added: re-rate the runs it rated with the price book as it was without it,
    which puts them back as before (unpriced, or at the version before it); then delete it. The last pass
    and the delete hold the ingest lock, so no batch rates a run with it after that. Audited."""
    from apps.ledger.services import ingest_paused, run_models_of_family, runs_reprice

    from .pricebook import PriceBook
    from .selectors import model_rates_all, tool_rates_all

    without = PriceBook([rate for rate in model_rates_all() if rate.price_id != price.pk], tool_rates_all())
    models = run_models_of_family(price.model, since=price.effective_from)
    label = "" if actor is not None else "service:price-withdrawn"

    def rerate() -> None:
        runs_reprice(start=price.effective_from, models=models, rated_by_price=price.pk, book=without,
                     actor=actor, actor_label=label)

    rerate()  # in batches, ingest going on between them
    with ingest_paused():
        rerate()  # whatever ingest rated with it meanwhile
        audit_record(action="price.withdraw", target_type="model_price", target_id=price.version, actor=actor,
                     data={"reason": "re-rating its unpriced runs would overflow a stored total"})
        price.delete()


def unpriced_runs_rate(*, model: str, actor=None) -> int:
    """Rate the runs stored unpriced for this model (and its dated snapshots) now that a price covers
    them; returns how many runs became priced. The ledger owns run rows, so it does the re-rating."""
    from apps.ledger.services import runs_reprice_unpriced

    result = runs_reprice_unpriced(models=[model], actor=actor,
                                   actor_label="" if actor is not None else "service:price-added")
    return sum(diff.newly_priced_runs for diff in result.tenants)
