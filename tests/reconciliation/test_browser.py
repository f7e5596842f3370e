"""The reconciliation page in a real browser (Playwright driving Debian's Chromium against live_server): the
chart draws every day, the drift line and its day are highlighted, filters live in the URL, and a tenant
member gets 404. Screenshots land in $RUNLEDGER_ARTIFACTS/screenshots."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from apps.ledger.models import DailyRollup
from apps.reconciliation.services import reconciliation_reconcile
from apps.tenants.models import Membership, Tenant
from tests.browser import WIDTHS, day_axis_drawn, login, screenshot, select_options_cut_off

from .fakes import FakeAdminProvider

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]

DAYS = 5
DRIFT_OFFSET = 2  # the third day has OpenAI billing $1.25 more input than the ledger holds
DANGER_SOFT = "rgb(253, 236, 234)"


@pytest.fixture
def reconciled(django_user_model):
    """Five days reconciled by the real service against a fake Costs/Usage API; one day drifts."""
    acme = Tenant.objects.create(slug="acme", name="Acme Corp")
    globex = Tenant.objects.create(slug="globex", name="Globex Inc")
    end_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    days = [end_day - dt.timedelta(days=offset) for offset in range(DAYS - 1, -1, -1)]
    provider = FakeAdminProvider()
    for index, day in enumerate(days):
        for owner in (acme, globex):
            DailyRollup.objects.create(tenant=owner, day=day, model="gpt-5.4", runs=1, input_tokens=500_000,
                                       cost_input_usd=Decimal("1.25"), cost_total_usd=Decimal("1.25"))
        provider.cost(day, "gpt-5.4, input", 3.75 if index == DRIFT_OFFSET else 2.5)
        provider.completions(day, "gpt-5.4", 1_000_000, 0, 0)
    reconciliation_reconcile(end_day=end_day, days=DAYS, trigger="test", provider_factory=lambda p: provider,
                             raise_errors=True)
    django_user_model.objects.create_user("ops", password="ops-password-1", is_staff=True)
    member = django_user_model.objects.create_user("acme-admin", password="member-password-1")
    Membership.objects.create(user=member, tenant=acme, role=Membership.Role.ADMIN)
    return {"days": days, "drift_day": days[DRIFT_OFFSET]}


def _background(locator) -> str:
    return locator.evaluate("el => getComputedStyle(el).backgroundColor")


def test_staff_see_every_day_charted_and_the_drift_highlighted(page, live_server, reconciled):
    login(page, live_server, "ops", "ops-password-1")
    days = reconciled["days"]
    query = f"?start={days[0].isoformat()}&end={days[-1].isoformat()}&status=all"
    for width_name, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        assert page.goto(f"{live_server.url}/reconciliation/{query}").status == 200
        assert page.locator("nav[aria-label=Main] [aria-current=page]").inner_text() == "Reconciliation"
        chart = page.locator("#chart-reconciliation[data-rendered=true]")
        chart.wait_for(timeout=15_000)
        traces = chart.evaluate("el => el.data.map(t => [t.name, t.x.length])")
        assert traces == [["Ledger (attributed)", DAYS], ["OpenAI (Costs API)", DAYS], ["Unattributed spend", DAYS],
                          ["Day with drift", 1]]
        lines = page.locator("table[data-table=lines] tbody tr")
        flagged = page.locator("table[data-table=lines] tbody tr[data-flagged]")
        assert flagged.count() == 1 and lines.count() > 1
        assert "gpt-5.4, input" in flagged.inner_text() and "Drift" in flagged.inner_text()
        assert "$1.25" in flagged.inner_text()
        assert _background(flagged.locator("td").first) == DANGER_SOFT
        matched = page.locator("table[data-table=lines] tbody tr:not([data-flagged])").first
        assert _background(matched.locator("td").first) != DANGER_SOFT
        assert page.locator("[data-kpi=flagged]").inner_text() == "1"
        assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 1
        screenshot(page, "reconciliation", width_name)


def test_one_day_is_charted_as_a_day_not_a_millisecond(page, live_server, reconciled):
    """From = To: plotly read the one day as an instant, so its two bars were a millisecond wide and the axis
    ticked "23:59:59.9996" to "00:00:00.0004". Now the day is one tick and its bars fill most of the plot; two
    days are ticked by day, not at "12:00"."""
    login(page, live_server, "ops", "ops-password-1")
    drift_day, days = reconciled["drift_day"], reconciled["days"]
    for width_name, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{live_server.url}/reconciliation/?start={drift_day.isoformat()}&end={drift_day.isoformat()}")
        drawn = day_axis_drawn(page, "chart-reconciliation")
        assert drawn["ticks"] == [f"{drift_day:%b} {drift_day.day}"], (width_name, drawn)
        assert drawn["narrowest_bar"] > 0.3, (width_name, drawn)  # each of the pair: 40% of the day's width
        screenshot(page, "reconciliation-one-day", width_name)
        page.goto(f"{live_server.url}/reconciliation/?start={days[0].isoformat()}&end={days[1].isoformat()}")
        assert not any(":" in tick for tick in day_axis_drawn(page, "chart-reconciliation")["ticks"]), width_name


def test_the_default_view_lists_only_flagged_lines_and_the_toggle_keeps_the_filters(page, live_server, reconciled):
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, live_server, "ops", "ops-password-1")
    page.goto(f"{live_server.url}/reconciliation/")
    rows = page.locator("table[data-table=lines] tbody tr")
    assert rows.count() == 1 and rows.first.get_attribute("data-flagged") is not None
    # The period the page shows is in the filter inputs, so it can be adjusted rather than retyped.
    assert page.get_by_label("To (inclusive)").input_value() == reconciled["days"][-1].isoformat()
    page.get_by_label("From").fill(reconciled["days"][DRIFT_OFFSET].isoformat())
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(f"**start={reconciled['days'][DRIFT_OFFSET].isoformat()}**")
    page.get_by_role("link", name="Every line", exact=True).click()
    page.wait_for_url("**status=all**")
    assert f"start={reconciled['days'][DRIFT_OFFSET].isoformat()}" in page.url
    assert page.locator("table[data-table=lines] tbody tr").count() > 1
    screenshot(page, "reconciliation-every-line", "desktop")


def test_every_filter_option_fits_its_box_on_a_phone(page, live_server, reconciled):
    """At 390 px the filters sit two to a row: "Flagged lines only" read "Flagged lines or" in the Lines box."""
    page.set_viewport_size({"width": 390, "height": 844})
    login(page, live_server, "ops", "ops-password-1")
    page.goto(f"{live_server.url}/reconciliation/")
    assert select_options_cut_off(page) == []
    assert page.get_by_label("Lines").locator("option").all_inner_texts() == ["Flagged only", "Every line"]
    screenshot(page, "reconciliation-filters", "mobile")


def test_tenant_member_gets_404_and_no_reconciliation_link(page, live_server, reconciled):
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, live_server, "acme-admin", "member-password-1")
    assert page.get_by_role("navigation", name="Main").get_by_role("link", name="Reconciliation").count() == 0
    response = page.goto(f"{live_server.url}/reconciliation/")
    assert response.status == 404
    assert "gpt-5.4" not in page.content()
    assert page.request.get(f"{live_server.url}/reconciliation/?format=csv").status == 404
    screenshot(page, "reconciliation-member-404", "desktop")


def test_a_failed_latest_attempt_is_a_warning_card_with_the_command_to_run(page, live_server, reconciled):
    last = reconciled["days"][-1]
    revoked = FakeAdminProvider()
    revoked.fail_with = PermissionError("401: the admin key was revoked")
    reconciliation_reconcile(end_day=last, days=1, trigger="test", provider_factory=lambda p: revoked)
    login(page, live_server, "ops", "ops-password-1")
    for width_name, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        assert page.goto(f"{live_server.url}/reconciliation/").status == 200
        card = page.locator("section[role=alert]")
        assert "Reconciliation failed for 1 project-day" in card.inner_text()
        assert f"python manage.py reconcile --date {last.isoformat()} --days 1 --project" in card.inner_text()
        assert _background(card) == DANGER_SOFT
        assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 1
        screenshot(page, "reconciliation-failed", width_name)


def test_a_filter_that_does_not_validate_is_named_over_the_default_days(page, live_server, reconciled):
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, live_server, "ops", "ops-password-1")
    response = page.goto(f"{live_server.url}/reconciliation/?status=all&start=garbage")
    assert response.status == 400
    error = page.get_by_role("alert")
    # Named by the label beside its input, as the page shows it (the URL parameter is `start`).
    assert error.inner_text().startswith("From:") and "Showing the defaults instead." in error.inner_text()
    assert page.locator("#reconciliation-chart, .js-plotly-plot").count() >= 1  # not a dead end: the defaults drawn
    screenshot(page, "reconciliation-bad-filter", "desktop")
