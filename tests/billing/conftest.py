"""Fixtures for the billing API tests: runs enter the ledger through the real ingest path, so runs and rollups agree."""

from __future__ import annotations

import datetime as dt

import pytest

from apps.ledger.models import Run
from apps.tenants.models import ApiKey
from apps.tenants.services import api_key_create
from tests import builders


def at(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


def ingest(tenant, *objects, **attribution) -> list[Run]:
    """Ingest raw OpenAI objects for a tenant through ledger.services.ingest_events and return their runs."""
    from apps.ledger.services import ingest_events

    events = [{"tenant": tenant.slug, "object": obj, "attribution": dict(attribution)} for obj in objects]
    result = ingest_events(events=events)
    assert result.rejected == 0, result.as_dict()
    ids = [obj["id"] for obj in objects]
    runs = {run.openai_id: run for run in Run.objects.for_tenant(tenant).filter(openai_id__in=ids)}
    return [runs[openai_id] for openai_id in ids]


def assistants_run(tenant, created_at: dt.datetime, **kwargs) -> Run:
    attribution = kwargs.pop("attribution", {})
    kwargs.setdefault("thread_id", f"thread_{tenant.slug}")
    return ingest(tenant, builders.assistants_run(created_at=created_at, **kwargs), **attribution)[0]


def response(tenant, created_at: dt.datetime, **kwargs) -> Run:
    attribution = kwargs.pop("attribution", {})
    kwargs.setdefault("model", "gpt-4.1")
    return ingest(tenant, builders.response(created_at=created_at, **kwargs), **attribution)[0]


@pytest.fixture
def tenant_admin_key(tenant) -> str:
    return api_key_create(name="acme admin", scope=ApiKey.Scope.ADMIN, tenant=tenant)[1]


@pytest.fixture
def ledger(tenant, other_tenant):
    """Both tenants with runs in January and February 2026 (priced models, tools, attribution)."""
    runs = {
        "acme_jan": [
            assistants_run(tenant, at(2026, 1, 5), model="gpt-5.4", prompt_tokens=12_000, completion_tokens=800,
                           code_interpreter=True, attribution={"user_id": "u1", "feature": "chat"}),
            response(tenant, at(2026, 1, 9), model="gpt-4.1", input_tokens=50_000, cached_tokens=20_000,
                     output_tokens=3_000, reasoning_tokens=1_000, file_search_calls=3, web_search_calls=2,
                     attribution={"user_id": "u2", "feature": "search"}),
            response(tenant, at(2026, 1, 31, 23, 59), model="gpt-4.1", input_tokens=1_000, output_tokens=10,
                     attribution={"user_id": "u1", "feature": "chat"}),
        ],
        "acme_feb": [
            assistants_run(tenant, at(2026, 2, 1, 0, 0), model="gpt-5.4", prompt_tokens=2_000, completion_tokens=100,
                           attribution={"user_id": "u3"}),
        ],
        "globex_jan": [
            assistants_run(other_tenant, at(2026, 1, 7), model="gpt-5.4", prompt_tokens=99_000, completion_tokens=9_000,
                           attribution={"user_id": "globex-user", "feature": "globex-feature"}),
            response(other_tenant, at(2026, 2, 2), model="gpt-4.1", input_tokens=7_000, output_tokens=700,
                     attribution={"user_id": "globex-user", "feature": "globex-feature"}),
        ],
    }
    return runs
