"""Schema-driven fuzzing (schemathesis over WSGI, from the generated /api/schema/) of the billing, tenants and
prices endpoints with a real admin key: no 5xx, and every response matches the documented status codes,
content types, headers and bodies. Bounded (few examples per operation) to stay well under a minute."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from tests.api_schema import CHECKS, keep_test_connection, schema  # noqa: F401  (a fixture)
from tests.conftest import bearer


def test_the_schema_documents_every_billing_operation(api_client):
    document = api_client.get("/api/schema/?format=json").json()
    paths = document["paths"]
    for path, method in [
        ("/api/v1/tenants/", "get"), ("/api/v1/tenants/", "post"), ("/api/v1/tenants/{slug}/", "patch"),
        ("/api/v1/tenants/{slug}/usage/", "get"), ("/api/v1/tenants/{slug}/statements/{period}/", "get"),
        ("/api/v1/tenants/{slug}/statements/{period}.csv", "get"),
        ("/api/v1/tenants/{slug}/statements/{period}/close", "post"), ("/api/v1/runs/", "get"),
        ("/api/v1/runs/{openai_id}/", "get"), ("/api/v1/prices/", "get"), ("/api/v1/prices/", "post"),
    ]:
        operation = paths[path][method]
        assert {"401", "403"} <= set(operation["responses"]), (path, method)
        assert operation["security"] == [{"ApiKey": []}]
    usage_parameters = {p["name"] for p in paths["/api/v1/tenants/{slug}/usage/"]["get"]["parameters"]}
    assert {"start", "end", "group_by", "If-None-Match"} <= usage_parameters
    runs_parameters = {p["name"] for p in paths["/api/v1/runs/"]["get"]["parameters"]}
    assert {"tenant", "status", "model", "feature", "user", "min_cost", "start", "end", "high_cost", "cursor", "limit"} <= runs_parameters
    assert api_client.get("/api/docs/").status_code == 200


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.django_db
@pytest.mark.usefixtures("keep_test_connection")
def test_api_conforms_to_its_schema(case, admin_key, ledger):
    # Half the generated slugs / run ids name real objects, so success bodies get validated too.
    parameters = case.path_parameters or {}
    if "slug" in parameters and len(str(parameters["slug"])) % 2 == 0:
        parameters["slug"] = "acme"
    if "openai_id" in parameters and len(str(parameters["openai_id"])) % 2 == 0:
        parameters["openai_id"] = ledger["acme_jan"][0].openai_id
    response = case.call(headers={"Authorization": bearer(admin_key)["HTTP_AUTHORIZATION"]})
    case.validate_response(response, checks=CHECKS)
