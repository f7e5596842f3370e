"""The lifecycle page's chart, built by a pure function from selector output (no database, no request)."""

from __future__ import annotations

from collections.abc import Sequence

from apps.core.money import money_text
from apps.dashboard.figures import _layout

from .selectors import StorageDay

COST_COLOR = "#2453d4"
SAVED_COLOR = "#009e73"
GB_COLOR = "#9aa3af"


def storage_figure(days: Sequence[StorageDay]) -> dict | None:
    """Vector storage per day: cost and money saved (bars, USD) and GB-days (line, right axis)."""
    if not days:
        return None
    x = [d.day.isoformat() for d in days]
    return {
        "data": [
            {"type": "bar", "name": "storage cost", "x": x, "y": [float(d.cost_usd) for d in days],
             "marker": {"color": COST_COLOR}, "text": [money_text(d.cost_usd) for d in days],
             "hovertemplate": "%{x}: %{text} storage<extra></extra>", "textposition": "none"},
            {"type": "bar", "name": "saved by deletions", "x": x, "y": [float(d.saved_usd) for d in days],
             "marker": {"color": SAVED_COLOR}, "text": [money_text(d.saved_usd) for d in days],
             "hovertemplate": "%{x}: %{text} saved<extra></extra>", "textposition": "none"},
            {"type": "scatter", "mode": "lines+markers", "name": "GB-days", "x": x,
             "y": [float(d.gb_days) for d in days], "yaxis": "y2", "line": {"color": GB_COLOR},
             "text": [f"{d.gb_days.normalize():f} GB-days" for d in days],
             "hovertemplate": "%{x}: %{text}<extra></extra>"},
        ],
        "layout": _layout(
            y_title="USD per day", barmode="group",
            # Ticks of its own ("auto"): synced to the dollar gridlines, the GB-days axis read 20.9, 41.8, 62.8.
            yaxis2={"title": {"text": "GB-days"}, "overlaying": "y", "side": "right", "rangemode": "tozero",
                    "showgrid": False, "tickmode": "auto"},
        ),
    }
