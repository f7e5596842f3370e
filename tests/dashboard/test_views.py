"""Dashboard pages: status, context, CSV exports, filters in the URL, policy settings, query counts."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.core.models import AuditEvent
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_update

from .conftest import NOW
from .seed import run_row, thread_row

pytestmark = pytest.mark.django_db
TODAY = NOW.date()


def csv_rows(response) -> list[list[str]]:
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def ledger(tenant, other_tenant, frozen_now):
    Tenant.objects.filter(pk=tenant.pk).update(monthly_budget_usd=Decimal("10"))
    tenant.refresh_from_db()
    thread = thread_row(tenant, last_activity_at=NOW - dt.timedelta(days=2), cost="0.75", run_count=2)
    return {
        "big": run_row(tenant, created_at=NOW - dt.timedelta(hours=3), cost="0.50", thread=thread, model="gpt-5.4",
                       user_id="alice", feature="chat", metadata={"feature": "chat", "user_id": "alice"}),
        "small": run_row(tenant, created_at=NOW - dt.timedelta(days=1), cost="0.02", model="gpt-5-mini",
                         user_id="bob", feature="search", status="failed"),
        "theirs": run_row(other_tenant, created_at=NOW - dt.timedelta(hours=1), cost="3.00", model="gpt-5.5",
                          user_id="eve", feature="secret-feature"),
        "thread": thread,
    }


@pytest.mark.parametrize("path", ["/", "/tenants/", "/tenants/acme/", "/runs/", "/runs/resp_x/", "/prices/",
                                  "/runs/?format=csv"])
def test_anonymous_visitors_are_sent_to_login(client, path):
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")


def test_overview_shows_month_spend_projection_chart_and_top_tenants(staff_client, ledger):
    response = staff_client.get("/")
    assert response.status_code == 200
    summary = response.context["summary"]
    assert summary.month_to_date_usd == Decimal("3.52")
    # At noon on the 20th, 19.5 days have passed (today counts as far as it has gone).
    assert summary.projected_month_end_usd == (Decimal("3.52") / Decimal("19.5") * 30).quantize(Decimal("1E-10"))
    traces = {trace["name"]: trace for trace in response.context["daily_figure"]["data"]}
    assert set(traces) == {"Acme Corp", "Globex Inc"}  # by name, as the top tenants table beside it
    assert sum(traces["Globex Inc"]["y"]) == 3.0
    top = response.context["tables"]["top_tenants"].page_rows
    assert [(t.slug, t.month_to_date_usd, t.budget_used_percent) for t in top] == [
        ("globex", Decimal("3.00"), None), ("acme", Decimal("0.52"), Decimal("5.2")),
    ]
    html = response.content.decode()
    assert 'aria-current="page">Overview' in html and "vendor/plotly.min.js" in html


def test_overview_chart_legend_names_tenants_and_keeps_others_for_the_grouped_rest(staff_client, tenant, frozen_now,
                                                                                    monkeypatch):
    """The legend read slugs ("acme") beside a table of names ("Acme Corp"). Now names, and "(others)" still
    means only the grouped rest: a tenant *named* "(others)" is shown with its slug."""
    from apps.dashboard import views

    monkeypatch.setattr(views, "TOP_TENANTS_IN_CHART", 2)
    odd = Tenant.objects.create(slug="odd", name="(others)")
    small = Tenant.objects.create(slug="small", name="Small <b>Co</b>")
    run_row(tenant, created_at=NOW, cost="3")
    run_row(odd, created_at=NOW, cost="2")
    run_row(small, created_at=NOW, cost="1")
    response = staff_client.get("/")
    names = [trace["name"] for trace in response.context["daily_figure"]["data"]]
    assert names == ["Acme Corp", "(others) (odd)", "(others)"]
    assert "Acme Corp<br>" in response.context["daily_figure"]["data"][0]["hovertemplate"]


def test_overview_chart_caption_mentions_the_grouped_rest_only_when_there_is_one(staff_client, ledger, monkeypatch):
    from apps.dashboard import views

    html = staff_client.get("/").content.decode()
    assert "Spend per tenant per day." in html and "the rest are grouped" not in html  # two tenants, both shown
    monkeypatch.setattr(views, "TOP_TENANTS_IN_CHART", 1)
    html = staff_client.get("/").content.decode()
    assert "the rest are grouped as “(others)”" in html


def test_overview_empty_state_explains_how_to_send_runs(staff_client, tenant):
    html = staff_client.get("/").content.decode()
    assert "No spend recorded" in html and "POST /api/v1/ingest/" in html


def test_tenant_list_sorts_searches_and_paginates_in_the_url(staff_client, ledger):
    for index in range(30):
        Tenant.objects.create(slug=f"zz-{index:02d}", name=f"Zeta {index:02d}")
    first = staff_client.get("/tenants/")
    table = first.context["tables"]["tenants"]
    assert table.page.paginator.count == 32 and len(table.page_rows) == 25
    assert [t.slug for t in table.page_rows[:2]] == ["globex", "acme"]  # default: month-to-date spend, highest first
    assert table.page_rows[1].trend[-1] == Decimal("0.50")  # today's cost closes the sparkline
    by_name = staff_client.get("/tenants/?sort=name").context["tables"]["tenants"].page_rows
    assert by_name[0].slug == "acme"
    second = staff_client.get("/tenants/?sort=name&page=2").context["tables"]["tenants"].page_rows
    assert len(second) == 7 and second[-1].slug == "zz-29"
    searched = staff_client.get("/tenants/?q=glob").context["tables"]["tenants"].page_rows
    assert [t.slug for t in searched] == ["globex"]
    html = first.content.decode()
    assert 'aria-sort="descending"' in html and "?sort=mtd" in html


@pytest.mark.parametrize("sort", ["budget", "-budget"])
def test_tenants_without_a_budget_sort_last_by_budget_used_either_way(staff_client, ledger, sort):
    # SQLite put them first going up: ?sort=budget opened on tenants with no budget to compare.
    Tenant.objects.filter(slug="globex").update(monthly_budget_usd=Decimal("100"))
    Tenant.objects.create(slug="initech", name="Initech")
    rows = staff_client.get(f"/tenants/?sort={sort}").context["tables"]["tenants"].page_rows
    with_budget = ["globex", "acme"] if sort == "budget" else ["acme", "globex"]  # 3.0% and 5.2% used
    assert [t.slug for t in rows] == [*with_budget, "initech"]


def test_a_tenant_search_too_long_to_type_is_a_400_not_every_tenant(staff_client, ledger):
    page = staff_client.get(f"/tenants/?q={'a' * 101}")
    assert page.status_code == 400 and page.context["tables"]["tenants"].page.paginator.count == 0
    assert "at most 100 characters" in page.content.decode()
    assert "<strong>Search tenants</strong>:" in page.content.decode()  # the field's label, not the URL's q
    export = staff_client.get(f"/tenants/?q={'a' * 101}&format=csv&table=tenants")
    assert export.status_code == 400 and export.json()["error"]["field"] == "q"


def test_tenant_list_csv_exports_every_row_with_the_same_search(staff_client, ledger):
    rows = csv_rows(staff_client.get("/tenants/?q=ac&format=csv&table=tenants"))
    assert rows == [["Tenant", "Month to date", "Budget used", "Budget", "Slug", "Status"],
                    ["Acme Corp", "0.52", "5.2", "10.00", "acme", "active"]]


def test_tenant_detail_context_has_every_section(staff_client, ledger, tenant):
    response = staff_client.get("/tenants/acme/?start=2026-11-01&end=2026-11-20")
    assert response.status_code == 200
    context = response.context
    assert (context["period_start"], context["period_end"]) == (dt.date(2026, 11, 1), TODAY)
    assert [trace["name"] for trace in context["model_figure"]["data"]] == ["gpt-5.4", "gpt-5-mini"]
    assert [row["feature"] for row in context["tables"]["features"].page_rows] == ["chat", "search"]
    assert [row["user_id"] for row in context["tables"]["users"].page_rows] == ["alice", "bob"]
    assert all(isinstance(row["last_active_day"], dt.date) for row in context["tables"]["users"].page_rows)
    assert "Last active" in response.content.decode()
    assert [run.openai_id for run in context["tables"]["runs"].page_rows] == [ledger["big"].openai_id]
    assert context["histogram"].total_runs == 2
    assert context["wasted"].wasted_usd == Decimal("0.02")
    assert context["budget_used_percent"] == Decimal("5.2")
    thread_cells = context["tables"]["threads"].html_rows[0]
    assert [cell.value for cell in thread_cells][5:] == ["ok", ledger["thread"].last_activity_at + dt.timedelta(days=60), 58]
    assert context["can_edit_policy"] is True  # staff


def test_tenant_detail_rejects_a_bad_period_with_a_400_and_still_shows_the_last_30_days(staff_client, ledger):
    response = staff_client.get("/tenants/acme/?start=2026-11-20&end=2026-11-01")
    page = response.content.decode()
    assert response.status_code == 400
    assert "Start must be on or before end" in page and "Showing the last 30 days." in page
    assert "<strong>From</strong>: Start must be" in page  # the field's label, not the URL's start
    assert response.context["period_end"] == TODAY


@pytest.mark.parametrize("path", ["/runs/?start=9999-12-01&end=9999-12-31", "/tenants/acme/?start=9999-12-01&end=9999-12-31",
                                  "/runs/?start=0001-01-01&end=0001-01-02", "/tenants/acme/?end=0001-01-01",
                                  "/runs/?end=0001-01-01", "/tenants/acme/?end=9999-12-31"])
def test_a_period_at_the_ends_of_the_calendar_is_a_400_naming_the_bounds_not_a_500(staff_client, ledger, path):
    response = staff_client.get(path)
    assert response.status_code == 400
    assert "Use a date from Jan 1, 1970 to Dec 31, 9998." in response.content.decode()


def test_tenant_detail_csv_exports(staff_client, ledger):
    threads = csv_rows(staff_client.get("/tenants/acme/?format=csv&table=threads"))
    assert threads[0][0] == "Thread" and threads[1][0] == ledger["thread"].openai_id and threads[1][4] == "0.75"
    users = csv_rows(staff_client.get("/tenants/acme/?format=csv&table=users"))
    assert users[0] == ["End user", "Runs", "Last active", "Cost"]
    assert users[1][:2] == ["alice", "1"] and users[1][3] == "0.50"
    assert users[1][2].startswith("2026-11-")  # the last UTC day with a run of alice, from the rollups
    assert staff_client.get("/tenants/acme/?format=csv&table=nope").status_code == 404


def test_a_new_period_keeps_the_threads_shown_and_starts_the_tables_on_their_first_page(staff_client, ledger):
    # The period form sent only start and end: applying a period with the deleted threads shown showed the
    # active ones again.
    html = staff_client.get("/tenants/acme/?threads=deleted&threads_page=2&runs_page=3").content.decode()
    period_form = re.search(r'<form method="get"[^>]*aria-label="Period">(.*?)</form>', html, re.S).group(1)
    hidden = re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', period_form)
    assert hidden == [("threads", "deleted")]
    # A value the page ignored is not sent again either (the page shows the active threads instead).
    html = staff_client.get("/tenants/acme/?threads=bogus").content.decode()
    period_form = re.search(r'<form method="get"[^>]*aria-label="Period">(.*?)</form>', html, re.S).group(1)
    assert 'type="hidden"' not in period_form


def test_threads_table_says_when_active_threads_will_be_deleted_and_when_deleted_ones_were(staff_client, ledger):
    # A future retention date under "Deleted on" read as if the customer's data were already gone.
    active = csv_rows(staff_client.get("/tenants/acme/?format=csv&table=threads"))
    deleted = csv_rows(staff_client.get("/tenants/acme/?format=csv&table=threads&threads=deleted"))
    assert active[0][6] == "Deletes on" and deleted[0][6] == "Deleted on"
    # With threads recorded but none deleted, the deleted view says so (it used to say none were recorded).
    page = staff_client.get("/tenants/acme/?threads=deleted")
    assert not page.context["tables"]["threads"].page_rows
    assert "has been deleted yet" in page.content.decode() and "No threads recorded" not in page.content.decode()


def test_runs_page_filters_by_every_field_and_exports_the_same_rows(staff_client, ledger):
    default = staff_client.get("/runs/")
    assert [r.openai_id for r in default.context["tables"]["runs"].page_rows] == [
        ledger["theirs"].openai_id, ledger["big"].openai_id]  # over their tenants' thresholds
    filtered = staff_client.get("/runs/?tenant=acme&min_cost=0&status=failed&model=gpt-5-mini&feature=search")
    assert [r.openai_id for r in filtered.context["tables"]["runs"].page_rows] == [ledger["small"].openai_id]
    points = filtered.context["scatter_figure"]["data"]
    assert [(t["name"], t["x"], t["y"]) for t in points] == [("gpt-5-mini", [1000], [0.02])]
    rows = csv_rows(staff_client.get("/runs/?tenant=acme&min_cost=0.01&format=csv"))
    assert [row[0] for row in rows[1:]] == [ledger["big"].openai_id, ledger["small"].openai_id]
    assert rows[0][1] == "Cost" and rows[1][1] == "0.50"
    early = staff_client.get("/runs/?start=2026-10-01&end=2026-10-31&min_cost=0")
    assert early.context["tables"]["runs"].page_rows == []
    assert "No runs match these filters" in early.content.decode()


def test_runs_page_names_the_bad_field(staff_client, ledger):
    """By the label beside its input on the page ("Minimum cost (USD)", it read "min_cost"); by its parameter in
    the export's JSON error."""
    response = staff_client.get("/runs/?min_cost=cheap")
    html = response.content.decode()
    assert response.status_code == 400 and "<strong>Minimum cost (USD)</strong>: Enter a number." in html
    assert "<strong>min_cost</strong>" not in html
    export = staff_client.get("/runs/?min_cost=-1&format=csv")
    assert export.status_code == 400 and export.json()["error"]["field"] == "min_cost"


def test_a_runs_filter_that_does_not_parse_says_to_correct_it_not_to_widen_the_dates(staff_client, ledger):
    """A bad filter lists nothing; the chart and table said "lower the minimum cost or widen the dates"."""
    html = staff_client.get("/runs/?min_cost=cheap").content.decode()
    assert html.count("correct the filter named above") == 2  # the chart's empty state and the table's
    assert "widen the dates" not in html.lower()


@pytest.mark.parametrize(("path", "shown", "message"), [
    ("/?days=15", "days", "Ignored days='15': the chart covers 7, 30 or 90 days; showing the last 30."),
    ("/?days=week", "days", "Ignored days='week'"),
    ("/tenants/?sort=bogus", "sort", "Ignored sort='bogus': not a sort this table offers; sorted by month to date"),
    ("/runs/?sort=-tokens", "sort", "Ignored sort='-tokens': not a sort this table offers; sorted by cost"),
    ("/tenants/acme/?threads=archived", "threads_filter", "Ignored threads='archived': threads are active or deleted"),
])
def test_a_choice_the_page_does_not_offer_is_named_above_what_it_shows_instead(staff_client, ledger, path, shown,
                                                                                message):
    # They fell back to the default silently: ?days=15 drew 30 days of chart with nothing saying so.
    response = staff_client.get(path)
    assert response.status_code == 200
    assert response.context[shown] == {"days": 30, "sort": "-mtd" if "tenants" in path else "-cost",
                                       "threads_filter": "active"}[shown]
    html = response.content.decode()
    assert 'class="message message-warning"' in html
    assert message.replace("'", "&#x27;") in html


def test_an_export_with_a_choice_the_table_does_not_offer_is_a_400_naming_it(staff_client, ledger):
    export = staff_client.get("/tenants/?sort=bogus&format=csv&table=tenants")
    assert export.status_code == 400
    assert export.json()["error"] == {"code": "invalid", "field": "sort", "message": "sort='bogus' is not offered "
                                      "here; use one of: name, -name, mtd, -mtd, budget, -budget."}
    assert staff_client.get("/runs/?sort=-tokens&format=csv").json()["error"]["field"] == "sort"
    assert staff_client.get("/?days=15&format=csv&table=alerts").json()["error"]["message"] == (
        "days='15' is not offered here; use one of: 7, 30, 90.")


def test_a_pages_links_leave_out_the_value_it_ignored(staff_client, ledger):
    # The export buttons kept ?days=15 or ?threads=archived and every export then failed with a 400.
    for path, table in (("/?days=15", "alerts"), ("/tenants/acme/?threads=archived&start=2026-11-01", "runs"),
                        ("/tenants/?sort=bogus&q=ac", "tenants")):
        link = staff_client.get(path).context["tables"][table].csv_query
        assert "days" not in link and "threads" not in link and "sort" not in link, link
        assert link.startswith(path.split("?")[0] + "?"), link  # the page's own address, not a bare "?…"
        export = staff_client.get(link)
        assert export.status_code == 200, (path, export.content[:200])
    assert "start=2026-11-01" in staff_client.get("/tenants/acme/?threads=archived&start=2026-11-01") \
        .context["tables"]["runs"].csv_query  # the filters it honours stay


def test_the_notice_stays_on_a_page_that_also_refuses_another_filter(staff_client, ledger):
    for path in ("/tenants/acme/?threads=archived&start=garbage", "/runs/?sort=-tokens&min_cost=cheap"):
        response = staff_client.get(path)
        assert response.status_code == 400
        assert "Ignored " in response.content.decode(), path
    # Shown once, on the page it concerns, not carried to the next one.
    assert "message-warning" not in staff_client.get("/tenants/acme/").content.decode()


def test_offered_choices_and_no_choice_show_no_notice(staff_client, ledger):
    for path in ("/?days=7", "/", "/tenants/?sort=-budget", "/runs/?sort=created", "/runs/?sort=",
                 "/tenants/acme/?threads=deleted", "/tenants/acme/?threads=", "/lifecycle/audit/?outcome=deleted&type="):
        assert "message-warning" not in staff_client.get(path).content.decode(), path
    # An empty threads filter is every thread, as the comment in the view says.
    assert staff_client.get("/tenants/acme/?threads=").context["threads_filter"] == ""


def test_the_deletion_audit_names_an_outcome_or_type_it_does_not_know(staff_client, ledger):
    page = staff_client.get("/lifecycle/audit/?outcome=exploded")
    assert page.context["outcome"] == "" and "Ignored outcome=&#x27;exploded&#x27;" in page.content.decode()
    # A dry run's outcome is an outcome, but never one the audit (real sweeps only) lists.
    assert "Ignored outcome=&#x27;would_delete&#x27;" in staff_client.get("/lifecycle/audit/?outcome=would_delete") \
        .content.decode()
    export = staff_client.get("/lifecycle/audit/?type=spaceship&format=csv&table=audit")
    assert export.status_code == 400 and export.json()["error"]["field"] == "type"


def test_run_detail_shows_tokens_cost_versions_timeline_and_thread(staff_client, ledger):
    run = ledger["big"]
    response = staff_client.get(f"/runs/{run.openai_id}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert run.model_price.version in html  # the price version it was rated with
    costs = {row["line"]: row["cost"] for row in response.context["tables"]["costs"].page_rows}
    assert costs["total"] == Decimal("0.50")
    assert [row["event"] for row in response.context["tables"]["timeline"].page_rows] == ["created"]
    assert response.context["thread"] == ledger["thread"] and "$0.75" in html
    assert ("feature", "chat") in response.context["metadata_items"]
    timeline = csv_rows(staff_client.get(f"/runs/{run.openai_id}/?format=csv&table=timeline"))
    assert timeline[1] == ["created", run.created_at.isoformat()]


def test_run_detail_gives_each_cost_exactly_beside_its_cents_so_the_lines_visibly_add_up(staff_client, ledger):
    # $0.07 + $0.04 read as a total of $0.10, rounded one by one with nothing to say why.
    run = ledger["big"]
    run.cost_input_usd, run.cost_cached_input_usd, run.cost_output_usd, run.cost_tools_usd = (
        Decimal("0.06811"), Decimal("0"), Decimal("0.0359"), Decimal("0"))
    run.cost_total_usd = Decimal("0.10401")
    run.save()

    html = staff_client.get(f"/runs/{run.openai_id}/").content.decode()
    exported = csv_rows(staff_client.get(f"/runs/{run.openai_id}/?format=csv&table=costs"))

    for cents, exact in (("$0.07", "$0.06811"), ("$0.04", "$0.0359"), ("$0.10", "$0.10401")):
        assert f'<td class="num">{cents}</td><td class="num">{exact}</td>' in html
    assert "Each cost is rounded on its own; the exact amounts add up to the total." in html
    assert exported[0] == ["Line", "Cost"] and exported[-1] == ["total", "0.10401"]  # the CSV is exact already


def test_run_detail_says_when_its_thread_is_overdue_for_deletion_as_the_tenant_page_does(staff_client, ledger):
    # "active" alone, beside a tenant page listing the same thread overdue, read as if it were kept.
    run, thread = ledger["big"], ledger["thread"]
    thread.last_activity_at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    thread.save(update_fields=["last_activity_at"])
    due = thread.last_activity_at + dt.timedelta(days=run.tenant.thread_retention_days)

    html = staff_client.get(f"/runs/{run.openai_id}/").content.decode()
    tenant_page = staff_client.get(f"/tenants/{run.tenant.slug}/")
    [row] = [row for row in tenant_page.context["tables"]["threads"].page_rows if row.openai_id == thread.openai_id]

    assert f"overdue</span> for deletion since <time datetime=\"{due.isoformat()}\">{due:%b} {due.day}, {due.year}</time>" in html
    assert tenant_page.context["tables"]["threads"].columns[5].value(row) == "overdue"


def test_run_detail_says_which_output_count_includes_reasoning(staff_client, ledger):
    """The tokens table's output row (reasoning left out) and the Output tokens card (reasoning in, as it bills)
    differed with nothing saying why: each label now says which side reasoning is on."""
    run = ledger["big"]
    run.output_tokens, run.reasoning_tokens = 2602, 361
    run.save(update_fields=["output_tokens", "reasoning_tokens"])
    response = staff_client.get(f"/runs/{run.openai_id}/")
    html = response.content.decode()
    assert 'Output tokens (incl. reasoning)</p><p class="kpi-value">2,602</p>' in html
    tokens = {row["kind"]: row["tokens"] for row in response.context["tables"]["tokens"].page_rows}
    assert tokens["output (excl. reasoning)"] == 2241 and tokens["reasoning"] == 361
    assert "output (excl. reasoning)" in html


def test_times_render_in_the_viewer_timezone_from_the_tz_cookie(staff_client, ledger):
    staff_client.cookies["tz"] = "Asia/Tokyo"
    run = ledger["big"]  # 2026-11-20 09:00 UTC is 18:00 in Tokyo
    html = staff_client.get(f"/runs/{run.openai_id}/").content.decode()
    assert "Nov 20, 2026 18:00:00" in html
    rows = csv_rows(staff_client.get(f"/runs/{run.openai_id}/?format=csv&table=timeline"))
    assert rows[1][1] == "2026-11-20T18:00:00+09:00"


def test_footer_names_the_viewer_timezone_not_todays_abbreviation(staff_client, ledger):
    # In November Berlin is CET, but the pages also show August times, which are CEST (+2): a footer reading
    # "Times in CET" mislabelled them. The zone's name is right for every date on the page.
    staff_client.cookies["tz"] = "Europe/Berlin"
    html = staff_client.get("/").content.decode()
    assert "Times in <span data-tz-label>Europe/Berlin</span>" in html
    staff_client.cookies.pop("tz")
    assert "Times in <span data-tz-label>UTC</span>" in staff_client.get("/").content.decode()


def test_prices_page_lists_the_book_and_a_models_history(staff_client, frozen_now):
    from apps.pricing.models import ModelPrice

    ModelPrice.objects.create(model="test-model", effective_from=dt.date(2025, 1, 1), input_usd_per_1m="2.50",
                              cache_write_usd_per_1m="3.10", output_usd_per_1m="10")
    ModelPrice.objects.create(model="test-model", effective_from=dt.date(2026, 6, 1), input_usd_per_1m="2.00",
                              output_usd_per_1m="8")
    response = staff_client.get("/prices/?model=test-model")
    book = {p.model: p for p in response.context["tables"]["book"].page_rows}
    assert book["test-model"].effective_from == dt.date(2026, 6, 1)
    history = response.context["tables"]["history"].page_rows
    assert [p.effective_from for p in history] == [dt.date(2026, 6, 1), dt.date(2025, 1, 1)]
    assert response.context["history_figure"]["data"][0]["y"] == [2.5, 2.0, 2.0]
    rows = csv_rows(staff_client.get("/prices/?model=test-model&format=csv&table=history"))
    assert rows[1][:4] == ["test-model", "2026-06-01", "2.00", ""]  # the CSV keeps the stored (empty) price
    assert rows[2][:5] == ["test-model", "2025-01-01", "2.50", "", "3.10"]  # written as the other prices are
    # The page says what an empty cached price bills at, instead of a dash read as "free".
    cells = response.context["tables"]["history"].html_rows[0]
    # "(input price)" is one unbreakable phrase: a tight table may put it under the amount, never split it.
    assert [cell.value for cell in cells[2:4]] == [Decimal("2.00"), "$2.00 (input\u00a0price)"]
    assert [cell.css_class for cell in cells[2:4]] == ["num", "num wrap"]
    # The page leads with the version (what a run says it was rated with); the CSV keeps its columns.
    assert cells[0].value == "test-model@2026-06-01"
    assert rows[0] == ["Model", "Effective from", "Input", "Cached input", "Cache write", "Output",
                       "Long context above (input tokens)", "Long-context input multiplier",
                       "Long-context output multiplier", "Source", "Checked", "Version"]
    cached = response.context["history_figure"]["data"][1]
    assert cached["name"] == "cached input (= input price)" and cached["line"]["dash"] == "dot"


def test_a_models_link_in_the_price_book_opens_that_models_history(staff_client, frozen_now):
    # The name went into the link unquoted: "+" read as a space, "&" or "#" cut it short.
    from apps.pricing.models import ModelPrice

    ModelPrice.objects.create(model="gpt-x+audio&v#2", effective_from=dt.date(2025, 1, 1), input_usd_per_1m="1",
                              output_usd_per_1m="2")
    book = staff_client.get("/prices/").context["tables"]["book"]
    link = next(row[0].url for row in book.html_rows if row[0].value == "gpt-x+audio&v#2")
    history = staff_client.get(link.split("#history")[0])
    assert history.context["model"] == "gpt-x+audio&v#2"
    assert [p.model for p in history.context["tables"]["history"].page_rows] == ["gpt-x+audio&v#2"]


def test_tenant_admin_changes_policy_and_the_change_is_audited(client, tenant_admin_user, tenant):
    client.force_login(tenant_admin_user)
    page = client.get("/tenants/acme/")
    form = page.context["policy_form"]
    assert "markup_percent" not in form.fields  # a commercial term: staff only
    # The inputs say what the server accepts, and each help text is the one its input's aria-describedby names.
    html = page.content.decode()
    for name in ("thread_retention_days", "vector_store_idle_days"):
        assert 'min="1"' in re.search(rf'<input[^>]*name="{name}"[^>]*>', html).group(0)
    assert 'aria-describedby="id_monthly_budget_usd_helptext"' in html and 'id="id_monthly_budget_usd_helptext"' in html
    response = client.post("/tenants/acme/settings/", {
        "monthly_budget_usd": "250.00", "high_cost_run_usd": "0.25", "thread_retention_days": "30",
        "vector_store_idle_days": "14", "archive_before_delete": "on", "markup_percent": "99",
    })
    assert response.status_code == 302 and response["Location"] == "/tenants/acme/#settings"
    tenant.refresh_from_db()
    assert tenant.monthly_budget_usd == Decimal("250.00") and tenant.thread_retention_days == 30
    assert tenant.archive_before_delete is True and tenant.markup_percent is None
    event = AuditEvent.objects.get(action="tenant.update")
    assert event.actor == tenant_admin_user
    assert event.data["before"]["thread_retention_days"] == "60" and event.data["after"]["thread_retention_days"] == "30"


def test_policy_form_errors_name_the_field_and_change_nothing(client, tenant_admin_user, tenant):
    client.force_login(tenant_admin_user)
    response = client.post("/tenants/acme/settings/", {"high_cost_run_usd": "0.1", "thread_retention_days": "0",
                                                      "vector_store_idle_days": "30"})
    assert response.status_code == 400
    assert response.context["policy_form"].errors["thread_retention_days"]
    tenant.refresh_from_db()
    assert tenant.thread_retention_days == 60 and not AuditEvent.objects.filter(action="tenant.update").exists()


def test_a_settings_save_is_confirmed_and_refused_where_the_form_is(client, tenant_admin_user, tenant):
    """The save lands at #settings, the foot of a long page: "Policy settings saved." sat at the page's top, out
    of sight, and a refused save (400) came back scrolled to the top with its errors at the foot."""
    client.force_login(tenant_admin_user)
    html = client.get("/tenants/acme/").content.decode()
    assert 'action="/tenants/acme/settings/#settings"' in html
    refused = client.post("/tenants/acme/settings/", {"high_cost_run_usd": "0.1", "thread_retention_days": "0",
                                                     "vector_store_idle_days": "30"}).content.decode()
    assert 'action="/tenants/acme/settings/#settings"' in refused  # saving again comes back to the form too
    saved = client.post("/tenants/acme/settings/", {"high_cost_run_usd": "0.1", "thread_retention_days": "30",
                                                   "vector_store_idle_days": "30"}, follow=True).content.decode()
    settings_card = saved[saved.index('id="settings"'):]
    assert '<p class="message message-success" role="status">Policy settings saved.</p>' in settings_card
    assert '<ul class="messages"' not in saved  # not also at the top of the page

def test_the_page_drawn_after_a_refused_save_links_to_the_tenant_page_not_the_post_only_address(
        client, tenant_admin_user, tenant):
    # Drawn at /settings/, its relative "?…" links (table pages, sorts, exports, the thread filter) and the
    # period form asked that POST-only address: every one answered 405.
    import re

    client.force_login(tenant_admin_user)
    refused = client.post("/tenants/acme/settings/", {"high_cost_run_usd": "0.1", "thread_retention_days": "0",
                                                     "vector_store_idle_days": "30"}).content.decode()

    links = re.findall(r'(?:href|action)="([^"]*)"', refused)
    assert not [link for link in links if link.startswith("?") or "/settings/?" in link]
    assert '<form method="get" action="/tenants/acme/"' in refused
    assert 'href="/tenants/acme/?threads=deleted#threads"' in refused
    assert 'href="/tenants/acme/?format=csv&amp;table=' in refused
    for link in {link.replace("&amp;", "&") for link in links if link.startswith("/tenants/acme/?")}:
        assert client.get(link).status_code == 200, link


def test_acknowledging_an_alert_from_the_page_drawn_after_a_refused_save_goes_back_to_the_tenant_page(
        client, tenant_admin_user, tenant):
    # Its "next" was the request's path, the POST-only settings address: back there, a 405.
    client.force_login(tenant_admin_user)
    refused = client.post("/tenants/acme/settings/", {"high_cost_run_usd": "0.1", "thread_retention_days": "0",
                                                     "vector_store_idle_days": "30"}).content.decode()

    back = re.search(r'name="next" value="([^"]*)"', refused).group(1)

    assert back == "/tenants/acme/#alerts"
    assert client.get(back.split("#")[0]).status_code == 200


@pytest.mark.parametrize("openai_id", ["resp_a#b", "resp_a?b", "resp_a%41b"])
def test_a_run_pages_own_links_stay_on_it_whatever_its_id_holds(staff_client, tenant, frozen_now, openai_id):
    # Its links carry the page's path: unquoted, "resp_a#b" made the export ask for /runs/resp_a.
    from urllib.parse import urlsplit

    from apps.dashboard.views import _run_page_url

    run_row(tenant, created_at=NOW - dt.timedelta(hours=2), cost="0.10", openai_id=openai_id)
    url = _run_page_url(openai_id)

    link = urlsplit(staff_client.get(url).context["tables"]["tokens"].csv_query)  # as a browser splits an href

    assert link.path == url
    export = staff_client.get(f"{link.path}?{link.query}")
    assert export.status_code == 200 and export["Content-Type"].startswith("text/csv")


def test_viewers_cannot_change_policy_and_see_it_read_only(client, member_user, tenant):
    client.force_login(member_user)
    page = client.get("/tenants/acme/")
    assert page.context["policy_form"] is None and "Only this tenant's admins" in page.content.decode()
    assert client.post("/tenants/acme/settings/", {"thread_retention_days": "1"}).status_code == 403
    tenant.refresh_from_db()
    assert tenant.thread_retention_days == 60


def test_policy_form_requires_the_csrf_token(tenant_admin_user, tenant):
    client = Client(enforce_csrf_checks=True)
    client.force_login(tenant_admin_user)
    assert client.post("/tenants/acme/settings/", {"thread_retention_days": "5"}).status_code == 403


@pytest.mark.parametrize("path", ["/", "/tenants/", "/runs/?min_cost=0"])
def test_list_pages_run_a_constant_number_of_queries(staff_client, tenant, frozen_now, path):
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert staff_client.get(path).status_code == 200
        return len(queries)

    run_row(tenant, created_at=NOW, cost="1")
    few = count_queries()
    for index in range(20):
        extra = Tenant.objects.create(slug=f"t-{index}", name=f"T {index}")
        run_row(extra, created_at=NOW - dt.timedelta(hours=index), cost="0.5")
    assert count_queries() == few


def test_a_long_thread_and_many_alerts_page_on_screen_and_export_every_row(staff_client, tenant, frozen_now):
    # They used to stop silently at 50 runs and 20 alerts, and so did their CSV exports.
    from apps.alerts.services import alert_raise

    thread = thread_row(tenant, last_activity_at=NOW, run_count=60)
    runs = [run_row(tenant, created_at=NOW - dt.timedelta(minutes=index), cost="0.01", thread=thread)
            for index in range(60)]
    for index in range(25):
        alert_raise(kind="wasted_spend", cause_key=f"test:{index}", tenant=tenant, title=f"Alert {index}")
    page = staff_client.get(f"/runs/{runs[0].openai_id}/")
    table = page.context["tables"]["thread_runs"]
    assert len(table.page_rows) == 25 and table.page.paginator.count == 60
    second = staff_client.get(f"/runs/{runs[0].openai_id}/?thread_page=3").context["tables"]["thread_runs"]
    assert [r.openai_id for r in second.page_rows] == [r.openai_id for r in runs[50:]]
    assert len(csv_rows(staff_client.get(f"/runs/{runs[0].openai_id}/?format=csv&table=thread_runs"))) == 61
    alerts = staff_client.get("/tenants/acme/").context["tables"]["alerts"]
    assert len(alerts.page_rows) == 10 and alerts.page.paginator.count == 25
    assert len(csv_rows(staff_client.get("/tenants/acme/?format=csv&table=alerts"))) == 26


def test_an_alert_about_a_run_links_to_that_run(staff_client, tenant, frozen_now):
    from apps.alerts.services import alert_raise

    run = run_row(tenant, created_at=NOW - dt.timedelta(hours=1), cost="0.50")
    alert_raise(kind="high_cost_run", cause_key="high_cost_run:x", tenant=tenant, title="High-cost run",
                data={"run": run.openai_id})
    alert_raise(kind="budget", cause_key="budget:x", tenant=tenant, title="Budget", data={"percent": 80})
    alert_raise(kind="wasted_spend", cause_key="odd:x", tenant=tenant, title="Odd", data={"run": "a/b"})
    cells = {str(row[1].value): row[1].url
             for row in staff_client.get("/tenants/acme/").context["tables"]["alerts"].html_rows}
    assert cells == {"High-cost run": f"/runs/{run.openai_id}/", "Budget": None, "Odd": None}


@pytest.mark.parametrize("path", ["/", "/tenants/acme/"])
def test_an_alerts_run_id_is_shortened_like_ids_in_tables_and_exported_whole(staff_client, tenant, frozen_now, path):
    """The run id in an alert's text (52 characters) broke mid-id across lines on a narrow screen; it is now an
    id cell (30 characters shown, 15 on a phone, the full id in its tooltip), found by the alert's data["run"],
    not by pattern. Text naming no run, or a run it does not contain, is left as it was; the CSV keeps the title."""
    from apps.alerts.services import alert_raise

    run_id = f"resp_{'9ae957afb50b5b1088' * 2}"
    alert_raise(kind="wasted_spend", cause_key="wasted_spend:long", tenant=tenant,
                title=f"Run {run_id} failed after spending $0.009590", data={"run": run_id})
    alert_raise(kind="budget", cause_key="budget:x", tenant=tenant, title=f"Budget <b>{run_id}</b>", data={})
    html = staff_client.get(path).content.decode()
    assert (f'<span class="wrap-text">Run <code class="id-cell" title="{run_id}">{run_id}</code> failed after '
            f"spending $0.009590</span>") in html
    assert f'<span class="wrap-text">Budget &lt;b&gt;{run_id}&lt;/b&gt;</span>' in html  # escaped, no id cell
    titles = [row[1] for row in csv_rows(staff_client.get(f"{path}?format=csv&table=alerts"))[1:]]
    assert f"Run {run_id} failed after spending $0.009590" in titles


def test_run_filters_offer_the_models_of_an_earlier_period_asked_for(staff_client, tenant, frozen_now):
    # The choices covered only the last 90 days, so a model retired before then could not be chosen even
    # with its period set.
    run_row(tenant, created_at=NOW - dt.timedelta(days=200), cost="0.50", model="gpt-4o", feature="legacy")
    run_row(tenant, created_at=NOW - dt.timedelta(days=600), cost="0.50", model="gpt-4-turbo", feature="oldest")
    recent = staff_client.get("/runs/").context["form"]
    assert "gpt-4o" not in dict(recent.fields["model"].choices)
    start = (TODAY - dt.timedelta(days=210)).isoformat()
    earlier = staff_client.get(f"/runs/?start={start}&end={TODAY.isoformat()}&feature=legacy")
    form = earlier.context["form"]
    assert "gpt-4o" in dict(form.fields["model"].choices) and "legacy" in dict(form.fields["feature"].choices)
    assert [run.model for run in earlier.context["tables"]["runs"].page_rows] == ["gpt-4o"]
    # A period that ended long ago, more than a period's length before today.
    long_ago = (TODAY - dt.timedelta(days=610)).isoformat(), (TODAY - dt.timedelta(days=590)).isoformat()
    oldest = staff_client.get(f"/runs/?start={long_ago[0]}&end={long_ago[1]}").context["form"]
    assert "gpt-4-turbo" in dict(oldest.fields["model"].choices)


@pytest.mark.parametrize("query", ["start=2026-02-30&end=2026-03-10", "start=2020-01-01&end=2026-01-01",
                                   "start=2026-03-10&end=2026-03-01", "end=0001-01-01"])
def test_a_tenant_export_for_a_period_that_does_not_parse_is_a_400_never_another_periods_data(staff_client, ledger,
                                                                                              query):
    response = staff_client.get(f"/tenants/acme/?{query}&format=csv&table=features")
    assert response.status_code == 400
    assert response.json()["error"]["field"] in ("start", "end")


def test_a_run_whose_id_no_page_can_have_is_listed_without_a_link(staff_client, ledger, tenant):
    """Ids recorded before ingest refused a "/" in them: the lists stay up (no NoReverseMatch 500)."""
    run_row(tenant, created_at=NOW - dt.timedelta(hours=2), cost="9.00", openai_id="resp_a/b", high_cost=True)
    for path in ("/runs/", f"/tenants/{tenant.slug}/", "/runs/?format=csv"):
        response = staff_client.get(path)
        assert response.status_code == 200, path
    assert "resp_a/b" in staff_client.get("/runs/").content.decode()


def test_export_file_names_keep_only_header_safe_characters(staff_client, ledger, tenant):
    run_row(tenant, created_at=NOW - dt.timedelta(hours=2), cost="0.10", openai_id='resp_a"b;c')
    response = staff_client.get('/runs/resp_a"b;c/?format=csv&table=tokens')
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="resp_a_b_c-tokens-{TODAY}.csv"'


def test_every_property_reading_an_offered_choice_is_listed_in_offered_params():
    # One left out would be read after offered_response: its notice lost, its export made with the default.
    import inspect
    from functools import cached_property

    from apps.dashboard.views import DashboardView

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    import apps.lifecycle.views  # noqa: F401  (its views subclass DashboardView)

    checked = 0
    for view in subclasses(DashboardView):
        for name, member in vars(view).items():
            if isinstance(member, cached_property) and "self.offered(" in inspect.getsource(member.func):
                assert name in view.offered_params, f"{view.__name__}.{name}"
                checked += 1
    assert checked >= 6


def test_a_feature_or_model_a_run_moved_away_from_is_not_listed_as_a_zero_run_line(staff_client, tenant, frozen_now):
    # A later report of a run may name another feature or model: the rollup row of the old one stays at zero runs.
    # The billing API leaves such groups out (ledger.selectors.usage_lines); the tenant page listed "trial, 0 runs,
    # $0.00" in its table, bar chart and export, drew gpt-4o in the cost chart's legend, and offered both as filters.
    from apps.ledger.selectors import usage_lines
    from apps.ledger.services import ingest_events
    from tests import builders

    def report(status: str, model: str, feature: str) -> None:
        obj = builders.response(response_id="resp_moved", created_at=NOW - dt.timedelta(hours=2), model=model,
                                status=status, metadata={"feature": feature})
        assert ingest_events(events=[{"tenant": "acme", "object": obj}]).results[0].outcome != "rejected"

    report("in_progress", "gpt-4o", "trial")
    report("completed", "gpt-5.4", "paid")
    page = staff_client.get("/tenants/acme/")
    assert [(row["feature"], row["runs"]) for row in page.context["tables"]["features"].page_rows] == [("paid", 1)]
    assert page.context["feature_figure"]["data"][0]["y"] == ["paid"]
    assert [trace["name"] for trace in page.context["model_figure"]["data"]] == ["gpt-5.4"]
    assert [row[0] for row in csv_rows(staff_client.get("/tenants/acme/?format=csv&table=features"))] == ["Feature", "paid"]
    form = staff_client.get("/runs/").context["form"]
    assert [value for value, _ in form.fields["model"].choices] == ["", "gpt-5.4"]
    assert [value for value, _ in form.fields["feature"].choices] == ["", "paid"]
    # What the usage API lists for the same days.
    lines = usage_lines(tenant=tenant, start=TODAY.replace(day=1), end=TODAY + dt.timedelta(days=1), group_by="feature")
    assert [line["key"] for line in lines] == ["paid"]


def test_runs_that_cost_nothing_are_said_to_be_left_off_the_log_scale_scatter(staff_client, ledger, tenant):
    # A log axis cannot draw $0: with ?min_cost=0 an unpriced run (or one of no tokens) was listed in the table but
    # silently missing from the scatter, and runs of an unpriced model drew blank axes above a table of them.
    run_row(tenant, created_at=NOW - dt.timedelta(hours=4), cost="0", model="mystery-model", openai_id="resp_unpriced")
    mixed = staff_client.get("/runs/?tenant=acme&min_cost=0")
    assert len(mixed.context["tables"]["runs"].page_rows) == 3
    plotted = [point for trace in mixed.context["scatter_figure"]["data"] for point in trace["customdata"]]
    assert sorted(point[1] for point in plotted) == sorted([ledger["big"].openai_id, ledger["small"].openai_id])
    assert mixed.context["scatter_unplotted"] == 1
    assert "1 run that cost $0.00 (unpriced, or no tokens) is in the table but not plotted" in mixed.content.decode()
    only_free = staff_client.get("/runs/?tenant=acme&min_cost=0&model=mystery-model")
    assert len(only_free.context["tables"]["runs"].page_rows) == 1
    assert only_free.context["scatter_figure"] is None
    assert "1 run that cost $0.00 (unpriced, or no tokens) is in the table but not plotted" in only_free.content.decode()


def test_the_month_spend_says_how_many_of_its_runs_are_unpriced_as_the_statement_counts_them(client, member_user, ledger,
                                                                                            tenant):
    # The statement counts a month's runs of a model with no price (unpriced_runs, and refuses to close over them);
    # the pages added them at $0 without a word, so a member read a complete-looking month.
    run_row(tenant, created_at=NOW - dt.timedelta(hours=5), cost="0", model="mystery-model")
    run_row(tenant, created_at=NOW - dt.timedelta(days=25), cost="0", model="mystery-model")  # last month: not this one
    client.force_login(member_user)
    for path in ("/tenants/acme/", "/"):
        response = client.get(path)
        assert response.context["summary"].unpriced_runs == 1
        assert "1 run this month has no price yet (counted at $0.00)" in response.content.decode()
    from apps.billing.selectors import statement_data, statement_document

    document = statement_document(statement_data(tenant=tenant, period=TODAY.replace(day=1)), status="open", closed_at=None)
    assert document["unpriced_runs"] == 1


# A value the page showed (an empty one has no value attribute).
HIDDEN_INITIAL = r'<input type="hidden" name="(initial-[a-z_]+)"(?: value="([^"]*)")?'


def _settings_page_post(client, slug: str, **values) -> dict:
    """What a browser sends from the settings form: each field's value and, beside it, the value it showed."""
    page = client.get(f"/tenants/{slug}/")
    shown = dict(re.findall(HIDDEN_INITIAL, page.content.decode()))
    assert set(shown) >= {"initial-monthly_budget_usd", "initial-legal_hold", "initial-thread_retention_days"}
    data = {name: value for name, value in shown.items()}
    for name, value in shown.items():
        field = name.removeprefix("initial-")
        if field in ("legal_hold", "archive_before_delete"):
            if value == "True":
                data[field] = "on"
        else:
            data[field] = value
    for field, value in values.items():
        if value is False:
            data.pop(field, None)
        else:
            data[field] = value
    return data


def test_a_settings_save_keeps_what_another_admin_changed_meanwhile_in_other_fields(tenant, tenant_admin_user):
    client = Client()
    client.force_login(tenant_admin_user)
    form = _settings_page_post(client, tenant.slug, thread_retention_days="14")
    tenant_update(tenant=tenant, monthly_budget_usd=Decimal("2500.00"), legal_hold=True)  # another admin, meanwhile
    assert client.post(f"/tenants/{tenant.slug}/settings/", form).status_code == 302
    tenant.refresh_from_db()
    assert tenant.thread_retention_days == 14
    assert tenant.monthly_budget_usd == Decimal("2500.00") and tenant.legal_hold is True


def test_a_settings_save_over_a_field_someone_else_changed_meanwhile_is_a_409_until_saved_again(
        tenant, tenant_admin_user):
    client = Client()
    client.force_login(tenant_admin_user)
    form = _settings_page_post(client, tenant.slug, monthly_budget_usd="100.00")
    tenant_update(tenant=tenant, monthly_budget_usd=Decimal("2500.00"))  # another admin, meanwhile
    refused = client.post(f"/tenants/{tenant.slug}/settings/", form)
    assert refused.status_code == 409
    assert "Someone else changed this to 2500.00" in refused.content.decode()
    tenant.refresh_from_db()
    assert tenant.monthly_budget_usd == Decimal("2500.00")
    # The page now shows 2500.00 as the value seen: saving again replaces it knowingly.
    again = dict(re.findall(HIDDEN_INITIAL, refused.content.decode()))
    assert again["initial-monthly_budget_usd"] == "2500.00"
    assert client.post(f"/tenants/{tenant.slug}/settings/", {**form, **again}).status_code == 302
    tenant.refresh_from_db()
    assert tenant.monthly_budget_usd == Decimal("100.00")


@pytest.mark.django_db
def test_a_settings_save_for_a_tenant_deleted_meanwhile_is_a_404_not_a_500(client, tenant_admin_user, tenant,
                                                                          monkeypatch):
    """Deleted in the admin between the form's read and the write's row lock (tenant_update found no row)."""
    from apps.dashboard import views
    from apps.tenants.models import Tenant
    from apps.tenants.services import tenant_update

    def deleted_first(*, tenant, **kwargs):
        Tenant.objects.filter(pk=tenant.pk).delete()
        return tenant_update(tenant=tenant, **kwargs)

    monkeypatch.setattr(views, "tenant_update", deleted_first)
    client.force_login(tenant_admin_user)
    response = client.post("/tenants/acme/settings/", {
        "monthly_budget_usd": "250.00", "high_cost_run_usd": "0.25", "thread_retention_days": "30",
        "vector_store_idle_days": "14"})
    assert response.status_code == 404


def test_prices_page_says_each_versions_long_context_pricing_and_its_csv_keeps_the_numbers(staff_client, frozen_now):
    from apps.pricing.models import ModelPrice

    ModelPrice.objects.create(model="test-model", effective_from=dt.date(2026, 6, 1), input_usd_per_1m="2.00",
                              output_usd_per_1m="8", long_context_above_tokens=200_500,
                              long_context_input_multiplier="2", long_context_output_multiplier="1.25")
    response = staff_client.get("/prices/?model=test-model")
    body = response.content.decode()
    assert "above 200,500: ×2 in, ×1.25 out" in body
    assert "above 272K: ×2 in, ×1.5 out" in body  # the shipped gpt-6 versions
    rows = csv_rows(staff_client.get("/prices/?model=test-model&format=csv&table=history"))
    assert rows[1][6] == "200500" and [Decimal(value) for value in rows[1][7:9]] == [Decimal("2"), Decimal("1.25")]
    book = csv_rows(staff_client.get("/prices/?format=csv&table=book"))
    gpt54 = next(row for row in book if row[0] == "gpt-5.4")
    assert gpt54[book[0].index("Long context above (input tokens)")] == ""


def test_a_tenants_alerts_say_which_are_resolved_and_the_csv_says_why(staff_client, tenant, other_tenant, frozen_now):
    from apps.alerts.models import Alert
    from apps.alerts.services import alert_raise, alerts_resolve

    alert_raise(kind="high_cost_run", cause_key="high_cost_run:run_open", tenant=tenant, title="High-cost run open")
    alert_raise(kind="requires_action_expiring", cause_key="requires_action:run_done", tenant=tenant,
                title="Run run_done waits for tool outputs")
    alert_raise(kind="requires_action_expiring", cause_key="requires_action:run_other", tenant=other_tenant,
                title="Run run_other waits for tool outputs")
    alerts_resolve(alerts=Alert.unscoped_objects.filter(cause_key__in=["requires_action:run_done",
                                                                       "requires_action:run_other"]),
                   reason="The run left requires_action: it is completed.")
    body = staff_client.get("/tenants/acme/").content.decode()
    assert '<span class="badge badge-ok">resolved</span>' in body and "run_other" not in body
    rows = csv_rows(staff_client.get("/tenants/acme/?format=csv&table=alerts"))
    state, resolution = rows[0].index("State"), rows[0].index("Resolution")
    assert sorted((row[state], row[resolution]) for row in rows[1:]) == [
        ("open", ""), ("resolved", "The run left requires_action: it is completed.")]
    # The overview's half-width card says "resolved" where the severity was; its CSV keeps both.
    overview = staff_client.get("/")
    severities = [row[3].value for row in overview.context["tables"]["alerts"].html_rows]
    assert sorted(severities) == ["resolved", "resolved", "warning"]
    rows = csv_rows(staff_client.get("/?format=csv&table=alerts"))
    assert sorted((row[rows[0].index("Severity")], row[rows[0].index("State")]) for row in rows[1:]) == [
        ("warning", "open"), ("warning", "resolved"), ("warning", "resolved")]


def test_run_detail_says_when_a_long_prompt_was_billed_at_long_context_prices(staff_client, tenant):
    """A $1.35 run of 300,000 input tokens at gpt-6.1-sol's $2 / $10 read as a rating error without it."""
    from apps.ledger.services import ingest_events
    from tests import builders

    created = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)
    ingest_events(events=[{"tenant": "acme", "object": builders.response(
        response_id=response_id, created_at=created, model="gpt-6.1-sol", input_tokens=tokens,
        output_tokens=10_000)} for response_id, tokens in (("resp_long", 300_000), ("resp_short", 272_000))])
    body = staff_client.get("/runs/resp_long/").content.decode()
    assert ("Long context: 300,000 input tokens, more than the version's 272,000, so its input, cached-input and "
            "cache-write tokens bill at ×2 and its output at ×1.5.") in body
    assert 'data-note="long-context"' not in staff_client.get("/runs/resp_short/").content.decode()
