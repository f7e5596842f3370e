"""Fault injection (from Python, over HTTP and from the command line form), the SDK's own retry
honouring the sandbox's Retry-After, and the /_sandbox control endpoints."""

from __future__ import annotations

import json
import time
import urllib.request
import warnings

import openai
import pytest

from apps.sandbox.faults import FaultRule

warnings.filterwarnings("ignore", category=DeprecationWarning)


def control(sandbox, method: str, route: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{sandbox.url}/_sandbox/{route}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200
        return json.loads(answer.read())


def test_sdk_retry_waits_the_retry_after_the_sandbox_sends(sandbox):
    client = openai.OpenAI(base_url=sandbox.base_url, api_key=sandbox.api_key, max_retries=2,
                           _strict_response_validation=True)
    sandbox.faults.rate_limit(path=r"^/v1/vector_stores$", times=2, retry_after=0.4)
    started = time.monotonic()
    assert client.vector_stores.list().data == []
    elapsed = time.monotonic() - started
    assert 0.8 <= elapsed < 3.0  # two waits of exactly Retry-After, not the SDK's default backoff
    assert sandbox.faults.rules[0].fired == 2


def test_sdk_does_not_retry_when_retry_after_exceeds_its_limit(sandbox):
    client = openai.OpenAI(base_url=sandbox.base_url, api_key=sandbox.api_key, max_retries=2)
    sandbox.faults.rate_limit(path=r"^/v1/files", times=None, retry_after=300)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as raised:
        client.files.list()
    assert time.monotonic() - started < 1.0
    assert raised.value.response.headers["retry-after"] == "300"
    assert raised.value.code == "rate_limit_exceeded"


def test_server_error_and_injected_404_look_like_openai(sandbox, openai_client):
    thread = openai_client.beta.threads.create()
    sandbox.faults.server_error(path=r"^/v1/threads/", times=1, status=503)
    with pytest.raises(openai.InternalServerError) as raised:
        openai_client.beta.threads.retrieve(thread.id)
    assert raised.value.status_code == 503
    sandbox.faults.not_found(path=r"^/v1/threads/", times=1)
    with pytest.raises(openai.NotFoundError, match=f"No thread found with id '{thread.id}'."):
        openai_client.beta.threads.retrieve(thread.id)
    assert openai_client.beta.threads.retrieve(thread.id).id == thread.id  # each rule fired once, then gone


def test_latency_is_added(sandbox, openai_client):
    sandbox.faults.latency(latency_ms=300, path=r"^/v1/files")
    started = time.monotonic()
    openai_client.files.list()
    assert time.monotonic() - started >= 0.3


def test_fraction_fires_on_part_of_the_traffic(sandbox):
    client = openai.OpenAI(base_url=sandbox.base_url, api_key=sandbox.api_key, max_retries=0)
    sandbox.faults.server_error(path=r"^/v1/files", times=None, fraction=0.5)
    failures = 0
    for _ in range(40):
        try:
            client.files.list()
        except openai.InternalServerError:
            failures += 1
    assert 8 <= failures <= 32


def test_fault_rules_parse_from_the_command_line_form():
    rule = FaultRule.parse("rate_limit:path=^/v1/threads:times=3:retry_after=1.5")
    assert (rule.kind, rule.path, rule.times, rule.retry_after, rule.status) == ("rate_limit", "^/v1/threads", 3, 1.5, 429)
    assert FaultRule.parse("server_error:fraction=0.1:status=502").status == 502
    with pytest.raises(ValueError):
        FaultRule.parse("explode:times=1")
    with pytest.raises(ValueError):
        FaultRule.parse("latency:colour=red")


def test_control_endpoints_over_http(sandbox, openai_client):
    assert control(sandbox, "GET", "health")["status"] == "ok"
    clock = control(sandbox, "GET", "clock")
    assert clock["frozen"] is True
    assert control(sandbox, "POST", "clock", {"advance": 60})["now"] == clock["now"] + 60
    assert control(sandbox, "POST", "clock", {"set": "2026-11-01T00:00:00Z"})["iso"].startswith("2026-11-01T00:00:00")
    added = control(sandbox, "POST", "faults", {"spec": "rate_limit:path=^/v1/files:times=1:retry_after=0"})
    assert added["kind"] == "rate_limit"
    with pytest.raises(openai.RateLimitError):
        openai_client.files.list()
    assert control(sandbox, "DELETE", "faults")["faults"] == []
    drift = control(sandbox, "POST", "drift", {"day": "2026-10-31", "amount_usd": "3.50", "unattributed": True})
    assert drift["amount_usd"] == "3.50"
    summary = control(sandbox, "POST", "scenario", {"tenants": 2, "days": 3, "seed": 5})
    assert summary["tenants"] == 2 and len(summary["tenant_list"]) == 2
    export = control(sandbox, "GET", "export")
    assert {row["slug"] for row in export["tenants"]} == {row["slug"] for row in summary["tenant_list"]}
    assert export["runs"] or export["responses"]
    assert control(sandbox, "POST", "reset", {})["reset"] is True
    assert control(sandbox, "GET", "export")["responses"] == []
