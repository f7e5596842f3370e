"""Plotly figures as plain dicts, built by pure functions from selector output (no database, no request),
so every chart can be tested without a browser. Hover text carries the exact amounts as strings; the
plotted values are floats because that is what plotly.js draws."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal

from apps.core.money import ZERO, money_text
from apps.ledger.selectors import OTHERS_LABEL, DailySeries, TokenHistogram

# Colour-blind-safe categorical palette (Okabe-Ito, reordered so the first colours contrast best on white).
PALETTE = ["#2453d4", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#7a5195", "#0072b2", "#b8860b"]
OTHERS_COLOR = "#9aa3af"
WASTED_COLOR = "#b42318"
USEFUL_COLOR = "#8fa8e8"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


def _float(amount: Decimal) -> float:
    return float(amount)


def _layout(*, y_title: str = "", x_title: str = "", **extra) -> dict:
    layout = {
        "font": {"family": FONT, "size": 12, "color": "#1b1f24"},
        "margin": {"l": 56, "r": 16, "t": 36, "b": 44},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "hovermode": "closest",
        "showlegend": True,
        # Above the plot: below it, a wrapped legend collides with the x-axis title on a phone.
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "xaxis": {"title": {"text": x_title}, "gridcolor": "#eef0f3", "zeroline": False},
        "yaxis": {"title": {"text": y_title}, "gridcolor": "#eef0f3", "zeroline": False, "rangemode": "tozero"},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(layout.get(key), dict):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def series_colors(names: Sequence[str]) -> dict[str, str]:
    """A colour per series name that stays the same from chart to chart: a tenant on every period of the overview,
    a model on every tenant's page. Each name ranks the palette by a stable hash of (name, colour); colours are
    handed out best claim first over all the chart's names, so no two series of a chart share a colour while the
    palette lasts, and a name keeps its favourite colour unless a series shown with it has a stronger claim on
    that colour. Handed out in chart order (largest first), a tenant's colour followed its rank: Wonka Foods took
    the next free slot after Globex at 30 days and its own at 90, green on one period and yellow on the other.
    Names beyond the palette reuse their favourite. "(others)" is always grey."""
    shown = [name for name in dict.fromkeys(names) if name != OTHERS_LABEL]
    claims = sorted(((_color_claim(name, slot), name, slot) for name in shown for slot in range(len(PALETTE))),
                    reverse=True)
    slots: dict[str, int] = {}
    taken: set[int] = set()
    for _, name, slot in claims:
        if name not in slots and slot not in taken:
            slots[name] = slot
            taken.add(slot)
    for name in shown:
        if name not in slots:  # more series than colours
            slots[name] = max(range(len(PALETTE)), key=lambda slot: _color_claim(name, slot))
    colors = {name: PALETTE[slots[name]] for name in shown}
    if OTHERS_LABEL in names:
        colors[OTHERS_LABEL] = OTHERS_COLOR
    return colors


def _color_claim(name: str, slot: int) -> int:
    # blake2b, not crc32: CRC is linear, so crc32(name + slot) changes from slot to slot by the same bits for every
    # name of one length, and such names ranked the palette alike.
    return int.from_bytes(hashlib.blake2b(f"{name}\x1f{slot}".encode(), digest_size=8).digest(), "big")


def daily_stacked_cost_figure(series: DailySeries, *, name_labels: dict[str, str] | None = None) -> dict:
    """Cost per day, one stacked bar segment per series (tenants or models), "others" last and grey."""
    labels = name_labels or {}
    days = [day.isoformat() for day in series.days]
    names = [name for name in series.series if name != OTHERS_LABEL]
    if OTHERS_LABEL in series.series:
        names.append(OTHERS_LABEL)
    traces = []
    colors = series_colors(names)
    for name in names:
        values = series.series[name]
        label = labels.get(name, name) or "(none)"
        traces.append({
            "type": "bar",
            "name": _escape(label),
            "x": days,
            "y": [_float(value) for value in values],
            "customdata": [money_text(value) for value in values],
            "hovertemplate": f"{_escape(label)}<br>%{{x}}: %{{customdata}}<extra></extra>",
            "marker": {"color": colors[name]},
        })
    return {
        "data": traces,
        "layout": _layout(y_title="USD per day (UTC days)", barmode="stack", hovermode="x unified",
                          yaxis={"tickprefix": "$"}, xaxis={"type": "date"}),
    }


def wasted_daily_figure(series: DailySeries) -> dict:
    """Per day: spend on runs that produced something, with wasted spend (failed/cancelled/expired) on top."""
    days = [day.isoformat() for day in series.days]
    traces = []
    for name, label, color in (("useful", "completed and other", USEFUL_COLOR), ("wasted", "wasted", WASTED_COLOR)):
        values = series.series.get(name, [ZERO] * len(days))
        traces.append({
            "type": "bar", "name": label, "x": days, "y": [_float(value) for value in values],
            "customdata": [money_text(value) for value in values],
            "hovertemplate": f"{label}<br>%{{x}}: %{{customdata}}<extra></extra>",
            "marker": {"color": color},
        })
    return {"data": traces, "layout": _layout(y_title="USD per day", barmode="stack", yaxis={"tickprefix": "$"},
                                              xaxis={"type": "date"})}


def horizontal_cost_bar_figure(rows: Sequence[dict], *, label_key: str, empty_label: str = "(none)",
                               limit: int = 15) -> dict:
    """The costliest `limit` rows as horizontal bars, largest at the top."""
    shown = list(rows)[:limit]
    # Features and end-user ids come from the tenant's metadata, and Plotly draws its tick labels and hover
    # text as HTML: a user_id of <a href=...> was a live link on the staff page.
    labels = [_escape(row[label_key]) or empty_label for row in shown]
    values = [row["cost_usd"] for row in shown]
    return {
        "data": [{
            "type": "bar", "orientation": "h", "name": "cost",
            "y": labels[::-1], "x": [_float(value) for value in values][::-1],
            "customdata": [money_text(value) for value in values][::-1],
            "hovertemplate": "%{y}: %{customdata}<extra></extra>",
            "marker": {"color": PALETTE[0]},
        }],
        "layout": _layout(x_title="USD in period", showlegend=False, xaxis={"tickprefix": "$", "rangemode": "tozero"},
                          yaxis={"automargin": True, "type": "category", "rangemode": "normal"},
                          margin={"l": 8, "t": 8}, height=max(180, 28 * len(shown) + 70)),
    }


# Ticks per decade on a log axis, coarsest first: powers of ten, then 1-2-5, then every digit.
LOG_TICK_STEPS = ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9))
# An axis takes finer steps until it has this many labels: with two, the runs page left a third of an axis bare.
MIN_LOG_TICKS = 5


def log_axis_ticks(values: Iterable[float], *, label: Callable[[float], str]) -> dict:
    """Tick positions and labels, and the range, of a log axis over `values` (positive ones). The range runs from
    the tick at or below the smallest value to the one at or above the largest, so both ends are labelled (left
    to Plotly, runs of $0.10-$0.44 were labelled "$0.1" and "$0.2", the $0.5 tick just outside); the labels are
    the coarsest of powers of ten, 1-2-5 or every digit that puts MIN_LOG_TICKS on it. Plotly's own labels on a
    log axis were bare digits ("2", "5") for the minor ticks, with no unit and no decade. Empty without positive
    values (Plotly's default then)."""
    positive = [value for value in values if value > 0]
    if not positive:
        return {}
    low, high = min(positive), max(positive)
    choices = []
    for steps in LOG_TICK_STEPS:
        start, end = _log_range(low, high, steps)
        ticks = [tick for tick in _log_ticks(start, end, steps) if start <= tick <= end]
        if len(ticks) >= MIN_LOG_TICKS:
            break
        choices.append((ticks, start, end))
    else:  # data inside a decade or so: the steps labelling the most, the coarser on a tie
        ticks, start, end = max(choices, key=lambda choice: len(choice[0]))
    # A little past the end ticks: a point on one would be cut in half at the axis.
    pad = 0.03 * (math.log10(end) - math.log10(start))
    return {"tickmode": "array", "tickvals": ticks, "ticktext": [label(tick) for tick in ticks],
            "range": [math.log10(start) - pad, math.log10(end) + pad]}


def _log_ticks(low: float, high: float, steps: Sequence[int]) -> list[float]:
    # float("3e-1"), not 3 * 10.0**-1: the page's tick value is 0.3, not 0.30000000000000004.
    return [float(f"{step}e{power}") for power in range(math.floor(math.log10(low)) - 1,
                                                         math.floor(math.log10(high)) + 2) for step in steps]


def _log_range(low: float, high: float, steps: Sequence[int]) -> tuple[float, float]:
    """The tick of `steps` at or below `low` and the first above it at or above `high`."""
    ticks = _log_ticks(low, high, steps)
    start = max(tick for tick in ticks if tick <= low * (1 + 1e-9))
    end = min(tick for tick in ticks if tick >= high * (1 - 1e-9) and tick > start)
    return start, end


def _usd_tick(value: float) -> str:
    return f"${value:,.0f}" if value >= 1 else f"${value:.{max(0, -math.floor(math.log10(value)))}f}"


def _count_tick(value: float) -> str:
    return f"{value:,.0f}" if value >= 1 else ""


def _token_tick(value: float) -> str:
    # 500, 1k, 2k, 1M, as Plotly's "~s" format wrote its powers of ten, for the 2s and 5s as well.
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


# Where a log count axis starts. Bars on a log axis rise from its foot: at the smallest count (Plotly's range) the
# long tail's bins of 2 or 4 runs were slivers or nothing; from half a run, one run is a third of a decade tall.
COUNT_AXIS_FOOT = 0.5


def prompt_token_histogram_figure(histogram: TokenHistogram) -> dict:
    """Runs per prompt-size bin on a log count axis, so a handful of huge prompts stay visible; the long tail's
    bins (those the page counts as the tail) in the second colour."""
    labels = histogram.labels
    tail_from = histogram.tail_from
    return {
        "data": [{
            "type": "bar", "name": "runs", "x": labels, "y": histogram.counts,
            "hovertemplate": "%{x} prompt tokens: %{y} runs<extra></extra>",
            "marker": {"color": [PALETTE[1] if tail_from is not None and edge >= tail_from else PALETTE[0]
                                 for edge in histogram.edges]},
        }],
        "layout": _layout(x_title="prompt (input) tokens per run", y_title="runs (log scale)", showlegend=False,
                          xaxis={"type": "category"},
                          yaxis={"type": "log", "rangemode": "normal", **_count_axis(histogram.counts)},
                          bargap=0.08),
    }


def _count_axis(counts: Sequence[int]) -> dict:
    """A log axis for run counts: labelled from 1 up past the largest count, starting at COUNT_AXIS_FOOT."""
    axis = log_axis_ticks([1, *counts], label=_count_tick)
    return {**axis, "range": [math.log10(COUNT_AXIS_FOOT), axis["range"][1]]}


def cost_scatter_figure(rows: Iterable[dict], *, run_url: Callable[[str], str | None]) -> dict:
    """Cost against prompt tokens, one point per run, a trace per model; clicking a point opens the run
    (its URL, `run_url(openai_id)`, is in customdata[0]; empty for an id no page could have)."""
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    traces = []
    costs, tokens = [], []
    colors = series_colors(sorted(by_model))
    for model, model_rows in sorted(by_model.items()):
        traces.append({
            "type": "scattergl" if len(model_rows) > 2000 else "scatter",
            "mode": "markers",
            "name": _escape(model),
            "x": (model_tokens := [max(row["input_tokens"], 1) for row in model_rows]),
            "y": (model_costs := [_float(row["cost_total_usd"]) for row in model_rows]),
            "customdata": [
                # The URL quoted as the run's table link is (an id may hold "#" or "?"); the texts escaped, as
                # the hover template draws them as HTML and the id and feature are what ingest was sent.
                [run_url(row["openai_id"]) or "", _escape(row["openai_id"]), _escape(row.get("tenant__slug", "")),
                 money_text(row["cost_total_usd"]), _escape(row.get("feature") or "(none)")]
                for row in model_rows
            ],
            "hovertemplate": ("%{customdata[1]}<br>tenant %{customdata[2]} · %{customdata[4]}<br>"
                              "%{x:,} prompt tokens · %{customdata[3]}<extra>" + _escape(model) + "</extra>"),
            "marker": {"color": colors[model], "size": 8, "opacity": 0.8,
                       "line": {"width": 0.5, "color": "#ffffff"}},
        })
        costs += model_costs
        tokens += model_tokens
    return {
        "data": traces,
        "layout": _layout(x_title="prompt tokens (log scale)", y_title="run cost (USD, log scale)",
                          xaxis={"type": "log", **log_axis_ticks(tokens, label=_token_tick)},
                          yaxis={"type": "log", "rangemode": "normal", **log_axis_ticks(costs, label=_usd_tick)}),
    }


def tokens_by_kind_figure(pairs: Sequence[tuple[str, int]]) -> dict:
    """Horizontal bars, first kind on top: the labels stay readable on a phone."""
    colors = [PALETTE[0], PALETTE[4], PALETTE[7], PALETTE[1], PALETTE[3]][: len(pairs)]
    return {
        "data": [{
            "type": "bar", "orientation": "h", "name": "tokens",
            "y": [name for name, _ in pairs][::-1], "x": [count for _, count in pairs][::-1],
            "hovertemplate": "%{y}: %{x:,} tokens<extra></extra>",
            "marker": {"color": colors[::-1]},
        }],
        "layout": _layout(x_title="tokens", showlegend=False, yaxis={"type": "category", "automargin": True,
                                                                    "rangemode": "normal"},
                          margin={"l": 8, "t": 8}, height=260),
    }


def price_history_figure(prices: Sequence, *, today: dt.date) -> dict:
    """Step lines of one model's input, cached-input and output price per 1M tokens over its versions
    (`prices` ordered by effective_from, any order accepted), extended to today."""
    versions = sorted(prices, key=lambda price: price.effective_from)
    if not versions:
        return {"data": [], "layout": _layout()}
    dates = [price.effective_from.isoformat() for price in versions]
    end = max(today, versions[-1].effective_from).isoformat()
    traces = []
    for index, (label, attribute) in enumerate((
        ("input", "input_usd_per_1m"), ("cached input", "cached_input_usd_per_1m"), ("output", "output_usd_per_1m"),
    )):
        # An empty cached price means cached tokens bill at the input price: drawn there, dotted and named so,
        # since the line then lies on the input line.
        values = [price.billed_per_1m(attribute) for price in versions]
        as_input = all(getattr(price, attribute) is None for price in versions)
        traces.append({
            "type": "scatter", "mode": "lines+markers",
            "line": {"shape": "hv", "color": PALETTE[index], **({"dash": "dot", "width": 3} if as_input else {})},
            "name": f"{label} (= input price)" if as_input else label, "x": [*dates, end], "y": [_float(value) for value in [*values, values[-1]]],
            "customdata": [f"${value}" for value in [*values, values[-1]]],
            "hovertemplate": f"{label}: %{{customdata}} per 1M tokens from %{{x}}<extra></extra>",
        })
    return {"data": traces, "layout": _layout(y_title="USD per 1M tokens", yaxis={"tickprefix": "$"},
                                              xaxis={"type": "date"})}


def sparkline_points(values: Sequence[Decimal], *, width: int = 120, height: int = 28) -> str:
    """SVG polyline points for a trend sparkline (a tiny inline chart in a table row, no JS needed)."""
    if not values:
        return ""
    peak = max(values) or Decimal(1)
    step = width / max(len(values) - 1, 1)
    points = []
    for index, value in enumerate(values):
        y = height - 2 - float(value / peak) * (height - 4)
        points.append(f"{index * step:.1f},{y:.1f}")
    return " ".join(points)


def _escape(text: str) -> str:
    # Plotly hover templates render a small HTML subset: keep user-chosen names (model, feature) inert.
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
