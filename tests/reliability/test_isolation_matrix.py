"""Tenant isolation MATRIX: every URL pattern the resolver knows (so a new page is covered the day it is
added) x every principal (staff, tenant admin, tenant viewer, anonymous, API keys of each scope, bound and
unbound). Acme's principals must get exactly what their role allows on Acme's URLs, a 404 on Globex's that
is byte-for-byte the 404 of an object that does not exist, and Globex's marker strings may appear in no
response they get: lists, exports (CSV), charts (JSON) or error messages."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from apps.ledger.services import ingest_events
from apps.lifecycle import services as lifecycle
from apps.tenants.models import ApiKey
from tests import builders
from tests.conftest import _key, bearer

pytestmark = pytest.mark.django_db

MARKER = "GLOBEXSECRET"  # in every Globex object: run ids, features, users, models, thread ids
GLOBEX_WORDS = (MARKER, "globex", "Globex")
PERIOD = timezone.now().strftime("%Y-%m")
# Variants of a URL's query string: plain, CSV exports and the chart/table JSON some pages offer.
VARIANTS = ("", "?format=csv", "?format=csv&table=runs", "?format=csv&table=threads", "?format=csv&table=users",
            "?format=csv&table=costs", "?format=json")


def _patterns(patterns=None, prefix: str = ""):
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(entry, URLResolver):
            if str(entry.pattern) == "admin/":
                continue  # Django admin: staff-only by Django itself; covered by test_admin_is_staff_only
            yield from _patterns(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern) and "^" not in str(entry.pattern):
            yield prefix + str(entry.pattern)


ALL_PATTERNS = sorted(set(_patterns()))
PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")


@pytest.fixture
def world(tenant, other_tenant, django_user_model):
    """Both tenants with runs, a thread, a sweep and a statement period; Globex's carry the marker."""
    now = timezone.now() - dt.timedelta(hours=1)
    events = []
    for t, mark in ((tenant, "acmeonly"), (other_tenant, MARKER)):
        events.append({"tenant": t.slug, "attribution": {"feature": f"feat-{mark}", "user_id": f"user-{mark}"},
                       "object": builders.response(response_id=f"resp_{mark}", created_at=now, model="gpt-5.4",
                                                   conversation_id=f"conv_{mark}")})
        events.append({"tenant": t.slug, "object": builders.assistants_run(
            run_id=f"run_{mark}", thread_id=f"thread_{mark}", created_at=now, prompt_tokens=900_000)})
    result = ingest_events(events=events)
    assert result.rejected == 0, result.as_dict()
    sweeps = {t.slug: lifecycle.sweep_create(kind="threads", tenant=t, dry_run=True) for t in (tenant, other_tenant)}
    from apps.lifecycle.models import ArchivedItem

    for t, mark in ((tenant, "acmeonly"), (other_tenant, MARKER)):  # what archive_before_delete kept of each
        ArchivedItem.objects.create(tenant=t, thread_openai_id=f"conv_{mark}", item_openai_id=f"msg_{mark}",
                                    position=0, data={"role": "user", "content": f"said by {mark}"})
    staff = django_user_model.objects.create_user("matrix-ops", password="x-password-1", is_staff=True)
    return {"tenant": tenant, "other": other_tenant, "sweeps": sweeps, "staff": staff}


def _fill(pattern: str, world: dict, whose: str) -> str | None:
    """The URL for Acme's object (whose='own'), Globex's ('other') or one that does not exist ('missing')."""
    slug = {"own": "acme", "other": "globex", "missing": "nosuchtenant"}[whose]
    mark = {"own": "acmeonly", "other": MARKER, "missing": "nosuchrun"}[whose]
    sweep = {"own": world["sweeps"]["acme"].pk, "other": world["sweeps"]["globex"].pk, "missing": 999999}[whose]
    values = {"slug": slug, "openai_id": f"resp_{mark}", "period": PERIOD, "pk": str(sweep),
              "resource_type": "threads", "action": "delete"}
    if pattern.startswith("lifecycle/archives/"):  # a thread's or conversation's archive, not a run
        values["openai_id"] = f"conv_{mark}"

    def replace(match):
        return values.get(match.group(2), "x")

    if not PARAM.search(pattern):
        return None if whose != "own" else "/" + pattern
    return "/" + PARAM.sub(replace, pattern)


def _body(response) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def _web(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def _principals(world, member_user, tenant_admin_user):
    return {
        "staff": ("web", world["staff"]),
        "tenant-admin": ("web", tenant_admin_user),
        "tenant-viewer": ("web", member_user),
        "anonymous": ("web", None),
        "key-admin-unbound": ("api", _key(ApiKey.Scope.ADMIN)),
        "key-billing-unbound": ("api", _key(ApiKey.Scope.BILLING)),
        "key-ingest-unbound": ("api", _key(ApiKey.Scope.INGEST)),
        "key-admin-acme": ("api", _key(ApiKey.Scope.ADMIN, world["tenant"])),
        "key-billing-acme": ("api", _key(ApiKey.Scope.BILLING, world["tenant"])),
        "key-ingest-acme": ("api", _key(ApiKey.Scope.INGEST, world["tenant"])),
    }


def _get(kind, who, url):
    if kind == "web":
        return _web(who).get(url)
    return Client().get(url, **bearer(who))


def _sees_every_tenant(name: str) -> bool:
    return name in ("staff", "key-admin-unbound", "key-billing-unbound")


def test_matrix_covers_every_page_and_endpoint():
    # The matrix enumerates the resolver; this pins that it found the product's surfaces.
    for expected in ("tenants/<slug:slug>/", "runs/<str:openai_id>/", "api/v1/tenants/<str:slug>/usage/",
                     "api/v1/runs/<str:openai_id>/", "lifecycle/sweeps/<int:pk>/", "reconciliation/"):
        assert expected in ALL_PATTERNS
    assert len(ALL_PATTERNS) >= 30


def test_isolation_matrix(world, member_user, tenant_admin_user):
    violations: list[str] = []
    principals = _principals(world, member_user, tenant_admin_user)
    checked = 0
    for name, (kind, who) in principals.items():
        for pattern in ALL_PATTERNS:
            if pattern.startswith("accounts/logout"):
                continue  # GET is not allowed; logging out is not data access
            is_api = pattern.startswith("api/v1/")
            for variant in VARIANTS if not is_api else ("",):
                own_url, other_url, missing_url = (_fill(pattern, world, w) for w in ("own", "other", "missing"))
                for whose, url in (("own", own_url), ("other", other_url)):
                    if url is None:
                        continue
                    response = _get(kind, who, url + variant)
                    checked += 1
                    body = _body(response)
                    status = response.status_code
                    where = f"{name} GET {url + variant} -> {status}"
                    if status >= 500:
                        violations.append(f"{where}: server error")
                    if not _sees_every_tenant(name) and any(word in body for word in GLOBEX_WORDS):
                        violations.append(f"{where}: Globex data in the response")
                    if name == "anonymous" and status == 200 and not _public(pattern):
                        violations.append(f"{where}: anonymous got a page")
                    if kind == "web" and is_api and status != 401 and not _public(pattern):
                        violations.append(f"{where}: the API takes API keys only; a session must get 401")
                    if whose == "other" and not _sees_every_tenant(name) and name != "anonymous" and not (
                            kind == "web" and is_api):
                        if status == 405 and _post_only(pattern):
                            pass  # a POST-only URL answers GET with 405 before looking anything up
                        elif kind == "web" and status != 404:
                            violations.append(f"{where}: expected 404 for another tenant's object")
                        elif kind == "api" and is_api and status not in (403, 404):
                            violations.append(f"{where}: expected 404 (or 403 for the key's scope)")
                        if status == 404:
                            twin = _get(kind, who, missing_url + variant)
                            if twin.status_code != 404 or _normalise(body, whose) != _normalise(_body(twin), "missing"):
                                violations.append(f"{where}: its 404 differs from a missing object's (probe)")
                    if whose == "other" and _sees_every_tenant(name) and kind == "web" and status == 404 and not variant:
                        violations.append(f"{where}: staff must see every tenant")
                    if kind == "api" and is_api and "ingest" in name and status == 200 and not pattern.startswith(
                            "api/v1/ingest"):
                        violations.append(f"{where}: an ingest key read data")
    assert checked > 500
    assert violations == [], "\n".join(violations[:40])


def _public(pattern: str) -> bool:
    # The two sign-in forms (the admin's is mounted beside the admin, so that it is throttled) are for anyone.
    return pattern in ("accounts/login/", "admin/login/", "healthz", "api/schema/", "api/docs/", "api/redoc/")


def _post_only(pattern: str) -> bool:
    return pattern.endswith(("settings/", "confirm/", "close", "close/", "<str:action>/"))


def _normalise(body: str, whose: str) -> str:
    for value in ("acmeonly", MARKER, "nosuchrun", "nosuchtenant", "globex", "acme"):
        body = body.replace(value, "X")
    return re.sub(r"\d{6}|\b\d+\b", "N", body)


@pytest.mark.parametrize("name", ["tenant-admin", "tenant-viewer", "key-billing-acme", "key-admin-acme"])
def test_acme_principals_reach_acme_data(world, member_user, tenant_admin_user, name):
    """The other half of "exactly what the role allows": Acme's own pages and endpoints answer 200."""
    kind, who = _principals(world, member_user, tenant_admin_user)[name]
    urls = (["/", "/tenants/acme/", "/runs/", "/runs/resp_acmeonly/", "/tenants/acme/?format=csv&table=runs"]
            if kind == "web" else
            ["/api/v1/tenants/acme/", "/api/v1/tenants/acme/usage/", "/api/v1/runs/resp_acmeonly/",
             f"/api/v1/tenants/acme/statements/{PERIOD}/", f"/api/v1/tenants/acme/statements/{PERIOD}.csv"])
    for url in urls:
        response = _get(kind, who, url)
        assert response.status_code == 200, (name, url, response.status_code)
        assert "acmeonly" in _body(response) or url.endswith(("/usage/", f"{PERIOD}/", ".csv", "acme/", "/")), url


def test_staff_and_unbound_read_keys_reach_both_tenants(world, member_user, tenant_admin_user):
    principals = _principals(world, member_user, tenant_admin_user)
    assert _web(world["staff"]).get(f"/runs/resp_{MARKER}/").status_code == 200
    assert _web(world["staff"]).get("/tenants/globex/").status_code == 200
    for name in ("key-billing-unbound", "key-admin-unbound"):
        response = Client().get(f"/api/v1/runs/resp_{MARKER}/", **bearer(principals[name][1]))
        assert response.status_code == 200 and MARKER in _body(response)


def test_admin_is_staff_only(world, member_user, tenant_admin_user):
    for user in (member_user, tenant_admin_user, None):
        response = _web(user).get("/admin/")
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert _web(world["staff"]).get("/admin/").status_code == 200
