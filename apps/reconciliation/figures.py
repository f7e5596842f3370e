"""The reconciliation chart as a plain Plotly figure dict, built by a pure function from selector output."""

from __future__ import annotations

from collections.abc import Sequence

from apps.core.money import money_text

from .selectors import DayTotals

LEDGER_COLOR = "#2453d4"
OPENAI_COLOR = "#e69f00"
UNATTRIBUTED_COLOR = "#b42318"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


def reconciliation_figure(days: Sequence[DayTotals]) -> dict | None:
    """Ledger vs OpenAI dollars per day as paired bars, unattributed spend as a line, and a red ring on
    every day with a flagged line. None when there is nothing to draw."""
    if not days:
        return None
    x = [day.day.isoformat() for day in days]
    flagged = [day for day in days if day.flagged]
    data = [
        {"type": "bar", "name": "Ledger (attributed)", "x": x, "y": [float(day.ledger_usd) for day in days],
         "marker": {"color": LEDGER_COLOR},
         "hovertext": [f"{day.day}: ledger {money_text(day.ledger_usd)}" for day in days], "hoverinfo": "text"},
        {"type": "bar", "name": "OpenAI (Costs API)", "x": x, "y": [float(day.openai_usd) for day in days],
         "marker": {"color": OPENAI_COLOR},
         "hovertext": [f"{day.day}: OpenAI {money_text(day.openai_usd)}" for day in days], "hoverinfo": "text"},
        {"type": "scatter", "mode": "lines+markers", "name": "Unattributed spend", "x": x,
         "y": [float(day.unattributed_usd) for day in days], "line": {"color": UNATTRIBUTED_COLOR, "width": 2},
         "hovertext": [f"{day.day}: unattributed {money_text(day.unattributed_usd)}" for day in days], "hoverinfo": "text"},
    ]
    if flagged:
        data.append({
            "type": "scatter", "mode": "markers", "name": "Day with drift",
            "x": [day.day.isoformat() for day in flagged],
            "y": [float(max(day.ledger_usd, day.openai_usd)) for day in flagged],
            "marker": {"symbol": "circle-open", "size": 14, "color": UNATTRIBUTED_COLOR, "line": {"width": 2}},
            "hovertext": [f"{day.day}: {day.flagged} line{'s' if day.flagged != 1 else ''} flagged" for day in flagged],
            "hoverinfo": "text",
        })
    layout = {
        "barmode": "group",
        "font": {"family": FONT, "size": 12, "color": "#1b1f24"},
        "margin": {"l": 56, "r": 16, "t": 12, "b": 40},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "hovermode": "closest",
        "legend": {"orientation": "h", "y": -0.2, "x": 0},
        "xaxis": {"type": "date", "gridcolor": "#eef0f3"},
        "yaxis": {"title": {"text": "USD"}, "gridcolor": "#eef0f3", "zeroline": True},
    }
    return {"data": data, "layout": layout}
