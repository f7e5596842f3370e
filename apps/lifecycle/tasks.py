"""Celery tasks of the lifecycle app: thin wrappers that take ids and call services. Batches re-enqueue
themselves, so a sweep of a million threads is many short tasks, each safe to run twice (acks_late)."""

from __future__ import annotations

import logging
import time

from celery import shared_task
from django.utils import timezone

from apps.core.singleton import singleton, singleton_key, singleton_renew

from . import services
from .models import SweepKind

logger = logging.getLogger(__name__)


@shared_task(name="lifecycle.sweep_batch", acks_late=True, ignore_result=True)
def sweep_batch(sweep_id: int) -> str:
    result = services.sweep_run_batch(sweep_id=sweep_id)
    if result.status == "more":
        sweep_batch.apply_async((sweep_id,))
    elif result.status in ("retry_later", "waiting"):
        # A rate limit, or only items a dead worker claimed are left (offered again when their lease ends).
        sweep_batch.apply_async((sweep_id,), countdown=result.wait_seconds)
    elif result.status == "busy":
        # Another worker holds the sweep or the kind's lock; the reaper picks it up if that worker died.
        logger.info("sweep %s busy; leaving it to its current worker", sweep_id)
    return result.status


@shared_task(name="lifecycle.sweep_start", acks_late=True, ignore_result=True)
def sweep_start(kind: str) -> int | None:
    """The scheduled sweep of one kind over every tenant not on legal hold."""
    if kind not in SweepKind.values:
        logger.error("unknown sweep kind %r", kind)
        return None
    try:
        sweep = services.sweep_create(kind=kind, requested_label="task:sweep_start")
    except services.SweepBusy as exc:
        logger.info("%s", exc)
        return None
    sweep_batch.apply_async((sweep.pk,))
    return sweep.pk


@shared_task(name="lifecycle.sweep_reap", acks_late=True, ignore_result=True)
def sweep_reap() -> list[int]:
    ids = services.sweeps_reap()
    for sweep_id in ids:
        sweep_batch.apply_async((sweep_id,))
    return ids


INVENTORY_LOCK = singleton_key("lifecycle.inventory_sync")
# The sync renews its lock as it goes (each listed object, each page of a store's files, at most every 3
# minutes), so a lock outlives a live sync however long it lists, and a killed worker's lock blocks the hourly
# sync for at most this long (it was 6 hours: longer than any sync, with no renewal).
INVENTORY_LEASE_SECONDS = 30 * 60


def _renewing(*, every: float):
    """singleton_renew, at most once per `every` seconds however often it is called (it costs two cache
    round trips, and the sync calls it for each object it lists)."""
    renewed = time.time()

    def renew() -> None:
        nonlocal renewed
        if time.time() - renewed >= every:
            singleton_renew()
            renewed = time.time()

    return renew


@singleton("lifecycle.inventory_sync", seconds=INVENTORY_LEASE_SECONDS, skipped=False)
def inventory_sync_exclusive(*, progress=None) -> services.InventoryResult | bool:
    """The inventory sync while holding its lock, renewed as it lists; False (nothing done) while another sync
    holds it. The hourly task and `manage.py inventory_sync` both come through here: run side by side, two
    syncs made every listing call twice."""
    return services.inventory_sync(progress=progress, heartbeat=_renewing(every=INVENTORY_LEASE_SECONDS / 10))


@shared_task(name="lifecycle.inventory_sync", acks_late=True, ignore_result=True)
def inventory_sync() -> dict:
    result = inventory_sync_exclusive()
    if result is False:
        return {"skipped": "another inventory sync is running"}
    return {"counts": result.counts, "orphans": result.orphans, "gone": result.gone, "unreachable": result.unreachable,
            "orphan_alerts": {"raised": result.orphan_alerts.raised, "resolved": result.orphan_alerts.resolved}}


@shared_task(name="lifecycle.meter_storage", acks_late=True, ignore_result=True)
def meter_storage() -> int:
    return len(services.storage_meter_scheduled(now=timezone.now()))


@shared_task(name="lifecycle.requires_action_watch", acks_late=True, ignore_result=True)
def requires_action_watch() -> dict:
    return services.runs_requires_action_watch()
