"""Retention cutoffs and deletion dates (moment_shifted): a tenant policy beyond the calendar (saved before
the tenants app bounded it) clamps to the earliest or latest moment instead of raising OverflowError, so that
tenant has nothing swept while the sweep over every other tenant goes on, and its threads page still shows."""

from __future__ import annotations

import datetime as dt

import pytest

from apps.core.timeutils import EARLIEST_MOMENT, LATEST_MOMENT, moment_shifted
from apps.ledger.models import Thread
from apps.ledger.selectors import thread_retention_status
from apps.lifecycle import services
from apps.lifecycle.models import Outcome, SweepItem, VectorStore
from apps.tenants.models import Tenant
from tests import builders

from .fakes import FakeProvider

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
# Back from 2026: past year 1 (the reviewer's value); past year 1 and 9999 both ways; past what a timedelta holds.
# The last is the most a PostgreSQL integer column holds, and more days than a timedelta can.
BEYOND_CALENDAR = (1_000_000, 3_000_000, 2_147_483_647)


def _policy(tenant, days: int) -> None:
    # A queryset update: the stored value predates the model's validators.
    Tenant.objects.filter(pk=tenant.pk).update(thread_retention_days=days, vector_store_idle_days=days)


def _thread(tenant, provider, openai_id: str, days_idle: int) -> Thread:
    last = NOW - dt.timedelta(days=days_idle)
    provider.add_thread(openai_id, last)
    return Thread.objects.create(tenant=tenant, openai_id=openai_id, kind="thread", created_at=last,
                                 last_activity_at=last)


def _store(tenant, provider, openai_id: str, days_idle: int) -> None:
    last = NOW - dt.timedelta(days=days_idle)
    obj = builders.vector_store(vector_store_id=openai_id, created_at=last, last_active_at=last)
    services.resources_record(tenant=tenant, obj=obj)
    provider.vector_stores[openai_id] = obj


@pytest.mark.parametrize("days", BEYOND_CALENDAR[1:])
def test_cutoffs_beyond_the_calendar_clamp_to_the_earliest_and_latest_moments(days):
    assert moment_shifted(NOW, days=-days) == EARLIEST_MOMENT
    assert moment_shifted(NOW, days=days) == LATEST_MOMENT
    assert moment_shifted(NOW, minutes=-days * 1440) == EARLIEST_MOMENT
    assert moment_shifted(NOW, days=-30) == NOW - dt.timedelta(days=30)


@pytest.mark.parametrize("days", BEYOND_CALENDAR)
def test_one_tenants_huge_retention_sweeps_nothing_of_it_and_every_other_tenant_as_usual(tenant, other_tenant,
                                                                                          days):
    provider = FakeProvider()
    _policy(tenant, days)
    _policy(other_tenant, 30)
    _thread(tenant, provider, "thread_acme_ancient", days_idle=4000)
    _thread(other_tenant, provider, "thread_globex_old", days_idle=31)
    _store(tenant, provider, "vs_acme_ancient", days_idle=4000)
    _store(other_tenant, provider, "vs_globex_old", days_idle=31)
    for kind in ("threads", "vector_stores"):
        sweep = services.sweep_create(kind=kind, as_of=NOW)
        assert services.sweep_run_to_completion(sweep_id=sweep.pk, provider=provider).status == "finished"
    assert provider.deletes == ["thread_globex_old", "vs_globex_old"]
    assert VectorStore.objects.unscoped().get(openai_id="vs_acme_ancient").status == "active"


def test_a_retention_raised_beyond_the_calendar_after_planning_keeps_the_thread(tenant):
    provider = FakeProvider()
    _policy(tenant, 30)
    _thread(tenant, provider, "thread_old", days_idle=45)
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    services._plan_step(sweep)
    _policy(tenant, 1_000_000)  # the re-check right before the delete reads the tenant's policy again
    services.sweep_run_to_completion(sweep_id=sweep.pk, provider=provider)
    assert provider.deletes == []
    assert SweepItem.objects.unscoped().get(sweep=sweep).outcome == Outcome.SKIPPED_ACTIVE


@pytest.mark.parametrize("days", BEYOND_CALENDAR)
def test_a_threads_deletion_date_beyond_the_calendar_reads_ok(tenant, days):
    thread = _thread(tenant, FakeProvider(), "thread_acme", days_idle=1)
    status = thread_retention_status(thread, retention_days=days, legal_hold=False, now=NOW)
    assert status["state"] == "ok" and status["deletes_at"].year > 4000 and status["days_left"] > 900_000
