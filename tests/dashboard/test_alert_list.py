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


def _columns(response) -> list[str]:
    return [column.key for column in response.context["tables"]["alerts"].page_columns]


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


def test_members_are_offered_only_the_kinds_a_tenant_has_staff_every_kind(member_client, staff_user, alerts):
    # Reconciliation, unpriced-model and orphan alerts belong to no tenant: filtering on one could only ever
    # show a member an empty list.
    from apps.alerts.models import Alert

    offered = {value for value, _ in member_client.get("/alerts/").context["form"].fields["kind"].choices if value}
    assert offered == set(Alert.Kind.values) - Alert.KINDS_WITHOUT_TENANT
    assert "reconciliation_drift" not in offered and "high_cost_run" in offered
    from django.test import Client

    staff_client = Client()  # member_client's own client, logged in as the member
    staff_client.force_login(staff_user)
    staff_offered = {value for value, _ in staff_client.get("/alerts/").context["form"].fields["kind"].choices if value}
    assert staff_offered == set(Alert.Kind.values)
    assert not Alert.unscoped_objects.filter(kind__in=Alert.KINDS_WITHOUT_TENANT, tenant__isnull=False).exists()


def test_a_bad_state_or_kind_is_a_400_naming_it(staff_client, alerts):
    for params in ({"state": "closed"}, {"kind": "nonsense"}):
        response = staff_client.get("/alerts/", params)
        assert response.status_code == 400 and "Select a valid choice" in response.content.decode()


def test_the_overview_links_to_the_open_alerts(staff_client, alerts):
    assert 'href="/alerts/">Open alerts →</a>' in staff_client.get("/").content.decode()


def test_the_page_says_how_long_alerts_are_kept(staff_client, alerts, settings):
    settings.ALERT_RETENTION_DAYS = 120
    page = staff_client.get("/alerts/").content.decode()
    assert "Alerts last opened more than 120 days ago are deleted each night" in page
    settings.ALERT_RETENTION_DAYS = 0  # kept for ever: nothing to say
    assert "are deleted each night" not in staff_client.get("/alerts/").content.decode()


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


# --- acknowledging ------------------------------------------------------------------------------------


def _acknowledge(client, alert: Alert, **extra):
    return client.post("/alerts/acknowledge/", {"alert": alert.pk, "next": "/alerts/?kind=high_cost_run", **extra})


def test_staff_acknowledge_an_alert_from_the_page_and_it_is_audited(staff_client, staff_user, alerts):
    """Before, acknowledging was only in the Django admin, which ops do not live in."""
    from apps.core.models import AuditEvent

    alert = Alert.unscoped_objects.get(cause_key="high_cost_run:run_acme")
    listed = staff_client.get("/alerts/")
    body = listed.content.decode()
    assert _columns(listed)[-1] == "acknowledge"
    assert f'form="acknowledge-alert" name="alert" value="{alert.pk}"' in body
    assert body.count(">Acknowledge</button>") == 3  # every open alert, the tenant-less one included

    response = _acknowledge(staff_client, alert)

    assert (response.status_code, response["Location"]) == (302, "/alerts/?kind=high_cost_run")
    alert.refresh_from_db()
    assert alert.state == "acknowledged"
    event = AuditEvent.objects.get(action="alert.acknowledge")
    assert (event.actor, event.target_id, event.tenant_id) == (staff_user, str(alert.pk), alert.tenant_id)
    page = staff_client.get("/alerts/").content.decode()
    assert "Acknowledged: High-cost run run_acme" in page and page.count(">Acknowledge</button>") == 2
    # A page opened before the alert's cause went away: nothing to acknowledge, and it says so.
    resolved = Alert.unscoped_objects.get(cause_key="requires_action:run_done")
    assert "That alert is resolved" in staff_client.post("/alerts/acknowledge/", {"alert": resolved.pk},
                                                         follow=True).content.decode()
    resolved.refresh_from_db()
    assert resolved.acknowledged_at is None
    # Twice is once: the second says so and records nothing.
    assert "acknowledged already" in staff_client.post("/alerts/acknowledge/", {"alert": alert.pk},
                                                       follow=True).content.decode()
    assert AuditEvent.objects.filter(action="alert.acknowledge").count() == 1


def test_a_tenant_admin_acknowledges_their_tenants_alerts_and_no_one_elses(client, tenant_admin_user, alerts):
    client.force_login(tenant_admin_user)
    assert client.get("/alerts/").content.decode().count(">Acknowledge</button>") == 1
    ours = Alert.unscoped_objects.get(cause_key="high_cost_run:run_acme")
    assert _acknowledge(client, ours).status_code == 302
    # Another tenant's alert and a tenant-less one are not found, as they are not listed: 404, never 403.
    for cause_key in ("high_cost_run:run_globex", "unpriced_model:gpt-x"):
        theirs = Alert.unscoped_objects.get(cause_key=cause_key)
        response = _acknowledge(client, theirs)
        assert response.status_code == 404 and b"globex" not in response.content
        theirs.refresh_from_db()
        assert theirs.acknowledged_at is None


def test_a_viewer_sees_no_button_and_cannot_acknowledge(member_client, alerts):
    response = member_client.get("/alerts/")
    assert ">Acknowledge</button>" not in response.content.decode()
    assert _columns(response) == ["opened_at", "title", "tenant", "severity", "state", "kind"]  # no empty Action
    ours = Alert.unscoped_objects.get(cause_key="high_cost_run:run_acme")
    assert _acknowledge(member_client, ours).status_code == 403
    ours.refresh_from_db()
    assert ours.acknowledged_at is None


@pytest.mark.parametrize("value", ["", "abc", "-1", "１２", "9" * 30])
def test_an_acknowledge_without_an_alert_id_is_a_400_naming_it(staff_client, alerts, value):
    response = staff_client.post("/alerts/acknowledge/", {"alert": value})
    assert response.status_code == 400 and response.content.decode().startswith("alert: ")


def test_acknowledging_goes_back_only_to_this_site(staff_client, alerts):
    alert = Alert.unscoped_objects.get(cause_key="high_cost_run:run_acme")
    assert _acknowledge(staff_client, alert, next="https://evil.example/")["Location"] == "/alerts/"
    assert staff_client.get("/alerts/acknowledge/").status_code == 405


def test_acknowledging_from_the_tenant_page_lands_on_its_alerts_card(staff_client, alerts):
    alert = Alert.unscoped_objects.get(cause_key="high_cost_run:run_acme")
    page = staff_client.get("/tenants/acme/").content.decode()
    assert 'name="next" value="/tenants/acme/#alerts"' in page and 'name="place" value="alerts"' in page
    response = _acknowledge(staff_client, alert, next="/tenants/acme/#alerts", place="alerts")
    assert response["Location"] == "/tenants/acme/#alerts"
    page = staff_client.get("/tenants/acme/").content.decode()
    card = page.index('id="alerts"')
    assert "Acknowledged: High-cost run run_acme" in page[card:]
    assert "Acknowledged: High-cost run run_acme" not in page[:card]  # not out of sight at the top


def _acknowledge_all(client, **filters):
    return client.post("/alerts/acknowledge/", {"all": "1", "next": "/alerts/", **filters}, follow=True)


def test_staff_acknowledge_every_open_alert_matching_the_filters_each_audited(staff_client, staff_user, alerts):
    """A busy ledger raises an alert per high-cost run: one button per alert is no way to clear a day of them."""
    from apps.core.models import AuditEvent

    page = staff_client.get("/alerts/", {"kind": "high_cost_run"}).content.decode()
    assert ">Acknowledge all matching</button>" in page and 'name="kind" value="high_cost_run"' in page

    response = _acknowledge_all(staff_client, kind="high_cost_run")

    assert "Acknowledged 2 alerts." in response.content.decode()
    states = dict(Alert.unscoped_objects.values_list("cause_key", "acknowledged_at"))
    assert sorted(key for key, at in states.items() if at) == ["high_cost_run:run_acme", "high_cost_run:run_globex"]
    events = AuditEvent.objects.filter(action="alert.acknowledge")
    assert sorted(events.values_list("target_id", flat=True)) == sorted(
        str(pk) for pk in Alert.unscoped_objects.filter(kind="high_cost_run").values_list("pk", flat=True))
    assert {event.actor for event in events} == {staff_user}
    # Nothing left to acknowledge under these filters: no button offering it.
    assert ">Acknowledge all matching</button>" not in staff_client.get(
        "/alerts/", {"kind": "high_cost_run"}).content.decode()
    # The open alerts nobody acknowledged are what is left to look at.
    left = staff_client.get("/alerts/", {"state": "unacknowledged"})
    assert _titles(left) == ["No price for model gpt-x"]


def test_a_tenant_admins_acknowledge_all_takes_only_their_tenants_alerts(client, tenant_admin_user, alerts):
    client.force_login(tenant_admin_user)
    assert "Acknowledged 1 alert." in _acknowledge_all(client).content.decode()
    acknowledged = Alert.unscoped_objects.filter(acknowledged_at__isnull=False).values_list("cause_key", flat=True)
    assert list(acknowledged) == ["high_cost_run:run_acme"]  # not globex's, not the tenant-less one
    refused = client.post("/alerts/acknowledge/", {"all": "1", "tenant": "globex"})
    assert refused.status_code == 400 and refused.content.decode() == "tenant: No such tenant."


def test_a_viewer_cannot_acknowledge_all_and_is_not_offered_it(member_client, alerts):
    assert ">Acknowledge all matching</button>" not in member_client.get("/alerts/").content.decode()
    assert member_client.post("/alerts/acknowledge/", {"all": "1"}).status_code == 403
    assert not Alert.unscoped_objects.filter(acknowledged_at__isnull=False).exists()


def test_acknowledge_all_takes_a_bounded_batch_and_says_more_are_left(staff_client, alerts, monkeypatch):
    from apps.alerts import services

    monkeypatch.setattr(services, "ACKNOWLEDGE_AT_MOST", 2)
    first = _acknowledge_all(staff_client).content.decode()
    assert "Acknowledged 2 alerts. More match these filters: acknowledge all again for the next 2." in first
    assert "Acknowledged 1 alert." in _acknowledge_all(staff_client).content.decode()
    assert not Alert.unscoped_objects.filter(resolved_at__isnull=True, acknowledged_at__isnull=True).exists()
