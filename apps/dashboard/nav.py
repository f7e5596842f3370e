"""The one list of top-level pages. A page added later (lifecycle, reconciliation) is one entry here."""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import NoReverseMatch, reverse


@dataclass(frozen=True)
class NavItem:
    section: str  # the value a view sets as `nav_section`, to mark itself current
    label: str
    url_name: str
    staff_only: bool = False

    @property
    def url(self) -> str | None:
        # An entry whose app is not installed or not mounted yet is left out, not an error on every page.
        try:
            return reverse(self.url_name)
        except NoReverseMatch:
            return None


NAV_ITEMS: list[NavItem] = [
    NavItem("overview", "Overview", "dashboard:overview"),
    NavItem("tenants", "Tenants", "dashboard:tenants"),
    NavItem("runs", "High-cost runs", "dashboard:runs"),
    NavItem("alerts", "Alerts", "dashboard:alerts"),
    NavItem("prices", "Prices", "dashboard:prices"),
    NavItem("reconciliation", "Reconciliation", "reconciliation:page", staff_only=True),
    NavItem("lifecycle", "Lifecycle", "lifecycle:overview"),
]


def nav_for(user, current: str) -> list[dict]:
    staff = bool(getattr(user, "is_staff", False) or getattr(user, "is_superuser", False))
    items = []
    for item in NAV_ITEMS:
        if item.staff_only and not staff:
            continue
        url = item.url
        if url:
            items.append({"label": item.label, "url": url, "current": item.section == current})
    return items
