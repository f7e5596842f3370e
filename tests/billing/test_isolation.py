"""The isolation matrix: every endpoint of the billing API, the tenants API and the prices API, with a key
bound to tenant A (acme): B's (globex's) objects are 404 and B's data never appears in A's answers; ingest
keys get 403 on reads; no key gets 401."""

from __future__ import annotations

import pytest

from tests.conftest import bearer

pytestmark = pytest.mark.django_db

# (method, path with {slug} / {run}, body) for every endpoint that names a tenant's object.
TENANT_OBJECT_ENDPOINTS = [
    ("get", "/api/v1/tenants/{slug}/", None),
    ("patch", "/api/v1/tenants/{slug}/", {"thread_retention_days": 30}),  # a tenant admin's policy
    ("get", "/api/v1/tenants/{slug}/usage/?start=2026-01-01&end=2026-03-01&group_by=user", None),
    # A page of it, from a cursor: the cursor holds a grouping, a period and a key, nothing of a tenant's.
    ("get", "/api/v1/tenants/{slug}/usage/?start=2026-01-01&end=2026-03-01&group_by=user&limit=1"
            # usage_cursor("user", 2026-01-01, 2026-03-01, "")
            "&cursor=eyJncm91cF9ieSI6InVzZXIiLCJzdGFydCI6IjIwMjYtMDEtMDEiLCJlbmQiOiIyMDI2LTAzLTAxIiwiYWZ0ZXIiOiIifQ==",
     None),
    ("get", "/api/v1/tenants/{slug}/statements/2026-01/", None),
    ("get", "/api/v1/tenants/{slug}/statements/2026-01/?format=csv", None),
    ("get", "/api/v1/tenants/{slug}/statements/2026-01.csv", None),
    ("post", "/api/v1/tenants/{slug}/statements/2026-01/close", {}),
    ("post", "/api/v1/tenants/{slug}/statements/2026-01/close/", {}),
    ("get", "/api/v1/runs/{run}/", None),
    ("get", "/api/v1/runs/?tenant={slug}", None),
]
LIST_ENDPOINTS = ["/api/v1/tenants/", "/api/v1/runs/", "/api/v1/runs/?model=gpt-4.1", "/api/v1/runs/?user=globex-user",
                  "/api/v1/runs/?feature=globex-feature"]
READ_ENDPOINTS = [path for method, path, _ in TENANT_OBJECT_ENDPOINTS if method == "get"] + LIST_ENDPOINTS + ["/api/v1/prices/"]


def call(client, method, path, key=None, body=None):
    headers = bearer(key) if key else {}
    if method == "get":
        return client.get(path, **headers)
    return getattr(client, method)(path, body or {}, format="json", **headers)


def fill(path: str, slug: str, run_id: str) -> str:
    return path.format(slug=slug, run=run_id)


@pytest.mark.parametrize(("method", "path", "body"), TENANT_OBJECT_ENDPOINTS)
def test_a_key_bound_to_acme_gets_404_for_globex_objects_and_reaches_its_own(
    api_client, tenant_admin_key, tenant_billing_key, ledger, method, path, body
):
    other = fill(path, "globex", ledger["globex_jan"][0].openai_id)
    own = fill(path, "acme", ledger["acme_jan"][0].openai_id)
    key = tenant_admin_key if method != "get" else tenant_billing_key
    answer = call(api_client, method, other, key, body)
    assert answer.status_code == 404, (other, answer.content)
    assert answer.json() == {"error": {"code": "not_found", "message": "Not found."}}
    assert b"globex" not in answer.content.lower()
    # A missing slug answers exactly the same as another tenant's.
    assert call(api_client, method, fill(path, "no-such-tenant", "run_nope"), key, body).content == answer.content
    assert call(api_client, method, own, key, body).status_code == 200, own


@pytest.mark.parametrize("path", LIST_ENDPOINTS)
def test_globex_data_never_appears_in_acme_lists(api_client, tenant_billing_key, billing_key, ledger, path):
    answer = api_client.get(path, **bearer(tenant_billing_key))
    assert answer.status_code == 200
    content = answer.content.decode()
    assert "globex" not in content.lower()
    for run in ledger["globex_jan"]:
        assert run.openai_id not in content
    everyone = api_client.get(path, **bearer(billing_key)).content.decode()
    if "tenants" in path or "globex" in path or path == "/api/v1/runs/":
        assert "globex" in everyone.lower()  # the unbound key does see it: the filter is the key, not the data


def test_acme_usage_and_statement_never_count_globex_runs(api_client, tenant_billing_key, ledger):
    usage = api_client.get("/api/v1/tenants/acme/usage/?start=2026-01-01&end=2026-03-01&group_by=model",
                           **bearer(tenant_billing_key)).json()
    assert usage["runs"] == len(ledger["acme_jan"]) + len(ledger["acme_feb"])
    statement = api_client.get("/api/v1/tenants/acme/statements/2026-01/", **bearer(tenant_billing_key)).json()
    assert statement["runs"] == len(ledger["acme_jan"])


def test_tenant_bound_admin_key_cannot_create_tenants(api_client, tenant_admin_key, ledger):
    answer = api_client.post("/api/v1/tenants/", {"slug": "initech", "name": "Initech"}, format="json", **bearer(tenant_admin_key))
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "permission_denied"


@pytest.mark.parametrize("path", READ_ENDPOINTS)
def test_ingest_keys_get_403_on_reads(api_client, ingest_key, tenant_ingest_key, ledger, path):
    for key in (ingest_key, tenant_ingest_key):
        answer = api_client.get(fill(path, "acme", ledger["acme_jan"][0].openai_id), **bearer(key))
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "permission_denied"
        assert answer.json()["error"]["message"] == ("This is an ingest key; reading needs a billing or admin "
                                                     "API key.")


def test_a_billing_key_that_writes_is_told_it_needs_an_admin_key(api_client, billing_key, ledger):
    answer = api_client.patch("/api/v1/tenants/acme/", {"legal_hold": True}, format="json", **bearer(billing_key))
    assert answer.status_code == 403
    assert answer.json()["error"]["message"] == "This is a billing key; this change needs an admin API key."


@pytest.mark.parametrize(("method", "path", "body"), [
    *TENANT_OBJECT_ENDPOINTS, ("get", "/api/v1/tenants/", None), ("post", "/api/v1/tenants/", {"slug": "x", "name": "x"}),
    ("get", "/api/v1/prices/", None), ("post", "/api/v1/prices/", {}),
])
def test_no_key_gets_401_and_a_bad_key_too(api_client, ledger, method, path, body):
    path = fill(path, "acme", ledger["acme_jan"][0].openai_id)
    answer = call(api_client, method, path, None, body)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "not_authenticated"
    assert answer["WWW-Authenticate"] == "Bearer"
    forged = call(api_client, method, path, "rl_00000000_forged", body)
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "authentication_failed"


@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/api/v1/tenants/", {"slug": "initech", "name": "Initech"}),
    ("patch", "/api/v1/tenants/acme/", {"thread_retention_days": 30}),
    ("post", "/api/v1/prices/", {"model": "m", "input_usd_per_1m": "1", "output_usd_per_1m": "2", "effective_from": "2026-01-01"}),
    ("post", "/api/v1/tenants/acme/statements/2026-01/close", {}),
])
def test_billing_keys_cannot_write(api_client, billing_key, tenant_billing_key, ledger, method, path, body):
    for key in (billing_key, tenant_billing_key):
        assert call(api_client, method, path, key, body).status_code == 403


@pytest.mark.parametrize("path", ["/api/v1/tenants/a%00b/", "/api/v1/runs/run%00x/", "/api/v1/tenants/a%00b/usage/",
                                  "/api/v1/tenants/a%00b/statements/2026-01/"])
def test_a_nul_byte_in_a_path_value_is_a_plain_404(api_client, admin_key, ledger, path):
    answer = api_client.get(path, **bearer(admin_key))
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
