"""The whole beat schedule, in one place. Every entry expires at about 1.5x its interval, so a backlog
of missed runs collapses into one instead of piling up duplicate sweeps (PostHog's rule)."""

from celery.schedules import crontab

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def entry(task: str, schedule, interval_seconds: int, **options) -> dict:
    return {"task": task, "schedule": schedule, "options": {"expires": int(interval_seconds * 1.5), **options}}


BEAT_SCHEDULE: dict[str, dict] = {
    # Add entries here, e.g.
    # "ledger-collect": entry("ledger.collect_runs", crontab(minute="*/5"), 5 * MINUTE),
}
