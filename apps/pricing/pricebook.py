"""The price book in memory: every price version loaded once per batch, looked up by model and date."""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections.abc import Iterable

from .rating import ModelRate, ToolRate

# A dated snapshot ends in -YYYY-MM-DD (gpt-5.4-2026-03-05) or -MMDD style digits (gpt-4o-0613).
_SNAPSHOT_SUFFIX = re.compile(r"-([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4})$")  # ASCII digits: OpenAI's snapshots


def model_family(model: str) -> str | None:
    """`gpt-5.4-2026-03-05` -> `gpt-5.4`; None when the name carries no snapshot suffix."""
    stripped = _SNAPSHOT_SUFFIX.sub("", model)
    return stripped if stripped != model else None


class PriceBook:
    """Effective-dated lookups. A price applies to runs created on or after its `effective_from` (UTC date)."""

    def __init__(self, model_rates: Iterable[ModelRate], tool_rates: Iterable[ToolRate]):
        by_model: dict[str, list[ModelRate]] = {}
        for rate in model_rates:
            by_model.setdefault(rate.model, []).append(rate)
        self._models = {model: sorted(rates, key=lambda r: r.effective_from) for model, rates in by_model.items()}
        self._model_dates = {model: [r.effective_from for r in rates] for model, rates in self._models.items()}
        self._tools = sorted(tool_rates, key=lambda r: r.effective_from)
        self._tool_dates = [r.effective_from for r in self._tools]

    # selectors.price_book_version() as it was when the book was loaded with track_changes; else None.
    version: tuple | None = None

    @classmethod
    def load(cls, *, track_changes: bool = False) -> PriceBook:
        """Every price version from the database (a few hundred rows at most). With `track_changes`, also which
        versions exist (two more small queries), so that is_stale() can tell one was added or removed since."""
        from .selectors import model_rates_all, price_book_version, tool_rates_all

        # Read before the rates: a version added in between makes the book look stale (reloaded for
        # nothing), never current.
        version = price_book_version() if track_changes else None
        book = cls(model_rates_all(), tool_rates_all())
        book.version = version
        return book

    def is_stale(self) -> bool:
        """A price version was added or removed since this book was loaded with track_changes (see
        price_book_version); always False for a book loaded without it or built from given rates."""
        from .selectors import price_book_version

        return self.version is not None and price_book_version() != self.version

    def _exact(self, model: str, on_date: dt.date) -> ModelRate | None:
        dates = self._model_dates.get(model)
        if not dates:
            return None
        index = bisect.bisect_right(dates, on_date)
        return self._models[model][index - 1] if index else None

    def model_rate(self, model: str, on_date: dt.date) -> ModelRate | None:
        """The model's own price in effect on the date, else its family's; None means unpriced (never $0)."""
        if isinstance(on_date, dt.datetime):
            on_date = on_date.astimezone(dt.UTC).date()
        rate = self._exact(model, on_date)
        if rate is None:
            family = model_family(model)
            if family:
                rate = self._exact(family, on_date)
        return rate

    def tool_rate(self, on_date: dt.date) -> ToolRate | None:
        if isinstance(on_date, dt.datetime):
            on_date = on_date.astimezone(dt.UTC).date()
        index = bisect.bisect_right(self._tool_dates, on_date)
        return self._tools[index - 1] if index else None

    def models(self) -> list[str]:
        return sorted(self._models)
