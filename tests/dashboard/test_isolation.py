"""A member of tenant A never sees tenant B: every B URL is a 404 (as if it did not exist), and B's data
appears in none of A's pages, exports or charts."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from apps.alerts.models import Alert

from .conftest import NOW
from .seed import run_row, thread_row

pytestmark = pytest.mark.django_db

SECRET = "globex-only-secret"


@pytest.fixture
def two_tenants(tenant, other_tenant, frozen_now):
    mine = run_row(tenant, created_at=NOW - dt.timedelta(hours=2), cost="0.40", feature="chat", user_id="acme-user")
    thread = thread_row(other_tenant, openai_id=f"thread_{SECRET}", last_activity_at=NOW)
    theirs = run_row(other_tenant, created_at=NOW - dt.timedelta(hours=1), cost="7.00", model=f"model-{SECRET}",
                     feature=f"feature-{SECRET}", user_id=f"user-{SECRET}", openai_id=f"resp_{SECRET}", thread=thread)
    Alert.objects.create(tenant=other_tenant, kind=Alert.Kind.BUDGET, cause_key="b", title=f"alert {SECRET}")
    Alert.unscoped_objects.create(tenant=None, kind=Alert.Kind.UNPRICED_MODEL, cause_key="u", title=f"unpriced {SECRET}")
    return {"mine": mine, "theirs": theirs}


def _body(response) -> str:
    if hasattr(response, "streaming_content"):
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


OTHER_TENANT_URLS = [
    "/tenants/globex/",
    "/tenants/globex/?format=csv&table=threads",
    "/tenants/globex/?format=csv&table=runs",
    "/tenants/globex/?format=csv&table=users",
    "/tenants/nonexistent/",
    f"/runs/resp_{SECRET}/",
    f"/runs/resp_{SECRET}/?format=csv&table=costs",
]


@pytest.mark.parametrize("path", OTHER_TENANT_URLS)
def test_member_gets_404_on_every_other_tenant_url(member_client, two_tenants, path):
    assert member_client.get(path).status_code == 404


def test_member_cannot_post_other_tenants_settings(member_client, tenant_admin_user, two_tenants, client):
    client.force_login(tenant_admin_user)
    assert client.post("/tenants/globex/settings/", {"thread_retention_days": "1"}).status_code == 404


def test_missing_and_foreign_runs_look_the_same(member_client, two_tenants):
    foreign = member_client.get(f"/runs/resp_{SECRET}/")
    missing = member_client.get("/runs/resp_does_not_exist/")
    assert foreign.status_code == missing.status_code == 404
    assert _body(foreign) == _body(missing)


MEMBER_PAGES = [
    "/", "/?format=csv&table=top_tenants", "/?format=csv&table=alerts",
    "/tenants/", "/tenants/?format=csv&table=tenants",
    "/tenants/acme/", "/tenants/acme/?format=csv&table=features", "/tenants/acme/?format=csv&table=users",
    "/tenants/acme/?format=csv&table=runs", "/tenants/acme/?format=csv&table=threads",
    "/tenants/acme/?format=csv&table=alerts",
    "/runs/?min_cost=0", "/runs/?min_cost=0&format=csv", "/runs/?min_cost=0&tenant=globex",
    "/prices/",
    "/alerts/?state=all", "/alerts/?state=all&format=csv&table=alerts", "/alerts/?tenant=globex",
]


@pytest.mark.parametrize("path", MEMBER_PAGES)
def test_other_tenants_data_never_appears_in_members_pages_exports_or_charts(member_client, two_tenants, path):
    response = member_client.get(path)
    body = _body(response)
    assert response.status_code in (200, 400)
    assert SECRET not in body and "$7.00" not in body and "Globex" not in body
    if "globex" not in path:  # a page may echo its own query string (the export link), nothing more
        assert "globex" not in body
    for name in ("daily_figure", "model_figure", "scatter_figure", "feature_figure", "user_figure"):
        if response.context and response.context.get(name):
            assert SECRET not in json.dumps(response.context[name])


def test_member_sees_their_own_tenant_everywhere(member_client, two_tenants):
    assert "Acme Corp" in _body(member_client.get("/"))
    runs = member_client.get("/runs/?min_cost=0")
    assert [r.openai_id for r in runs.context["tables"]["runs"].page_rows] == [two_tenants["mine"].openai_id]
    assert runs.context["form"].fields["tenant"].choices == [("", "all tenants"), ("acme", "acme")]
    assert member_client.get(f"/runs/{two_tenants['mine'].openai_id}/").status_code == 200


def test_staff_see_both_tenants_and_tenantless_alerts(client, staff_user, two_tenants):
    client.force_login(staff_user)
    body = _body(client.get("/"))
    assert "Globex Inc" in body and f"unpriced {SECRET}" in body
    assert client.get(f"/runs/resp_{SECRET}/").status_code == 200
