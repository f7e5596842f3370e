"""Figures are pure: selector output in, a Plotly figure dict out, with exact money in the hover text."""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from decimal import Decimal

import pytest

from apps.dashboard import figures
from apps.ledger.selectors import OTHERS_LABEL, PROMPT_TOKEN_EDGES, DailySeries, TokenHistogram

D1, D2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)


def test_daily_stacked_cost_figure_has_one_bar_trace_per_series_with_others_last_and_grey():
    series = DailySeries(days=[D1, D2], series={
        OTHERS_LABEL: [Decimal("0.10"), Decimal("0")], "acme": [Decimal("1.25"), Decimal("2.5")],
    })
    figure = figures.daily_stacked_cost_figure(series)
    assert [trace["name"] for trace in figure["data"]] == ["acme", OTHERS_LABEL]
    acme = figure["data"][0]
    assert acme["type"] == "bar" and acme["x"] == ["2026-11-01", "2026-11-02"]
    assert acme["y"] == [1.25, 2.5]
    assert acme["customdata"] == ["$1.25", "$2.50"]
    assert figure["data"][1]["marker"]["color"] == figures.OTHERS_COLOR
    assert figure["layout"]["barmode"] == "stack"
    json.dumps(figure)  # serialisable as is


def test_prompt_token_histogram_figure_uses_a_log_count_axis():
    histogram = TokenHistogram(edges=PROMPT_TOKEN_EDGES, counts=[0, 3, 1] + [0] * (len(PROMPT_TOKEN_EDGES) - 4) + [1],
                               total_runs=5, max_tokens=1_500_000, tail_runs=1, tail_from=1_000)
    figure = figures.prompt_token_histogram_figure(histogram)
    trace = figure["data"][0]
    assert trace["x"][1] == "100–200" and trace["x"][-1] == "≥1M"
    assert trace["y"] == histogram.counts
    assert figure["layout"]["yaxis"]["type"] == "log"
    # Whole run counts on the axis (Plotly's minor labels read a bare "5" for 500), up to the tick past the top bar.
    assert figure["layout"]["yaxis"]["ticktext"] == ["1", "2", "5"]
    # The bins the page counts as the long tail are the ones drawn in the tail colour, from its first edge.
    tail_colour, body_colour = figures.PALETTE[1], figures.PALETTE[0]
    assert trace["marker"]["color"] == [tail_colour if edge >= 1_000 else body_colour for edge in PROMPT_TOKEN_EDGES]
    assert trace["marker"]["color"][4] == tail_colour and trace["marker"]["color"][3] == body_colour  # 1k, 500


def test_cost_scatter_groups_points_by_model_and_links_each_to_its_run():
    rows = [
        {"openai_id": "resp_1", "tenant__slug": "acme", "model": "gpt-5.4", "feature": "chat", "status": "completed",
         "input_tokens": 12000, "cost_total_usd": Decimal("0.42")},
        {"openai_id": "resp_2", "tenant__slug": "acme", "model": "gpt-5-mini", "feature": "", "status": "failed",
         "input_tokens": 0, "cost_total_usd": Decimal("0.0031")},
    ]
    figure = figures.cost_scatter_figure(rows, run_url=lambda openai_id: f"/runs/{openai_id}/")
    by_name = {trace["name"]: trace for trace in figure["data"]}
    assert set(by_name) == {"gpt-5.4", "gpt-5-mini"}
    assert by_name["gpt-5.4"]["x"] == [12000] and by_name["gpt-5.4"]["y"] == [0.42]
    assert by_name["gpt-5.4"]["customdata"][0][:2] == ["/runs/resp_1/", "resp_1"]
    assert by_name["gpt-5-mini"]["x"] == [1]  # zero tokens cannot sit on a log axis
    assert figure["layout"]["xaxis"]["type"] == "log" and figure["layout"]["yaxis"]["type"] == "log"
    # 1 to 12,000 tokens: every power of ten up to the one past the largest, in one format for every decade.
    assert figure["layout"]["xaxis"]["ticktext"] == ["1", "10", "100", "1k", "10k", "100k"]
    # $0.0031 to $0.42 spans three decades: every 1, 2 and 5 is labelled, in dollars, from the tick below the
    # cheapest run to the one above the costliest.
    yaxis = figure["layout"]["yaxis"]
    assert yaxis["ticktext"] == ["$0.002", "$0.005", "$0.01", "$0.02", "$0.05", "$0.1", "$0.2", "$0.5"]
    assert dict(zip(yaxis["tickvals"], yaxis["ticktext"], strict=True))[0.2] == "$0.2"


def test_log_axis_ticks_label_every_digit_inside_a_decade_one_two_and_five_over_a_few_and_decades_over_many():
    # Runs of $0.10-$0.53 all sit inside one decade: Plotly labelled only "$0.1".
    narrow = figures.log_axis_ticks([0.1, 0.53], label=figures._usd_tick)
    assert narrow["ticktext"] == ["$0.1", "$0.2", "$0.3", "$0.4", "$0.5", "$0.6"]
    assert narrow["tickvals"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # 0.3, not 0.30000000000000004
    few = figures.log_axis_ticks([0.0031, 0.42], label=figures._usd_tick)
    assert few["ticktext"] == ["$0.002", "$0.005", "$0.01", "$0.02", "$0.05", "$0.1", "$0.2", "$0.5"]
    wide = figures.log_axis_ticks([0.00001, 50], label=figures._usd_tick)
    assert wide["ticktext"] == ["$0.00001", "$0.0001", "$0.001", "$0.01", "$0.1", "$1", "$10", "$100"]
    assert figures.log_axis_ticks([0, -1], label=figures._usd_tick) == {}


@pytest.mark.parametrize(("values", "labels"), [
    ([0.1, 0.44], ["$0.1", "$0.2", "$0.3", "$0.4", "$0.5"]),
    ([0.21, 0.44], ["$0.2", "$0.3", "$0.4", "$0.5"]),
    ([0.0031, 0.42], ["$0.002", "$0.005", "$0.01", "$0.02", "$0.05", "$0.1", "$0.2", "$0.5"]),
    ([1, 700], ["$1", "$2", "$5", "$10", "$20", "$50", "$100", "$200", "$500", "$1,000"]),
    ([0.42], ["$0.1", "$1"]),  # one value: the decade it sits in
    ([3, 3], ["$1", "$10"]),
])
def test_a_log_axis_is_labelled_from_below_its_smallest_value_to_past_its_largest(values, labels):
    # Runs of $0.10-$0.44 were labelled "$0.1" and "$0.2" only: the $0.5 tick fell just outside Plotly's range,
    # and the costliest points sat far above the last label.
    axis = figures.log_axis_ticks(values, label=figures._usd_tick)
    assert axis["ticktext"] == labels
    first, last = math.log10(axis["tickvals"][0]), math.log10(axis["tickvals"][-1])
    assert axis["range"][0] < first <= math.log10(min(values)) and math.log10(max(values)) <= last < axis["range"][1]


def test_the_high_cost_scatter_labels_both_axes_across_the_points_as_the_runs_page_draws_them():
    # The runs page: $0.10-$0.44 and 2,400-100,000 prompt tokens were labelled "$0.1", "$0.2" and "10k",
    # "100k", the axis above $0.2 and the left third of the tokens unlabelled.
    rows = [{"openai_id": f"resp_{index}", "tenant__slug": "stark", "model": "gpt-6-astra", "feature": "",
             "status": "completed", "input_tokens": tokens, "cost_total_usd": Decimal(cost)}
            for index, (tokens, cost) in enumerate([(2_400, "0.10"), (9_000, "0.20"), (57_000, "0.44"),
                                                    (100_000, "0.40")])]
    layout = figures.cost_scatter_figure(rows, run_url=lambda openai_id: None)["layout"]
    assert layout["yaxis"]["ticktext"] == ["$0.1", "$0.2", "$0.3", "$0.4", "$0.5"]
    assert layout["xaxis"]["ticktext"] == ["2k", "5k", "10k", "20k", "50k", "100k"]
    assert layout["yaxis"]["range"][1] > math.log10(0.5) and layout["xaxis"]["range"][0] < math.log10(2_400)


@pytest.mark.parametrize("counts", [[400, 120, 2, 4], [5, 3, 2], [1], [1, 40_000], [7, 120, 4]])
def test_the_prompt_size_histogram_draws_every_non_empty_bin_as_a_visible_bar(counts):
    # Tenant pages: the log axis started near the smallest count, so the long tail's bins of 2 or 4 runs (the
    # ones the chart is there to show) were slivers or nothing. The axis starts below one run and is labelled
    # from 1, so a bin of one run is a bar, over five decades of counts still a twentieth of the plot tall.
    padded = counts + [0] * (len(PROMPT_TOKEN_EDGES) - len(counts))
    histogram = TokenHistogram(edges=PROMPT_TOKEN_EDGES, counts=padded, total_runs=sum(counts),
                               max_tokens=1_000, tail_runs=0, tail_from=None)
    yaxis = figures.prompt_token_histogram_figure(histogram)["layout"]["yaxis"]
    bottom, top = yaxis["range"]
    assert bottom < 0 and top > math.log10(max(counts))  # below one run, above the tallest bar
    assert (math.log10(1) - bottom) / (top - bottom) >= 1 / 20
    assert yaxis["ticktext"][0] == "1" and yaxis["tickvals"][0] == 1


def test_horizontal_bar_figure_puts_the_costliest_row_on_top_and_labels_blank_keys():
    rows = [{"feature": "chat", "cost_usd": Decimal("3")}, {"feature": "", "cost_usd": Decimal("1")}]
    trace = figures.horizontal_cost_bar_figure(rows, label_key="feature")["data"][0]
    assert trace["y"] == ["(none)", "chat"] and trace["x"] == [1.0, 3.0]


def test_labels_from_tenant_metadata_are_drawn_as_text_not_as_html():
    # Plotly draws tick labels and hover text as HTML: a user_id or feature holding a link was a live link on
    # the staff pages (the tenant's cost-by-user and cost-by-feature bars, the runs scatter's hover).
    link = '<a href="https://evil.example/">pay here</a>'
    bars = figures.horizontal_cost_bar_figure([{"user_id": link, "cost_usd": Decimal("1")}], label_key="user_id")
    assert bars["data"][0]["y"] == ['&lt;a href="https://evil.example/"&gt;pay here&lt;/a&gt;']
    run = {"openai_id": "resp_<b>1</b>", "tenant__slug": "acme", "model": "gpt-5.4", "feature": link,
           "status": "completed", "input_tokens": 10, "cost_total_usd": Decimal("0.42")}
    point = figures.cost_scatter_figure([run], run_url=lambda openai_id: "/runs/x/")["data"][0]["customdata"][0]
    assert "<" not in json.dumps(point[1:])
    assert point[1] == "resp_&lt;b&gt;1&lt;/b&gt;" and point[4].startswith("&lt;a href=")


def test_a_scatter_point_opens_its_run_even_when_the_id_holds_a_url_character():
    # The URL was the id pasted after /runs/: a click on "resp_a#b" opened /runs/resp_a/, someone else's 404.
    from urllib.parse import unquote

    from django.urls import resolve

    from apps.dashboard.views import _run_page_url

    rows = [{"openai_id": "resp_a#b?c%d", "tenant__slug": "acme", "model": "gpt-5.4", "feature": "",
             "status": "completed", "input_tokens": 10, "cost_total_usd": Decimal("0.42")}]
    url = figures.cost_scatter_figure(rows, run_url=_run_page_url)["data"][0]["customdata"][0][0]
    assert url == "/runs/resp_a%23b%3Fc%25d/"
    assert resolve(unquote(url)).kwargs == {"openai_id": "resp_a#b?c%d"}  # the path the server sees


def test_price_history_figure_steps_through_versions_and_bills_missing_cached_price_at_input():
    from apps.pricing.models import ModelPrice

    prices = [  # unsaved: the figure reads fields only
        ModelPrice(model="m", effective_from=dt.date(2026, 6, 1), input_usd_per_1m=Decimal("2.00"),
                   cached_input_usd_per_1m=Decimal("0.20"), output_usd_per_1m=Decimal("8")),
        ModelPrice(model="m", effective_from=dt.date(2025, 1, 1), input_usd_per_1m=Decimal("2.50"),
                   cached_input_usd_per_1m=None, output_usd_per_1m=Decimal("10")),
    ]
    figure = figures.price_history_figure(prices, today=dt.date(2026, 11, 20))
    traces = {trace["name"]: trace for trace in figure["data"]}
    assert traces["input"]["x"] == ["2025-01-01", "2026-06-01", "2026-11-20"]
    assert traces["input"]["y"] == [2.5, 2.0, 2.0]
    assert traces["cached input"]["y"] == [2.5, 0.2, 0.2]
    assert traces["input"]["line"]["shape"] == "hv"


def test_wasted_figure_stacks_wasted_on_top_of_useful_spend():
    series = DailySeries(days=[D1], series={"wasted": [Decimal("0.5")], "useful": [Decimal("2")]})
    figure = figures.wasted_daily_figure(series)
    assert [(t["name"], t["y"]) for t in figure["data"]] == [("completed and other", [2.0]), ("wasted", [0.5])]


def test_sparkline_points_scale_to_the_peak():
    assert figures.sparkline_points([Decimal("0"), Decimal("2"), Decimal("1")], width=100, height=28) == "0.0,26.0 50.0,2.0 100.0,14.0"
    assert figures.sparkline_points([]) == ""


def test_hover_templates_escape_user_chosen_names():
    series = DailySeries(days=[D1], series={"<img src=x>": [Decimal("1")]})
    assert "<img" not in figures.daily_stacked_cost_figure(series)["data"][0]["hovertemplate"]


def test_a_series_keeps_its_colour_from_chart_to_chart_and_no_two_series_of_a_chart_share_one():
    # By rank, gpt-6-astra was orange on one tenant's page and blue on the next.
    first = figures.series_colors(["gpt-6-astra", "gpt-6.1-sol", figures.OTHERS_LABEL])
    second = figures.series_colors(["gpt-6.1-sol", "gpt-6-astra"])
    assert first["gpt-6-astra"] == second["gpt-6-astra"] and first["gpt-6.1-sol"] == second["gpt-6.1-sol"]
    assert first[figures.OTHERS_LABEL] == figures.OTHERS_COLOR
    many = [f"model-{index}" for index in range(len(figures.PALETTE))]
    assert len(set(figures.series_colors(many).values())) == len(figures.PALETTE)


def test_a_tenant_keeps_its_colour_from_one_overview_period_to_the_next():
    # The overview's top five by spend at 30 days and at 90 (its series are tenant slugs, largest first): Wonka
    # Foods was green at 30 days, after Globex had taken its slot, and yellow at 90, where Globex is not shown.
    thirty_days = figures.series_colors(["umbrella", "stark", "acme", "globex", "wonka", OTHERS_LABEL])
    ninety_days = figures.series_colors(["umbrella", "stark", "acme", "wonka", "initech", OTHERS_LABEL])
    for slug in ("umbrella", "stark", "acme", "wonka"):
        assert thirty_days[slug] == ninety_days[slug], slug
    assert len(set(thirty_days.values())) == len(set(ninety_days.values())) == 6


def test_a_series_colour_does_not_depend_on_its_rank_in_the_chart():
    # The same nine series on two tenants' cost-by-model charts, ranked by each tenant's spend: gpt-6.2-sol and
    # vector storage swapped gold and orange from one tenant to the next.
    names = ["vector storage", "gpt-6-astra", "gpt-6.1-sol", "gpt-6.2-sol", "gpt-6.2-astra", "gpt-6.1-terra",
             "gpt-6-luna", "gpt-5.4", "gpt-5-mini"]
    first = figures.series_colors(names)
    for shuffle in range(20):
        reordered = random.Random(shuffle).sample(names, len(names))
        assert figures.series_colors(reordered) == first
    assert len(set(first.values())) == len(names)


def test_a_series_keeps_its_own_colour_when_no_series_shown_with_it_claims_that_colour():
    # Its colour alone is its favourite; beside others it moves only when one of them holds that colour.
    names = [f"tenant-{index}" for index in range(6)]
    alone = {name: figures.series_colors([name])[name] for name in names}
    together = figures.series_colors(names)
    for name in names:
        assert together[name] == alone[name] or together[name] != alone[name] and any(
            together[other] == alone[name] for other in names if other != name)


def test_more_series_than_colours_all_get_a_palette_colour():
    names = [f"model-{index}" for index in range(len(figures.PALETTE) + 4)]
    colors = figures.series_colors(names)
    assert set(colors) == set(names) and set(colors.values()) == set(figures.PALETTE)


@pytest.mark.parametrize("openai_id", ["resp_abc123", "resp_a#b?c%d", "run ä ü", "a;b=c&d", "x~y:z@w", "résumé+1",
                                       "'quoted'", "tab\tnewline\n", "resp_a/b", "", "runs", "RUNID"])
def test_run_page_urls_for_many_runs_are_what_reverse_makes_for_each(openai_id):
    """The scatter builds 1,000 run links from one reverse(); each must be the URL reverse() gives that id
    (None where reverse() finds no page: empty, or a "/" in the id)."""
    from django.urls import NoReverseMatch, reverse

    from apps.dashboard.views import _run_page_urls

    try:
        expected = reverse("dashboard:run-detail", args=[openai_id])
    except NoReverseMatch:
        expected = None
    assert _run_page_urls()(openai_id) == expected
