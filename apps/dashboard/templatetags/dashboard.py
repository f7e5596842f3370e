"""Formatting for dashboard templates: money, percentages, tokens, sparklines, sortable headers."""

import json
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from apps.core.money import money_text
from apps.dashboard.figures import sparkline_points

register = template.Library()


@register.filter
def usd(amount):
    if amount is None or amount == "":
        return "—"
    return money_text(Decimal(amount))


@register.filter
def pct(value, places: int = 0):
    """Rounded half up, as money is (format() alone rounds half to even: 12.5% read 12%)."""
    if value is None or value == "":
        return "—"
    return f"{Decimal(value).quantize(Decimal(1).scaleb(-int(places)), rounding=ROUND_HALF_UP):,}%"


@register.filter
def budget_pct(value):
    """A share of a budget in whole percent, rounded down: it reads 80% or 100% only once the spend has
    reached it, as the bar's warning colours and the budget alerts do (99.6% read "100%" in a calm bar)."""
    if value is None or value == "":
        return "—"
    return f"{Decimal(value).quantize(Decimal(1), rounding=ROUND_FLOOR):,}%"


@register.filter
def signed_pct(value):
    """A change in whole percent, rounded half up as pct is (format() read +12.5% as "+12%"); a change that
    rounds to nothing reads 0%, not "-0%"."""
    if value is None:
        return "—"
    rounded = Decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    if not rounded:
        return "0%"
    return f"{'+' if rounded > 0 else ''}{rounded:,}%"


@register.filter
def bar_width(value):
    """A percentage clamped to 0–100 for a CSS width."""
    if value is None:
        return 0
    return max(0, min(100, int(Decimal(value))))


@register.filter
def tokens(value):
    return "—" if value is None else intcomma(int(value))


@register.filter
def sparkline(values):
    return sparkline_points(values or [])


@register.filter
def status_class(status: str) -> str:
    status = str(status or "")
    # Run, alert and retention statuses, sweep outcomes (apps/lifecycle) and reconciliation line statuses.
    if status in {"failed", "expired", "cancelled", "critical", "overdue", "drift", "missing_in_ledger",
                  "missing_at_openai"}:
        return "badge-danger"
    if status in {"incomplete", "requires_action", "warning", "due_soon", "cancelling", "held", "would_delete",
                  "skipped_legal_hold", "running", "reopened"}:
        return "badge-warn"
    if status in {"completed", "ok", "active", "info", "deleted", "finished", "matched", "complete", "resolved"}:
        return "badge-ok"
    return "badge-neutral"


@register.filter
def price(value):
    """Prices per unit keep their precision ($2.50, $0.075), never rounded to cents."""
    if value is None or value == "":
        return "—"
    text = format(Decimal(value).normalize(), "f")
    whole, _, fraction = text.partition(".")
    return f"${int(whole):,}.{fraction.ljust(2, '0')}"


@register.filter
def spaced(value) -> str:
    return str(value).replace("_", " ")


@register.simple_tag
def tenant_options(tenants, with_slug: bool = False):
    """`<option value="slug">name</option>` for each tenant, in one pass: a deployment's thousand tenants as a
    template loop cost ~20 ms a list (a model per tenant, several lookups per option), and the orphans page
    had a list in every row."""
    rows = tenants.values_list("slug", "name") if hasattr(tenants, "values_list") else [(t.slug, t.name) for t in tenants]
    if with_slug:
        return format_html_join("", '<option value="{}">{} ({})</option>', ((slug, name, slug) for slug, name in rows))
    return format_html_join("", '<option value="{}">{}</option>', rows)


@register.filter
def messages_placed(messages, place: str = "") -> list:
    """The messages a view placed beside what they are about (`extra_tags=place`); with no place, the page's
    own list at the top. A save at the foot of a long page lands there (#settings), where a notice at the top
    of the page is out of sight."""
    return [message for message in messages if (message.extra_tags or "") == place]


@register.filter
def figure_json_script(figure, element_id: str):
    """What Django's json_script writes, made with three str.replace instead of its str.translate, which looks
    every character of the text up in a dict: ~8 ms of the runs page for its 1,000-point scatter (issue #9).
    The same escapes: <, > and & as \\u003C, \\u003E and \\u0026, safe inside <script>."""
    text = (json.dumps(figure, cls=DjangoJSONEncoder)
            .replace("&", "\\u0026").replace("<", "\\u003C").replace(">", "\\u003E"))
    return format_html('<script id="{}" type="application/json">{}</script>', element_id, mark_safe(text))


@register.inclusion_tag("dashboard/_chart.html")
def chart(figure, chart_id: str, label: str, caption: str = "", click_links: bool = False):
    # A figure that sets its own height (the bar lists: one bar per row) gets exactly that space; the rest keep
    # the stylesheet's reserved height, which left a blank band under a short bar list.
    height = (figure or {}).get("layout", {}).get("height")
    return {"figure": figure, "chart_id": chart_id, "figure_id": f"figure-{chart_id}", "label": label,
            "caption": caption, "click_links": click_links, "height": height if isinstance(height, int) else None}
