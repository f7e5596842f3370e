"""Security drills that run in seconds: CSRF on every form, admin changes audited, secrets never logged,
keys revoked at once, per-key limits on ingest, and the production security settings."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from apps.core.models import AuditEvent
from apps.pricing.models import ModelPrice
from apps.tenants.models import ApiKey, Membership
from apps.tenants.services import api_key_create, api_key_revoke
from tests.conftest import bearer

pytestmark = pytest.mark.django_db


def _web_patterns(patterns=None, prefix=""):
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(entry, URLResolver):
            if str(entry.pattern) in ("admin/", "api/v1/"):  # the API authenticates by key, never by cookie
                continue
            yield from _web_patterns(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern) and not (prefix + str(entry.pattern)).startswith("api/"):
            yield prefix + str(entry.pattern)


def _url(pattern: str) -> str:
    import re

    values = {"slug": "acme", "pk": "1", "resource_type": "threads", "action": "delete", "openai_id": "run_x"}
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values.get(m.group(1), "x"), pattern)


WEB_PATTERNS = sorted(set(_web_patterns()))
ADMIN_FORMS = ["/admin/tenants/tenant/add/", "/admin/pricing/modelprice/add/", "/admin/tenants/apikey/add/",
               "/admin/login/", "/admin/logout/"]


@pytest.mark.parametrize("pattern", WEB_PATTERNS + ADMIN_FORMS)
def test_every_web_post_without_a_csrf_token_is_refused(pattern, tenant, staff_user):
    """Every web URL (each form's target among them) refuses a logged-in POST that carries no CSRF token."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    response = client.post(_url(pattern) if not pattern.startswith("/") else pattern, {"name": "x"})
    assert response.status_code == 403, (pattern, response.status_code)


def test_the_login_form_refuses_a_post_without_csrf_even_anonymous(staff_user):
    response = Client(enforce_csrf_checks=True).post("/accounts/login/", {"username": "ops",
                                                                            "password": "ops-password-1"})
    assert response.status_code == 403


def _admin_client(staff_user) -> Client:
    staff_user.is_superuser = True
    staff_user.save()
    client = Client()
    client.force_login(staff_user)
    return client


def test_admin_edits_of_tenant_policies_prices_memberships_and_keys_are_audited(tenant, staff_user, member_user):
    client = _admin_client(staff_user)
    # A tenant policy changed in the admin.
    data = {field: getattr(tenant, field) for field in ("slug", "name", "external_id", "status",
                                                         "thread_retention_days", "vector_store_idle_days",
                                                         "high_cost_run_usd")}
    data.update({"thread_retention_days": 15, "monthly_budget_usd": "", "markup_percent": "",
                 "memberships-TOTAL_FORMS": 0, "memberships-INITIAL_FORMS": 0})
    response = client.post(f"/admin/tenants/tenant/{tenant.pk}/change/", data)
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(action="admin.tenant.update")
    assert event.actor == staff_user and event.tenant_id == tenant.pk
    assert event.data["before"]["thread_retention_days"] == "60" and event.data["after"]["thread_retention_days"] == "15"

    # A price added in the admin.
    response = client.post("/admin/pricing/modelprice/add/", {
        "model": "drill-model", "effective_from": "2026-01-01", "input_usd_per_1m": "1.00",
        "cached_input_usd_per_1m": "0.10", "output_usd_per_1m": "4.00", "source": "test", "source_date": "2026-01-01"})
    assert response.status_code == 302, response.content[:3000]
    price = ModelPrice.objects.get(model="drill-model")
    assert AuditEvent.objects.filter(action="admin.modelprice.create", target_id=str(price.pk), actor=staff_user).exists()
    # ... and changed.
    form = {f: getattr(price, f) for f in ("model", "effective_from", "input_usd_per_1m", "cached_input_usd_per_1m",
                                           "output_usd_per_1m", "source", "source_date")}
    form = {k: ("" if v is None else v) for k, v in form.items()}
    form["output_usd_per_1m"] = "5.00"
    assert client.post(f"/admin/pricing/modelprice/{price.pk}/change/", form).status_code == 302
    change = AuditEvent.objects.get(action="admin.modelprice.update")
    assert Decimal(change.data["before"]["output_usd_per_1m"]) == Decimal("4")
    assert Decimal(change.data["after"]["output_usd_per_1m"]) == Decimal("5")

    # A membership deleted in the admin.
    membership = Membership.objects.get(user=member_user)
    client.post(f"/admin/tenants/membership/{membership.pk}/delete/", {"post": "yes"})
    assert AuditEvent.objects.filter(action="admin.membership.delete", tenant_id=tenant.pk).exists()

    # A key created in the admin (api_key_create audits it) and edited.
    client.post("/admin/tenants/apikey/add/", {"name": "from admin", "scope": "billing", "tenant": tenant.pk})
    key = ApiKey.objects.get(name="from admin")
    assert AuditEvent.objects.filter(action="api_key.create", target_id=key.prefix, actor=staff_user).exists()
    client.post(f"/admin/tenants/apikey/{key.pk}/change/", {"name": "renamed", "scope": "admin", "tenant": tenant.pk})
    edit = AuditEvent.objects.get(action="admin.apikey.update")
    assert edit.data["before"]["scope"] == "billing" and edit.data["after"]["scope"] == "admin"
    assert "key_hash" not in str(edit.data) or "(secret)" in str(edit.data)


def test_manual_sweeps_price_api_changes_and_key_revocations_are_audited(tenant, staff_user, api_client, admin_key):
    from apps.lifecycle import services as lifecycle

    lifecycle.sweep_create(kind="threads", tenant=tenant, dry_run=True, requested_by=staff_user)
    assert AuditEvent.objects.filter(action="lifecycle.sweep.create", actor=staff_user).exists()
    key, _ = api_key_create(name="k", scope="billing", tenant=tenant)
    api_key_revoke(key=key, actor=staff_user)
    assert AuditEvent.objects.filter(action="api_key.revoke", target_id=key.prefix, actor=staff_user).exists()


def test_a_revoked_key_fails_on_the_very_next_request(api_client, tenant):
    key, plaintext = api_key_create(name="soon revoked", scope=ApiKey.Scope.BILLING, tenant=tenant)
    assert api_client.get("/api/v1/tenants/acme/", **bearer(plaintext)).status_code == 200
    api_key_revoke(key=key)
    response = api_client.get("/api/v1/tenants/acme/", **bearer(plaintext))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_ingest_has_a_per_key_rate_limit(api_client, ingest_key, tenant_ingest_key, tenant, settings):
    from rest_framework.throttling import SimpleRateThrottle

    rates = {"api_key": "3/min"}
    original = SimpleRateThrottle.THROTTLE_RATES
    SimpleRateThrottle.THROTTLE_RATES = rates
    try:
        statuses = [api_client.post("/api/v1/ingest/", {"events": []}, format="json", **bearer(ingest_key)).status_code
                    for _ in range(5)]
        # Another key has its own budget.
        other = api_client.post("/api/v1/ingest/", {"events": []}, format="json", **bearer(tenant_ingest_key))
    finally:
        SimpleRateThrottle.THROTTLE_RATES = original
    assert statuses == [200, 200, 200, 429, 429]
    assert other.status_code == 200


def test_api_keys_and_passwords_never_reach_the_logs(api_client, tenant, caplog, client, staff_user):
    key, plaintext = api_key_create(name="logged?", scope=ApiKey.Scope.INGEST, tenant=tenant)
    secret_part = plaintext.split("_", 2)[2]
    with caplog.at_level(logging.DEBUG):
        api_client.post("/api/v1/ingest/", {"events": [{"object": {"id": "x"}}]}, format="json", **bearer(plaintext))
        api_client.get("/api/v1/tenants/globex/", **bearer(plaintext))  # 403/404 paths log warnings
        api_client.get("/api/v1/nowhere/", **bearer(plaintext))
        api_client.get("/api/v1/runs/", HTTP_AUTHORIZATION=f"Bearer {plaintext}x")  # a wrong key: 401
        client.post("/accounts/login/", {"username": "ops", "password": "wrong-Secret-Password-9"})
    logged = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)
    assert caplog.records, "the requests above should have logged something"
    assert secret_part not in logged
    assert "wrong-Secret-Password-9" not in logged


def test_production_settings_secure_cookies_hsts_and_no_secret_defaults():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.production", "DJANGO_SECRET_KEY": "k" * 60,
           "DJANGO_ALLOWED_HOSTS": "runledger.example.com", "DATABASE_URL": "sqlite:////tmp/x.sqlite3",
           "REDIS_URL": "redis://redis:6379/0", "OPENAI_API_KEY": "sk-proj-named-never-used"}
    code = ("from django.conf import settings as s; import json; print(json.dumps([s.SESSION_COOKIE_SECURE, "
            "s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.SECURE_HSTS_SECONDS, s.SECURE_SSL_REDIRECT, "
            "s.DEBUG, 'apps.sandbox' in s.INSTALLED_APPS, 'apps.drills' in s.INSTALLED_APPS]))")
    out = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], env=env,
                         capture_output=True, text=True, cwd=settings.BASE_DIR, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[true, true, true, 31536000, true, false, false, false]"
    # Without DJANGO_SECRET_KEY production refuses to start: no built-in secret.
    env.pop("DJANGO_SECRET_KEY")
    out = subprocess.run([sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True,
                         text=True, cwd=settings.BASE_DIR, timeout=60)
    assert out.returncode != 0 and "DJANGO_SECRET_KEY" in out.stderr
    # Nor with .env.example's placeholder left in: a secret anyone who read the repository knows.
    placeholder = next(line.split("=", 1)[1] for line in (settings.BASE_DIR / ".env.example").read_text().splitlines()
                       if line.startswith("DJANGO_SECRET_KEY="))
    out = subprocess.run([sys.executable, "-c", "import django; django.setup()"], capture_output=True, text=True,
                         env={**env, "DJANGO_SECRET_KEY": placeholder}, cwd=settings.BASE_DIR, timeout=60)
    assert out.returncode != 0 and "placeholder" in out.stderr


def test_api_keys_are_stored_hashed_and_compared_in_constant_time(tenant):
    import inspect

    from apps.tenants import services

    key, plaintext = api_key_create(name="h", scope="billing", tenant=tenant)
    stored = ApiKey.objects.get(pk=key.pk)
    assert plaintext not in str(stored.__dict__) and len(stored.key_hash) == 64
    assert "hmac.compare_digest" in inspect.getsource(services.api_key_authenticate)


def test_a_projects_base_url_override_is_refused_and_ignored_outside_the_sandbox(settings, monkeypatch):
    """The keys a project row names go to its base URL: in production an admin edit pointing it elsewhere
    would hand any environment variable of the workers (the org admin key, DATABASE_URL) to that host."""
    from django.core.exceptions import ValidationError

    from apps.reconciliation.models import OpenAIProject
    from apps.reconciliation.projects import project_config

    settings.SANDBOX_ENABLED = False
    settings.OPENAI_BASE_URL = ""
    monkeypatch.setenv("RL_TEST_PROJ_X_API", "sk-proj-x")
    project = OpenAIProject(project_id="proj_x", admin_key_env="OPENAI_ADMIN_KEY", api_key_env="RL_TEST_PROJ_X_API",
                            base_url="https://collector.example.net/v1")
    with pytest.raises(ValidationError) as refused:
        project.full_clean()
    assert list(refused.value.message_dict) == ["base_url"]
    # A row saved before (or past the admin) is not followed either: the deployment's own OpenAI endpoint.
    project.save()
    config = project_config("proj_x")
    assert config.resolved_base_url() == ""
    assert config.provider(admin=False).base_url is None
    # The sandbox (local, tests, demo) keeps the override.
    settings.SANDBOX_ENABLED = True
    project.full_clean()
    assert project_config("proj_x").resolved_base_url() == "https://collector.example.net/v1"
