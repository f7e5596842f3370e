"""The lifecycle page's chart, built by a pure function from selector output (no database, no request)."""

from __future__ import annotations

from collections.abc import Sequence

from apps.core.money import money_text
from apps.dashboard.figures import _layout

from .selectors import StorageDay

COST_COLOR = "#2453d4"
SAVED_COLOR = "#009e73"
GB_COLOR = "#9aa3af"
# Cost is GB-days times a price, so with both axes autoscaled from zero the GB-days line ran exactly along
# the bar tops and the two series read as one. The USD axis gets this much headroom (bars fill its lower
# ~60%), the GB-days axis little (its line runs in the upper part), so the line rides well clear of the bars.
BAR_HEADROOM = 1.6
LINE_HEADROOM = 1.05


def storage_figure(days: Sequence[StorageDay]) -> dict | None:
    """Vector storage per day: cost and money saved (bars, USD) and GB-days (dotted line, right axis, drawn
    above the bars)."""
    if not days:
        return None
    x = [d.day.isoformat() for d in days]
    top_usd = max(max(d.cost_usd, d.saved_usd) for d in days)
    top_gb = max(d.gb_days for d in days)
    # An all-zero series keeps plotly's own range: [0, 0] would draw nothing.
    usd_range = {"range": [0, float(top_usd) * BAR_HEADROOM]} if top_usd > 0 else {}
    gb_range = {"range": [0, float(top_gb) * LINE_HEADROOM]} if top_gb > 0 else {}
    return {
        "data": [
            {"type": "bar", "name": "storage cost", "x": x, "y": [float(d.cost_usd) for d in days],
             "marker": {"color": COST_COLOR}, "text": [money_text(d.cost_usd) for d in days],
             "hovertemplate": "%{x}: %{text} storage<extra></extra>", "textposition": "none"},
            {"type": "bar", "name": "saved by deletions", "x": x, "y": [float(d.saved_usd) for d in days],
             "marker": {"color": SAVED_COLOR}, "text": [money_text(d.saved_usd) for d in days],
             "hovertemplate": "%{x}: %{text} saved<extra></extra>", "textposition": "none"},
            {"type": "scatter", "mode": "lines+markers", "name": "GB-days", "x": x,
             "y": [float(d.gb_days) for d in days], "yaxis": "y2", "line": {"color": GB_COLOR, "width": 2, "dash": "dot"},
             "text": [f"{d.gb_days.normalize():f} GB-days" for d in days],
             "hovertemplate": "%{x}: %{text}<extra></extra>"},
        ],
        "layout": _layout(
            y_title="USD per day", barmode="group", yaxis=usd_range,
            # Ticks of its own ("auto"): synced to the dollar gridlines, the GB-days axis read 20.9, 41.8, 62.8.
            yaxis2={"title": {"text": "GB-days"}, "overlaying": "y", "side": "right", "rangemode": "tozero",
                    "showgrid": False, "tickmode": "auto", **gb_range},
        ),
    }
