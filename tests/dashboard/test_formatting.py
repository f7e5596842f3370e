"""Template filters that write numbers for people: percentages round as money does, budget shares round down."""

from decimal import Decimal

import pytest

from apps.dashboard.templatetags.dashboard import budget_pct, pct, signed_pct


@pytest.mark.parametrize(("value", "places", "text"), [
    (Decimal("12.5"), 0, "13%"), (Decimal("6.5"), 0, "7%"), (Decimal("28.25"), 1, "28.3%"),
    (Decimal("0.004"), 2, "0.00%"), (Decimal("1234.5"), 0, "1,235%"), (None, 0, "—"),
])
def test_percentages_round_half_up_like_money(value, places, text):
    assert pct(value, places) == text


@pytest.mark.parametrize(("value", "text"), [
    (Decimal("99.6"), "99%"), (Decimal("100"), "100%"), (Decimal("79.9"), "79%"), (Decimal("80"), "80%"),
    (Decimal("150.2"), "150%"), (Decimal("0.3"), "0%"), (None, "—"),
])
def test_a_budget_share_reads_80_or_100_percent_only_once_reached(value, text):
    # The bar turns amber at 80 and red at 100 on the exact share; its label must not say 100% before.
    assert budget_pct(value) == text


@pytest.mark.parametrize(("value", "text"), [
    (Decimal("12.5"), "+13%"), (Decimal("-12.5"), "-13%"), (Decimal("2.5"), "+3%"), (Decimal("-0.4"), "0%"),
    (Decimal("0.4"), "0%"), (Decimal("1234.5"), "+1,235%"), (None, "—"),
])
def test_a_change_vs_last_month_rounds_half_up_and_a_change_of_nothing_has_no_sign(value, text):
    # format() rounded half to even ("+12%" for 12.5%) and wrote a small fall as "-0%".
    assert signed_pct(value) == text


@pytest.mark.parametrize("figure", [
    {"data": [{"x": [1, 2.5], "y": [0.1, 1e-7], "name": "gpt-5.4 <b>&</b> 'x' \"y\" </script>"}], "layout": {}},
    {"data": [], "layout": {"title": "résumé — 東京 ✓ \u2028 <!-- -->", "height": 420}},
    {"data": [{"customdata": [["/runs/resp_a%23b/", "resp_a&lt;", "acme", "$1.00", "(none)"]]}]},
    None,
])
def test_a_figure_is_written_into_the_page_exactly_as_json_script_writes_it(figure):
    from django.utils.html import json_script

    from apps.dashboard.templatetags.dashboard import figure_json_script

    assert figure_json_script(figure, "figure-x") == json_script(figure, "figure-x")
