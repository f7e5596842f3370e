"""List prices the sandbox bills at, read straight from the price book JSON the ledger is seeded from,
and the rating rules (the same ones the ledger applies), all in Decimal."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

# OpenAI's naming of snapshots and its tier pricing, as the ledger reads them: the sandbox computes its bills on
# its own, but these are facts about OpenAI, kept in one place.
from apps.pricing.pricebook import model_family
from apps.pricing.rating import LongContextRate, tier_multiplier

PRICE_BOOK_PATH = Path(__file__).resolve().parent.parent / "pricing" / "data" / "price_book.json"
PER_MILLION = Decimal(1_000_000)
BYTES_PER_GB = Decimal(2) ** 30
# Wide enough that bytes / 2^30 and every product of it stay exact (2^-30 has 30 decimal digits).
EXACT = decimal.Context(prec=80)


def _dec(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


@dataclass(frozen=True)
class ModelPrice:
    model: str
    effective_from: dt.date
    input: Decimal
    cached_input: Decimal | None
    output: Decimal
    cache_write: Decimal | None
    long_context: LongContextRate | None = None


def _long_context(row: dict) -> LongContextRate | None:
    given = row.get("long_context")
    if not given:
        return None
    return LongContextRate(above_input_tokens=int(given["above_input_tokens"]),
                           input_multiplier=Decimal(str(given["input_multiplier"])),
                           output_multiplier=Decimal(str(given["output_multiplier"])))


@dataclass(frozen=True)
class ToolPrice:
    effective_from: dt.date
    code_interpreter_session: Decimal
    file_search_per_1k: Decimal
    web_search_per_1k: Decimal
    vector_storage_per_gb_day: Decimal
    vector_storage_free_gb: Decimal


class PriceBook:
    def __init__(self, data: dict):
        self.models: dict[str, list[ModelPrice]] = {}
        for row in data["models"]:
            price = ModelPrice(
                model=row["model"],
                effective_from=dt.date.fromisoformat(row["effective_from"]),
                input=_dec(row["input_usd_per_1m"]),
                cached_input=_dec(row.get("cached_input_usd_per_1m")),
                output=_dec(row["output_usd_per_1m"]),
                cache_write=_dec(row.get("cache_write_usd_per_1m")),
                long_context=_long_context(row),
            )
            self.models.setdefault(price.model, []).append(price)
        for prices in self.models.values():
            prices.sort(key=lambda price: price.effective_from)
        self.tools = sorted(
            (
                ToolPrice(
                    effective_from=dt.date.fromisoformat(row["effective_from"]),
                    code_interpreter_session=_dec(row["code_interpreter_session_usd"]),
                    file_search_per_1k=_dec(row["file_search_call_usd_per_1k"]),
                    web_search_per_1k=_dec(row["web_search_call_usd_per_1k"]),
                    vector_storage_per_gb_day=_dec(row["vector_storage_usd_per_gb_day"]),
                    vector_storage_free_gb=_dec(row["vector_storage_free_gb"]),
                )
                for row in data["tools"]
            ),
            key=lambda price: price.effective_from,
        )

    def model_price(self, model: str, day: dt.date) -> ModelPrice | None:
        """The model's list price on `day`, else its family's: OpenAI serves and bills a dated snapshot
        (gpt-5.4-2026-03-05) as it does its family, and the price book lists families."""
        effective = [price for price in self.models.get(model, []) if price.effective_from <= day]
        if not effective and (family := model_family(model)):
            effective = [price for price in self.models.get(family, []) if price.effective_from <= day]
        return effective[-1] if effective else None

    def tool_price(self, day: dt.date) -> ToolPrice:
        effective = [price for price in self.tools if price.effective_from <= day]
        return effective[-1] if effective else self.tools[0]

    def models_available(self, day: dt.date) -> list[str]:
        return sorted(model for model in self.models if self.model_price(model, day) is not None)


@lru_cache(maxsize=4)
def load_price_book(path: str = str(PRICE_BOOK_PATH)) -> PriceBook:
    with open(path, encoding="utf-8") as handle:
        return PriceBook(json.load(handle))


def long_prompt(price: ModelPrice, input_tokens: int) -> bool:
    """Whether one request of `input_tokens` input tokens bills at the price's long-context multiples."""
    return price.long_context is not None and price.long_context.applies(input_tokens)


def token_line_costs(price: ModelPrice, *, input_tokens: int, cached_tokens: int, cache_write_tokens: int,
                     output_tokens: int, service_tier: str, long_context: bool) -> dict[str, Decimal]:
    """Cost per token kind. `input_tokens` includes cached and cache-write tokens; reasoning tokens are
    part of `output_tokens`; a null cached/cache-write price bills at the input price; the service tier the
    response was served on scales every token price (flex at half, priority at double), and the tokens of
    requests whose prompts were past the model's long-context threshold (`long_context`, from long_prompt of
    each request: the counts here may add up many) bill at its long-context multiples."""
    uncached = input_tokens - cached_tokens - cache_write_tokens
    cached_price = price.cached_input if price.cached_input is not None else price.input
    write_price = price.cache_write if price.cache_write is not None else price.input
    on_input = on_output = tier_multiplier(service_tier)
    if long_context:
        on_input *= price.long_context.input_multiplier
        on_output *= price.long_context.output_multiplier
    return {
        "input": EXACT.divide(EXACT.multiply(uncached * price.input, on_input), PER_MILLION),
        "cached input": EXACT.divide(EXACT.multiply(cached_tokens * cached_price, on_input), PER_MILLION),
        "cache write": EXACT.divide(EXACT.multiply(cache_write_tokens * write_price, on_input), PER_MILLION),
        "output": EXACT.divide(EXACT.multiply(output_tokens * price.output, on_output), PER_MILLION),
    }


def vector_storage_shares(bytes_by_key: dict, tool: ToolPrice) -> dict:
    """The organization's vector storage for one day, split by bytes: key → (billable GB, cost), each its
    share of vector_storage_cost of the total (the free GB taken once, for the organization). Keys are projects
    for the Costs API, tenants for sizing budgets."""
    total_bytes = sum(bytes_by_key.values())
    if not total_bytes:
        return {}
    billable, amount = vector_storage_cost(total_bytes, tool)
    return {key: (EXACT.divide(EXACT.multiply(billable, size), total_bytes),
                  EXACT.divide(EXACT.multiply(amount, size), total_bytes))
            for key, size in bytes_by_key.items()}


def vector_storage_cost(total_bytes: int, tool: ToolPrice) -> tuple[Decimal, Decimal]:
    """(billable GB, cost) for one organization-day: max(0, GB − free GB) × $/GB-day, GB = bytes / 2^30."""
    gigabytes = EXACT.divide(Decimal(total_bytes), BYTES_PER_GB)
    billable = max(Decimal(0), EXACT.subtract(gigabytes, tool.vector_storage_free_gb))
    return billable, EXACT.multiply(billable, tool.vector_storage_per_gb_day)
