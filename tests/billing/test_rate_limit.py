"""Per-key rate limiting: past its rate a key gets 429 with the standard error body; other keys are unaffected."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from apps.tenants.authentication import ApiKeyRateThrottle
from tests.conftest import bearer

pytestmark = pytest.mark.django_db


def test_exceeding_the_per_key_rate_gives_429_with_the_error_body(api_client, billing_key, admin_key, tenant, monkeypatch):
    cache.clear()
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "3/min"})
    for _ in range(3):
        assert api_client.get("/api/v1/tenants/acme/usage/", **bearer(billing_key)).status_code == 200
    limited = api_client.get("/api/v1/tenants/acme/usage/", **bearer(billing_key))
    assert limited.status_code == 429
    body = limited.json()
    assert body["error"]["code"] == "throttled" and "Request was throttled" in body["error"]["message"]
    assert int(limited["Retry-After"]) > 0
    assert api_client.get("/api/v1/runs/", **bearer(billing_key)).status_code == 429  # per key, every endpoint
    assert api_client.get("/api/v1/runs/", **bearer(admin_key)).status_code == 200  # another key has its own budget
    cache.clear()
