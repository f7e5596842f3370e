"""Seed the demo: the sandbox's generated scenario becomes tenants, users and ledger data.

Everything goes through the product's own paths (ingest, inventory sync, storage metering,
reconciliation, a dry-run sweep; see apps/sandbox/demo.py, which the end-to-end tests share), so the
demo shows what a real deployment would record. Safe to re-run: ingest is idempotent on OpenAI ids,
users and tenants are created once, metering and reconciliation replace their days."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.alerts.services import alerts_for_budgets
from apps.core.timeutils import month_start
from apps.ledger.selectors import spend_by_tenant
from apps.lifecycle.models import Sweep
from apps.lifecycle.services import sweep_create, sweep_run_to_completion
from apps.lifecycle.tasks import inventory_sync_exclusive
from apps.reconciliation.services import late_ledger_days_forget, reconciliation_reconcile
from apps.sandbox.demo import (
    demo_seeded_record,
    export_deletions_record,
    export_events,
    export_first_day,
    export_ingest,
    export_tenants_ensure,
    export_today,
    storage_meter_range,
)
from apps.tenants.models import Membership
from apps.tenants.scoping import TenantScope
from apps.tenants.services import membership_set

# Days the seed reconciles, ending yesterday: the daily job's window (yesterday and the 7 days before) and
# three more weeks, so the reconciliation page has a month of history.
RECONCILED_DAYS = 30


def _sandbox_root() -> str:
    base = settings.OPENAI_BASE_URL.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def _fetch_export() -> dict:
    url = f"{_sandbox_root()}/_sandbox/export"
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError) as error:
        raise CommandError(
            f"Could not read the sandbox export at {url} ({error}). Start the sandbox first: "
            f"`python manage.py sandbox_openai --scenario demo` (make run does this)."
        ) from None


class Command(BaseCommand):
    help = "Load the running sandbox's demo scenario into RunLedger (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=42, help="informational; the sandbox owns the scenario")
        parser.add_argument("--username", default="ops")
        parser.add_argument("--password", default="runledger-demo")
        parser.add_argument("--no-sweep-preview", action="store_true",
                            help="skip the dry-run thread retention sweep (it re-checks each candidate at OpenAI)")

    def handle(self, *args, seed, username, password, no_sweep_preview=False, **options):
        export = _fetch_export()
        demo_seeded_record(export)
        say = self.stdout.write
        users = get_user_model()

        ops, created = users.objects.get_or_create(username=username, defaults={"is_staff": True, "is_superuser": True})
        if created:
            ops.set_password(password)
            ops.save()

        tenants = export_tenants_ensure(export)
        if tenants:
            first = tenants[0][0]
            # One tenant admin and one read-only member, both of the first tenant only.
            for suffix, role in (("admin", Membership.Role.ADMIN), ("viewer", Membership.Role.VIEWER)):
                member, created = users.objects.get_or_create(username=f"{first.slug}-{suffix}")
                if created:
                    member.set_password(password)
                    member.save()
                if not Membership.objects.filter(user=member, tenant=first).exists():
                    membership_set(user=member, tenant=first, role=role)

        started = time.monotonic()
        with tqdm(total=len(export_events(export)), desc="ingesting demo runs", unit="event", disable=None) as bar:
            totals = export_ingest(export, progress=bar.update)
        for item in totals.errors[:20]:
            self.stderr.write(f"rejected {item.get('id')}: {item.get('error')}")
        say(f"ingest: {totals.as_dict()} in {time.monotonic() - started:.1f}s")
        marked = export_deletions_record(export)

        # Under the hourly sync's lock (a worker already running would otherwise list everything twice at once);
        # if that sync holds it, the seed waits for it: the metering below needs the inventory it writes.
        inventory = inventory_sync_exclusive()
        if inventory is False:
            say("another inventory sync is running; waiting for it to finish")
        while inventory is False:
            time.sleep(5)
            inventory = inventory_sync_exclusive()
        say(f"inventory sync: {inventory}" + (f"; {marked} vector stores deleted at OpenAI recorded" if marked else ""))
        today = export_today(export)
        first_day = export_first_day(export)
        metered = storage_meter_range(first_day=first_day, last_day=today)
        say(f"metered vector storage for {metered} days ({first_day.isoformat()} to {today.isoformat()})")
        # After metering: a tenant's spend, and so its budget, includes its vector storage.
        self._set_budgets(tenants, today=today)
        yesterday = today - dt.timedelta(days=1)
        days = max(1, min(RECONCILED_DAYS, (yesterday - first_day).days + 1))
        outcomes = reconciliation_reconcile(end_day=yesterday, days=days, trigger="seed_demo")
        # The history just loaded marked its old days as reached by late runs; these results saw those runs.
        late_ledger_days_forget(results=[run for outcome in outcomes for run in outcome.runs])
        flagged = [line for outcome in outcomes for run in outcome.runs
                   for line in run.lines.exclude(status="matched").values_list("day", "line")]
        errors = [f"{outcome.project_id}: {outcome.error}" for outcome in outcomes if outcome.error]
        say(f"reconciled {days} days against the sandbox's Costs and Usage API: {len(flagged)} flagged lines"
            + "".join(f"\n  flagged {day.isoformat()} {line}" for day, line in flagged)
            + "".join(f"\n  failed {error}" for error in errors))
        if tenants and not no_sweep_preview and not Sweep.objects.unscoped().filter(dry_run=True).exists():
            # One tenant's preview: every candidate is re-checked at OpenAI one call at a time, and the whole
            # organisation's four months of conversations would keep `make run` waiting.
            first = tenants[0][0]
            preview = sweep_create(kind="threads", tenant=first, dry_run=True, requested_label="seed_demo")
            sweep_run_to_completion(sweep_id=preview.pk)
            say(f"previewed a thread retention sweep for {first.slug} (dry run)")
        say(self.style.SUCCESS(f"demo ready: {len(tenants)} tenants"))

    def _set_budgets(self, tenants, *, today: dt.date) -> None:
        """Budgets scaled from each tenant's own last 30 days of spend (runs and vector storage), so some run
        close to or over budget; then this month's budget alerts, as ingest and the meter raise them."""
        spend = spend_by_tenant(scope=TenantScope.of([tenant for tenant, _spec in tenants]),
                                start=today - dt.timedelta(days=29), end=today + dt.timedelta(days=1))
        for tenant, spec in tenants:
            if tenant.monthly_budget_usd is not None:
                continue
            spent = spend.get(tenant.pk, Decimal("0"))
            budget = (spent * Decimal(str(spec.get("budget_factor", 1.5)))).quantize(Decimal("1"), ROUND_HALF_UP)
            tenant.monthly_budget_usd = max(budget, Decimal("10"))
            tenant.save(update_fields=["monthly_budget_usd"])
        alerts_for_budgets(months={tenant.pk: {month_start(today)} for tenant, _spec in tenants})
