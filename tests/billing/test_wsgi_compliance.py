"""Answers as a strict WSGI server sees them. The test client hands header values over as Python objects, but
wsgiref (runserver, which `make run` starts) refuses any header value that is not exactly `str`: a model
choice (a `str` subclass) there turned every open statement into a 500. These requests go through
wsgiref's own validator instead of the test client."""

from __future__ import annotations

import io
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest
from django.core.wsgi import get_wsgi_application

pytestmark = pytest.mark.django_db(transaction=True)


def _serve(method: str, path: str, key: str, body: bytes = b"", query: str = "") -> tuple[str, dict[str, str], bytes]:
    """One request through the WSGI app wrapped in wsgiref.validate (it raises on any breach of PEP 3333)."""
    environ: dict = {}
    setup_testing_defaults(environ)
    environ.update({"REQUEST_METHOD": method, "PATH_INFO": path, "HTTP_AUTHORIZATION": f"Bearer {key}",
                    "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
                    "wsgi.input": io.BytesIO(body), "QUERY_STRING": query, "SERVER_NAME": "testserver",
                    "HTTP_HOST": "testserver"})
    answered: dict = {}

    def start_response(status, headers, exc_info=None):
        answered["status"], answered["headers"] = status, dict(headers)
        return lambda data: None

    result = validator(get_wsgi_application())(environ, start_response)
    try:
        content = b"".join(result)
    finally:
        result.close()
    return answered["status"], answered["headers"], content


@pytest.mark.parametrize("suffix", ["/", ".csv"])
def test_an_open_statement_is_served_to_a_strict_wsgi_server(billing_key, tenant, ledger, suffix):
    status, headers, _ = _serve("GET", f"/api/v1/tenants/{tenant.slug}/statements/2026-02{suffix}", billing_key)

    assert (status, headers["X-Statement-Status"]) == ("200 OK", "open")


def test_closing_a_statement_is_answered_to_a_strict_wsgi_server(admin_key, tenant, ledger):
    status, headers, _ = _serve("POST", f"/api/v1/tenants/{tenant.slug}/statements/2026-01/close", admin_key,
                                b'{"allow_unpriced": true}')

    assert (status, headers["X-Statement-Status"], headers["X-Closed-Now"]) == ("200 OK", "closed", "true")


@pytest.mark.parametrize("path", ["/api/v1/tenants/", "/api/v1/runs/", "/api/v1/prices/",
                                  "/api/v1/tenants/{slug}/usage/?group_by=user&start=2026-01-01"])
def test_reads_are_served_to_a_strict_wsgi_server(billing_key, tenant, ledger, path):
    path, _, query = path.format(slug=tenant.slug).partition("?")

    status, _, _ = _serve("GET", path, billing_key, query=query)

    assert status == "200 OK"
