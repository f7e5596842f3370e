"""Pure rating functions: token and tool usage times a price version gives a cost breakdown, on Decimal.

Counting rules (OpenAI's, see shared/reference/openai-api.md §4, §6, §8):
- input tokens as reported INCLUDE the cached and the cache-write ones; output tokens INCLUDE reasoning.
  Each token is billed once at the price of its kind: uncached input at the input price, cached input at
  the cached price (the input price when none is set, so a missing price never under-bills), cache writes
  at the cache-write price (input price when none), output (reasoning included) at the output price.
- code interpreter: one session per Assistants run that used the tool, however often it ran; under
  Responses one session per distinct container. File-search calls carry a per-call fee only under the
  Responses API. Web-search calls are billed per call.
- service tier modifiers on token costs: flex and batch 0.5x, priority and fast 2x, every other tier 1x.
- long context: a price version may say that a request with more input tokens than a threshold bills all its
  tokens at multiples of its prices (OpenAI's current models: above 272K input tokens, 2x input, cached input
  and cache writes, 1.5x output), on top of the service tier's modifier.

Nothing here rounds: amounts are exact and are only quantized to the ledger's 10 places when stored.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from apps.core.money import ZERO, quantize_ledger

ONE = Decimal(1)
ONE_MILLION = Decimal(1_000_000)
ONE_THOUSAND = Decimal(1_000)

# Multipliers on token prices by Responses `service_tier` (apidog / Codex-Manager citing OpenAI; verify).
SERVICE_TIER_MULTIPLIERS: dict[str, Decimal] = {
    "flex": Decimal("0.5"),
    "batch": Decimal("0.5"),
    "priority": Decimal("2"),
    "fast": Decimal("2"),
}


class RatingError(ValueError):
    """The usage cannot be rated (inconsistent token counts, tool use with no tool price)."""


@dataclass(frozen=True)
class Usage:
    """What one run consumed, with OpenAI's inclusive token counts."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    code_interpreter_sessions: int = 0
    file_search_calls: int = 0
    web_search_calls: int = 0
    api: str = "assistants"
    service_tier: str = ""

    @property
    def uncached_input_tokens(self) -> int:
        return self.input_tokens - self.cached_input_tokens - self.cache_write_tokens

    @property
    def uses_tools(self) -> bool:
        return bool(self.code_interpreter_sessions or self.billable_file_search_calls or self.web_search_calls)

    @property
    def billable_file_search_calls(self) -> int:
        return billable_file_search_calls(api=self.api, calls=self.file_search_calls)


def billable_file_search_calls(*, api: str, calls: int) -> int:
    """Assistants file_search had no per-call fee; only the Responses tool is billed per call."""
    return calls if api == "responses" else 0


def multiple_text(value: Decimal) -> str:
    """A multiplier as pages write it: "2", "1.5" (never "2.000" or "1E+1")."""
    return f"{value.normalize():f}"


@dataclass(frozen=True)
class LongContextRate:
    """A request with more than `above_input_tokens` input tokens (cached and cache writes included, as OpenAI
    counts the prompt) bills every token at these multiples of the version's prices: input, cached input and
    cache writes at `input_multiplier`, output (reasoning included) at `output_multiplier`."""

    above_input_tokens: int
    input_multiplier: Decimal
    output_multiplier: Decimal

    def applies(self, input_tokens: int) -> bool:
        """Whether a request with `input_tokens` input tokens bills at the long-context multiples."""
        return input_tokens > self.above_input_tokens

    def multipliers(self, input_tokens: int) -> tuple[Decimal, Decimal]:
        """(input, output) multipliers of a request with `input_tokens` input tokens."""
        if self.applies(input_tokens):
            return self.input_multiplier, self.output_multiplier
        return ONE, ONE


@dataclass(frozen=True)
class ModelRate:
    """USD per 1M tokens for one model from `effective_from` on. `price_id` is the ModelPrice row."""

    model: str
    effective_from: dt.date
    input_usd_per_1m: Decimal
    output_usd_per_1m: Decimal
    cached_input_usd_per_1m: Decimal | None = None
    cache_write_usd_per_1m: Decimal | None = None
    price_id: int | None = None
    long_context: LongContextRate | None = None

    @property
    def version(self) -> str:
        return f"{self.model}@{self.effective_from.isoformat()}"


@dataclass(frozen=True)
class ToolRate:
    effective_from: dt.date
    code_interpreter_session_usd: Decimal
    file_search_call_usd_per_1k: Decimal
    web_search_call_usd_per_1k: Decimal
    vector_storage_usd_per_gb_day: Decimal
    vector_storage_free_gb: Decimal
    price_id: int | None = None

    @property
    def version(self) -> str:
        return f"tools@{self.effective_from.isoformat()}"


@dataclass(frozen=True)
class CostBreakdown:
    input: Decimal
    cached_input: Decimal
    output: Decimal
    tools: Decimal
    total: Decimal

    @classmethod
    def zero(cls) -> CostBreakdown:
        return cls(ZERO, ZERO, ZERO, ZERO, ZERO)

    def quantized(self) -> CostBreakdown:
        """Each part at the ledger's scale and the total as their sum, so stored parts always add up."""
        parts = [quantize_ledger(value) for value in (self.input, self.cached_input, self.output, self.tools)]
        return CostBreakdown(*parts, total=sum(parts, ZERO))


def _per_million(tokens: int, price: Decimal) -> Decimal:
    return Decimal(tokens) * price / ONE_MILLION


def tier_multiplier(service_tier: str) -> Decimal:
    return SERVICE_TIER_MULTIPLIERS.get((service_tier or "").lower(), Decimal(1))


def rate_tokens(usage: Usage, model_rate: ModelRate) -> tuple[Decimal, Decimal, Decimal]:
    """(input incl. cache writes, cached input, output) in USD, exact."""
    if min(usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens, usage.output_tokens,
           usage.reasoning_tokens) < 0:
        raise RatingError("token counts must be non-negative")
    if usage.uncached_input_tokens < 0:
        raise RatingError("cached + cache-write tokens exceed input tokens")
    if usage.reasoning_tokens > usage.output_tokens:
        raise RatingError("reasoning tokens exceed output tokens")
    input_price = model_rate.input_usd_per_1m
    cached_price = model_rate.cached_input_usd_per_1m if model_rate.cached_input_usd_per_1m is not None else input_price
    write_price = model_rate.cache_write_usd_per_1m if model_rate.cache_write_usd_per_1m is not None else input_price
    tier = tier_multiplier(usage.service_tier)
    long_input, long_output = (model_rate.long_context.multipliers(usage.input_tokens)
                               if model_rate.long_context is not None else (ONE, ONE))
    cost_input = (
        _per_million(usage.uncached_input_tokens, input_price) + _per_million(usage.cache_write_tokens, write_price)
    ) * tier * long_input
    cost_cached = _per_million(usage.cached_input_tokens, cached_price) * tier * long_input
    # Reasoning tokens are part of output_tokens: billed once, at the output price.
    cost_output = _per_million(usage.output_tokens, model_rate.output_usd_per_1m) * tier * long_output
    return cost_input, cost_cached, cost_output


def rate_tools(usage: Usage, tool_rate: ToolRate | None) -> Decimal:
    if not usage.uses_tools:
        return ZERO
    if tool_rate is None:
        raise RatingError("tool use but no tool price in effect")
    return (
        Decimal(usage.code_interpreter_sessions) * tool_rate.code_interpreter_session_usd
        + Decimal(usage.billable_file_search_calls) * tool_rate.file_search_call_usd_per_1k / ONE_THOUSAND
        + Decimal(usage.web_search_calls) * tool_rate.web_search_call_usd_per_1k / ONE_THOUSAND
    )


def rate_run(usage: Usage, model_rate: ModelRate, tool_rate: ToolRate | None) -> CostBreakdown:
    """The exact cost of one run. Raises RatingError for impossible usage or tool use with no tool price."""
    cost_input, cost_cached, cost_output = rate_tokens(usage, model_rate)
    cost_tools = rate_tools(usage, tool_rate)
    return CostBreakdown(
        input=cost_input,
        cached_input=cost_cached,
        output=cost_output,
        tools=cost_tools,
        total=cost_input + cost_cached + cost_output + cost_tools,
    )


def rate_code_interpreter_sessions(sessions: int, tool_rate: ToolRate) -> Decimal:
    return Decimal(sessions) * tool_rate.code_interpreter_session_usd


def rate_vector_storage(gb: Decimal | int | str, days: Decimal | int | str, tool_rate: ToolRate) -> Decimal:
    """Storage cost: the GB above the free allowance, times the daily price, times days."""
    billable_gb = max(ZERO, Decimal(gb) - tool_rate.vector_storage_free_gb)
    return billable_gb * tool_rate.vector_storage_usd_per_gb_day * Decimal(days)


def bytes_to_gb(usage_bytes: int) -> Decimal:
    """OpenAI meters vector storage in binary GB (GiB) of `usage_bytes`."""
    return Decimal(usage_bytes) / Decimal(1024**3)
