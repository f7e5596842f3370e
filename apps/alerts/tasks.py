"""Alert delivery as Celery tasks (the requires_action watch is lifecycle.requires_action_watch), the periodic
catch-up that empties the outbox when the broker was down at raise time, and the nightly retention pass."""

from __future__ import annotations

import logging

from celery import shared_task

from apps.core.singleton import singleton, singleton_renew

from .models import Alert
from .services import DeliveryError, alert_deliver, alerts_deliver_pending, alerts_prune

logger = logging.getLogger(__name__)

MAX_DELIVERY_RETRIES = 8
PRUNE_AGAIN_AFTER_SECONDS = 30


@shared_task(name="alerts.deliver_batch", acks_late=True, ignore_result=True)
def deliver_alerts(alert_ids: list[int]) -> None:
    """Deliver freshly raised alerts; any that fail go to a retrying per-alert task."""
    for alert in Alert.unscoped_objects.filter(pk__in=alert_ids).select_related("tenant"):
        try:
            alert_deliver(alert=alert)
        except DeliveryError as exc:
            logger.warning("alert %s: %s; retrying", alert.pk, exc)
            try:
                deliver_alert.apply_async(args=[alert.pk], countdown=30)
            except Exception as retry_exc:  # an eager run that exhausted its retries; the next raise retries
                logger.warning("alert %s: delivery gave up for now (%s)", alert.pk, retry_exc)


@shared_task(bind=True, name="alerts.deliver", acks_late=True, ignore_result=True, max_retries=MAX_DELIVERY_RETRIES)
def deliver_alert(self, alert_id: int) -> None:
    alert = Alert.unscoped_objects.select_related("tenant").filter(pk=alert_id).first()
    if alert is None:
        logger.info("alert %s no longer exists", alert_id)
        return
    try:
        alert_deliver(alert=alert)
    except DeliveryError as exc:
        # 30 s, 1 min, 2 min ... capped at 1 h.
        raise self.retry(exc=exc, countdown=min(3600, 30 * 2**self.request.retries)) from exc


@shared_task(name="alerts.deliver_pending", acks_late=True, ignore_result=True)
def deliver_pending(limit: int = 500) -> dict:
    """Beat: deliver alerts whose delivery was never queued (broker down) or whose retries ran out."""
    result = alerts_deliver_pending(limit=limit)
    if result.delivered or result.failed:
        logger.info("alerts catch-up: %s", result.as_dict())
    if result.delivered >= limit:
        # A full batch went out: more is probably waiting (a long outage); continue in a fresh task.
        deliver_pending.apply_async((limit,))
    return result.as_dict()


@shared_task(name="alerts.prune", acks_late=True, ignore_result=True)
@singleton("alerts.prune")
def prune_alerts() -> dict:
    """Nightly: delete the alerts past ALERT_RETENTION_DAYS (services.alerts_prune). A pass that stopped at its
    bound (a first run over years of alerts) goes on in a fresh task, after this one has let go of its lock."""
    result = alerts_prune(progress=lambda deleted: singleton_renew())
    if result.total:
        logger.info("alerts pruned: %s", result.as_dict())
    if not result.complete:
        # On a worker it starts once this copy has let go of the lock. Run eagerly (tests, CELERY_TASK_ALWAYS_EAGER)
        # it would run at once, inside this copy, and be skipped: the next night goes on instead.
        prune_alerts.apply_async(countdown=PRUNE_AGAIN_AFTER_SECONDS)
    return result.as_dict()
