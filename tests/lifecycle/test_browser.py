"""Lifecycle pages in a real browser (Playwright driving Debian's Chromium against live_server): the overview,
a sweep preview confirmed from its button, the deletion audit and orphans render with their chart's data
points at 1280 and 390 px, and a tenant member sees only their tenant. Screenshots land in
$RUNLEDGER_ARTIFACTS/screenshots."""

from __future__ import annotations

import datetime as dt

import pytest

from apps.ledger.models import Thread
from apps.lifecycle import services
from apps.lifecycle.models import Outcome, SweepItem
from apps.tenants.models import Membership, Tenant
from tests import builders
from tests.browser import WIDTHS, charts_have_data, login, screenshot

from .fakes import FakeProvider

pytestmark = [
    pytest.mark.browser,
    # No serialized_rollback: after a transactional test's flush, post_migrate seeds the shipped price book
    # again (pricing.apps); restoring the serialized database on top of that collided with the content types
    # the same signal recreates, whenever a transactional test without it ran first (pytest -m browser).
    pytest.mark.django_db(transaction=True),
]

GIB = 1024**3


@pytest.fixture
def world(django_user_model, monkeypatch):
    """acme and globex each have a thread idle past retention (at the fake OpenAI too) and a metered vector
    store; one store has no tenant (an orphan). Every row is written by the lifecycle services."""
    provider = FakeProvider()
    monkeypatch.setattr(services, "_default_provider", lambda: provider)
    now = dt.datetime.now(dt.UTC)
    acme = Tenant.objects.create(slug="acme", name="Acme Corp")
    globex = Tenant.objects.create(slug="globex", name="Globex Inc")
    last = now - dt.timedelta(days=200)
    for t in (acme, globex):
        Thread.objects.create(tenant=t, openai_id=f"thread_old_{t.slug}", kind="thread", created_at=last,
                              last_activity_at=last)
        provider.add_thread(f"thread_old_{t.slug}", last)
        services.resources_record(tenant=t, obj=builders.vector_store(
            vector_store_id=f"vs_{t.slug}", created_at=now - dt.timedelta(days=20), usage_bytes=3 * GIB,
            last_active_at=now - dt.timedelta(days=1)))
    services.resources_record(tenant=None, obj=builders.vector_store(
        vector_store_id="vs_orphan", created_at=now - dt.timedelta(days=5), usage_bytes=GIB))
    today = now.date()
    for offset in range(7, 0, -1):
        services.storage_meter_day(day=today - dt.timedelta(days=offset))
    # globex's own retention sweep already ran: its audit row must stay invisible to acme's member.
    sweep = services.sweep_create(kind="threads", tenant=globex, dry_run=False)
    services.sweep_run_to_completion(sweep_id=sweep.pk, provider=provider)
    django_user_model.objects.create_user("ops", password="ops-password-1", is_staff=True)
    member = django_user_model.objects.create_user("acme-viewer", password="member-password-1")
    Membership.objects.create(user=member, tenant=acme, role=Membership.Role.VIEWER)
    return {"provider": provider, "acme": acme, "globex": globex, "globex_sweep": sweep}


def _no_sideways_spill(page) -> int:
    return page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")


def test_staff_open_every_lifecycle_page_and_the_storage_chart_draws_its_days(page, live_server, world):
    login(page, live_server, "ops", "ops-password-1")
    sweep_path = f"/lifecycle/sweeps/{world['globex_sweep'].pk}/"
    pages = {
        "lifecycle": ("/lifecycle/", "Lifecycle", 1),
        "lifecycle-sweep": (sweep_path, "Sweep #", 0),
        "lifecycle-audit": ("/lifecycle/audit/", "Deletion audit", 0),
        "lifecycle-orphans": ("/lifecycle/orphans/", "Orphaned resources", 0),
    }
    for name, (path, heading, expected_charts) in pages.items():
        for width_name, (width, height) in WIDTHS.items():
            page.set_viewport_size({"width": width, "height": height})
            response = page.goto(f"{live_server.url}{path}")
            assert response.status == 200, name
            assert heading in page.locator("h1").inner_text()
            current = page.locator("nav[aria-label=Main] [aria-current=page]")
            assert current.count() == 1 and current.inner_text() == "Lifecycle"
            points = charts_have_data(page)
            assert len(points) == expected_charts, (name, points)
            assert all(count > 0 for count in points.values()), (name, points)
            assert _no_sideways_spill(page) <= 1, (name, width_name)
            screenshot(page, name, width_name)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/lifecycle/")
    # Seven metered days, three series (cost, saved, GB-days).
    assert charts_have_data(page) == {"chart-storage": 21}
    # The GB-days line is drawn above each day's cost bar, not on its top (they read as one series): pixels
    # from the bar's top up to the line's point, per day, as plotly placed them.
    gaps = page.locator("#chart-storage").evaluate("""el => { const L = el._fullLayout;
        return el.data[0].y.map((cost, i) => L.yaxis.l2p(cost) - L.yaxis2.l2p(el.data[2].y[i])); }""")
    assert min(gaps) >= 0 and max(gaps) > 40, gaps
    assert page.locator("[data-kpi=orphans]").inner_text().startswith("1")
    page.goto(f"{live_server.url}/lifecycle/audit/")
    audit = page.locator("#table-audit tbody")
    assert "thread_old_globex" in audit.inner_text() and "deleted" in audit.inner_text()
    page.goto(f"{live_server.url}/lifecycle/orphans/")
    assert "vs_orphan" in page.locator("main").inner_text()


def test_sweep_preview_then_confirm_from_the_browser_deletes_exactly_the_listed_thread(page, live_server, world):
    provider = world["provider"]
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, live_server, "ops", "ops-password-1")
    page.goto(f"{live_server.url}/lifecycle/")
    page.get_by_label("Kind").select_option("threads")
    page.get_by_label("Tenant").select_option("acme")
    page.get_by_role("button", name="Start dry run").click()
    page.wait_for_url("**/lifecycle/sweeps/*/")
    assert page.locator("h1").inner_text().startswith("Dry run #")
    assert page.locator("[data-outcome=would_delete]").inner_text() == "1"
    assert "thread_old_acme" in page.locator("#table-items").inner_text()
    assert "thread_old_acme" in provider.threads  # a dry run deletes nothing
    screenshot(page, "lifecycle-sweep-preview", "desktop")
    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "lifecycle-sweep-preview", "mobile")
    assert _no_sideways_spill(page) <= 1

    confirm = page.get_by_role("button", name="Delete these 1 resource")
    # The button asks once more; dismissing keeps everything.
    page.once("dialog", lambda dialog: dialog.dismiss())
    confirm.click()
    assert "thread_old_acme" in provider.threads and "Dry run #" in page.locator("h1").inner_text()
    page.once("dialog", lambda dialog: dialog.accept())
    confirm.click()
    page.wait_for_function("() => document.querySelector('h1').innerText.startsWith('Sweep #')")
    assert "thread_old_acme" not in provider.threads
    assert page.locator("[data-outcome=deleted]").inner_text() == "1"
    assert SweepItem.objects.for_tenant(world["acme"]).get(openai_id="thread_old_acme", dry_run=False).outcome \
        == Outcome.DELETED
    assert "thread_old_globex" not in page.locator("main").inner_text()
    page.set_viewport_size({"width": 1280, "height": 900})
    screenshot(page, "lifecycle-sweep-confirmed", "desktop")


def test_tenant_member_sees_only_their_tenant_and_cannot_act(page, live_server, world):
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, live_server, "acme-viewer", "member-password-1")
    assert page.get_by_role("navigation", name="Main").get_by_role("link", name="Reconciliation").count() == 0
    page.goto(f"{live_server.url}/lifecycle/")
    main = page.locator("main").inner_text()
    assert "globex" not in main.lower() and "vs_orphan" not in main
    assert page.get_by_role("button", name="Start dry run").count() == 0
    assert page.locator("[data-kpi=orphans]").count() == 0
    assert charts_have_data(page) == {"chart-storage": 21}  # acme's own metered days
    screenshot(page, "lifecycle-member", "desktop")
    page.goto(f"{live_server.url}/lifecycle/audit/")
    assert "thread_old_globex" not in page.locator("main").inner_text()
    for path in (f"/lifecycle/sweeps/{world['globex_sweep'].pk}/", "/lifecycle/orphans/"):
        assert page.goto(f"{live_server.url}{path}").status == 404, path
    assert page.get_by_role("heading", name="Page not found").is_visible()
    screenshot(page, "not-found", "desktop")


def test_every_orphans_actions_are_on_screen_at_1280_without_scrolling_sideways(page, live_server, world):
    """An OpenAI-length file id, a project and a long tenant name in the picker: as separate Assign and Delete
    columns, Delete sat past the table's right edge at 1280 px, reachable only by scrolling the table."""
    Tenant.objects.create(slug="wayne", name="Wayne Enterprises")
    services.resources_record(tenant=None, openai_project="proj_default", obj=builders.file(
        file_id="file-YbbYpPTBfJq9DeEEvcNp8G", created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=3),
        size_bytes=2_500_000, filename="upload-14.csv"))
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, live_server, "ops", "ops-password-1")
    page.goto(f"{live_server.url}/lifecycle/orphans/")
    region = page.get_by_role("region", name="Resources with no tenant")
    right_edge = region.bounding_box()["x"] + region.bounding_box()["width"]
    for button in ("Assign", "Delete file-YbbYpPTBfJq9DeEEvcNp8G"):
        box = page.get_by_role("button", name=button).first.bounding_box()
        assert box["x"] + box["width"] <= right_edge, button
    assert page.evaluate("() => { const s = document.querySelector('.table-scroll'); "
                         "return s.scrollWidth - s.clientWidth; }") <= 1
    screenshot(page, "lifecycle-orphans-actions", "desktop")


def test_upcoming_deletions_fit_at_1280_without_scrolling_sideways(page, live_server, world):
    """A dry run's rows, each with its rule and its re-check's detail: as two wrapped columns of at least 220 px,
    the table ran past the screen's edge at 1280 px (the CSV keeps them apart)."""
    long_id = "thread_00c790104f9e04980b538b5a9e1c6d2f0a7b3c4d5e6f7a8b"
    last = dt.datetime.now(dt.UTC) - dt.timedelta(days=200)
    Thread.objects.create(tenant=world["acme"], openai_id=long_id, kind="thread", created_at=last,
                          last_activity_at=last)
    world["provider"].add_thread(long_id, last)
    # The demo's rows: a conversation (its badge is wider than a thread's) of a tenant with a longer slug; with
    # its two times unwrapped the table still ran 27 px past the edge there.
    umbrella = Tenant.objects.create(slug="umbrella", name="Umbrella Health")
    conversation_id = "conv_00c790104f9e04980b538b5a9e1c6d2f0a7b3c4d5e6f7a8b"
    Thread.objects.create(tenant=umbrella, openai_id=conversation_id, kind="conversation", created_at=last,
                          last_activity_at=last)
    world["provider"].conversations[conversation_id] = {
        "id": conversation_id, "object": "conversation", "created_at": int(last.timestamp()), "metadata": {}}
    preview = services.sweep_create(kind="threads", dry_run=True)
    services.sweep_run_to_completion(sweep_id=preview.pk, provider=world["provider"])
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, live_server, "ops", "ops-password-1")
    page.goto(f"{live_server.url}/lifecycle/")
    region = page.get_by_role("region", name="Upcoming deletions (latest dry run of each kind)")
    assert region.get_by_text("thread_retention_days=", exact=False).first.is_visible()
    assert region.get_by_text("conversation", exact=True).count() == 1
    assert region.evaluate("(s) => s.scrollWidth - s.clientWidth") <= 1
    # A time that wraps breaks before its clock time only: its date stays on one line.
    day = region.locator("time .day").first
    assert day.evaluate("(el) => el.getClientRects().length") == 1
    screenshot(page, "lifecycle-upcoming-deletions", "desktop")
