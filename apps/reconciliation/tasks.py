"""Celery task: the daily reconciliation (yesterday, re-checking the 7 days before). Thin: the work is in services."""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from django.core.cache import cache

from .services import RECHECK_DAYS, reconciliation_reconcile

logger = logging.getLogger(__name__)

SINGLETON_LOCK = "reconciliation:daily:lock"
SINGLETON_TTL_SECONDS = 2 * 60 * 60


@shared_task(
    name="reconciliation.reconcile_daily", acks_late=True, ignore_result=True,
    autoretry_for=(ConnectionError,), retry_backoff=60, retry_backoff_max=900, max_retries=3,
)
def reconcile_daily(end_day: str | None = None, days: int = RECHECK_DAYS + 1, project_id: str | None = None) -> dict:
    """Re-running is safe (each day is replaced atomically), hence acks_late; a second copy delivered while
    one runs skips instead of doubling the calls to OpenAI."""
    import datetime as dt

    token = uuid.uuid4().hex
    if not cache.add(SINGLETON_LOCK, token, SINGLETON_TTL_SECONDS):
        logger.info("reconciliation already running; skipped")
        return {"skipped": True}
    try:
        outcomes = reconciliation_reconcile(
            end_day=dt.date.fromisoformat(end_day) if end_day else None, days=days, project_id=project_id,
            trigger="task:reconciliation.reconcile_daily",
        )
    finally:
        if cache.get(SINGLETON_LOCK) == token:
            cache.delete(SINGLETON_LOCK)
    summary = {
        outcome.project_id: {"runs": len(outcome.runs), "flagged": sum(r.flagged_count for r in outcome.runs),
                             "error": outcome.error}
        for outcome in outcomes
    }
    failed = [project for project, result in summary.items() if result["error"] and not result.get("skipped")]
    if failed:
        logger.error("reconciliation failed for %s", ", ".join(failed))
    return summary
