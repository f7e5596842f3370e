"""The whole beat schedule, in one place. Every entry expires at about 1.5x its interval, so a backlog
of missed runs collapses into one instead of piling up duplicate sweeps (PostHog's rule)."""

from celery.schedules import crontab

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def entry(task: str, schedule, interval_seconds: int, **options) -> dict:
    return {"task": task, "schedule": schedule, "options": {"expires": int(interval_seconds * 1.5), **options}}


BEAT_SCHEDULE: dict[str, dict] = {
    # Lifecycle (apps/lifecycle): inventory hourly, sweeps nightly one kind at a time, reaper, metering, watch.
    "lifecycle-inventory-sync": entry("lifecycle.inventory_sync", crontab(minute=7), HOUR),
    "lifecycle-sweep-threads": entry("lifecycle.sweep_start", crontab(hour=2, minute=0), DAY) | {"args": ("threads",)},
    "lifecycle-sweep-vector-stores": entry("lifecycle.sweep_start", crontab(hour=2, minute=30), DAY) | {"args": ("vector_stores",)},
    "lifecycle-sweep-files": entry("lifecycle.sweep_start", crontab(hour=3, minute=0), DAY) | {"args": ("files",)},
    "lifecycle-sweep-containers": entry("lifecycle.sweep_start", crontab(minute=37), HOUR) | {"args": ("containers",)},
    "lifecycle-sweep-reap": entry("lifecycle.sweep_reap", crontab(minute="*/5"), 5 * MINUTE),
    "lifecycle-meter-storage": entry("lifecycle.meter_storage", crontab(hour=23, minute=50), DAY),
    "lifecycle-requires-action-watch": entry("lifecycle.requires_action_watch", crontab(minute="*"), MINUTE),
    # Reconciliation (apps/reconciliation): yesterday and the 7 days before, after storage is metered.
    "reconciliation-daily": entry("reconciliation.reconcile_daily", crontab(hour=4, minute=15), DAY),
    # Days older than that which runs reached late, compared again from the OpenAI figures stored.
    "reconciliation-recompare-late-days": entry("reconciliation.recompare_late_days", crontab(minute=45), HOUR),
    # Ledger collector (apps/ledger): refresh non-terminal runs, then find runs nobody reported.
    "ledger-collect-runs": entry("ledger.collect_runs", crontab(minute="*"), MINUTE),
    "ledger-collect-thread-runs": entry("ledger.collect_thread_runs", crontab(minute="*/15"), 15 * MINUTE),
    # Runs flagged against a tenant's former high-cost threshold, when its re-flag task was never queued.
    "ledger-reflag-high-cost-check": entry("ledger.reflag_high_cost_check", crontab(minute=23), HOUR),
    # End-user rollup rows rewritten tenant by tenant (apps/ledger/compaction.py: each closed period once, the
    # open month and part every night), after the night's sweeps and reconciliation.
    "ledger-compact-rollups": entry("ledger.compact_rollups", crontab(hour=5, minute=0), DAY),
    # Alerts (apps/alerts): the outbox catch-up for alerts raised while the broker was down.
    "alerts-deliver-pending": entry("alerts.deliver_pending", crontab(minute="*/5"), 5 * MINUTE),
    # Alerts past ALERT_RETENTION_DAYS deleted, after the night's compaction.
    "alerts-prune": entry("alerts.prune", crontab(hour=5, minute=30), DAY),
    # Add entries here, e.g.
    # "ledger-collect": entry("ledger.collect_runs", crontab(minute="*/5"), 5 * MINUTE),
}
