"""Celery tasks: the daily reconciliation (yesterday, re-checking the 7 days before), the comparison of re-rated
days and of days that runs reached late. Thin: the work is in services."""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task

from .services import (
    RECHECK_DAYS,
    default_end_day,
    lock_ttl_seconds,
    recompare_later,
    reconciliation_failure_alert,
    reconciliation_lock_owner,
    reconciliation_recompare,
    reconciliation_recompare_late,
    reconciliation_reconcile,
)

logger = logging.getLogger(__name__)

# How often a redelivered copy waits for its dead predecessor's lock to lapse before giving up.
LOCKED_RETRIES = 10
# A project whose reconciliation failed (OpenAI down, a bad key) is tried again this many times, 15, 30 and
# 45 minutes later, rather than waiting for tomorrow's 7-day re-check. Each wait stays under the Redis
# broker's visibility timeout (an hour), past which a scheduled task is handed to a second worker.
FAILED_RETRIES = 3
FAILED_RETRY_MINUTES = 15


@shared_task(bind=True, name="reconciliation.reconcile_daily", acks_late=True, ignore_result=True)
def reconcile_daily(self, end_day: str | None = None, days: int = RECHECK_DAYS + 1,
                    project_id: str | None = None, attempt: int = 0) -> dict:
    """Re-running is safe (each day is replaced atomically), hence acks_late. Each project is reconciled
    under a lock that records this task's id: a copy delivered while another run holds a project skips it
    instead of doubling the calls to OpenAI, but a redelivered copy of this very task (its worker was killed
    holding the lock) retries once the dead lock has lapsed instead of skipping."""
    end = dt.date.fromisoformat(end_day) if end_day else default_end_day()
    task_id = self.request.id or ""
    outcomes = reconciliation_reconcile(end_day=end, days=days, project_id=project_id,
                                        trigger="task:reconciliation.reconcile_daily", lock_owner=task_id)
    summary = {
        outcome.project_id: {"runs": len(outcome.runs), "flagged": sum(r.flagged_count for r in outcome.runs),
                             "error": outcome.error, "skipped": outcome.skipped}
        for outcome in outcomes
    }
    failed = [project for project, result in summary.items() if result["error"] and not result["skipped"]]
    if failed:
        logger.error("reconciliation failed for %s", ", ".join(failed))
        if attempt < FAILED_RETRIES:
            for project in failed:  # only the failed ones: the others' days are stored already
                reconcile_daily.apply_async(
                    kwargs={"end_day": end.isoformat(), "days": days, "project_id": project, "attempt": attempt + 1},
                    countdown=FAILED_RETRY_MINUTES * 60 * (attempt + 1))
        else:  # retries spent: someone has to look
            for project in failed:
                reconciliation_failure_alert(project_id=project, end_day=end, days=days,
                                             error=summary[project]["error"])
    ours = [outcome.project_id for outcome in outcomes if outcome.skipped and task_id
            and reconciliation_lock_owner(project_id=outcome.project_id) in (task_id, None)]
    if ours:
        logger.warning("reconciliation of %s is locked by an earlier delivery of this task (its worker died); "
                       "retrying when that lock lapses", ", ".join(ours))
        # The same days again (a retry after midnight must not move them), only for the locked projects.
        raise self.retry(args=(), kwargs={"end_day": end.isoformat(), "days": days,
                                 "project_id": ours[0] if len(ours) == 1 else project_id, "attempt": attempt},
                         countdown=lock_ttl_seconds() + 1, max_retries=LOCKED_RETRIES)
    return summary


@shared_task(bind=True, name="reconciliation.recompare_days", acks_late=True, ignore_result=True)
def recompare_days(self, changed_days: dict[str, list[str]], attempt: int = 0) -> dict:
    """Re-rated days (queued by reconciliation_after_repricing once the re-rating committed): compare them
    again from the OpenAI figures stored, retrying while another reconciliation holds a project.
    Safe to repeat: each day's result is replaced atomically."""
    days = {project: {dt.date.fromisoformat(day) for day in listed} for project, listed in changed_days.items()}
    outcome = reconciliation_recompare(changed_days=days, lock_owner=self.request.id or "")
    if outcome.locked:
        if attempt >= LOCKED_RETRIES:
            logger.error("re-rated days of %s still locked after %d tries; run `manage.py reconcile` for %s",
                         ", ".join(outcome.locked), attempt, outcome.locked)
        elif not recompare_later(outcome.locked, countdown=lock_ttl_seconds() + 1, attempt=attempt + 1):
            logger.error("re-rated days %s could not be queued again; run `manage.py reconcile` for them",
                         outcome.locked)
    return {"recompared": len(outcome.runs), "locked": sorted(outcome.locked)}


@shared_task(bind=True, name="reconciliation.recompare_late_days", acks_late=True, ignore_result=True)
def recompare_late_days(self) -> dict:
    """Hourly: the days runs reached after the daily run stopped re-checking them (marked by ingest) are
    compared again from the OpenAI figures stored. Safe to repeat: a mark goes only once its day is done, and
    a day's result is replaced atomically. Days a running reconciliation holds wait for the next pass."""
    outcome = reconciliation_recompare_late(lock_owner=self.request.id or "")
    if outcome.locked:
        logger.info("days reached by late runs of %s are held by another reconciliation; the next hourly pass "
                    "compares them", ", ".join(outcome.locked))
    return {"recompared": len(outcome.runs), "locked": sorted(outcome.locked), "failed": sorted(outcome.failed)}
