"""The Tenant resource of /api/v1/tenants/: contract field names, scope, admin-only audited writes, validation."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from apps.core.models import AuditEvent
from apps.tenants.models import ADMIN_POLICY_FIELDS, ApiKey, Tenant
from apps.tenants.services import api_key_create
from tests.conftest import bearer

pytestmark = pytest.mark.django_db

CONTRACT = {"slug", "name", "external_id", "thread_retention_days", "vector_store_idle_days", "high_cost_run_usd",
            "monthly_budget_usd", "legal_hold"}


def test_list_shows_the_contract_fields_of_every_tenant_to_an_unbound_key(api_client, billing_key, tenant, other_tenant):
    answer = api_client.get("/api/v1/tenants/", **bearer(billing_key))
    assert answer.status_code == 200
    body = answer.json()
    assert [row["slug"] for row in body["results"]] == ["acme", "globex"]
    acme = body["results"][0]
    assert CONTRACT <= set(acme)
    assert acme["high_cost_run_usd"] == "0.1000" and acme["monthly_budget_usd"] is None
    assert acme["external_id"] == "cus_acme" and acme["thread_retention_days"] == 60 and acme["legal_hold"] is False
    assert body["next"] is None and body["previous"] is None


def test_a_tenant_bound_key_lists_only_its_tenant(api_client, tenant_billing_key, tenant, other_tenant):
    body = api_client.get("/api/v1/tenants/", **bearer(tenant_billing_key)).json()
    assert [row["slug"] for row in body["results"]] == ["acme"]
    assert api_client.get("/api/v1/tenants/globex/", **bearer(tenant_billing_key)).status_code == 404
    assert api_client.get("/api/v1/tenants/acme/", **bearer(tenant_billing_key)).json()["name"] == "Acme Corp"


def test_create_needs_only_slug_and_name_and_is_audited(api_client, admin_key):
    answer = api_client.post("/api/v1/tenants/", {"slug": "initech", "name": "Initech"}, format="json", **bearer(admin_key))
    assert answer.status_code == 201, answer.content
    assert answer.json()["slug"] == "initech" and answer.json()["thread_retention_days"] == 60
    assert Tenant.objects.get(slug="initech").name == "Initech"
    event = AuditEvent.objects.get(action="tenant.create")
    assert event.target_id == "initech" and event.actor_label.startswith("api-key:")


def test_create_with_policies(api_client, admin_key):
    body = {"slug": "hooli", "name": "Hooli", "external_id": "cus_9", "thread_retention_days": 30,
            "vector_store_idle_days": 7, "high_cost_run_usd": "0.25", "monthly_budget_usd": "1500.00", "legal_hold": True,
            "markup_percent": "10"}
    answer = api_client.post("/api/v1/tenants/", body, format="json", **bearer(admin_key))
    assert answer.status_code == 201
    created = answer.json()
    assert created["high_cost_run_usd"] == "0.2500" and created["monthly_budget_usd"] == "1500.00"
    assert created["markup_percent"] == "10.00" and created["legal_hold"] is True and created["vector_store_idle_days"] == 7


def test_a_created_tenant_is_audited_with_the_policies_it_starts_with(api_client, admin_key):
    body = {"slug": "hooli", "name": "Hooli", "thread_retention_days": 30, "legal_hold": True,
            "monthly_budget_usd": "1500.00"}
    assert api_client.post("/api/v1/tenants/", body, format="json", **bearer(admin_key)).status_code == 201
    after = AuditEvent.objects.get(action="tenant.create").data["after"]
    assert after["thread_retention_days"] == "30" and after["legal_hold"] == "True"
    assert after["monthly_budget_usd"] == "1500.00" and after["vector_store_idle_days"] == "30"
    assert after["markup_percent"] == "None" and after["name"] == "Hooli"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "No slug"}, "slug"),
        ({"slug": "acme", "name": "Duplicate"}, "slug"),
        ({"slug": "Bad Slug", "name": "x"}, "slug"),
        ({"slug": "ok", "name": ""}, "name"),
        ({"slug": "ok", "name": "x", "thread_retention_days": 0}, "thread_retention_days"),
        ({"slug": "ok", "name": "x", "high_cost_run_usd": "-1"}, "high_cost_run_usd"),
        ({"slug": "ok", "name": "x", "monthly_budget_usd": "abc"}, "monthly_budget_usd"),
        ({"slug": "ok", "name": "x", "legal_hold": "perhaps"}, "legal_hold"),
        ({"slug": "ok", "name": "x", "thread_retention_days": 36501}, "thread_retention_days"),
        ({"slug": "ok", "name": "x", "markup_percent": "1000.01"}, "markup_percent"),
        ({"slug": "ok", "name": "x", "external_id": "cus_acme"}, "external_id"),  # acme's billing id
    ],
)
def test_create_validation_names_the_field(api_client, admin_key, tenant, body, field):
    answer = api_client.post("/api/v1/tenants/", body, format="json", **bearer(admin_key))
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"]["field"] == field


def test_patch_changes_policies_audited_and_keeps_the_slug(api_client, admin_key, tenant):
    answer = api_client.patch("/api/v1/tenants/acme/", {"thread_retention_days": 14, "legal_hold": True},
                              format="json", **bearer(admin_key))
    assert answer.status_code == 200 and answer.json()["thread_retention_days"] == 14
    tenant.refresh_from_db()
    assert tenant.thread_retention_days == 14 and tenant.legal_hold is True and tenant.name == "Acme Corp"
    event = AuditEvent.objects.get(action="tenant.update")
    assert event.data["before"]["thread_retention_days"] == "60" and event.data["after"]["thread_retention_days"] == "14"
    renamed = api_client.patch("/api/v1/tenants/acme/", {"slug": "acme-2"}, format="json", **bearer(admin_key))
    assert renamed.status_code == 400 and renamed.json()["error"]["field"] == "slug"
    same = api_client.patch("/api/v1/tenants/acme/", {"slug": "acme"}, format="json", **bearer(admin_key))
    assert same.status_code == 200


def test_a_tenant_bound_admin_key_may_patch_its_own_tenant_only(api_client, tenant, other_tenant):
    key = api_key_create(name="acme admin", scope=ApiKey.Scope.ADMIN, tenant=tenant)[1]
    own = api_client.patch("/api/v1/tenants/acme/", {"thread_retention_days": 14}, format="json", **bearer(key))
    assert own.status_code == 200
    for body in ({"thread_retention_days": 14}, {"name": "G"}):  # a reserved field is no probe: still a 404
        assert api_client.patch("/api/v1/tenants/globex/", body, format="json", **bearer(key)).status_code == 404
    other_tenant.refresh_from_db()
    assert other_tenant.name == "Globex Inc" and other_tenant.thread_retention_days == 60


def test_a_tenant_bound_admin_key_changes_the_policies_a_tenant_admin_may_and_nothing_else(api_client, tenant):
    key = api_key_create(name="acme admin", scope=ApiKey.Scope.ADMIN, tenant=tenant)[1]
    policies = {"monthly_budget_usd": "250.00", "high_cost_run_usd": "0.2500", "thread_retention_days": 30,
                "vector_store_idle_days": 14, "archive_before_delete": True, "legal_hold": True}
    assert set(policies) == set(ADMIN_POLICY_FIELDS)  # the one list the dashboard uses too
    answer = api_client.patch("/api/v1/tenants/acme/", {**policies, "slug": "acme"}, format="json", **bearer(key))
    assert answer.status_code == 200 and {name: answer.json()[name] for name in policies} == policies


@pytest.mark.parametrize(("field", "value"), [("markup_percent", "0"), ("external_id", "cus_globex"), ("name", "Acme")])
def test_a_tenant_bound_admin_key_gets_403_naming_a_field_only_operators_set(api_client, tenant, other_tenant, field, value):
    Tenant.objects.filter(pk=tenant.pk).update(markup_percent=Decimal("15"))
    key = api_key_create(name="acme admin", scope=ApiKey.Scope.ADMIN, tenant=tenant)[1]
    answer = api_client.patch("/api/v1/tenants/acme/", {"legal_hold": True, field: value}, format="json", **bearer(key))
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "permission_denied" and answer.json()["error"]["field"] == field
    tenant.refresh_from_db()
    assert (tenant.markup_percent, tenant.external_id, tenant.name, tenant.legal_hold) == (
        Decimal("15"), "cus_acme", "Acme Corp", False)


def test_an_external_id_another_tenant_has_is_a_400_naming_it_and_blank_ones_may_repeat(
    api_client, admin_key, tenant, other_tenant
):
    taken = api_client.patch("/api/v1/tenants/acme/", {"external_id": "cus_globex"}, format="json", **bearer(admin_key))
    assert taken.status_code == 400 and taken.json()["error"]["field"] == "external_id"
    tenant.refresh_from_db()
    assert tenant.external_id == "cus_acme"
    assert api_client.patch("/api/v1/tenants/acme/", {"external_id": "cus_acme"}, format="json",
                            **bearer(admin_key)).status_code == 200  # its own id is no clash
    for slug in ("acme", "globex"):
        answer = api_client.patch(f"/api/v1/tenants/{slug}/", {"external_id": ""}, format="json", **bearer(admin_key))
        assert answer.status_code == 200


def test_tenant_list_pages_with_a_cursor(api_client, admin_key):
    for index in range(7):
        Tenant.objects.create(slug=f"t{index:02d}", name=f"T{index}")
    first = api_client.get("/api/v1/tenants/", {"limit": 5}, **bearer(admin_key)).json()
    second = api_client.get(first["next"], **bearer(admin_key)).json()
    assert [row["slug"] for row in first["results"] + second["results"]] == [f"t{index:02d}" for index in range(7)]


def test_a_new_high_cost_threshold_re_flags_the_tenants_runs_and_rollups_without_alerting(
    api_client, admin_key, tenant, django_capture_on_commit_callbacks
):
    from apps.alerts.models import Alert
    from apps.ledger.models import DailyRollup, Run
    from apps.ledger.services import ingest_events, ledger_check
    from tests import builders

    when = dt.datetime(2026, 11, 3, 8, tzinfo=dt.UTC)
    ingest_events(events=[{"tenant": "acme", "object": builders.response(
        response_id=f"resp_{tokens}", created_at=when, model="gpt-5.4", input_tokens=tokens, output_tokens=0)}
        for tokens in (4_000, 20_000, 60_000)])  # $0.01, $0.05, $0.15 at $2.50 per 1M input tokens
    alerts_before = Alert.objects.for_tenant(tenant).count()

    def flagged():
        return sorted(Run.objects.for_tenant(tenant).filter(is_high_cost=True).values_list("openai_id", flat=True))

    def counted():
        return sum(DailyRollup.objects.for_tenant(tenant).values_list("high_cost_runs", flat=True))

    assert flagged() == ["resp_60000"] and counted() == 1  # over the default $0.10
    with django_capture_on_commit_callbacks(execute=True):
        answer = api_client.patch("/api/v1/tenants/acme/", {"high_cost_run_usd": "0.02"}, format="json",
                                  **bearer(admin_key))
    assert answer.status_code == 200
    assert flagged() == ["resp_20000", "resp_60000"] and counted() == 2
    listed = api_client.get("/api/v1/runs/", {"tenant": "acme", "high_cost": "true"}, **bearer(admin_key)).json()
    assert sorted(run["id"] for run in listed["results"]) == ["resp_20000", "resp_60000"]
    assert Alert.objects.for_tenant(tenant).count() == alerts_before  # old runs: no new alerts
    with django_capture_on_commit_callbacks(execute=True):
        api_client.patch("/api/v1/tenants/acme/", {"high_cost_run_usd": "1.00"}, format="json", **bearer(admin_key))
    assert flagged() == [] and counted() == 0
    assert ledger_check() == []


def test_a_threshold_change_stands_when_the_broker_is_down_and_the_hourly_check_re_flags(
    api_client, admin_key, tenant, django_capture_on_commit_callbacks, monkeypatch
):
    from apps.ledger import tasks
    from apps.ledger.models import Run
    from apps.ledger.services import ingest_events, ledger_check
    from tests import builders

    ingest_events(events=[{"tenant": "acme", "object": builders.response(
        response_id="resp_mid", created_at=dt.datetime(2026, 11, 3, 8, tzinfo=dt.UTC), model="gpt-5.4",
        input_tokens=20_000, output_tokens=0)}])  # $0.05: under the default $0.10

    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks.reflag_high_cost_task, "apply_async", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        answer = api_client.patch("/api/v1/tenants/acme/", {"high_cost_run_usd": "0.02"}, format="json",
                                  **bearer(admin_key))
    assert answer.status_code == 200 and Tenant.objects.get(pk=tenant.pk).high_cost_run_usd == Decimal("0.02")
    assert not Run.objects.for_tenant(tenant).get().is_high_cost  # not re-flagged yet
    assert tasks.reflag_high_cost_check() == {"changed": {tenant.pk: 1}}
    assert Run.objects.for_tenant(tenant).get().is_high_cost and ledger_check() == []
    assert tasks.reflag_high_cost_check() == {"changed": {}}  # idempotent


def test_re_flagging_moves_flags_only_never_money(tenant):
    # A price corrected in place without `reprice` stays out of the ledger until someone re-prices: a policy
    # change must not move money as a side effect.
    from apps.ledger.models import Run
    from apps.ledger.services import ingest_events, runs_reflag_high_cost
    from apps.pricing.models import ModelPrice
    from tests import builders

    ingest_events(events=[{"tenant": "acme", "object": builders.response(
        response_id="resp_priced", created_at=dt.datetime(2026, 11, 3, 8, tzinfo=dt.UTC), model="gpt-5.4",
        input_tokens=60_000, output_tokens=0)}])
    before = Run.objects.for_tenant(tenant).get()
    ModelPrice.objects.filter(model="gpt-5.4").update(input_usd_per_1m=Decimal("99"))
    Tenant.objects.filter(pk=tenant.pk).update(high_cost_run_usd=Decimal("1.00"))
    assert runs_reflag_high_cost(tenant_id=tenant.pk) == 1
    after = Run.objects.for_tenant(tenant).get()
    assert after.cost_total_usd == before.cost_total_usd and before.is_high_cost and not after.is_high_cost


def test_a_batch_rated_before_a_threshold_change_is_flagged_with_the_new_one(tenant, monkeypatch):
    # The batch rates its runs before it takes the ingest lock; a threshold committed in between (and
    # re-flagged already) must not come back stale with the batch.
    from apps.ledger import services
    from apps.ledger.models import DailyRollup, Run
    from tests import builders

    real = services._rate_reported

    def rate_then_the_threshold_changes(run_events):
        rated = real(run_events)
        Tenant.objects.filter(pk=tenant.pk).update(high_cost_run_usd=Decimal("0.02"))
        return rated

    monkeypatch.setattr(services, "_rate_reported", rate_then_the_threshold_changes)
    services.ingest_events(events=[{"tenant": "acme", "object": builders.response(
        response_id="resp_between", created_at=dt.datetime(2026, 11, 3, 8, tzinfo=dt.UTC), model="gpt-5.4",
        input_tokens=20_000, output_tokens=0)}])  # $0.05: not high-cost at $0.10, high-cost at $0.02
    assert Run.objects.for_tenant(tenant).get().is_high_cost
    assert sum(DailyRollup.objects.for_tenant(tenant).values_list("high_cost_runs", flat=True)) == 1
    assert services.ledger_check() == []


@pytest.mark.parametrize("method, path, body, field", [
    ("patch", "/api/v1/tenants/acme/", {"monthy_budget_usd": "100.00"}, "monthy_budget_usd"),  # a typo
    ("patch", "/api/v1/tenants/acme/", {"legal_hold": True, "status": "suspended"}, "status"),  # admin only
    ("post", "/api/v1/tenants/", {"slug": "initech", "name": "Initech", "budget": "10"}, "budget"),
])
def test_a_body_field_the_api_does_not_write_is_a_400_naming_it_and_nothing_changes(
        api_client, admin_key, tenant, method, path, body, field):
    """A 200 that silently ignored `monthy_budget_usd` left the caller believing a budget was set."""
    answer = getattr(api_client, method)(path, body, format="json", **bearer(admin_key))
    assert answer.status_code == 400 and answer.json()["error"]["field"] == field
    tenant.refresh_from_db()
    assert tenant.monthly_budget_usd is None and tenant.legal_hold is False and tenant.status == "active"
    assert not Tenant.objects.filter(slug="initech").exists()
    assert not AuditEvent.objects.filter(action__startswith="tenant.").exists()


def test_a_tenant_read_from_the_api_may_be_sent_back_as_a_patch(api_client, admin_key, tenant):
    body = api_client.get("/api/v1/tenants/acme/", **bearer(admin_key)).json()
    answer = api_client.patch("/api/v1/tenants/acme/", {**body, "thread_retention_days": 14}, format="json",
                              **bearer(admin_key))
    assert answer.status_code == 200 and answer.json()["thread_retention_days"] == 14
