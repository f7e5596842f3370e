"""Optimistic concurrency on PATCH /api/v1/tenants/{slug}/: the tenant's ETag and If-Match.

Two PATCHes of the same field at once: the last one won silently, and a billing system that read a tenant,
decided and wrote could not say "only if nobody changed it since I read it"."""

from __future__ import annotations

import pytest

from apps.core.models import AuditEvent
from apps.tenants.models import ApiKey, Tenant
from apps.tenants.services import api_key_create, tenant_update
from tests.conftest import bearer

URL = "/api/v1/tenants/acme/"


def _etag(api_client, key: str, url: str = URL) -> str:
    answer = api_client.get(url, **bearer(key))
    assert answer.status_code == 200, answer.content
    return answer["ETag"]


def _patch(api_client, key: str, body: dict, if_match: str | None = None, url: str = URL):
    headers = {} if if_match is None else {"HTTP_IF_MATCH": if_match}
    return api_client.patch(url, body, format="json", **headers, **bearer(key))


def _updates() -> int:
    return AuditEvent.objects.filter(action="tenant.update").count()


@pytest.mark.django_db
def test_get_and_patch_send_the_strong_etag_of_the_stored_tenant_and_get_answers_304_while_unchanged(
        api_client, admin_key, tenant):
    """The ETag a PATCH answers with is the one a GET of the stored tenant gives: a client may chain writes."""
    first = api_client.get(URL, **bearer(admin_key))
    etag = first["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert first.json()["slug"] == "acme"
    assert api_client.get(URL, HTTP_IF_NONE_MATCH=etag, **bearer(admin_key)).status_code == 304

    changed = _patch(api_client, admin_key, {"thread_retention_days": 14}, if_match=etag)
    assert changed.status_code == 200 and changed.json()["thread_retention_days"] == 14
    assert changed["ETag"] != etag
    assert changed["ETag"] == _etag(api_client, admin_key)
    assert api_client.get(URL, HTTP_IF_NONE_MATCH=etag, **bearer(admin_key)).status_code == 200
    # Chained: the ETag of the answer is a valid If-Match for the next change.
    assert _patch(api_client, admin_key, {"legal_hold": True}, if_match=changed["ETag"]).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("if_match", ["current", "*", "list"])
def test_a_patch_whose_if_match_names_the_stored_state_applies(api_client, admin_key, tenant, if_match):
    etag = _etag(api_client, admin_key)
    header = {"current": etag, "*": "*", "list": f'"elsewhere", {etag}'}[if_match]
    answer = _patch(api_client, admin_key, {"thread_retention_days": 14}, if_match=header)
    assert answer.status_code == 200, answer.content
    tenant.refresh_from_db()
    assert tenant.thread_retention_days == 14 and _updates() == 1


@pytest.mark.django_db
def test_a_patch_with_a_stale_if_match_is_a_412_and_changes_and_audits_nothing(api_client, admin_key, tenant):
    """Someone changed the tenant after the client read it: 412 precondition_failed naming If-Match, nothing
    written, nothing audited, and a new GET gives the ETag that passes."""
    stale = _etag(api_client, admin_key)
    assert _patch(api_client, admin_key, {"thread_retention_days": 30}).status_code == 200  # someone else
    answer = _patch(api_client, admin_key, {"thread_retention_days": 14, "legal_hold": True}, if_match=stale)
    assert answer.status_code == 412
    error = answer.json()["error"]
    assert error["code"] == "precondition_failed" and error["field"] == "If-Match"
    assert "GET the tenant again" in error["message"]
    tenant.refresh_from_db()
    assert (tenant.thread_retention_days, tenant.legal_hold) == (30, False)
    assert _updates() == 1  # the other change only
    fresh = _etag(api_client, admin_key)
    assert _patch(api_client, admin_key, {"thread_retention_days": 14}, if_match=fresh).status_code == 200


@pytest.mark.django_db
def test_of_two_patches_carrying_the_same_if_match_exactly_one_applies(api_client, admin_key, tenant):
    """Sequentially (the threaded version below runs on PostgreSQL): the first write changes the state the
    second was based on."""
    etag = _etag(api_client, admin_key)
    first = _patch(api_client, admin_key, {"monthly_budget_usd": "100.00"}, if_match=etag)
    second = _patch(api_client, admin_key, {"monthly_budget_usd": "900.00"}, if_match=etag)
    assert (first.status_code, second.status_code) == (200, 412)
    tenant.refresh_from_db()
    assert str(tenant.monthly_budget_usd) == "100.00" and _updates() == 1


@pytest.mark.django_db
def test_if_match_is_compared_with_the_row_tenant_update_locks_not_the_one_the_view_read(
        api_client, admin_key, tenant, monkeypatch):
    """A change committed after the view read the tenant but before the write took its lock must fail the
    If-Match: compared with the view's own copy, two PATCHes with the same If-Match both passed."""
    from apps.tenants import api_views

    etag = _etag(api_client, admin_key)
    is_valid = api_views.TenantUpdateSerializer.is_valid

    def validated_then_changed_by_someone_else(self, **kwargs):
        result = is_valid(self, **kwargs)
        tenant_update(tenant=tenant, name="Acme Renamed")  # lands between the view's read and the lock
        return result

    monkeypatch.setattr(api_views.TenantUpdateSerializer, "is_valid", validated_then_changed_by_someone_else)
    answer = _patch(api_client, admin_key, {"thread_retention_days": 14}, if_match=etag)
    assert answer.status_code == 412, answer.content
    tenant.refresh_from_db()
    assert (tenant.name, tenant.thread_retention_days) == ("Acme Renamed", 60)


@pytest.mark.django_db
def test_without_if_match_the_last_write_wins_as_before(api_client, admin_key, tenant):
    etag = _etag(api_client, admin_key)
    assert _patch(api_client, admin_key, {"thread_retention_days": 30}).status_code == 200
    assert _patch(api_client, admin_key, {"thread_retention_days": 14}).status_code == 200
    tenant.refresh_from_db()
    assert tenant.thread_retention_days == 14 and _etag(api_client, admin_key) != etag


@pytest.mark.django_db
@pytest.mark.parametrize("header", ['W/"{etag}"', "{bare}"])
def test_a_weak_if_match_never_matches_and_an_unquoted_one_is_a_400_naming_it(api_client, admin_key, tenant, header):
    """If-Match uses strong comparison (RFC 9110): W/"…" is a 412. An ETag without its quotes is malformed: a 400
    naming If-Match that says how to send it, not a 412 that no amount of re-reading would cure."""
    etag = _etag(api_client, admin_key)
    answer = _patch(api_client, admin_key, {"thread_retention_days": 14},
                    if_match=header.format(etag=etag.strip('"'), bare=etag.strip('"')))
    expected = 412 if header.startswith("W/") else 400
    assert answer.status_code == expected, answer.content
    assert answer.json()["error"]["field"] == "If-Match"
    tenant.refresh_from_db()
    assert tenant.thread_retention_days == 60 and _updates() == 0


@pytest.mark.django_db
def test_a_tenant_bound_key_gets_the_same_and_another_tenants_slug_stays_a_404(api_client, tenant, other_tenant):
    """Never a 412 (or 403) for a tenant the key cannot see: that would say the slug exists."""
    key = api_key_create(name="acme admin", scope=ApiKey.Scope.ADMIN, tenant=tenant)[1]
    unbound = api_key_create(name="ops", scope=ApiKey.Scope.ADMIN)[1]
    stale = _etag(api_client, key)
    assert _patch(api_client, key, {"thread_retention_days": 30}, if_match=stale).status_code == 200
    refused = _patch(api_client, key, {"thread_retention_days": 14}, if_match=stale)
    assert refused.status_code == 412 and refused.json()["error"]["code"] == "precondition_failed"

    globex = "/api/v1/tenants/globex/"
    globex_etag = _etag(api_client, unbound, globex)
    for if_match in (stale, globex_etag, "*", "not-quoted"):
        for body in ({"thread_retention_days": 14}, {"name": "G"}):
            answer = _patch(api_client, key, body, if_match=if_match, url=globex)
            assert answer.status_code == 404, (if_match, body, answer.content)
    other_tenant.refresh_from_db()
    assert (other_tenant.name, other_tenant.thread_retention_days) == ("Globex Inc", 60)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_patches_with_the_same_if_match_exactly_one_applies(api_client, admin_key, tenant):
    """Both PATCHes are held at the row lock (taken here first), so both have read the tenant and validated
    their bodies before either writes; released together, exactly one may apply."""
    import threading
    import time

    from django.db import connection, transaction
    from rest_framework.test import APIClient

    etag = _etag(api_client, admin_key)
    answers: dict[str, int] = {}

    def patch(budget: str):
        try:
            answers[budget] = _patch(APIClient(), admin_key, {"monthly_budget_usd": budget}, if_match=etag).status_code
        finally:
            connection.close()

    with transaction.atomic():
        Tenant.objects.select_for_update().get(pk=tenant.pk)
        threads = [threading.Thread(target=patch, args=(budget,)) for budget in ("100.00", "900.00")]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        with connection.cursor() as cursor:
            while True:  # until both wait for our lock
                cursor.execute("SELECT pg_stat_clear_snapshot()")  # else read once per transaction, this one
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND wait_event_type = 'Lock'")
                waiting = cursor.fetchone()[0]
                if waiting >= 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        assert waiting >= 2  # else the two did not overlap and this proves nothing
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(answers.values()) == [200, 412], answers
    [applied] = [budget for budget, code in answers.items() if code == 200]
    tenant.refresh_from_db()
    assert str(tenant.monthly_budget_usd) == applied and _updates() == 1


@pytest.mark.django_db
def test_the_schema_documents_if_match_and_its_412_on_patch_and_if_none_match_on_get(api_client):
    operations = api_client.get("/api/schema/?format=json").json()["paths"]["/api/v1/tenants/{slug}/"]
    patch, get = operations["patch"], operations["get"]
    assert "If-Match" in {p["name"] for p in patch["parameters"] if p["in"] == "header"}
    assert "412" in patch["responses"] and "400" in patch["responses"]
    assert "If-None-Match" in {p["name"] for p in get["parameters"] if p["in"] == "header"}
    assert "304" in get["responses"]


@pytest.mark.django_db
def test_a_patch_that_changes_nothing_leaves_the_etag_so_another_clients_if_match_still_passes(
        api_client, admin_key, tenant):
    """A PATCH of the values already stored (or an empty body) saved the row anyway: updated_at, and with it the
    ETag, moved, and every other client holding the ETag got a 412 although nothing it could see had changed."""
    etag = _etag(api_client, admin_key)
    stored = Tenant.objects.get(pk=tenant.pk).updated_at
    for body in ({"thread_retention_days": tenant.thread_retention_days}, {}):
        same = _patch(api_client, admin_key, body, if_match=etag)
        assert same.status_code == 200 and same["ETag"] == etag
    assert Tenant.objects.get(pk=tenant.pk).updated_at == stored and _updates() == 0
    assert _patch(api_client, admin_key, {"thread_retention_days": 14}, if_match=etag).status_code == 200


@pytest.mark.django_db
def test_a_tenant_deleted_between_the_patchs_read_and_its_write_is_a_404_not_a_500(
        api_client, admin_key, tenant, monkeypatch):
    from apps.tenants import api_views

    def deleted_first(*, tenant, **kwargs):
        Tenant.objects.filter(pk=tenant.pk).delete()  # in the admin, by another staff member, meanwhile
        return tenant_update(tenant=tenant, **kwargs)

    monkeypatch.setattr(api_views, "tenant_update", deleted_first)
    answer = _patch(api_client, admin_key, {"thread_retention_days": 14})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
def test_a_tenant_bound_key_changing_a_reserved_field_is_a_403_whatever_its_if_match_says(api_client, tenant):
    """docs/api.md orders the checks: a reserved field is a 403 before the If-Match is read (a malformed one gave
    a 400 first)."""
    _, key = api_key_create(name="acme admin", scope="admin", tenant=tenant)
    answer = _patch(api_client, key, {"name": "Renamed"}, if_match="not-quoted")
    assert answer.status_code == 403 and answer.json()["error"]["field"] == "name"
