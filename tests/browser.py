"""What every browser test shares: Debian's Chromium, where screenshots go, logging in, and reading the
data points plotly drew. The launch arguments and the skip-or-fail rule live in tests/conftest.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("RUNLEDGER_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))
SCREENSHOTS = ARTIFACTS / "screenshots"
WIDTHS = {"desktop": (1280, 900), "mobile": (390, 844)}

# Playwright's sync API runs an event loop in the test thread; the ORM calls around it are still sync.
# Set at import (conftest imports this module), before any fixture can touch the database.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def chromium_installed() -> bool:
    return os.path.exists(CHROMIUM) or bool(shutil.which("chromium"))


def login(page, live_server, username: str, password: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    assert page.get_by_role("heading", name="Sign in to RunLedger").is_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")


def charts_have_data(page) -> dict:
    """Every chart on the page, after plotly drew it: {id: number of data points across its traces}."""
    charts = page.locator(".chart")
    for index in range(charts.count()):
        charts.nth(index).and_(page.locator("[data-rendered=true]")).wait_for(timeout=15_000)
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.chart')].map(el => [
        el.id, (el.data || []).reduce((n, t) => n + ((t.y || t.x || []).length), 0)]))""")


def screenshot(page, name: str, width_name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{width_name}.png"), full_page=True)


def select_options_cut_off(page) -> list[str]:
    """Every option of every <select> on the page that, chosen, would not fit its box (its text cut off), as
    "name: option text". Measured with a copy of the select beside it, sized to that one option."""
    return page.evaluate("""() => [...document.querySelectorAll('select')].flatMap(select => [...select.options]
        .filter((option, index) => {
            const copy = select.cloneNode(true);
            Object.assign(copy.style, {width: 'auto', minWidth: '0', maxWidth: 'none', position: 'absolute',
                                       visibility: 'hidden'});
            [...copy.options].forEach((other, j) => { if (j !== index) other.remove(); });
            select.parentElement.appendChild(copy);
            const natural = copy.offsetWidth;
            copy.remove();
            return natural > select.offsetWidth + 1;
        }).map(option => `${select.name}: ${option.text}`))""")


def day_axis_drawn(page, chart_id: str) -> dict:
    """How plotly drew a chart of days: its x tick labels (first line: the year plotly adds below is left out)
    and the narrowest bar's share of the plot's width."""
    chart = page.locator(f"#{chart_id}[data-rendered=true]")
    chart.wait_for(timeout=15_000)
    return chart.evaluate("""el => {
        const plot = el.querySelector('.nsewdrag').getBoundingClientRect().width;
        const bars = [...el.querySelectorAll('.bars .point path')].map(p => p.getBoundingClientRect().width)
            .filter(w => w > 0);
        return {ticks: [...el.querySelectorAll('.xtick text')].map(t => t.childNodes[0].textContent),
                narrowest_bar: bars.length ? Math.min(...bars) / plot : 0};
    }""")
