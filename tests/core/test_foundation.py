"""Project-wide plumbing: health check, request ids, login throttling, plotly served offline, API times in UTC."""

import pytest
from django.contrib.staticfiles import finders

pytestmark = pytest.mark.django_db


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_healthz_answers_a_health_check_by_address_over_http_under_production_settings(client, settings):
    # docker-compose's web health check asks http://127.0.0.1:8000/healthz inside the container: production
    # answered 400 (127.0.0.1 is not an allowed host), so the web container never read healthy.
    settings.ALLOWED_HOSTS = ["runledger.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    settings.DEBUG = False
    response = client.get("/healthz", HTTP_HOST="127.0.0.1:8000")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert len(response["X-Request-Id"]) == 32
    # Only the health check: every other path still refuses the host, and the allowed one is sent to https.
    assert client.get("/accounts/login/", HTTP_HOST="127.0.0.1:8000").status_code == 400
    redirect = client.get("/accounts/login/", HTTP_HOST="runledger.example.com")
    assert redirect.status_code == 301 and redirect["Location"].startswith("https://runledger.example.com/")


_SECURITY_HEADERS = ("Strict-Transport-Security", "X-Content-Type-Options", "Referrer-Policy",
                     "Cross-Origin-Opener-Policy", "X-Frame-Options")


@pytest.mark.parametrize("method", ["get", "head"])
def test_healthz_carries_the_security_headers_of_every_other_page(client, settings, method):
    # Answered before SecurityMiddleware, /healthz lost HSTS, nosniff, Referrer-Policy, COOP and X-Frame-Options
    # (and its Content-Length), which it had and which the rest of the site still sends.
    settings.ALLOWED_HOSTS = ["runledger.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 3600
    secure = {"HTTP_HOST": "runledger.example.com", "HTTP_X_FORWARDED_PROTO": "https"}
    page = client.get("/accounts/login/", **secure)
    health = getattr(client, method)("/healthz", **secure)
    assert health.status_code == 200
    assert {name: health.get(name) for name in _SECURITY_HEADERS} == {name: page[name] for name in _SECURITY_HEADERS}
    assert health["Strict-Transport-Security"] == "max-age=3600" and health["Content-Length"] == "16"


def test_healthz_answers_503_while_the_database_is_unreachable(client, monkeypatch):
    from django.db import OperationalError, connection

    def unreachable():
        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", unreachable)
    response = client.get("/healthz")
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert response["X-Content-Type-Options"] == "nosniff" and response["X-Frame-Options"] == "DENY"


def test_every_response_carries_a_request_id_and_echoes_a_safe_one(client):
    assert len(client.get("/healthz")["X-Request-Id"]) == 32
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")["X-Request-Id"] == "abc-123"
    assert client.get("/healthz", HTTP_X_REQUEST_ID="bad id\n")["X-Request-Id"] != "bad id\n"


def test_login_page_renders(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200 and b"Sign in to RunLedger" in response.content


def test_login_is_throttled_after_repeated_failures(client, staff_user):
    for _ in range(10):
        assert client.post("/accounts/login/", {"username": "ops", "password": "wrong"}).status_code == 200
    assert client.post("/accounts/login/", {"username": "ops", "password": "ops-password-1"}).status_code == 429


@pytest.mark.parametrize("spelling", [" ops", "ops\t", "ＯＰＳ", "ｏｐｓ"])
def test_a_locked_username_stays_locked_however_the_form_would_spell_it(client, staff_user, spelling):
    # The form strips and NFKC-normalizes the username before authenticating, so each of these signs in as "ops":
    # counted apart, an attacker rotating addresses had a fresh ten guesses for every spelling.
    for number in range(10):
        client.post("/accounts/login/", {"username": "ops", "password": "wrong"}, REMOTE_ADDR=f"198.51.100.{number}")
    response = client.post("/accounts/login/", {"username": spelling, "password": "ops-password-1"},
                           REMOTE_ADDR="203.0.113.50")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_the_admin_sign_in_counts_failures_with_the_product_sign_in_and_locks_the_same(client, staff_user):
    # /admin/login/ is a second form for the same (staff) passwords: it had no limit at all.
    for number in range(5):
        assert client.post("/admin/login/", {"username": "ops", "password": "wrong"},
                           REMOTE_ADDR=f"198.51.100.{number}").status_code == 200
    for number in range(5, 10):
        client.post("/accounts/login/", {"username": "ops", "password": "wrong"}, REMOTE_ADDR=f"198.51.100.{number}")
    response = client.post("/admin/login/", {"username": "ops", "password": "ops-password-1"}, REMOTE_ADDR="203.0.113.50")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    # Below the limit the admin's form signs staff in as it always did.
    assert client.post("/admin/login/", {"username": "ops2", "password": "x"}, REMOTE_ADDR="203.0.113.51").status_code == 200
    staff_user.username = "ops2"
    staff_user.save()
    response = client.post("/admin/login/?next=/admin/", {"username": "ops2", "password": "ops-password-1"},
                           REMOTE_ADDR="203.0.113.51")
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_behind_a_proxy_one_clients_failed_logins_lock_out_that_client_not_everyone(client, staff_user, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = {"REMOTE_ADDR": "10.0.0.2"}  # every request arrives from the proxy
    for number in range(10):
        assert client.post("/accounts/login/", {"username": f"guess{number}", "password": "wrong"},
                           HTTP_X_FORWARDED_FOR="203.0.113.7", **proxy).status_code == 200
    assert client.post("/accounts/login/", {"username": "guess99", "password": "wrong"},
                       HTTP_X_FORWARDED_FOR="203.0.113.7", **proxy).status_code == 429
    # Another client behind the same proxy signs in; a forged first entry does not make the first one someone else.
    assert client.post("/accounts/login/", {"username": "ops", "password": "ops-password-1"},
                       HTTP_X_FORWARDED_FOR="198.51.100.4", **proxy).status_code == 302
    client.logout()
    assert client.post("/accounts/login/", {"username": "ops", "password": "ops-password-1"},
                       HTTP_X_FORWARDED_FOR="198.51.100.9, 203.0.113.7", **proxy).status_code == 429


def test_plotly_js_is_served_from_the_installed_package():
    path = finders.find("vendor/plotly.min.js")
    assert path and path.endswith("plotly.min.js")


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_api_docs_use_local_assets(client, path):
    # Redoc's page linked Google Fonts: visitors' addresses sent to a third party, and offline a failed request.
    response = client.get(path)
    assert response.status_code == 200
    assert b"<title>" in response.content and b"/static/" in response.content
    for third_party in (b"cdn.jsdelivr", b"unpkg", b"googleapis", b"gstatic"):
        assert third_party not in response.content, third_party


def test_unknown_api_path_answers_in_the_api_error_shape(client):
    response = client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_a_write_to_an_unknown_api_path_is_the_json_404_not_a_csrf_page(method):
    # API clients send no CSRF token; the catch-all answered Django's HTML 403 "CSRF verification failed".
    from django.test import Client

    response = getattr(Client(enforce_csrf_checks=True), method)("/api/v1/no-such-thing/", data="{}",
                                                                 content_type="application/json")

    assert response.status_code == 404
    assert response.json()["error"] == {"code": "not_found", "message": "No such API endpoint. See /api/docs/."}


def test_an_endpoint_asked_without_its_trailing_slash_is_a_404_that_names_the_right_path():
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post("/api/v1/ingest", data='{"events": []}',
                                                     content_type="application/json")

    assert response.status_code == 404
    assert "did you mean /api/v1/ingest/ (with the trailing slash)?" in response.json()["error"]["message"]


@pytest.mark.parametrize("data", [
    {"lines": [{"key": "u_1", "runs": 3, "cost_usd": "1.50"}], "empty": [], "none": None, "yes": True},
    {"key": "café ☕ 😀", "line\u2028sep": "para\u2029sep", "controls": "\x00\x01\x1f\"\\\n\t\r\b\f\x7f"},
    ["\ud7ff", "", 0, -12345678901234567890, {"nested": {"deeper": ["x"]}}],
    {"ellipsis, E2 80 A6 in UTF-8": "wait\u2026", "only the paragraph separator": "\u2029"},
])
def test_json_bytes_are_what_drfs_renderer_gives(data):
    from rest_framework.renderers import JSONRenderer

    from apps.core.api_support import json_bytes

    assert json_bytes(data) == JSONRenderer().render(data)


def test_json_bytes_escape_a_lone_surrogate_that_neither_orjson_nor_drf_can_encode():
    from apps.core.api_support import json_bytes

    assert json_bytes({"id": "resp_\ud800", "ok": "café"}) == b'{"id":"resp_\\ud800","ok":"caf\\u00e9"}'


def test_the_api_writes_utc_whatever_tz_cookie_the_caller_carries(api_client, billing_key, tenant):
    from tests.billing.conftest import at, response
    from tests.conftest import bearer

    run = response(tenant, at(2026, 3, 4, 10), model="gpt-4.1")
    api_client.cookies["tz"] = "Asia/Tokyo"  # the dashboard's viewer timezone, sent along by the Swagger page

    detail = api_client.get(f"/api/v1/runs/{run.openai_id}/", **bearer(billing_key)).json()
    [listed] = api_client.get("/api/v1/runs/", **bearer(billing_key)).json()["results"]

    assert detail["created_at"] == listed["created_at"] == "2026-03-04T10:00:00Z"
