"""The dashboard in a real browser (Playwright driving Debian's Chromium against live_server): log in, every
page opens, every chart draws its data, filters change the table, CSV downloads, and a tenant member sees
only their tenant. Screenshots of every page at 1280 and 390 px land in $RUNLEDGER_ARTIFACTS/screenshots."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pytest

from apps.alerts.models import Alert
from apps.ledger.models import Run
from apps.tenants.models import Membership, Tenant
from tests.browser import WIDTHS, charts_have_data, day_axis_drawn, login, screenshot

from .seed import demo_ledger_ingested

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]



@pytest.fixture
def ledger(django_user_model):
    now = dt.datetime.now(dt.UTC)
    acme = Tenant.objects.create(slug="acme", name="Acme Corp", monthly_budget_usd="5.00")
    globex = Tenant.objects.create(slug="globex", name="Globex Inc", monthly_budget_usd="2.00")
    initech = Tenant.objects.create(slug="initech", name="Initech")
    Tenant.objects.filter(slug="globex").update(high_cost_run_usd="0.02")
    globex.refresh_from_db()
    ids = demo_ledger_ingested([acme, globex, initech], now=now)
    runs = {slug: list(Run.objects.for_tenant(t).filter(openai_id__in=ids[slug]).order_by("-cost_total_usd"))
            for slug, t in (("acme", acme), ("globex", globex), ("initech", initech))}
    Alert.objects.create(tenant=acme, kind=Alert.Kind.BUDGET, severity=Alert.Severity.WARNING,
                         cause_key="budget:acme:80", title="Acme Corp reached 80% of its monthly budget")
    Alert.objects.create(tenant=globex, kind=Alert.Kind.HIGH_COST_RUN, severity=Alert.Severity.CRITICAL,
                         cause_key="run:globex", title="Globex Inc run over $0.10")
    # Alert titles carry whole OpenAI ids (59 characters here), which do not break at a space; the page shortens
    # the run's id (data["run"]) like an id cell.
    long_id = f"resp_{'9ae957afb50b5b1088' * 3}ab"
    Alert.objects.create(tenant=globex, kind=Alert.Kind.WASTED_SPEND, severity=Alert.Severity.INFO,
                         cause_key="wasted_spend:long", title=f"Run {long_id} failed after spending $0.009590",
                         data={"run": long_id})
    staff = django_user_model.objects.create_user("ops", password="ops-password-1", is_staff=True)
    member = django_user_model.objects.create_user("acme-viewer", password="member-password-1")
    Membership.objects.create(user=member, tenant=acme, role=Membership.Role.VIEWER)
    return {"acme": acme, "globex": globex, "runs": runs, "staff": staff, "member": member}


def test_staff_opens_every_page_and_every_chart_draws_its_data(page, live_server, ledger):
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/accounts/login/")
    screenshot(page, "login", "desktop")
    login(page, live_server, "ops", "ops-password-1")
    acme_run = ledger["runs"]["acme"][0].openai_id
    pages = {
        "overview": ("/", "Overview", 1),
        "tenants": ("/tenants/", "Tenants", 0),
        "tenant-detail": ("/tenants/acme/", "Acme Corp", 5),
        "runs": ("/runs/?min_cost=0", "High-cost runs", 1),
        "run-detail": (f"/runs/{acme_run}/", acme_run, 1),
        "alerts": ("/alerts/?state=all", "Alerts", 0),
        "prices": ("/prices/?model=gpt-5.4", "Prices", 1),
    }
    for name, (path, heading, expected_charts) in pages.items():
        for width_name, (width, height) in WIDTHS.items():
            page.set_viewport_size({"width": width, "height": height})
            response = page.goto(f"{live_server.url}{path}")
            assert response.status == 200, name
            assert heading in page.locator("h1").inner_text()
            assert page.locator("nav[aria-label=Main] [aria-current=page]").count() == 1
            points = charts_have_data(page)
            assert len(points) == expected_charts, (name, points)
            assert all(count > 0 for count in points.values()), (name, points)
            # Nothing spills sideways on a phone: wide tables scroll inside their own box.
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, (name, width_name, overflow)
            if name == "overview" and width_name == "desktop":
                # The half-width alerts card fits its table: the alert text wraps, nothing hides to the right.
                box = page.locator("#table-alerts .table-scroll")
                hidden = box.evaluate("element => element.scrollWidth - element.clientWidth")
                assert hidden <= 1, hidden
            if name == "overview":
                # The run id in an alert's text is cut short on one line (it broke mid-id over several), the
                # whole id in its tooltip.
                code = page.locator(f"#table-alerts .wrap-text code.id-cell[title=resp_{'9ae957afb50b5b1088' * 3}ab]")
                shown = code.evaluate("el => ({lines: Math.round(el.getBoundingClientRect().height / "
                                      "parseFloat(getComputedStyle(el).lineHeight || 16)), "
                                      "clipped: el.scrollWidth > el.clientWidth})")
                assert shown == {"lines": 1, "clipped": True}, (width_name, shown)
            screenshot(page, name, width_name)


def test_mobile_menu_opens_from_its_button_and_marks_the_current_page(page, live_server, ledger):
    page.set_viewport_size({"width": 390, "height": 844})
    login(page, live_server, "ops", "ops-password-1")
    page.goto(f"{live_server.url}/tenants/")
    nav_link = page.get_by_role("navigation", name="Main").get_by_role("link", name="Tenants")
    assert not nav_link.is_visible()
    page.get_by_role("button", name="Menu").click()
    assert nav_link.is_visible()
    assert nav_link.get_attribute("aria-current") == "page"
    screenshot(page, "menu-open", "mobile")


def test_filtering_high_cost_runs_changes_the_table(page, live_server, ledger):
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, live_server, "ops", "ops-password-1")
    page.goto(f"{live_server.url}/runs/?min_cost=0")
    all_count = page.locator(".table-count").inner_text()
    page.get_by_label("Tenant").select_option("globex")
    page.get_by_label("Model").select_option("gpt-5-mini")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url("**tenant=globex**")
    assert "model=gpt-5-mini" in page.url  # the filtered view is a shareable URL
    rows = page.locator("#table-runs tbody tr")
    assert rows.count() > 0
    assert page.locator(".table-count").inner_text() != all_count
    for index in range(rows.count()):
        text = rows.nth(index).inner_text()
        assert "globex" in text and "gpt-5-mini" in text
    points = charts_have_data(page)
    assert points["chart-run-scatter"] == rows.count() or points["chart-run-scatter"] > 0
    screenshot(page, "runs-filtered", "desktop")


def test_a_period_the_chart_does_not_offer_is_named_above_the_page(page, live_server, ledger):
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, live_server, "ops", "ops-password-1")
    page.goto(f"{live_server.url}/?days=15")
    notice = page.get_by_role("status")
    assert notice.inner_text() == "Ignored days='15': the chart covers 7, 30 or 90 days; showing the last 30."
    assert notice.locator(".message-warning").evaluate("el => getComputedStyle(el).color") == "rgb(147, 55, 13)"
    assert page.locator('[aria-current="true"]', has_text="30 days").count() == 1  # the period actually shown
    screenshot(page, "overview-ignored-period", "desktop")


def test_a_one_day_period_charts_its_day_as_a_day(page, live_server, ledger):
    """start = end on a tenant: its stacked bars were a millisecond wide on an axis ticked "00:00:00"; now one
    tick names the day and the bar fills most of the plot."""
    login(page, live_server, "ops", "ops-password-1")
    day = ledger["runs"]["acme"][0].created_at.astimezone(dt.UTC).date()  # a day with a run
    page.goto(f"{live_server.url}/tenants/acme/?start={day.isoformat()}&end={day.isoformat()}")
    for chart_id in ("chart-cost-by-model", "chart-wasted"):
        drawn = day_axis_drawn(page, chart_id)
        assert drawn["ticks"] == [f"{day:%b} {day.day}"], (chart_id, drawn)
        assert drawn["narrowest_bar"] > 0.6, (chart_id, drawn)

def test_csv_downloads_with_the_pages_filters(page, live_server, ledger):
    login(page, live_server, "ops", "ops-password-1")
    page.goto(f"{live_server.url}/runs/?min_cost=0&tenant=acme")
    with page.expect_download() as download_info:
        page.locator("[data-csv=runs]").click()
    download = download_info.value
    assert download.suggested_filename.startswith("runs-runs-")
    rows = list(csv.reader(io.StringIO(Path(download.path()).read_text())))
    assert rows[0][:3] == ["Run", "Cost", "Tenant"]
    # The page's default period (the last 30 UTC days) applies to the export too.
    since = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=29)
    expected = {run.openai_id for run in ledger["runs"]["acme"] if run.created_at.date() >= since}
    assert {row[0] for row in rows[1:]} == expected and len(rows) - 1 == len(expected)
    assert {row[2] for row in rows[1:]} == {"acme"}


def test_tenant_member_sees_only_their_tenant_and_gets_404_elsewhere(page, live_server, ledger):
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, live_server, "acme-viewer", "member-password-1")
    page.goto(f"{live_server.url}/tenants/")
    body = page.locator("main").inner_text()
    assert "Acme Corp" in body and "Globex" not in body and "Initech" not in body
    screenshot(page, "tenants-member", "desktop")
    page.goto(f"{live_server.url}/")
    assert "Globex" not in page.locator("main").inner_text()
    globex_run = ledger["runs"]["globex"][0].openai_id
    for path in ("/tenants/globex/", f"/runs/{globex_run}/", "/tenants/globex/?format=csv&table=threads"):
        response = page.request.get(f"{live_server.url}{path}")
        assert response.status == 404, path
    assert page.goto(f"{live_server.url}/tenants/globex/").status == 404
    page.goto(f"{live_server.url}/runs/?min_cost=0")
    assert "globex" not in page.locator("main").inner_text()
    assert "Globex" not in page.get_by_label("Tenant").inner_text()


def _focused(page) -> dict:
    """What has keyboard focus: its tag, id, accessible-ish name, and whether a focus ring is drawn."""
    return page.evaluate("""() => { const el = document.activeElement; const style = getComputedStyle(el);
        return {tag: el.tagName.toLowerCase(), id: el.id, text: (el.innerText || el.value || '').trim(),
                href: el.getAttribute('href'), ring: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2}; }""")


def test_keyboard_reaches_skip_link_nav_filters_and_sort_links_with_a_visible_focus_ring(page, live_server, ledger):
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, live_server, "ops", "ops-password-1")
    page.goto(f"{live_server.url}/")
    # First Tab: the skip link, shown on focus; then the brand and the main navigation in order.
    page.keyboard.press("Tab")
    skip = _focused(page)
    assert skip["text"] == "Skip to content" and skip["ring"]
    assert page.locator(".skip-link").evaluate("el => el.getBoundingClientRect().left >= 0")
    page.keyboard.press("Tab")
    assert _focused(page)["href"] == "/"  # the brand, home
    visited = []
    for _ in range(7):
        page.keyboard.press("Tab")
        focus = _focused(page)
        assert focus["ring"], focus
        visited.append(focus["text"])
    assert visited == ["Overview", "Tenants", "High-cost runs", "Alerts", "Prices", "Reconciliation", "Lifecycle"]
    # The skip link jumps past the header: the next Tab lands on the chart's period switch.
    page.goto(f"{live_server.url}/")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert _focused(page)["text"] == "7 days"
    page.keyboard.press("Enter")
    page.wait_for_url("**days=7")

    # The run filters: Tab walks every control in order, the submit button applies them with Enter.
    page.goto(f"{live_server.url}/runs/?min_cost=0")
    controls = page.evaluate("""() => [...document.querySelector('form[aria-label="Run filters"]')
        .querySelectorAll('select, input:not([type=hidden]), button')].map(el => el.id || el.innerText.trim())""")
    assert controls[0] == "id_tenant" and controls[-1] == "Apply filters"
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # skip to content
    seen = []
    for _ in range(4 * len(controls)):  # a date input takes one Tab per part (month, day, year)
        page.keyboard.press("Tab")
        focus = _focused(page)
        assert focus["ring"] or focus["tag"] in {"select", "input"}, focus
        name = focus["id"] or focus["text"]
        if not seen or seen[-1] != name:
            seen.append(name)
        if name == "Apply filters":
            break
    assert seen == controls
    page.keyboard.press("Shift+Tab")
    assert _focused(page)["tag"] in {"input", "select"}
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url("**min_cost=**")
    # Sortable headers are links, reachable and announced with aria-sort.
    sort_link = page.locator("#table-runs th[aria-sort] a.sort-link").first
    sort_link.focus()
    assert _focused(page)["ring"]
    page.keyboard.press("Enter")
    page.wait_for_url("**sort=**")
    # The link jumps to #table-runs: the table's toolbar and the sort link just used land below the sticky
    # header, not under it.
    header_bottom = page.locator(".site-header").evaluate("el => el.getBoundingClientRect().bottom")
    assert page.locator("#table-runs").evaluate("el => el.getBoundingClientRect().top") >= header_bottom
    screenshot(page, "runs-keyboard", "desktop")


def test_price_history_of_every_model_fits_at_1280_with_each_version_on_screen(page, live_server, ledger):
    """Every model's history, with prices billed at the input price and a long free-text source: the Version
    column, last after the wrapped Source, sat past the table's right edge at 1280 px (107 px of it hidden
    with the demo's price book). The version (model@date) now leads each row in place of the bare model."""
    from apps.pricing.models import ModelPrice

    for name in ("gpt-9.2-astra-preview", "gpt-9.2-sol-preview"):
        ModelPrice.objects.create(model=name, effective_from=dt.date(2026, 11, 17), input_usd_per_1m="10.00",
                                  output_usd_per_1m="40.00", source_date=dt.date(2026, 11, 18),
                                  source="LaoZhang docs, AgentCompass v0.6.8, LiteLLM discussion #52347")
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, live_server, "ops", "ops-password-1")
    page.goto(f"{live_server.url}/prices/")
    region = page.get_by_role("region", name="Price history")
    assert region.evaluate("(s) => s.scrollWidth - s.clientWidth") <= 1
    version = region.get_by_text("gpt-9.2-astra-preview@2026-11-17", exact=True)
    box, edge = version.bounding_box(), region.bounding_box()
    assert box["x"] >= edge["x"] and box["x"] + box["width"] <= edge["x"] + edge["width"]
    screenshot(page, "prices-history-every-model", "desktop")


def test_staff_acknowledge_an_alert_with_its_button_and_the_page_says_so(page, live_server, ledger):
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, live_server, "ops", "ops-password-1")
    page.goto(f"{live_server.url}/alerts/")
    buttons = page.get_by_role("button", name="Acknowledge", exact=True)
    before = buttons.count()  # the fixture's alerts and those its ingested runs raised, on this page
    assert before >= 3
    row = page.locator("#table-alerts tr", has_text="Acme Corp reached 80%")
    row.get_by_role("button", name="Acknowledge", exact=True).click()
    page.wait_for_url(f"{live_server.url}/alerts/")
    assert "Acknowledged: Acme Corp reached 80% of its monthly budget" in page.locator("[role=status]").first.inner_text()
    row = page.locator("#table-alerts tr", has_text="Acme Corp reached 80%")
    assert row.locator(".badge", has_text="acknowledged").count() == 1
    assert row.get_by_role("button", name="Acknowledge", exact=True).count() == 0 and buttons.count() == before - 1
    screenshot(page, "alerts-acknowledged", "desktop")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/alerts/")
    assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 1
    screenshot(page, "alerts-acknowledge-buttons", "mobile")
    # The rest at once: every open alert the filters match.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("button", name="Acknowledge all matching").click()
    page.wait_for_url(f"{live_server.url}/alerts/")
    assert f"Acknowledged {before - 1} alerts." in page.locator("[role=status]").first.inner_text()
    assert buttons.count() == 0
    page.goto(f"{live_server.url}/alerts/?state=unacknowledged")
    assert "No alerts match these filters." in page.locator("#table-alerts").inner_text()
    assert page.get_by_role("button", name="Acknowledge all matching").count() == 0
    screenshot(page, "alerts-all-acknowledged", "desktop")
