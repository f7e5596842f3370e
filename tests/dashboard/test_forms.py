"""ManyOptionsSelect writes the markup Django's Select writes, without a template include per option."""

import re

from django import forms

from apps.dashboard.forms import ManyOptionsSelect


def _tight(html: str) -> str:
    return re.sub(r">\s+<", "><", str(html)).strip()


def test_many_options_select_writes_what_djangos_select_writes():
    choices = [("", "all tenants"), ("acme", "acme"), ("a<b&\"c", "Tom & Jerry <script>"), (7, "seven"),
               ("Group", [("g1", "one"), ("g2", "two")])]
    for value in ("", "acme", "a<b&\"c", "7", "g2", "not-a-choice"):
        attrs = {"id": "id_tenant", "class": "filter", "required": True}
        ours = ManyOptionsSelect(choices=choices).render("tenant", value, attrs=attrs)
        djangos = forms.Select(choices=choices).render("tenant", value, attrs=attrs)
        assert _tight(ours) == _tight(djangos), value
    assert 'value="acme" selected>' in ManyOptionsSelect(choices=choices).render("tenant", "acme")
    twice = [("a", "first"), ("Group", [("a", "again")]), (None, "none")]  # one selected, as Django selects
    for value in ("a", "", None):
        assert _tight(ManyOptionsSelect(choices=twice).render("x", value)) == _tight(
            forms.Select(choices=twice).render("x", value)), value
    assert "<script>" not in ManyOptionsSelect(choices=choices).render("tenant", "")


def test_the_run_filters_use_it_for_their_long_lists():
    from apps.dashboard.forms import RunFilterForm

    form_fields = RunFilterForm.base_fields
    assert all(isinstance(form_fields[name].widget, ManyOptionsSelect) for name in ("tenant", "model", "feature"))


def test_a_period_with_only_an_end_spans_the_30_days_to_it_in_any_format_the_end_takes():
    # An end the field reads but ISO does not (10/01/2026) got a start 30 days before today: a 400 about a start
    # nobody gave.
    import datetime as dt

    from django.http import QueryDict

    from apps.dashboard.forms import PeriodForm

    form = PeriodForm(QueryDict("end=10/01/2026"), today=dt.date(2026, 11, 20))
    assert form.period() == (dt.date(2026, 9, 2), dt.date(2026, 10, 1))


def test_a_period_in_another_format_the_fields_take_is_shown_in_the_date_inputs():
    # <input type="date"> shows only an ISO value: a shared link with ?start=10/01/2026 showed the right period
    # in the page's heading over two blank date pickers, and Apply then sent an empty start (the last 30 days).
    import datetime as dt

    from django.http import QueryDict

    from apps.dashboard.forms import PeriodForm, RunFilterForm

    form = PeriodForm(QueryDict("start=10/01/2026&end=10/31/26"), today=dt.date(2026, 11, 20))
    assert form.period() == (dt.date(2026, 10, 1), dt.date(2026, 10, 31))
    assert 'value="2026-10-01"' in str(form["start"]) and 'value="2026-10-31"' in str(form["end"])
    runs = RunFilterForm(QueryDict("start=10/01/2026"), today=dt.date(2026, 11, 20), tenant_slugs=[], models=[],
                         features=[])
    assert 'value="2026-10-01"' in str(runs["start"]) and 'value="2026-11-20"' in str(runs["end"])
    # A value no field reads is left as given, for the field to name in its error.
    bad = PeriodForm(QueryDict("start=first-of-october"), today=dt.date(2026, 11, 20))
    assert not bad.is_valid() and 'value="first-of-october"' in str(bad["start"])
