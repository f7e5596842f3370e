"""Writes to the price book."""

from __future__ import annotations

from pathlib import Path

from django.db import transaction

from apps.core.services import audit_record

from .models import ModelPrice, ToolPrice
from .seed import PRICE_BOOK_FILE, LoadResult, price_book_apply, read_price_book


@transaction.atomic
def price_book_load(*, path: Path | str = PRICE_BOOK_FILE, overwrite: bool = True, actor=None,
                    actor_label: str = "command:load_price_book") -> LoadResult:
    """Load a price book file idempotently: new versions are created, changed ones updated (with overwrite)."""
    data = read_price_book(path)
    result = price_book_apply(data, model_price_cls=ModelPrice, tool_price_cls=ToolPrice, overwrite=overwrite)
    if result.created or result.updated:
        audit_record(
            action="price_book.load", target_type="price_book", target_id=str(path), actor=actor,
            actor_label=actor_label if actor is None else "",
            data={"created": result.created, "updated": result.updated},
        )
    return result


def price_book_seed_if_empty() -> LoadResult | None:
    """A database with no prices at all (fresh, or flushed by a test) gets the shipped price book."""
    if ModelPrice.objects.exists() or ToolPrice.objects.exists():
        return None
    data = read_price_book(PRICE_BOOK_FILE)
    with transaction.atomic():
        return price_book_apply(data, model_price_cls=ModelPrice, tool_price_cls=ToolPrice, overwrite=False)
