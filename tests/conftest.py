"""Fixtures every test module shares. Like Zulip's two realms, the database always has two tenants
with data (`tenant`, `other_tenant`), so a cross-tenant check costs one line."""

from __future__ import annotations

import os

import pytest
from django.conf import settings

from apps.tenants.models import ApiKey, Membership, Tenant
from apps.tenants.services import api_key_create
from tests.browser import CHROMIUM, CHROMIUM_ARGS, chromium_installed

pytest_plugins = ["tests.sandbox_fixtures"]

REQUIRE_SERVICES = os.environ.get("RUNLEDGER_REQUIRE_SERVICES") == "1"


def pytest_collection_modifyitems(config, items):
    """Tests marked postgres/redis/browser skip where the service (or Chromium) is missing, and fail in CI
    (RUNLEDGER_REQUIRE_SERVICES=1) so a missing service can never pass silently."""
    uses_postgres = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    uses_redis = bool(settings.REDIS_URL)
    have_chromium = chromium_installed()
    for item in items:
        if item.get_closest_marker("browser") and not have_chromium:
            reason = f"needs Chromium at {CHROMIUM} (apt-get install chromium)"
            if REQUIRE_SERVICES:
                item.add_marker(pytest.mark.usefixtures("_fail_missing_service"))
                item.user_properties.append(("missing_service", reason))
            else:
                item.add_marker(pytest.mark.skip(reason=reason))
        for marker, available, variable in (("postgres", uses_postgres, "DATABASE_URL"), ("redis", uses_redis, "REDIS_URL")):
            if item.get_closest_marker(marker) and not available:
                reason = f"needs {marker}: set {variable}"
                if REQUIRE_SERVICES:
                    item.add_marker(pytest.mark.usefixtures("_fail_missing_service"))
                    item.user_properties.append(("missing_service", reason))
                else:
                    item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counters, locks and rate-limit windows live in the cache (Redis in CI, LocMem here);
    each test starts with none of another test's."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def _fail_missing_service(request):
    reasons = [value for key, value in request.node.user_properties if key == "missing_service"]
    pytest.fail(f"RUNLEDGER_REQUIRE_SERVICES=1 but this test {reasons[0]}")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Playwright drives Debian's Chromium (never a downloaded browser), headless, with no network chatter."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "headless": True, "args": CHROMIUM_ARGS}


@pytest.fixture
def tenant(db) -> Tenant:
    return Tenant.objects.create(slug="acme", name="Acme Corp", external_id="cus_acme")


@pytest.fixture
def other_tenant(db) -> Tenant:
    return Tenant.objects.create(slug="globex", name="Globex Inc", external_id="cus_globex")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("ops", password="ops-password-1", is_staff=True)


@pytest.fixture
def member_user(django_user_model, tenant):
    user = django_user_model.objects.create_user("acme-viewer", password="member-password-1")
    Membership.objects.create(user=user, tenant=tenant, role=Membership.Role.VIEWER)
    return user


@pytest.fixture
def tenant_admin_user(django_user_model, tenant):
    user = django_user_model.objects.create_user("acme-admin", password="admin-password-1")
    Membership.objects.create(user=user, tenant=tenant, role=Membership.Role.ADMIN)
    return user


def _key(scope: str, tenant: Tenant | None = None) -> str:
    return api_key_create(name=f"test {scope}", scope=scope, tenant=tenant)[1]


@pytest.fixture
def admin_key(db) -> str:
    return _key(ApiKey.Scope.ADMIN)


@pytest.fixture
def billing_key(db) -> str:
    return _key(ApiKey.Scope.BILLING)


@pytest.fixture
def ingest_key(db) -> str:
    return _key(ApiKey.Scope.INGEST)


@pytest.fixture
def tenant_billing_key(tenant) -> str:
    return _key(ApiKey.Scope.BILLING, tenant)


@pytest.fixture
def tenant_ingest_key(tenant) -> str:
    return _key(ApiKey.Scope.INGEST, tenant)


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


def bearer(key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}
