"""The alerts page: open alerts by default, resolved or all on request, by kind and tenant, exported as CSV;
a member sees only their tenants' alerts, and asking for another tenant is a form error, never its data."""

import pytest

from apps.alerts.models import Alert
from apps.alerts.services import alert_raise, alerts_resolve
from tests.dashboard.test_views import csv_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def alerts(tenant, other_tenant):
    alert_raise(kind="high_cost_run", cause_key="high_cost_run:run_acme", tenant=tenant, title="High-cost run run_acme")
    alert_raise(kind="requires_action_expiring", cause_key="requires_action:run_done", tenant=tenant,
                title="Run run_done waits for tool outputs")
    alert_raise(kind="high_cost_run", cause_key="high_cost_run:run_globex", tenant=other_tenant,
                title="High-cost run run_globex")
    alert_raise(kind="unpriced_model", cause_key="unpriced_model:gpt-x", title="No price for model gpt-x")
    alerts_resolve(alerts=Alert.unscoped_objects.filter(cause_key="requires_action:run_done"),
                   reason="The run got its tool outputs: it is completed.")


def _titles(response) -> list[str]:
    return sorted(alert.title for alert in response.context["tables"]["alerts"].page_rows)


def test_staff_see_every_open_alert_by_default_and_resolved_ones_on_request(staff_client, alerts):
    response = staff_client.get("/alerts/")
    assert response.status_code == 200
    assert _titles(response) == ["High-cost run run_acme", "High-cost run run_globex", "No price for model gpt-x"]
    assert _titles(staff_client.get("/alerts/", {"state": "resolved"})) == ["Run run_done waits for tool outputs"]
    assert len(_titles(staff_client.get("/alerts/", {"state": "all"}))) == 4
    assert _titles(staff_client.get("/alerts/", {"kind": "high_cost_run", "tenant": "globex"})) == [
        "High-cost run run_globex"]
    rows = csv_rows(staff_client.get("/alerts/", {"state": "resolved", "format": "csv", "table": "alerts"}))
    assert rows[1][rows[0].index("Resolution")] == "The run got its tool outputs: it is completed."


def test_a_member_sees_only_their_tenants_alerts_and_another_tenant_is_a_form_error(member_client, alerts):
    response = member_client.get("/alerts/", {"state": "all"})
    assert _titles(response) == ["High-cost run run_acme", "Run run_done waits for tool outputs"]
    body = response.content.decode()
    assert "run_globex" not in body and "gpt-x" not in body and "globex" not in body
    refused = member_client.get("/alerts/", {"tenant": "globex"})
    assert refused.status_code == 400 and "No such tenant." in refused.content.decode()
    assert _titles(refused) == []
    export = member_client.get("/alerts/", {"tenant": "globex", "format": "csv", "table": "alerts"})
    assert export.status_code == 400 and b"run_globex" not in export.content


def test_a_bad_state_or_kind_is_a_400_naming_it(staff_client, alerts):
    for params in ({"state": "closed"}, {"kind": "nonsense"}):
        response = staff_client.get("/alerts/", params)
        assert response.status_code == 400 and "Select a valid choice" in response.content.decode()


def test_the_overview_links_to_the_open_alerts(staff_client, alerts):
    assert 'href="/alerts/">Open alerts →</a>' in staff_client.get("/").content.decode()


def test_with_no_open_alert_the_page_says_so_and_where_the_others_are(staff_client, tenant):
    alert_raise(kind="high_cost_run", cause_key="high_cost_run:run_old", tenant=tenant, title="High-cost run run_old")
    alerts_resolve(alerts=Alert.unscoped_objects.all(), reason="test")
    assert "No open alerts. Choose State: resolved or all to see the others." in staff_client.get(
        "/alerts/").content.decode()


def test_a_reopened_alert_is_listed_first_and_says_so(staff_client, tenant, frozen_now):
    """Listed by when it last opened: an alert first raised long ago whose cause is back is news, not a row
    far down the list under every alert raised since."""
    import datetime as dt

    import time_machine

    with time_machine.travel(frozen_now - dt.timedelta(days=20), tick=False):
        alert_raise(kind="unpriced_model", cause_key="unpriced_model:gpt-x", title="No price for model gpt-x")
        alerts_resolve(alerts=Alert.unscoped_objects.all(), reason="Every run of this model is priced now.")
    with time_machine.travel(frozen_now - dt.timedelta(days=5), tick=False):
        alert_raise(kind="high_cost_run", cause_key="high_cost_run:run_new", tenant=tenant, title="High-cost run new")
    alert_raise(kind="unpriced_model", cause_key="unpriced_model:gpt-x", title="No price for model gpt-x")
    response = staff_client.get("/alerts/")
    assert [alert.title for alert in response.context["tables"]["alerts"].page_rows] == [
        "No price for model gpt-x", "High-cost run new"]
    assert '<span class="badge badge-warn">reopened</span>' in response.content.decode()
    rows = csv_rows(staff_client.get("/alerts/", {"format": "csv", "table": "alerts"}))
    reopened = dict(zip(rows[0], rows[1], strict=True))
    assert (reopened["State"], reopened["Times reopened"]) == ("reopened", "1")
    assert reopened["When"] == frozen_now.isoformat() and reopened["First raised"] < reopened["When"]
