"""Raising alerts (once per cause) and delivering them by email and an HMAC-signed webhook."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import http.client
import json
import logging
import operator
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.core.mail import send_mail
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from apps.core.money import ZERO, money_text
from apps.core.services import audit_record, audit_record_many

from .models import Alert

logger = logging.getLogger(__name__)

BUDGET_THRESHOLDS = (50, 80, 100)
SIGNATURE_HEADER = "X-RunLedger-Signature"
WEBHOOK_TIMEOUT_SECONDS = 10
REQUIRES_ACTION_EXPIRY = dt.timedelta(minutes=10)


@dataclass
class AlertSpec:
    kind: str
    cause_key: str
    title: str
    tenant_id: int | None = None
    message: str = ""
    severity: str = Alert.Severity.WARNING
    data: dict = field(default_factory=dict)


def _json_safe(data: dict | None) -> dict:
    return json.loads(json.dumps(data or {}, cls=DjangoJSONEncoder))


def alerts_raise_many(specs: Iterable[AlertSpec]) -> list[Alert]:
    """Insert alerts whose cause is new (one statement); returns only the ones created, and queues
    their delivery after the surrounding transaction commits."""
    ids = _alerts_insert(specs)
    return list(Alert.unscoped_objects.filter(pk__in=ids).order_by("pk")) if ids else []


def _raised_causes(cause_keys: list[str]) -> dict[str, bool]:
    """The cause keys among these that an alert has been raised for (any tenant: a cause is raised once), each
    with whether that alert is resolved."""
    from apps.ledger import bulk

    if bulk.is_postgres():  # one array parameter instead of a placeholder per key (see bulk.select_by_key)
        rows = bulk.select_by_key(Alert._meta.db_table, ["cause_key", "resolved_at"], "cause_key", cause_keys)
        return {row["cause_key"]: row["resolved_at"] is not None for row in rows}
    return {key: resolved is not None for key, resolved in
            Alert.unscoped_objects.filter(cause_key__in=cause_keys).values_list("cause_key", "resolved_at")}


def _reopen(specs: dict[str, AlertSpec]) -> set[str]:
    """Alerts resolved once whose cause is back (the model unpriced again, the line drifting again, the run
    waiting on tool outputs again): opened again with what the cause says now, unacknowledged, and delivered
    again, as news (Sentry's regressions work this way). `times_reopened` tells a receiver that dedupes by id
    that this is a new opening, not a retry. Audited; returns the cause keys it opened again."""
    reopened = dict(Alert.unscoped_objects.filter(cause_key__in=list(specs), resolved_at__isnull=False)
                    .values_list("cause_key", "pk"))
    if not reopened:
        return set()
    now = timezone.now()
    ids, causes = [], []
    for cause_key, pk in sorted(reopened.items()):  # a few per batch at most: each cause was resolved first
        spec = specs[cause_key]
        # Conditional: of two batches reopening one cause at once, the second finds it open and does nothing.
        if Alert.unscoped_objects.filter(pk=pk, resolved_at__isnull=False).update(
                resolved_at=None, resolution="", acknowledged_at=None, opened_at=now,
                times_reopened=F("times_reopened") + 1, severity=spec.severity, title=spec.title[:300],
                message=spec.message, data=_json_safe(spec.data),
                # Delivery starts over for this opening: every channel gets it, and the catch-up's backoff and
                # age count from now.
                emailed_at=None, webhook_delivered_at=None, delivery_attempts=0):
            ids.append(pk)
            causes.append(cause_key)
    if ids:
        audit_record(action="alert.reopen", target_type="alert", target_id=_ids_text(ids),
                     actor_label="service:alerts", data={"alerts": ids, "causes": causes})
        _queue_delivery(ids)
    return set(causes)


# One "acknowledge all" takes at most this many alerts (the page says how many are left for the next click).
ACKNOWLEDGE_AT_MOST = 5000


def alerts_awaiting_acknowledgement(alerts: QuerySet) -> QuerySet:
    """The alerts among `alerts` that someone may still acknowledge: open, and nobody acknowledged them yet."""
    return alerts.filter(acknowledged_at__isnull=True, resolved_at__isnull=True)


def alerts_acknowledge(*, alerts, actor, audit_action: str = "alert.acknowledge",
                       limit: int | None = ACKNOWLEDGE_AT_MOST) -> list[int]:
    """Mark the open, unacknowledged alerts among `alerts` (a queryset; at most `limit`, the latest opened first,
    as the pages list them) as seen by `actor`, until their cause comes back (a reopened alert is unacknowledged
    again). A resolved alert needs no one's attention and is left as it is. One audit record per alert, in the
    same transaction: who silenced which, when. Returns the ids acknowledged now (not those someone else was
    first to)."""
    now = timezone.now()
    with transaction.atomic():
        candidates = dict(alerts_awaiting_acknowledgement(alerts).order_by("-opened_at", "-pk")
                          .values_list("pk", "tenant_id")[:limit])
        if not candidates:
            return []
        # Conditional, and read back by its timestamp: of two people acknowledging at once, each alert is
        # recorded once.
        Alert.unscoped_objects.filter(pk__in=list(candidates), acknowledged_at__isnull=True).update(
            acknowledged_at=now)
        acknowledged = sorted(Alert.unscoped_objects.filter(pk__in=list(candidates), acknowledged_at=now)
                              .values_list("pk", flat=True))
        audit_record_many(action=audit_action, target_type="alert", actor=actor,
                          targets=[(pk, candidates[pk]) for pk in acknowledged],
                          data={"after": {"acknowledged_at": str(now)}})
    return acknowledged


def _ids_text(ids: list[int]) -> str:
    return ",".join(str(pk) for pk in ids)[:100]


def alerts_resolve(*, alerts, reason: str) -> list[int]:
    """Resolve the open alerts among `alerts` (a queryset of the manager that sees them all): their cause went
    away. Kept as history with when and why; one audit record. Returns their ids."""
    ids = list(alerts.filter(resolved_at__isnull=True).values_list("pk", flat=True))
    if not ids:
        return []
    Alert.unscoped_objects.filter(pk__in=ids, resolved_at__isnull=True).update(
        resolved_at=timezone.now(), resolution=reason[:300])
    audit_record(action="alert.resolve", target_type="alert", target_id=_ids_text(ids),
                 actor_label="service:alerts", data={"alerts": ids, "reason": reason})
    return ids


def _alerts_insert(specs: Iterable[AlertSpec]) -> list[int]:
    """alerts_raise_many without reading the new rows back (ingest only needs them stored and queued)."""
    from apps.ledger import bulk

    unique: dict[str, AlertSpec] = {}
    for spec in specs:
        unique.setdefault(spec.cause_key[:255], spec)
    if not unique:
        return []
    # Most causes in a busy ingest stream have fired already (the same unpriced model batch after batch):
    # one indexed read drops them, so the insert (and its staging) only runs for causes that are new.
    raised = _raised_causes(list(unique))
    handled = {key for key, resolved in raised.items() if not resolved}  # open: the cause has fired already
    if len(handled) < len(raised):
        # A resolved alert that is not opened again here was deleted meanwhile (retention, alerts_prune): its
        # cause is raised as a new alert below. One another batch opened first is open: the insert skips it.
        handled |= _reopen({key: unique[key] for key, resolved in raised.items() if resolved})
    for key in handled:
        del unique[key]
    if not unique:
        return []
    now = timezone.now()
    names = ["tenant_id", "kind", "severity", "cause_key", "title", "message", "data", "created_at", "opened_at",
             "delivery_attempts"]
    rows = [
        [spec.tenant_id, spec.kind, spec.severity, key, spec.title[:300], spec.message, _json_safe(spec.data), now,
         now, 0]
        for key, spec in sorted(unique.items())
    ]
    returned = bulk.insert_returning(
        Alert._meta.db_table, bulk.columns_for(Alert, names), rows, conflict=["cause_key"], returning=["id"]
    )
    ids = sorted(row[0] for row in returned)
    if ids:
        _queue_delivery(ids)
    return ids


def alert_raise(*, kind: str, cause_key: str, tenant=None, title: str, message: str = "",
                severity: str = Alert.Severity.WARNING, data: dict | None = None) -> Alert | None:
    """Raise an alert once per cause; None when this cause has already raised one."""
    created = alerts_raise_many([AlertSpec(
        kind=kind, cause_key=cause_key, title=title, message=message, severity=severity, data=data or {},
        tenant_id=getattr(tenant, "pk", tenant),
    )])
    return created[0] if created else None


def delivery_configured() -> bool:
    return bool(settings.ALERT_EMAILS or settings.ALERT_WEBHOOK_URL)


def _queue_delivery(alert_ids: list[int]) -> None:
    """The Alert rows are the outbox: they commit with the change that caused them, with null delivery
    timestamps. Enqueueing is only a shortcut to deliver them at once; if the broker is down the request
    that raised them still succeeds, and `alerts.deliver_pending` (beat) delivers them later."""
    if not delivery_configured():
        return
    transaction.on_commit(lambda: alerts_enqueue_delivery(alert_ids=alert_ids))


# After a failed enqueue, this process leaves the broker alone for a while: requests must not each pay a
# connect timeout while it is down (the outbox catch-up delivers what is raised meanwhile).
BROKER_BACKOFF_SECONDS = 10.0
_broker_down_until = 0.0


def alerts_enqueue_delivery(*, alert_ids: list[int]) -> bool:
    """Hand alerts to a worker; False (logged, never raised) when the broker cannot take them now."""
    global _broker_down_until
    import time

    from config.celery import app

    from .tasks import deliver_alerts

    if time.monotonic() < _broker_down_until:
        logger.info("alerts %s left in the outbox: broker marked down", alert_ids[:20])
        return False
    if app.conf.task_always_eager:
        deliver_alerts.apply_async((alert_ids,))
        return True
    try:
        # One connection attempt and no publish retries (Celery's defaults retry for seconds): the caller
        # is an ingest request, and it must not wait on a broker that is down.
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
            deliver_alerts.apply_async((alert_ids,), connection=connection, retry=False)
    except Exception as exc:  # noqa: BLE001 - kombu/redis/socket errors alike; the outbox keeps the alerts
        _broker_down_until = time.monotonic() + BROKER_BACKOFF_SECONDS
        logger.warning("alerts %s not queued (%s: %s); alerts.deliver_pending will deliver them",
                       alert_ids[:20], type(exc).__name__, exc)
        return False
    _broker_down_until = 0.0
    return True


# --- delivery -------------------------------------------------------------------------------------


def alert_payload(alert: Alert) -> dict:
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "severity": alert.severity,
        "cause_key": alert.cause_key,
        "tenant": alert.tenant.slug if alert.tenant_id else None,
        "title": alert.title,
        "message": alert.message,
        "data": alert.data,
        "created_at": alert.created_at.isoformat(),
        # Later than created_at when its cause came back after it was resolved: a new opening, delivered again.
        "opened_at": alert.opened_at.isoformat(),
        "times_reopened": alert.times_reopened,
    }


def _reopened_text(alert: Alert) -> str:
    return "Reopened: " if alert.times_reopened else ""


def _reopened_line(alert: Alert) -> str:
    if not alert.times_reopened:
        return ""
    times = "once" if alert.times_reopened == 1 else f"{alert.times_reopened} times"
    return (f"first raised {alert.created_at:%Y-%m-%d %H:%M} UTC; its cause came back after it was resolved "
            f"({times} so far)\n")


def webhook_signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class DeliveryError(RuntimeError):
    pass


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib follows a 301/302/303 answer to a POST with a GET without the body: a receiver that redirected
    # (http to https, a moved endpoint) never got the alert, yet the GET's 200 recorded it delivered. A redirect
    # is a failed delivery (HTTPError below) until ALERT_WEBHOOK_URL names where the receiver really is.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_webhook_opener = urllib.request.build_opener(_NoRedirect)


def _post_webhook(url: str, body: bytes, signature: str) -> None:
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature, "User-Agent": "RunLedger-Alerts/1"},
    )
    try:
        with _webhook_opener.open(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            if not 200 <= response.status < 300:
                raise DeliveryError(f"webhook answered {response.status}")
    # http.client's errors (a garbled or truncated answer) are not OSErrors: without them the catch-up stopped at
    # the first alert, on every run, and the outbox behind it was never delivered.
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"webhook failed: {type(exc).__name__}: {exc}") from exc


def _record_delivery(alert: Alert, **delivered_at) -> None:
    # For the opening this deliverer sent: had the alert been resolved and reopened meanwhile, the new opening
    # would otherwise be recorded as sent and never be.
    Alert.unscoped_objects.filter(pk=alert.pk, times_reopened=alert.times_reopened).update(**delivered_at)


def alert_deliver(*, alert: Alert) -> bool:
    """Email and POST the alert where not done yet; True when every configured channel has it, False
    when another deliverer claimed this attempt first (delivery is at least once; receivers dedupe by id)."""
    # A conditional claim: of two deliverers that read the same attempt count, only one proceeds.
    claimed = Alert.unscoped_objects.filter(pk=alert.pk, delivery_attempts=alert.delivery_attempts).update(
        delivery_attempts=alert.delivery_attempts + 1)
    if not claimed:
        return False
    alert.delivery_attempts += 1
    # Each channel is tried whatever the other did, and a failure is a DeliveryError like the webhook's: a mail
    # server that is down must neither keep the webhook from being posted nor abort the catch-up at the first
    # alert, leaving every later one in the outbox undelivered on every channel.
    failures = []
    if settings.ALERT_EMAILS and alert.emailed_at is None:
        try:
            send_mail(
                # One line: a title can carry what a tenant's application reported (an unpriced model's name),
                # and a newline in a subject is refused (BadHeaderError), so that alert was never emailed.
                subject=" ".join(f"[RunLedger {alert.severity}] {_reopened_text(alert)}{alert.title}".split()),
                message=f"{alert.message}\n\ncause: {alert.cause_key}\n{_reopened_line(alert)}",
                from_email=settings.DEFAULT_FROM_EMAIL,
                recipient_list=list(settings.ALERT_EMAILS),
            )
        except Exception as exc:  # noqa: BLE001 - smtplib's, sockets', a backend's encoding errors: all a failed email
            # that must not stop the webhook or the catch-up behind it; the alert stays pending and is retried.
            failures.append(f"email failed: {type(exc).__name__}: {exc}")
        else:
            alert.emailed_at = timezone.now()
            _record_delivery(alert, emailed_at=alert.emailed_at)
    if settings.ALERT_WEBHOOK_URL and alert.webhook_delivered_at is None:
        body = json.dumps(alert_payload(alert), cls=DjangoJSONEncoder, separators=(",", ":")).encode()
        try:
            _post_webhook(settings.ALERT_WEBHOOK_URL, body, webhook_signature(body, settings.ALERT_WEBHOOK_SECRET))
        except DeliveryError as exc:
            failures.append(str(exc))
        else:
            alert.webhook_delivered_at = timezone.now()
            _record_delivery(alert, webhook_delivered_at=alert.webhook_delivered_at)
    if failures:
        raise DeliveryError("; ".join(failures))
    return True


# --- causes from the ledger -----------------------------------------------------------------------


def alerts_for_run_changes(*, changes: list[dict], tenant_ids: Iterable[int]) -> list[int]:
    """Alerts that stored run changes cause: high-cost run, unpriced model, wasted spend, requires_action
    about to expire, and monthly budget crossings of the tenants touched. Called inside the ingest
    transaction; each cause fires once. Returns the ids of the alerts raised (not read back: ingest
    raises hundreds per batch and needs none of them)."""
    specs: list[AlertSpec] = []
    warn_after = dt.timedelta(minutes=settings.REQUIRES_ACTION_WARN_MINUTES)
    now = timezone.now()
    months: dict[int, set[dt.date]] = defaultdict(set)
    left_requires_action: dict[str, list[str]] = defaultdict(list)
    for change in changes:
        old, new = change["old"], change["new"]
        openai_id = new["openai_id"]
        tenant_id = new["tenant_id"]
        months[tenant_id].add(new["created_at"].astimezone(dt.UTC).date().replace(day=1))
        total = Decimal(new["cost_total_usd"])
        if new["is_high_cost"] and not (old and old["is_high_cost"]):
            specs.append(AlertSpec(
                kind=Alert.Kind.HIGH_COST_RUN, cause_key=f"high_cost_run:{openai_id}", tenant_id=tenant_id,
                title=f"High-cost run {openai_id}: {money_text(total)}",
                message=f"Run {openai_id} on {new['model']} cost ${total} (feature '{new['feature']}', "
                        f"user '{new['user_id']}').",
                data={"run": openai_id, "cost_usd": str(total), "model": new["model"]},
            ))
        if not new["priced"] and (new["input_tokens"] or new["output_tokens"] or new["status"] in
                                  ("completed", "failed", "cancelled", "incomplete", "expired")):
            specs.append(AlertSpec(
                kind=Alert.Kind.UNPRICED_MODEL, cause_key=f"unpriced_model:{new['model']}",
                title=f"No price for model {new['model']}",
                message=f"Runs on {new['model']} are stored unpriced (first: {openai_id}). Add its price; "
                        f"unpriced runs are then re-rated.",
                data={"model": new["model"], "first_run": openai_id},
            ))
        if new["status"] in ("cancelled", "failed", "expired") and _worth_a_wasted_alert(total) and not (
            old and old["status"] == new["status"] and _worth_a_wasted_alert(Decimal(old["cost_total_usd"]))
        ):
            specs.append(AlertSpec(
                kind=Alert.Kind.WASTED_SPEND, cause_key=f"wasted_spend:{openai_id}", tenant_id=tenant_id,
                severity=Alert.Severity.INFO,
                title=f"Run {openai_id} {new['status']} after spending {money_text(total)}",
                message=f"The run ended {new['status']} ({new['error_code'] or 'no error code'}) and still cost "
                        f"${total}.",
                data={"run": openai_id, "status": new["status"], "cost_usd": str(total)},
            ))
        if new["status"] == "requires_action":
            spec = requires_action_spec(new, now, warn_after)
            if spec:
                specs.append(spec)
        elif (old and old["status"] == "requires_action" and new["status"] in ANSWERED_STATUSES
              and _could_have_been_warned(old, now, warn_after)):
            left_requires_action[new["status"]].append(f"requires_action:{openai_id}")
    specs.extend(_budget_specs(months))
    raised = _alerts_insert(specs)
    for status, cause_keys in sorted(left_requires_action.items()):
        # The warning is moot: the tool outputs arrived.
        alerts_resolve(alerts=Alert.unscoped_objects.filter(cause_key__in=cause_keys),
                       reason=f"The run got its tool outputs: it is {status.replace('_', ' ')}.")
    return raised


# A run leaving requires_action for one of these got its tool outputs, and its expiry warning is moot. One that
# expired, failed or was cancelled instead is what the warning was about: that warning stays open.
ANSWERED_STATUSES = frozenset({"queued", "in_progress", "completed"})


def _warning_due(expires_at: dt.datetime, now: dt.datetime, warn_after: dt.timedelta) -> bool:
    """Tool outputs are due within 10 minutes; a run is warned about once it has waited `warn_after` of them."""
    return expires_at - now <= REQUIRES_ACTION_EXPIRY - warn_after


def _could_have_been_warned(run: dict, now: dt.datetime, warn_after: dt.timedelta) -> bool:
    """Whether the run has waited long enough for a warning (at ingest or by the watch): most tool outputs
    arrive within seconds, and those runs need no look for an alert to resolve."""
    expires_at = run.get("expires_at")
    return expires_at is not None and _warning_due(expires_at, now, warn_after)


def alerts_resolve_priced_models() -> list[int]:
    """Resolve the open unpriced-model alerts of models with no run stored unpriced any more (after a price
    rated them); a model with unpriced runs left (created before its price's date) keeps its alert."""
    from apps.ledger.selectors import models_with_unpriced_runs

    open_alerts = dict(Alert.unscoped_objects.filter(kind=Alert.Kind.UNPRICED_MODEL, resolved_at__isnull=True)
                       .values_list("pk", "data__model"))
    if not open_alerts:
        return []
    still_unpriced = models_with_unpriced_runs(set(open_alerts.values()))  # the caller holds the ingest lock
    priced = [pk for pk, model in open_alerts.items() if model not in still_unpriced]
    return alerts_resolve(alerts=Alert.unscoped_objects.filter(pk__in=priced),
                          reason="Every run of this model is priced now.")


def _worth_a_wasted_alert(cost: Decimal) -> bool:
    """A failed or cancelled run that cost something, and at least WASTED_SPEND_ALERT_MIN_USD."""
    return cost > ZERO and cost >= settings.WASTED_SPEND_ALERT_MIN_USD


def requires_action_spec(run: dict, now: dt.datetime, warn_after: dt.timedelta) -> AlertSpec | None:
    expires_at = run.get("expires_at")
    if expires_at is None or expires_at <= now:
        return None
    if not _warning_due(expires_at, now, warn_after):
        return None
    minutes_left = max(0, int((expires_at - now).total_seconds() // 60))
    return AlertSpec(
        kind=Alert.Kind.REQUIRES_ACTION_EXPIRING, cause_key=f"requires_action:{run['openai_id']}",
        tenant_id=run["tenant_id"],
        title=f"Run {run['openai_id']} waits for tool outputs; expires in about {minutes_left} min",
        message="Submit the tool outputs before the run expires, or it is lost (and its tokens still billed).",
        data={"run": run["openai_id"], "expires_at": expires_at.isoformat()},
    )


def alerts_for_budgets(*, months: dict[int, set[dt.date]]) -> list[int]:
    """Budget alerts for these tenants' months ({tenant id: {first day of month}}), for spend that reached
    the ledger without a run: the nightly vector-storage meter. Ingest checks budgets itself."""
    return _alerts_insert(_budget_specs(months))


def budget_cause_key(tenant_id: int, month: dt.date, percent: int, budget: Decimal) -> str:
    """A threshold fires once per month *and budget*: a budget raised mid-month warns again at 80% of the new
    amount (a key without it had fired already at the old one). The amount is written in its shortest form,
    so the budget read back from the database ("100.00") and the one a form just saved ("100") match."""
    return f"budget:{tenant_id}:{month:%Y-%m}:{percent}:{budget.normalize():f}"


def _budget_thresholds_raised(month: dt.date, tenant_ids: list[int]) -> set[tuple[int, int]]:
    """(tenant, percent) of the thresholds a month that is over has raised, at whichever budget. Its late runs are
    checked against the budget set today (a tenant keeps one), which is not that month's once it has been changed
    since: keyed by budget alone, the same crossings were raised a second time, at the new amount."""
    raised = set()
    keys = Alert.unscoped_objects.filter(kind=Alert.Kind.BUDGET, tenant_id__in=tenant_ids,
                                         cause_key__startswith="budget:", cause_key__contains=f":{month:%Y-%m}:")
    for key in keys.values_list("cause_key", flat=True):
        parts = key.split(":")  # budget:<tenant>:<YYYY-MM>:<percent>[:<budget>]
        if len(parts) >= 4 and parts[2] == f"{month:%Y-%m}" and parts[1].isdigit() and parts[3].isdigit():
            raised.add((int(parts[1]), int(parts[3])))
    return raised


def _budget_specs(months: dict[int, set[dt.date]]) -> list[AlertSpec]:
    from apps.core.timeutils import month_start, next_month, previous_month
    from apps.ledger.selectors import spend_by_tenant
    from apps.tenants.models import Tenant
    from apps.tenants.scoping import TenantScope

    # Only this month and the last (runs reported late, after the month turned): an older month's spend can no
    # longer be steered and its statement is closed or about to be, so a backfill (`import_runs` of last year) or
    # a `reprice` of old runs would raise stale alerts, critical ones included, for every month it touches.
    this_month = month_start(timezone.now().date())
    oldest = previous_month(this_month)
    months = {tenant_id: {month for month in wanted if month >= oldest} for tenant_id, wanted in months.items()}
    if not any(months.values()):
        return []
    budgets = {
        t.pk: t for t in Tenant.objects.filter(pk__in=list(months), monthly_budget_usd__isnull=False)
        if t.monthly_budget_usd > 0
    }
    tenants_by_month: dict[dt.date, list[int]] = defaultdict(list)
    for tenant_id in budgets:
        for month in months[tenant_id]:
            tenants_by_month[month].append(tenant_id)
    specs = []
    for month in sorted(tenants_by_month):
        # Runs and metered vector storage, two grouped queries a month whatever the number of tenants.
        spend = spend_by_tenant(scope=TenantScope.of(tenants_by_month[month]), start=month, end=next_month(month))
        crossed = _budget_thresholds_raised(month, tenants_by_month[month]) if month < this_month else set()
        for tenant_id in sorted(tenants_by_month[month]):
            tenant, spent = budgets[tenant_id], spend.get(tenant_id, ZERO)
            for percent in BUDGET_THRESHOLDS:
                if (tenant_id, percent) in crossed:
                    continue
                if spent >= tenant.monthly_budget_usd * percent / 100:
                    specs.append(AlertSpec(
                        kind=Alert.Kind.BUDGET,
                        cause_key=budget_cause_key(tenant_id, month, percent, tenant.monthly_budget_usd),
                        tenant_id=tenant_id,
                        severity=Alert.Severity.CRITICAL if percent >= 100 else (
                            Alert.Severity.WARNING if percent >= 80 else Alert.Severity.INFO),
                        title=f"{tenant.slug} reached {percent}% of its {month:%B %Y} budget",
                        message=f"Spend {money_text(spent)} of a {money_text(tenant.monthly_budget_usd)} monthly budget.",
                        data={"month": f"{month:%Y-%m}", "percent": percent, "spent_usd": str(spent),
                              "budget_usd": str(tenant.monthly_budget_usd)},
                    ))
    return specs


def alerts_requires_action_scan(*, limit: int = 5000) -> list[Alert]:
    """Runs still waiting in requires_action close to their expiry (the periodic watch; ingest catches
    the ones that are already close when reported)."""
    from apps.ledger.models import Run, RunStatus
    from apps.ledger.services import ingest_paused

    now = timezone.now()
    warn_after = dt.timedelta(minutes=settings.REQUIRES_ACTION_WARN_MINUTES)
    # Under the ingest lock: a run whose tool outputs are being stored meanwhile would otherwise be warned
    # about (or its resolved warning opened again) just after ingest looked for a warning to resolve.
    with ingest_paused():
        runs = (
            Run.objects.unscoped()
            .filter(status=RunStatus.REQUIRES_ACTION, expires_at__gt=now,
                    expires_at__lte=now + REQUIRES_ACTION_EXPIRY - warn_after)
            .order_by("expires_at")
            .values("openai_id", "tenant_id", "expires_at")[:limit]
        )
        specs = [spec for run in runs if (spec := requires_action_spec(run, now, warn_after))]
        return alerts_raise_many(specs)


# --- the outbox catch-up ----------------------------------------------------------------------------

# Fresh alerts are delivered by the task enqueued after commit; the catch-up leaves them that long first.
PENDING_GRACE = dt.timedelta(minutes=2)
# Alerts older than this are not chased any more (an outage that long is handled by hand).
PENDING_MAX_AGE = dt.timedelta(days=7)
PENDING_MAX_ATTEMPTS = 20


def pending_wait(grace: dt.timedelta, attempts: int) -> dt.timedelta:
    """How long after its raise the catch-up tries an alert that failed `attempts` times: grace × 2^attempts, but
    never later than the attempt's even share of PENDING_MAX_AGE. Uncapped, the 13th attempt came at 5.7 days
    and the 14th at 11.4, past PENDING_MAX_AGE: a receiver back on day 6 never got the alert, and 7 of the
    20 attempts could never be made."""
    share = PENDING_MAX_AGE * (attempts + 1) / (PENDING_MAX_ATTEMPTS + 1)
    return max(grace, min(grace * 2**attempts, share))


def alerts_pending(*, now: dt.datetime | None = None, limit: int = 500, grace: dt.timedelta = PENDING_GRACE):
    """Alerts some configured channel has not received yet: the outbox."""
    if not delivery_configured():
        return Alert.unscoped_objects.none()
    now = now or timezone.now()
    missing = Q()
    if settings.ALERT_EMAILS:
        missing |= Q(emailed_at__isnull=True)
    if settings.ALERT_WEBHOOK_URL:
        missing |= Q(webhook_delivered_at__isnull=True)
    # Each failed attempt doubles the wait, counted from the alert's opening (its raise, or its cause's return):
    # grace × 2^attempts (2 min, 4, 8, …, 68 hours at 11 attempts). The catch-up runs every 5 minutes; without
    # the backoff an alert used its 20 attempts within the first ~100 minutes of an outage and was never
    # delivered after it, though it was meant to be chased for PENDING_MAX_AGE.
    due = functools.reduce(operator.or_, (
        Q(delivery_attempts=attempts, opened_at__lte=now - pending_wait(grace, attempts))
        for attempts in range(PENDING_MAX_ATTEMPTS)
    ))
    return (
        Alert.unscoped_objects.select_related("tenant")
        # One resolved before it reached a channel is not chased: its cause is gone (the page keeps it).
        .filter(missing, due, opened_at__gte=now - PENDING_MAX_AGE, resolved_at__isnull=True)
        .order_by("pk")[:limit]
    )


@dataclass
class PendingDelivery:
    delivered: int = 0
    failed: int = 0
    skipped: int = 0

    def as_dict(self) -> dict:
        return {"delivered": self.delivered, "failed": self.failed, "skipped": self.skipped}


def alerts_deliver_pending(*, limit: int = 500, grace: dt.timedelta | None = None) -> PendingDelivery:
    """Deliver what the outbox still holds (e.g. alerts raised while the broker was down). Bounded and
    safe to run while other deliverers work: each alert is claimed before it is sent."""
    if grace is None:
        grace = dt.timedelta(seconds=getattr(settings, "ALERTS_PENDING_GRACE_SECONDS", PENDING_GRACE.total_seconds()))
    result = PendingDelivery()
    for alert in alerts_pending(limit=limit, grace=grace):
        try:
            if alert_deliver(alert=alert):
                result.delivered += 1
            else:
                result.skipped += 1
        except DeliveryError as exc:
            logger.warning("alert %s still undeliverable: %s", alert.pk, exc)
            result.failed += 1
    return result


# Alerts about one moment: a run (costly, wasted, or left waiting on its tool outputs) or a month's budget threshold.
# Nothing later resolves them, so they would stay open for ever (one per high-cost run: hundreds of thousands a
# month at 10M runs); past retention, the ledger still holds what they said (the run, its cost and its high-cost
# flag; the month's spend). Alerts about a condition (an unpriced model, a drifting or failing reconciliation day)
# are deleted only once resolved: while open, what they say is still true.
MOMENT_KINDS = (Alert.Kind.HIGH_COST_RUN, Alert.Kind.WASTED_SPEND, Alert.Kind.REQUIRES_ACTION_EXPIRING,
                Alert.Kind.BUDGET)
# A pass deletes at most this many alerts, this many per transaction (each with one audit record naming them).
PRUNE_AT_MOST = 100_000
PRUNE_BATCH = 5_000


def alerts_unpruned_since(now: dt.datetime) -> dt.datetime | None:
    """For a caller that raises an alert for every cause that has none (the expired-run watch): the oldest moment
    whose causes it may still raise, a day inside ALERT_RETENTION_DAYS (None when alerts are kept for ever). An
    alert is raised after its cause's moment and deleted ALERT_RETENTION_DAYS after it opened, so a cause older
    than this may have had its alert deleted, and would be raised (and delivered) again every retention period."""
    if not settings.ALERT_RETENTION_DAYS:
        return None
    return now - dt.timedelta(days=settings.ALERT_RETENTION_DAYS - 1)


def alerts_prunable(*, cutoff: dt.datetime) -> QuerySet:
    """The alerts past retention: last opened before `cutoff`, and resolved or about one moment (MOMENT_KINDS)."""
    return Alert.unscoped_objects.filter(Q(resolved_at__isnull=False) | Q(kind__in=MOMENT_KINDS),
                                         opened_at__lt=cutoff)


@dataclass
class AlertsPruned:
    retention_days: int
    cutoff: dt.datetime | None  # None: retention is off (ALERT_RETENTION_DAYS=0)
    dry_run: bool
    by_kind: dict[str, int] = field(default_factory=dict)
    complete: bool = True  # False: the pass stopped at its bound, and more are left for the next

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def as_dict(self) -> dict:
        return {"retention_days": self.retention_days, "cutoff": self.cutoff and self.cutoff.isoformat(),
                "dry_run": self.dry_run, "by_kind": dict(sorted(self.by_kind.items())), "total": self.total,
                "complete": self.complete}


def alerts_prune(*, retention_days: int | None = None, dry_run: bool = False, at_most: int = PRUNE_AT_MOST,
                 batch_size: int = PRUNE_BATCH, progress: Callable[[int], object] | None = None) -> AlertsPruned:
    """Delete the alerts past retention (alerts_prunable; `retention_days` defaults to ALERT_RETENTION_DAYS, 0
    keeps every alert), oldest opened first, at most `at_most` a pass in transactions of `batch_size`. Each
    transaction leaves one `alert.prune` audit record with the ids it deleted. `dry_run` counts them by kind and
    deletes nothing. `progress(deleted)` is called after each transaction. Safe to stop and run again, and
    beside ingest: an alert reopened meanwhile is opened now, so no longer past retention, and the rows a
    transaction deletes are locked first (one that a batch reopening it holds is left for the next pass; a batch
    that comes to reopen one just deleted raises it as a new alert, _alerts_insert)."""
    days = settings.ALERT_RETENTION_DAYS if retention_days is None else retention_days
    if days and days < settings.ALERT_RETENTION_MIN_DAYS:
        raise ValueError(f"alerts are kept at least {settings.ALERT_RETENTION_MIN_DAYS} days (ingest checks last "
                         f"month's budget alerts); {days} is fewer")
    if not days:
        return AlertsPruned(retention_days=0, cutoff=None, dry_run=dry_run)
    cutoff = timezone.now() - dt.timedelta(days=days)
    result = AlertsPruned(retention_days=days, cutoff=cutoff, dry_run=dry_run)
    prunable = alerts_prunable(cutoff=cutoff)
    if dry_run:
        result.by_kind = dict(prunable.order_by().values_list("kind").annotate(alerts=Count("pk")))
        return result
    deleted = Counter()
    while (room := at_most - deleted.total()) > 0:
        with transaction.atomic():
            batch = {pk: (kind, tenant_id) for pk, kind, tenant_id in
                     prunable.select_for_update(skip_locked=True).order_by("opened_at", "pk")
                     .values_list("pk", "kind", "tenant_id")[:min(batch_size, room)]}
            if not batch:
                break
            ids = sorted(batch)
            # The condition again: SQLite has no row locks, and what it costs PostgreSQL is nothing.
            prunable.filter(pk__in=ids).delete()
            kinds = Counter(kind for kind, _ in batch.values())
            tenants = Counter(str(tenant_id) for _, tenant_id in batch.values() if tenant_id is not None)
            audit_record(action="alert.prune", target_type="alert", target_id=_ids_text(ids),
                         actor_label="service:alerts",
                         data={"retention_days": days, "cutoff": cutoff.isoformat(), "by_kind": dict(sorted(kinds.items())),
                               "by_tenant": dict(sorted(tenants.items())), "alerts": ids})
        deleted.update(kinds)
        if progress:
            progress(deleted.total())
    else:
        result.complete = not prunable.exists()
    result.by_kind = dict(deleted)
    return result
