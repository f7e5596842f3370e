"""Collector tasks: bring non-terminal runs up to date through the provider, and find runs of recorded
Assistants threads that nobody reported. Bounded batches, singleton per task, idempotent (ingest is)."""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from django.utils import timezone

from apps.core.singleton import singleton, singleton_renew

from .collector import collect_runs_refresh, collect_thread_runs

logger = logging.getLogger(__name__)


@shared_task(name="ledger.collect_runs", acks_late=True, ignore_result=True)
@singleton("ledger.collect_runs")
def collect_runs(limit: int = 500) -> dict:
    """Refresh up to `limit` non-terminal runs (oldest check first) until OpenAI reports them terminal."""
    # Renewed run by run: the lock (10 minutes) outlived only fast passes, so while OpenAI timed out (each run
    # up to ~390 s with retries) beat's next copy took the lapsed lock and re-asked the same runs, minute after
    # minute, until every worker slot was a collector.
    return collect_runs_refresh(limit=limit, heartbeat=singleton_renew).as_dict()


@shared_task(name="ledger.collect_thread_runs", acks_late=True, ignore_result=True)
@singleton("ledger.collect_thread_runs")
def collect_thread_runs_task(threads: int = 200, active_days: int = 7) -> dict:
    """List the runs of up to `threads` recently active Assistants threads to record unreported runs."""
    return collect_thread_runs(limit=threads, active_since=timezone.now() - dt.timedelta(days=active_days),
                               heartbeat=singleton_renew).as_dict()


@shared_task(name="ledger.reflag_high_cost", acks_late=True, ignore_result=True)
def reflag_high_cost_task(tenant_id: int) -> dict:
    """A tenant's high-cost threshold changed: re-flag its recorded runs (flags and rollup counts only)."""
    from .services import runs_reflag_high_cost

    return {"tenant_id": tenant_id, "changed_runs": runs_reflag_high_cost(tenant_id=tenant_id)}


@shared_task(name="ledger.reflag_high_cost_check", acks_late=True, ignore_result=True)
@singleton("ledger.reflag_high_cost_check")
def reflag_high_cost_check() -> dict:
    """Hourly catch-up: re-flag any tenant whose runs' flags disagree with its threshold (a change whose task
    was never queued because the broker was down, or was lost). One indexed query per tenant when nothing
    disagrees."""
    from apps.tenants.models import Tenant

    from .services import runs_reflag_high_cost

    changed = {}
    for tenant_id in Tenant.objects.order_by("pk").values_list("pk", flat=True).iterator():
        count = runs_reflag_high_cost(tenant_id=tenant_id)
        if count:
            changed[tenant_id] = count
    if changed:
        logger.warning("re-flagged high-cost runs the threshold change had not reached: %s", changed)
    return {"changed": changed}


@shared_task(name="ledger.compact_rollups", acks_late=True, ignore_result=True)
@singleton("ledger.compact_rollups")
def compact_rollups() -> dict:
    """Nightly: put each period's end-user rollup rows tenant by tenant (apps/ledger/compaction.py)."""
    from .compaction import rollups_compact

    return rollups_compact(progress=lambda *_: singleton_renew()).as_dict()
