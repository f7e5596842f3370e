"""Loading the price book data file (apps/pricing/data/price_book.json): shared by the data migration,
the post-migrate seed of empty databases and `manage.py load_price_book`. Takes the model classes as
arguments so a migration can pass its historical models."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from apps.core.money import PRICE_FIELD_KWARGS

from .models import LONG_CONTEXT_FIELDS, MULTIPLIER_FIELD_KWARGS, TOOL_RUN_FEE_FIELDS, TOOL_RUN_FEES_LOCKED

PRICE_BOOK_FILE = Path(__file__).resolve().parent / "data" / "price_book.json"

MODEL_PRICE_FIELDS = ("input_usd_per_1m", "cached_input_usd_per_1m", "output_usd_per_1m", "cache_write_usd_per_1m")
TOOL_PRICE_FIELDS = (
    "code_interpreter_session_usd",
    "file_search_call_usd_per_1k",
    "web_search_call_usd_per_1k",
    "vector_storage_usd_per_gb_day",
    "vector_storage_free_gb",
)
NULLABLE = {"cached_input_usd_per_1m", "cache_write_usd_per_1m"}
# An entry's optional "long_context": {"above_input_tokens": 272000, "input_multiplier": "2",
# "output_multiplier": "1.5"} (rating.LongContextRate); absent or null: the version has none.
MULTIPLIER_PLACES = MULTIPLIER_FIELD_KWARGS["decimal_places"]
MULTIPLIER_LIMIT = Decimal(10) ** (MULTIPLIER_FIELD_KWARGS["max_digits"] - MULTIPLIER_PLACES)
TOKENS_LIMIT = 2**31 - 1  # a PositiveIntegerField
# What a price column holds (PRICE_FIELD_KWARGS). The database does not refuse a finer amount, it rounds it:
# $0.0000004 would be stored as a $0 price, and every later load would "update" it again. A larger one fails
# on PostgreSQL (numeric overflow, a traceback) and on SQLite is stored but cannot be read back. So an amount
# the column cannot hold exactly is refused here, naming the field, as the API and the admin refuse it.
PRICE_PLACES = PRICE_FIELD_KWARGS["decimal_places"]
PRICE_LIMIT = Decimal(10) ** (PRICE_FIELD_KWARGS["max_digits"] - PRICE_PLACES)
MODEL_NAME_LENGTH = 100  # ModelPrice.model


class PriceBookFileError(ValueError):
    pass


@dataclass
class LoadResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # Versions the file would change but that were left as they are: label -> why, and what to do instead.
    refused: dict[str, str] = field(default_factory=dict)
    # The models a created price version is for, and how many runs stored unpriced they rated (price_book_load).
    created_models: list[str] = field(default_factory=list)
    newly_priced_runs: int = 0


def read_price_book(path: Path | str = PRICE_BOOK_FILE) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PriceBookFileError(f"{path}: cannot read the price book ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("models"), list) or not isinstance(data.get("tools", []), list):
        raise PriceBookFileError(f"{path}: expected an object with a 'models' list and a 'tools' list")
    return data


def _date(value, where: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise PriceBookFileError(f"{where}: must be a date YYYY-MM-DD") from exc


def _decimal(value, where: str, *, noun: str, limit: Decimal, places: int) -> Decimal:
    """A non-negative decimal the column (`limit`, `places`) holds exactly, or an error naming `where`."""
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise PriceBookFileError(f"{where}: must be a decimal {noun}") from exc
    if not amount.is_finite() or amount < 0:
        raise PriceBookFileError(f"{where}: must be a non-negative {noun}")
    if amount >= limit:
        raise PriceBookFileError(f"{where}: must be less than {limit:f}")
    if amount != amount.quantize(Decimal(1).scaleb(-places)):
        raise PriceBookFileError(f"{where}: must have at most {places} decimal places")
    return amount


def _amount(value, where: str, nullable: bool) -> Decimal | None:
    if value is None and nullable:
        return None
    return _decimal(value, where, noun="amount", limit=PRICE_LIMIT, places=PRICE_PLACES)


def _multiplier(value, where: str) -> Decimal:
    return _decimal(value, where, noun='number such as "2" or "1.5"', limit=MULTIPLIER_LIMIT,
                    places=MULTIPLIER_PLACES)


def _long_context(value, where: str) -> dict:
    if value is None:
        return dict.fromkeys(LONG_CONTEXT_FIELDS)
    if not isinstance(value, dict):
        raise PriceBookFileError(f"{where}: must be an object with above_input_tokens, input_multiplier and "
                                 "output_multiplier, or null")
    above = value.get("above_input_tokens")
    if isinstance(above, bool) or not isinstance(above, int) or not 0 <= above <= TOKENS_LIMIT:
        raise PriceBookFileError(f"{where}.above_input_tokens: must be a whole number of tokens (e.g. 272000)")
    return {"long_context_above_tokens": above,
            "long_context_input_multiplier": _multiplier(value.get("input_multiplier"), f"{where}.input_multiplier"),
            "long_context_output_multiplier": _multiplier(value.get("output_multiplier"),
                                                          f"{where}.output_multiplier")}


def _common(entry: dict, where: str) -> dict:
    return {
        "source": str(entry.get("source", ""))[:300],
        "source_date": _date(entry["source_date"], f"{where}.source_date") if entry.get("source_date") else None,
        "verify": bool(entry.get("verify", False)),
    }


def _apply(model_cls, lookup: dict, values: dict, result: LoadResult, label: str, overwrite: bool,
           fees_locked: Callable[[object, dict], bool] = lambda existing, changed: False) -> None:
    existing = model_cls.objects.filter(**lookup).first()
    if existing is None:
        model_cls.objects.create(**lookup, **values)
        result.created.append(label)
        return
    changed = {name: value for name, value in values.items() if getattr(existing, name) != value}
    if changed and overwrite and fees_locked(existing, changed):
        # Nothing of the version changes, not even its other fields: half a version from the file is neither.
        result.refused[label] = TOOL_RUN_FEES_LOCKED
    elif changed and overwrite:
        for name, value in changed.items():
            setattr(existing, name, value)
        existing.save(update_fields=list(changed))
        result.updated.append(label)
    else:
        result.unchanged.append(label)


def price_book_apply(data: dict, *, model_price_cls, tool_price_cls, overwrite: bool = False,
                     tool_price_rated: Callable[[object], bool] | None = None) -> LoadResult:
    """Create missing price versions; with overwrite, bring existing ones in line with the file, except a
    tool price version whose run fees the file changes while `tool_price_rated(version)` says runs were
    rated with it: that one is left as it is and listed in `refused` (see models.TOOL_RUN_FEES_LOCKED)."""
    if overwrite and tool_price_rated is None:
        raise ValueError("overwrite needs tool_price_rated: a rated tool price version's fees never change in place")

    def tool_fees_locked(existing, changed: dict) -> bool:
        return any(name in changed for name in TOOL_RUN_FEE_FIELDS) and tool_price_rated(existing)

    result = LoadResult()
    # A version given twice would be written twice, the later entry winning: every load then "updated" it
    # (back and forth) and asked for a re-price, and which price the file meant was anyone's guess.
    seen: dict[str, str] = {}

    def once(label: str, where: str) -> None:
        if label in seen:
            raise PriceBookFileError(f"{where}.effective_from: {label} is already given at {seen[label]}; "
                                     "keep one entry per version")
        seen[label] = where

    for index, entry in enumerate(data.get("models", [])):
        where = f"models[{index}]"
        if not isinstance(entry, dict) or not entry.get("model"):
            raise PriceBookFileError(f"{where}.model: required")
        model = entry["model"]
        # Stripped of nothing: " gpt-5 " would be stored as given and never match a run's model.
        if not isinstance(model, str) or not model.strip() or model != model.strip() or len(model) > MODEL_NAME_LENGTH:
            raise PriceBookFileError(f"{where}.model: must be a model name of at most {MODEL_NAME_LENGTH} characters, "
                                     "without surrounding spaces")
        lookup = {"model": model, "effective_from": _date(entry.get("effective_from"), f"{where}.effective_from")}
        values = {
            name: _amount(entry.get(name), f"{where}.{name}", nullable=name in NULLABLE) for name in MODEL_PRICE_FIELDS
        }
        values.update(_long_context(entry.get("long_context"), f"{where}.long_context"))
        values.update(_common(entry, where))
        # The data migration's historical model predates the long-context fields (a later migration adds them).
        fields = {field.name for field in model_price_cls._meta.get_fields()}
        values = {name: value for name, value in values.items() if name in fields}
        label = f"{lookup['model']}@{lookup['effective_from']}"
        once(label, where)
        _apply(model_price_cls, lookup, values, result, label, overwrite)
        if result.created and result.created[-1] == label:
            result.created_models.append(model)
    for index, entry in enumerate(data.get("tools", [])):
        where = f"tools[{index}]"
        if not isinstance(entry, dict):
            raise PriceBookFileError(f"{where}: must be an object")
        lookup = {"effective_from": _date(entry.get("effective_from"), f"{where}.effective_from")}
        values = {name: _amount(entry.get(name), f"{where}.{name}", nullable=False) for name in TOOL_PRICE_FIELDS}
        values.update(_common(entry, where))
        label = f"tools@{lookup['effective_from']}"
        once(label, where)
        _apply(tool_price_cls, lookup, values, result, label, overwrite, fees_locked=tool_fees_locked)
    return result
