"""Alerts: once per cause, the ledger's causes, and delivery by email and HMAC-signed webhook."""

import datetime as dt
import hashlib
import hmac
import http.server
import json
import threading
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.test import override_settings
from django.utils import timezone

from apps.alerts.models import Alert
from apps.alerts.services import alert_raise, alerts_requires_action_scan
from apps.alerts.tasks import deliver_alert
from apps.ledger.services import ingest_events
from tests import builders

WHEN = dt.datetime(2026, 11, 10, 9, 0, tzinfo=dt.UTC)


def _causes(kind):
    return sorted(Alert.unscoped_objects.filter(kind=kind).values_list("cause_key", flat=True))


def test_alert_fires_once_per_cause(tenant):
    first = alert_raise(kind="high_cost_run", cause_key="x:1", tenant=tenant, title="t")
    again = alert_raise(kind="high_cost_run", cause_key="x:1", tenant=tenant, title="t (again)")
    assert first is not None and first.tenant_id == tenant.pk
    assert again is None
    assert Alert.objects.for_tenant(tenant).count() == 1


def test_high_cost_run_alerts_once_even_when_reported_again(tenant):
    run = builders.assistants_run(run_id="run_costly", created_at=WHEN, prompt_tokens=50_000)
    ingest_events(events=[{"tenant": "acme", "object": run}])
    ingest_events(events=[{"tenant": "acme", "object": run, "attribution": {"feature": "x"}}])
    assert _causes("high_cost_run") == ["high_cost_run:run_costly"]
    alert = Alert.objects.for_tenant(tenant).get()
    assert alert.data["cost_usd"] == "0.1265000000"
    assert alert.title == "High-cost run run_costly: $0.13"


@pytest.fixture
def in_november():
    """Budget alerts are raised for this month and the last only: the tests that spend in November run then."""
    with time_machine.travel(WHEN, tick=False):
        yield


def test_budget_crossings_alert_once_per_threshold_per_month(tenant, in_november):
    tenant.monthly_budget_usd = Decimal("10.00")
    tenant.save()

    def spend(run_id, tokens, when=WHEN):
        obj = builders.response(response_id=run_id, created_at=when, model="gpt-5.4", input_tokens=tokens,
                                output_tokens=0)
        ingest_events(events=[{"tenant": "acme", "object": obj}])

    spend("resp_b1", 2_000_000)  # $5.00: exactly 50%
    assert _causes("budget") == [f"budget:{tenant.pk}:2026-11:50:10"]
    spend("resp_b2", 1_000_000)  # $7.50
    spend("resp_b3", 1_000_000)  # $10.00
    assert _causes("budget") == [f"budget:{tenant.pk}:2026-11:{p}:10" for p in (100, 50, 80)]
    spend("resp_b4", 1_000_000)  # still over 100%: nothing new
    spend("resp_b5", 2_000_000, when=WHEN + dt.timedelta(days=30))  # December: 50% again, its own cause
    assert len(_causes("budget")) == 4
    severities = dict(Alert.objects.for_tenant(tenant).filter(kind="budget").values_list("cause_key", "severity"))
    assert severities[f"budget:{tenant.pk}:2026-11:100:10"] == "critical"
    crossed = Alert.objects.for_tenant(tenant).get(cause_key=f"budget:{tenant.pk}:2026-11:100:10")
    assert crossed.message == "Spend $10.00 of a $10.00 monthly budget."


def test_wasted_spend_alerts_for_failed_runs_that_cost_money_only(tenant, settings):
    settings.WASTED_SPEND_ALERT_MIN_USD = Decimal("0")
    failed = builders.assistants_run(run_id="run_failed", created_at=WHEN, status="failed")
    free_fail = builders.response(response_id="resp_free_fail", created_at=WHEN, status="failed", input_tokens=0,
                                  output_tokens=0)
    ingest_events(events=[{"tenant": "acme", "object": failed}, {"tenant": "acme", "object": free_fail}])
    assert _causes("wasted_spend") == ["wasted_spend:run_failed"]
    from apps.ledger.models import DailyRollup

    assert DailyRollup.objects.for_tenant(tenant).get(model="gpt-5.4").wasted_cost_usd == Decimal("0.004")
    # Under a cent, the title shows the amount as the dashboard does, not "after spending $0.00".
    assert Alert.objects.for_tenant(tenant).get(kind="wasted_spend").title == "Run run_failed failed after spending $0.004"


def test_wasted_spend_alerts_only_from_the_configured_amount(tenant, settings):
    # At any cost, every failed run raised an alert: the walkthrough's alert list was mostly failures under $0.001.
    settings.WASTED_SPEND_ALERT_MIN_USD = Decimal("0.05")
    cheap = builders.response(response_id="resp_cheap_fail", created_at=WHEN, status="failed", model="gpt-5.4",
                              input_tokens=1000, output_tokens=100)  # $0.0025 + $0.0015
    costly = builders.response(response_id="resp_costly_fail", created_at=WHEN, status="cancelled", model="gpt-5.4",
                               input_tokens=20_000, output_tokens=2_000)  # $0.05 + $0.03
    ingest_events(events=[{"tenant": "acme", "object": cheap}, {"tenant": "acme", "object": costly}])
    assert _causes("wasted_spend") == ["wasted_spend:resp_costly_fail"]
    from apps.ledger.models import DailyRollup

    # The cheap failure still counts as wasted spend; it just raises no alert.
    assert DailyRollup.objects.for_tenant(tenant).get(model="gpt-5.4").wasted_cost_usd == Decimal("0.084")


def test_the_wasted_spend_minimum_is_read_as_usd_or_refused_naming_it(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from config.settings.base import env_usd

    monkeypatch.setenv("WASTED_SPEND_ALERT_MIN_USD", "0.25")
    assert env_usd("WASTED_SPEND_ALERT_MIN_USD", "0.05") == Decimal("0.25")
    for bad in ("ten cents", "-1", "NaN"):
        monkeypatch.setenv("WASTED_SPEND_ALERT_MIN_USD", bad)
        with pytest.raises(ImproperlyConfigured, match="WASTED_SPEND_ALERT_MIN_USD must be an amount in USD"):
            env_usd("WASTED_SPEND_ALERT_MIN_USD", "0.05")


def test_a_requires_action_warning_delay_of_ten_minutes_or_more_is_refused_at_start_up_naming_it():
    # OpenAI expires a run waiting for tool outputs at 10 minutes: warned at 10 or later, it never was, silently.
    import os
    import subprocess
    import sys

    from django.conf import settings

    def start(minutes: str):
        return subprocess.run([sys.executable, "-c", "import django; django.setup()"], capture_output=True, text=True,
                              env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
                                   "REQUIRES_ACTION_WARN_MINUTES": minutes}, cwd=settings.BASE_DIR, timeout=60)

    assert start("9").returncode == 0
    for bad in ("10", "15", "-1", "seven"):
        refused = start(bad)
        assert refused.returncode != 0 and "REQUIRES_ACTION_WARN_MINUTES must be a whole number of minutes" in refused.stderr


def test_requires_action_close_to_expiry_alerts_at_ingest_or_on_scan(tenant):
    now = timezone.now().replace(microsecond=0)
    close = builders.assistants_run(run_id="run_close", created_at=now - dt.timedelta(minutes=8),
                                    status="requires_action")
    fresh = builders.assistants_run(run_id="run_fresh", created_at=now - dt.timedelta(minutes=1),
                                    status="requires_action")
    ingest_events(events=[{"tenant": "acme", "object": close}, {"tenant": "acme", "object": fresh}])
    assert _causes("requires_action_expiring") == ["requires_action:run_close"]
    assert alerts_requires_action_scan() == []
    with time_machine.travel(now + dt.timedelta(minutes=6, seconds=30), tick=False):
        assert [a.cause_key for a in alerts_requires_action_scan()] == ["requires_action:run_fresh"]
    with time_machine.travel(now + dt.timedelta(minutes=20), tick=False):
        assert alerts_requires_action_scan() == []  # expired runs are not "about to expire"


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []
    status = 204

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.headers, body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook_server():
    _Hook.received = []
    _Hook.status = 204
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Hook
    server.shutdown()
    server.server_close()


def test_alert_is_emailed_and_posted_with_a_valid_signature(tenant, webhook_server, django_capture_on_commit_callbacks):
    url, hook = webhook_server
    with override_settings(ALERT_EMAILS=["ops@example.com"], ALERT_WEBHOOK_URL=url, ALERT_WEBHOOK_SECRET="s3cret"):
        with django_capture_on_commit_callbacks(execute=True):
            alert = alert_raise(kind="budget", cause_key="budget:test", tenant=tenant, title="Budget 80%",
                                message="spent", severity="warning")
    assert len(mail.outbox) == 1 and "Budget 80%" in mail.outbox[0].subject
    assert mail.outbox[0].to == ["ops@example.com"]
    headers, body = hook.received[0]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-RunLedger-Signature"] == expected
    payload = json.loads(body)
    assert (payload["cause_key"], payload["tenant"], payload["kind"]) == ("budget:test", "acme", "budget")
    alert.refresh_from_db()
    assert alert.emailed_at and alert.webhook_delivered_at and alert.delivery_attempts == 1


def test_failed_webhook_is_retried_and_recorded_once_delivered(tenant, webhook_server, django_capture_on_commit_callbacks):
    url, hook = webhook_server
    hook.status = 500
    with override_settings(ALERT_WEBHOOK_URL=url, ALERT_WEBHOOK_SECRET="k"):
        with django_capture_on_commit_callbacks(execute=True):
            alert = alert_raise(kind="unpriced_model", cause_key="unpriced_model:zzz", title="No price")
        alert.refresh_from_db()
        assert alert.webhook_delivered_at is None and alert.delivery_attempts >= 2
        hook.status = 200
        deliver_alert.apply(args=[alert.pk])
    alert.refresh_from_db()
    assert alert.webhook_delivered_at is not None
    delivered = len(hook.received)
    with override_settings(ALERT_WEBHOOK_URL=url, ALERT_WEBHOOK_SECRET="k"):
        deliver_alert.apply(args=[alert.pk])  # already delivered: not posted again
    assert len(hook.received) == delivered


def test_a_mail_server_that_is_down_holds_back_neither_the_webhook_nor_the_other_alerts(tenant, webhook_server,
                                                                                      monkeypatch):
    import smtplib

    from apps.alerts import services

    url, hook = webhook_server

    def mail_server_down(**kwargs):
        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")

    with override_settings(ALERT_EMAILS=["ops@example.com"], ALERT_WEBHOOK_URL=url, ALERT_WEBHOOK_SECRET="k"):
        first = alert_raise(kind="budget", cause_key="budget:mail-down:1", tenant=tenant, title="first")
        second = alert_raise(kind="budget", cause_key="budget:mail-down:2", tenant=tenant, title="second")
        monkeypatch.setattr(services, "send_mail", mail_server_down)
        result = services.alerts_deliver_pending(grace=dt.timedelta(0))
        assert result.as_dict() == {"delivered": 0, "failed": 2, "skipped": 0}
        assert sorted(json.loads(body)["cause_key"] for _headers, body in hook.received) == [
            "budget:mail-down:1", "budget:mail-down:2"]
        monkeypatch.undo()  # the mail server is back: the next catch-up emails them, and posts nothing twice
        assert services.alerts_deliver_pending(grace=dt.timedelta(0)).as_dict() == {
            "delivered": 2, "failed": 0, "skipped": 0}
    assert len(hook.received) == 2 and len(mail.outbox) == 2
    for alert in (first, second):
        alert.refresh_from_db()
        assert alert.emailed_at and alert.webhook_delivered_at and alert.delivery_attempts == 2


def test_the_catch_up_backs_off_so_an_alert_outlives_a_long_webhook_outage(tenant, webhook_server):
    """Each failed attempt doubles the wait (2 min × 2^attempts from the raise). Every 5 minutes with no backoff,
    an alert used its 20 attempts in the first 100 minutes of an outage and was never delivered after it."""
    from apps.alerts.services import alerts_deliver_pending

    url, hook = webhook_server
    with override_settings(ALERT_WEBHOOK_URL=url, ALERT_WEBHOOK_SECRET="k"), \
            time_machine.travel(WHEN, tick=False) as traveller:
        alert = alert_raise(kind="budget", cause_key="budget:outage", tenant=tenant, title="Budget 80%")
        hook.status = 503  # the receiving end is down for six hours
        for _ in range(6 * 12):  # beat's catch-up, every 5 minutes
            traveller.shift(dt.timedelta(minutes=5))
            alerts_deliver_pending()
        alert.refresh_from_db()
        assert alert.webhook_delivered_at is None and alert.delivery_attempts == 8  # at 2, 4, 8, … 256 min
        hook.status = 204
        for _ in range(3 * 12):
            traveller.shift(dt.timedelta(minutes=5))
            alerts_deliver_pending()
    alert.refresh_from_db()
    assert alert.webhook_delivered_at == WHEN + dt.timedelta(minutes=515)  # due at 512 min, caught at 515
    assert alert.delivery_attempts == 9 and len(hook.received) == 9


def test_an_alert_of_a_six_day_outage_is_still_delivered_within_the_seven_days_it_is_chased(tenant, webhook_server):
    """The doubling wait is capped: uncapped (grace x 2^attempts from the raise), the 13th attempt fell at 5.7 days and
    the 14th at 11.4, past the 7 days an alert is chased, so a receiver back on day 6 never got it (and the 20
    attempts were never reached)."""
    from apps.alerts.services import PENDING_MAX_AGE, alerts_deliver_pending

    url, hook = webhook_server
    with override_settings(ALERT_WEBHOOK_URL=url, ALERT_WEBHOOK_SECRET="k"), \
            time_machine.travel(WHEN, tick=False) as traveller:
        alert = alert_raise(kind="budget", cause_key="budget:long-outage", tenant=tenant, title="Budget 100%")
        hook.status = 503  # down for six days
        for _ in range(6 * 24 * 4):  # beat's catch-up, every 15 minutes here
            traveller.shift(dt.timedelta(minutes=15))
            alerts_deliver_pending()
        hook.status = 204
        while timezone.now() < WHEN + PENDING_MAX_AGE:
            traveller.shift(dt.timedelta(minutes=15))
            alerts_deliver_pending()
    alert.refresh_from_db()
    assert alert.webhook_delivered_at is not None and alert.webhook_delivered_at <= WHEN + PENDING_MAX_AGE


def test_an_email_the_backend_cannot_encode_is_a_failed_delivery_not_a_crash_of_the_catch_up(tenant, monkeypatch):
    from apps.alerts import services

    def cannot_encode(**kwargs):
        raise UnicodeEncodeError("ascii", "caf\u00e9", 3, 4, "ordinal not in range(128)")

    with override_settings(ALERT_EMAILS=["ops@example.com"]):
        alert_raise(kind="budget", cause_key="budget:encoding:1", tenant=tenant, title="first")
        alert_raise(kind="budget", cause_key="budget:encoding:2", tenant=tenant, title="second")
        monkeypatch.setattr(services, "send_mail", cannot_encode)
        assert services.alerts_deliver_pending(grace=dt.timedelta(0)).as_dict() == {
            "delivered": 0, "failed": 2, "skipped": 0}


def test_an_alert_titled_with_a_reported_newline_is_emailed_with_a_one_line_subject(tenant):
    from apps.alerts.services import alerts_deliver_pending

    run = builders.response(response_id="resp_newline_model", created_at=WHEN, model="gpt-x\nBcc: someone@example.com",
                            input_tokens=10, output_tokens=0)
    ingest_events(events=[{"tenant": "acme", "object": run}])
    with override_settings(ALERT_EMAILS=["ops@example.com"]):
        assert alerts_deliver_pending(grace=dt.timedelta(0)).as_dict() == {"delivered": 1, "failed": 0, "skipped": 0}
    assert [message.subject for message in mail.outbox] == [
        "[RunLedger warning] No price for model gpt-x Bcc: someone@example.com"]
    assert mail.outbox[0].to == ["ops@example.com"] and not mail.outbox[0].bcc


class _BrokenHook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.wfile.write(b"this is not HTTP\r\n\r\n")  # a proxy or endpoint answering garbage

    def log_message(self, *args):
        pass


def test_a_webhook_answering_garbage_is_a_failed_delivery_not_a_crash_of_the_catch_up(tenant):
    from apps.alerts.services import alerts_deliver_pending

    server = http.server.HTTPServer(("127.0.0.1", 0), _BrokenHook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with override_settings(ALERT_WEBHOOK_URL=f"http://127.0.0.1:{server.server_port}/hook",
                               ALERT_WEBHOOK_SECRET="k"):
            alert_raise(kind="budget", cause_key="budget:garbage:1", tenant=tenant, title="first")
            alert_raise(kind="budget", cause_key="budget:garbage:2", tenant=tenant, title="second")
            result = alerts_deliver_pending(grace=dt.timedelta(0))
    finally:
        server.shutdown()
        server.server_close()
    assert result.as_dict() == {"delivered": 0, "failed": 2, "skipped": 0}
    assert list(Alert.unscoped_objects.order_by("cause_key").values_list("delivery_attempts", flat=True)) == [1, 1]


def _storage_store(tenant, gib: int) -> None:
    from apps.lifecycle.services import resources_record

    resources_record(tenant=tenant, obj=builders.vector_store(usage_bytes=gib * 1024**3,
                                                             created_at=WHEN - dt.timedelta(days=40)))


def test_runs_reported_for_a_month_before_last_raise_no_budget_alert(tenant, in_november):
    """A backfill (`import_runs` of last year) or a reprice of old runs: that month's spend can no longer be
    steered. Last month's late runs still count (reported after the month turned)."""
    tenant.monthly_budget_usd = Decimal("1.00")
    tenant.save()
    for run_id, when in (("resp_august", dt.datetime(2026, 8, 20, tzinfo=dt.UTC)),
                         ("resp_october", dt.datetime(2026, 10, 31, 23, 59, tzinfo=dt.UTC))):
        obj = builders.response(response_id=run_id, created_at=when, model="gpt-5.4", input_tokens=2_000_000,
                                output_tokens=0)  # $5.00: 500% of the budget
        ingest_events(events=[{"tenant": "acme", "object": obj}])
    assert _causes("budget") == [f"budget:{tenant.pk}:2026-10:{p}:1" for p in (100, 50, 80)]


def test_metered_vector_storage_counts_toward_the_budget_and_the_meter_raises_its_crossing(tenant, in_november):
    from apps.lifecycle.services import storage_meter_day

    tenant.monthly_budget_usd = Decimal("10.00")
    tenant.save()
    obj = builders.response(response_id="resp_runs", created_at=WHEN, model="gpt-5.4", input_tokens=2_000_000,
                            output_tokens=0)
    ingest_events(events=[{"tenant": "acme", "object": obj}])  # $5.00 of runs: 50%
    assert _causes("budget") == [f"budget:{tenant.pk}:2026-11:50:10"]
    _storage_store(tenant, 41)

    with time_machine.travel(WHEN + dt.timedelta(hours=15), tick=False):
        storage_meter_day(day=WHEN.date())  # 41 GiB, 40 billable at $0.10: $4.00, so $9.00 in all: 90%

    assert _causes("budget") == [f"budget:{tenant.pk}:2026-11:{p}:10" for p in (50, 80)]
    crossed = Alert.objects.for_tenant(tenant).get(cause_key=f"budget:{tenant.pk}:2026-11:80:10")
    assert (crossed.severity, crossed.message) == ("warning", "Spend $9.00 of a $10.00 monthly budget.")
    with time_machine.travel(WHEN + dt.timedelta(days=1, hours=15), tick=False):
        storage_meter_day(day=WHEN.date() + dt.timedelta(days=1))  # $13.00: 100%, critical
        storage_meter_day(day=WHEN.date() + dt.timedelta(days=1))  # metered again: nothing new
    assert Alert.objects.for_tenant(tenant).get(cause_key=f"budget:{tenant.pk}:2026-11:100:10").severity == "critical"
    assert len(_causes("budget")) == 3


def test_re_rating_a_long_past_month_raises_no_budget_alert_for_it(tenant):
    from apps.lifecycle.services import storage_meter_day

    tenant.monthly_budget_usd = Decimal("1.00")
    tenant.save()
    _storage_store(tenant, 41)
    with time_machine.travel(WHEN - dt.timedelta(days=20), tick=False):  # October 21: metered that night
        storage_meter_day(day=(WHEN - dt.timedelta(days=20)).date())
    assert len(_causes("budget")) == 3  # October's three thresholds, when it was the current month
    Alert.objects.unscoped().all().delete()
    with time_machine.travel(WHEN + dt.timedelta(days=40), tick=False):  # December: re-rated by hand
        storage_meter_day(day=(WHEN - dt.timedelta(days=20)).date(), snapshot=False)
    assert _causes("budget") == []


def test_a_budget_check_that_fails_leaves_the_meter_written_and_the_nightly_catch_up_going(tenant, monkeypatch, caplog):
    from apps.alerts import services as alert_services
    from apps.lifecycle.models import StorageMeter
    from apps.lifecycle.services import storage_meter_scheduled

    tenant.monthly_budget_usd = Decimal("1.00")
    tenant.save()
    _storage_store(tenant, 41)
    calls = []

    def broken(*, months):
        calls.append(months)
        raise RuntimeError("alerts table locked")

    monkeypatch.setattr(alert_services, "alerts_for_budgets", broken)
    with time_machine.travel(WHEN.replace(hour=23, minute=50), tick=False):
        storage_meter_scheduled(now=WHEN.replace(hour=23, minute=50))
    # The whole catch-up is metered (7 days before and the day itself), and budgets were checked once for it.
    days = set(StorageMeter.objects.for_tenant(tenant).values_list("day", flat=True))
    assert days == {WHEN.date() - dt.timedelta(days=offset) for offset in range(8)}
    assert calls == [{tenant.pk: {dt.date(2026, 11, 1)}}]
    assert "checking budgets failed" in caplog.text


def test_a_budget_lowered_below_this_months_spend_alerts_at_once_not_at_the_next_run(
        tenant, in_november, django_capture_on_commit_callbacks):
    from apps.tenants.services import tenant_update

    tenant.monthly_budget_usd = Decimal("100.00")
    tenant.save()
    obj = builders.response(response_id="resp_spent", created_at=WHEN, model="gpt-5.4", input_tokens=2_000_000,
                            output_tokens=0)  # $5.00: 5% of 100
    ingest_events(events=[{"tenant": "acme", "object": obj}])
    assert _causes("budget") == []
    with django_capture_on_commit_callbacks(execute=True):
        tenant_update(tenant=tenant, monthly_budget_usd=Decimal("6.00"))  # $5.00 is now 83%
    assert _causes("budget") == [f"budget:{tenant.pk}:2026-11:{p}:6" for p in (50, 80)]
    crossed = Alert.objects.for_tenant(tenant).get(cause_key=f"budget:{tenant.pk}:2026-11:80:6")
    assert crossed.message == "Spend $5.00 of a $6.00 monthly budget."
    with django_capture_on_commit_callbacks(execute=True):
        tenant_update(tenant=tenant, monthly_budget_usd=None)  # no budget: nothing to check, nothing raised
    assert len(_causes("budget")) == 2


def test_a_budget_raised_mid_month_warns_again_at_the_new_amount(tenant, in_november,
                                                                  django_capture_on_commit_callbacks):
    from apps.tenants.services import tenant_update

    def spend(run_id, dollars):
        obj = builders.response(response_id=run_id, created_at=WHEN, model="gpt-5.4",
                                input_tokens=dollars * 400_000, output_tokens=0)  # $2.50 per 1M input tokens
        ingest_events(events=[{"tenant": "acme", "object": obj}])

    tenant.monthly_budget_usd = Decimal("10.00")
    tenant.save()
    spend("resp_first", 9)  # $9 of $10
    assert _causes("budget") == [f"budget:{tenant.pk}:2026-11:{p}:10" for p in (50, 80)]
    with django_capture_on_commit_callbacks(execute=True):
        tenant_update(tenant=tenant, monthly_budget_usd=Decimal("20"))  # $9 of $20: 45%, nothing new
    assert len(_causes("budget")) == 2
    spend("resp_second", 8)  # $17 of $20: 85%, the 50% and 80% of the new budget
    assert _causes("budget") == [f"budget:{tenant.pk}:2026-11:{p}:{b}" for p, b in ((50, 10), (50, 20), (80, 10), (80, 20))]
    warning = Alert.objects.for_tenant(tenant).get(cause_key=f"budget:{tenant.pk}:2026-11:80:20")
    assert (warning.severity, warning.message) == ("warning", "Spend $17.00 of a $20.00 monthly budget.")
    with django_capture_on_commit_callbacks(execute=True):
        tenant_update(tenant=tenant, monthly_budget_usd=Decimal("20.00"))  # the same budget spelled otherwise
    spend("resp_third", 1)
    assert len(_causes("budget")) == 4


def test_a_budget_changed_after_the_month_turned_raises_none_of_last_months_crossings_again(
        tenant, in_november, django_capture_on_commit_callbacks):
    """The budget read for last month's late runs is today's (a tenant keeps one): changed in December, it is not
    November's, so a November threshold already crossed is not raised again, at the new amount, in December."""
    from apps.tenants.services import tenant_update

    def spend(run_id, dollars, when):
        obj = builders.response(response_id=run_id, created_at=when, model="gpt-5.4",
                                input_tokens=dollars * 400_000, output_tokens=0)  # $2.50 per 1M input tokens
        ingest_events(events=[{"tenant": "acme", "object": obj}])

    tenant.monthly_budget_usd = Decimal("10.00")
    tenant.save()
    spend("resp_november", 9, WHEN)  # $9 of $10
    november = [f"budget:{tenant.pk}:2026-11:{p}:10" for p in (50, 80)]
    assert _causes("budget") == november
    with time_machine.travel(dt.datetime(2026, 12, 2, 9, 0, tzinfo=dt.UTC), tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            tenant_update(tenant=tenant, monthly_budget_usd=Decimal("12"))  # December's budget
        spend("resp_november_late", 1, dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC))  # $10: 83% of $12
        assert _causes("budget") == november  # not 50% and 80% of $12 as well


def test_the_upgrade_names_the_budget_in_the_keys_of_alerts_already_raised(tenant, in_november):
    """Without it the first check after the upgrade would raise this month's crossings a second time."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("apps.alerts.migrations.0003_budget_cause_keys_name_the_budget")
    tenant.monthly_budget_usd = Decimal("10.00")
    tenant.save()
    for percent in (50, 80):
        alert_raise(kind="budget", cause_key=f"budget:{tenant.pk}:2026-11:{percent}", tenant=tenant, title="old",
                    data={"month": "2026-11", "percent": percent, "spent_usd": "9.00", "budget_usd": "10.00"})
    alert_raise(kind="budget", cause_key="budget:test", tenant=tenant, title="not a crossing")
    migration.name_the_budget(apps, None)
    assert _causes("budget") == [*(f"budget:{tenant.pk}:2026-11:{p}:10" for p in (50, 80)), "budget:test"]

    obj = builders.response(response_id="resp_after_upgrade", created_at=WHEN, model="gpt-5.4",
                            input_tokens=3_600_000, output_tokens=0)  # $9 of $10: the same two crossings
    ingest_events(events=[{"tenant": "acme", "object": obj}])
    assert len(_causes("budget")) == 3

    migration.drop_the_budget(apps, None)
    assert _causes("budget") == [*(f"budget:{tenant.pk}:2026-11:{p}" for p in (50, 80)), "budget:test"]


class _RedirectingHook(http.server.BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802
        type(self).requests.append(("POST", self.path))
        self.send_response(302)
        self.send_header("Location", "/moved")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):  # noqa: N802
        type(self).requests.append(("GET", self.path))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_webhook_answering_a_redirect_is_a_failed_delivery_not_a_bodiless_get_recorded_as_delivered(tenant):
    from apps.alerts.services import alerts_deliver_pending

    _RedirectingHook.requests = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _RedirectingHook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        alert = alert_raise(kind="unpriced_model", cause_key="unpriced_model:moved", title="No price")
        with override_settings(ALERT_WEBHOOK_URL=f"http://127.0.0.1:{server.server_port}/hook",
                               ALERT_WEBHOOK_SECRET="k"):
            result = alerts_deliver_pending(grace=dt.timedelta(0))
    finally:
        server.shutdown()
        server.server_close()
    assert result.as_dict() == {"delivered": 0, "failed": 1, "skipped": 0}
    assert _RedirectingHook.requests == [("POST", "/hook")]
    alert.refresh_from_db()
    assert alert.webhook_delivered_at is None  # still in the outbox


def test_production_refuses_a_webhook_url_without_a_secret_to_sign_with():
    import os
    import subprocess
    import sys

    from django.conf import settings

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.production", "DJANGO_SECRET_KEY": "k" * 60,
           "DJANGO_ALLOWED_HOSTS": "runledger.example.com", "DATABASE_URL": "sqlite:////tmp/x.sqlite3",
           "REDIS_URL": "redis://redis:6379/0", "OPENAI_API_KEY": "sk-proj-named-never-used", "ALERT_WEBHOOK_URL": "https://hooks.example.com/runledger", "ALERT_WEBHOOK_SECRET": ""}

    def start(**overrides):
        return subprocess.run([sys.executable, "-c", "import django; django.setup()"], env={**env, **overrides},
                              capture_output=True, text=True, cwd=settings.BASE_DIR, timeout=60)

    unsigned = start()
    assert unsigned.returncode != 0 and "ALERT_WEBHOOK_SECRET" in unsigned.stderr
    assert start(ALERT_WEBHOOK_SECRET="a-shared-secret").returncode == 0
    assert start(ALERT_WEBHOOK_URL="").returncode == 0  # no webhook: no secret needed


def test_an_alert_whose_cause_comes_back_is_delivered_again_as_reopened(tenant, webhook_server,
                                                                         django_capture_on_commit_callbacks):
    """Like a regression in Sentry: a problem that was over and is back is news. Before, the alert reopened
    silently on the page, and whoever was told about it the first time never heard that it came back."""
    from apps.alerts.services import alerts_resolve

    url, hook = webhook_server
    with override_settings(ALERT_EMAILS=["ops@example.com"], ALERT_WEBHOOK_URL=url, ALERT_WEBHOOK_SECRET="k"), \
            time_machine.travel(WHEN, tick=False) as traveller:
        with django_capture_on_commit_callbacks(execute=True):
            alert = alert_raise(kind="unpriced_model", cause_key="unpriced_model:gpt-x", title="No price for gpt-x",
                                message="3 runs")
        Alert.unscoped_objects.filter(pk=alert.pk).update(acknowledged_at=timezone.now())
        traveller.shift(dt.timedelta(days=2))
        alerts_resolve(alerts=Alert.unscoped_objects.filter(pk=alert.pk), reason="Every run of this model is priced now.")
        traveller.shift(dt.timedelta(days=1))
        with django_capture_on_commit_callbacks(execute=True):
            assert alert_raise(kind="unpriced_model", cause_key="unpriced_model:gpt-x", title="No price for gpt-x",
                               message="1 run", severity="critical") is None  # not a new alert: the same one
        reopened_at = timezone.now()
    alert.refresh_from_db()
    assert (alert.state, alert.times_reopened, alert.acknowledged_at, alert.resolved_at) == ("reopened", 1, None, None)
    assert (alert.created_at, alert.opened_at) == (WHEN, reopened_at)
    # What the cause says now replaces what it said the first time.
    assert (alert.message, alert.severity) == ("1 run", "critical")
    assert [message.subject for message in mail.outbox] == [
        "[RunLedger warning] No price for gpt-x", "[RunLedger critical] Reopened: No price for gpt-x"]
    assert "first raised 2026-11-10 09:00 UTC; its cause came back after it was resolved (once so far)" in (
        mail.outbox[1].body)
    first, second = (json.loads(body) for _headers, body in hook.received)
    assert (first["times_reopened"], second["times_reopened"]) == (0, 1) and first["id"] == second["id"] == alert.pk
    assert second["opened_at"] == reopened_at.isoformat() and second["created_at"] == WHEN.isoformat()
    assert alert.emailed_at == alert.webhook_delivered_at == reopened_at and alert.delivery_attempts == 1


def test_the_catch_up_chases_a_reopened_alert_from_its_reopening_not_its_first_raise(tenant, webhook_server):
    """An alert first raised weeks ago is past the seven days the catch-up chases; reopened, it is a new opening,
    chased with the same backoff from the moment its cause came back."""
    from apps.alerts.services import PENDING_GRACE, alerts_deliver_pending, alerts_pending, alerts_resolve

    url, hook = webhook_server
    with override_settings(ALERT_WEBHOOK_URL=url, ALERT_WEBHOOK_SECRET="k"), \
            time_machine.travel(WHEN, tick=False) as traveller:
        alert = alert_raise(kind="reconciliation_drift", cause_key="drift:proj_1:2026-11-09:line", title="Drift")
        assert alerts_deliver_pending(grace=dt.timedelta(0)).delivered == 1
        alerts_resolve(alerts=Alert.unscoped_objects.filter(pk=alert.pk), reason="reconciled")
        traveller.shift(dt.timedelta(days=30))
        hook.status = 503  # the receiver is down when the cause comes back (the enqueue is not run here)
        alert_raise(kind="reconciliation_drift", cause_key="drift:proj_1:2026-11-09:line", title="Drift")
        assert list(alerts_pending()) == []  # within its grace: the task enqueued on commit delivers it
        traveller.shift(PENDING_GRACE)
        assert list(alerts_pending()) == [alert]
        assert alerts_deliver_pending().failed == 1
        traveller.shift(dt.timedelta(minutes=1))
        assert list(alerts_pending()) == []  # the backoff counts from the reopening: next at 4 minutes
        traveller.shift(dt.timedelta(minutes=1))
        hook.status = 204
        assert alerts_deliver_pending().delivered == 1
    alert.refresh_from_db()
    assert alert.webhook_delivered_at == WHEN + dt.timedelta(days=30, minutes=4)
    assert [json.loads(body)["times_reopened"] for _headers, body in hook.received] == [0, 1, 1]


def test_a_delivery_of_the_first_opening_does_not_mark_the_reopening_sent(tenant):
    """A deliverer that sent the first opening while the alert was resolved and opened again must not record the
    new opening as emailed: it was never sent, and the catch-up would never send it."""
    from apps.alerts.services import alert_deliver, alerts_resolve

    alert = alert_raise(kind="unpriced_model", cause_key="unpriced_model:gpt-y", title="No price for gpt-y")
    in_flight = Alert.unscoped_objects.get(pk=alert.pk)  # read by a deliverer of the first opening
    alerts_resolve(alerts=Alert.unscoped_objects.filter(pk=alert.pk), reason="priced")
    alert_raise(kind="unpriced_model", cause_key="unpriced_model:gpt-y", title="No price for gpt-y")
    with override_settings(ALERT_EMAILS=["ops@example.com"]):
        assert alert_deliver(alert=in_flight)
    alert.refresh_from_db()
    assert (alert.times_reopened, alert.emailed_at) == (1, None)  # the reopening is still to send
