"""Seed the demo: the sandbox's generated scenario becomes tenants, users and ledger data.

Everything goes through the product's own paths (ingest, inventory sync, storage metering,
reconciliation, a dry-run sweep), so the demo shows what a real deployment would record. Safe to
re-run: ingest is idempotent on OpenAI ids, users and tenants are created once, metering and
reconciliation replace their days."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Sum
from tqdm import tqdm

from apps.ledger.models import DailyRollup
from apps.ledger.services import ingest_events
from apps.lifecycle.models import Sweep
from apps.lifecycle.services import inventory_sync, storage_meter_day, sweep_create, sweep_run_to_completion
from apps.reconciliation.services import reconciliation_reconcile
from apps.tenants.models import Membership, Tenant
from apps.tenants.services import membership_set, tenant_create

BATCH = 1000
METERED_DAYS = 30


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


def _events(export: dict) -> list[dict]:
    """Ingest events in the order an application would send them: containers of runs first."""
    events: list[dict] = []

    def add(rows, with_steps=False, keep_deleted=False):
        for row in rows:
            if not row.get("tenant") or (row.get("deleted_at") and not keep_deleted):
                continue  # orphans are found by the inventory sync; gone resources were never ours to track
            event = {"tenant": row["tenant"], "object": row["object"], "openai_project": row["project_id"]}
            if with_steps:
                event["steps"] = row.get("steps") or []
            events.append(event)

    add(export["threads"])
    add(export["conversations"])
    add(export["vector_stores"])
    add(export["files"])
    add(export["containers"])
    add(export["runs"], with_steps=True, keep_deleted=True)
    add(export["responses"], keep_deleted=True)
    return events


class Command(BaseCommand):
    help = "Load the running sandbox's demo scenario into RunLedger (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=42, help="informational; the sandbox owns the scenario")
        parser.add_argument("--username", default="ops")
        parser.add_argument("--password", default="runledger-demo")

    def handle(self, *args, seed, username, password, **options):
        export = _fetch_export()
        say = self.stdout.write
        users = get_user_model()

        ops, created = users.objects.get_or_create(username=username, defaults={"is_staff": True, "is_superuser": True})
        if created:
            ops.set_password(password)
            ops.save()

        tenants = []
        for spec in export["tenants"]:
            tenant = Tenant.objects.filter(slug=spec["slug"]).first() or tenant_create(slug=spec["slug"], name=spec["name"])
            tenants.append((tenant, spec))
        if tenants:
            first = tenants[0][0]
            viewer, created = users.objects.get_or_create(username=f"{first.slug}-viewer")
            if created:
                viewer.set_password(password)
                viewer.save()
            if not Membership.objects.filter(user=viewer, tenant=first).exists():
                membership_set(user=viewer, tenant=first, role=Membership.Role.ADMIN)

        events = _events(export)
        totals = {"created": 0, "updated": 0, "unchanged": 0, "rejected": 0}
        with tqdm(total=len(events), desc="ingesting demo runs", unit="event", disable=None) as bar:
            for start in range(0, len(events), BATCH):
                result = ingest_events(events=events[start : start + BATCH]).as_dict()
                for key in totals:
                    totals[key] += result[key]
                for item in result["results"]:
                    if item["outcome"] == "rejected":
                        self.stderr.write(f"rejected {item.get('id')}: {item.get('error')}")
                bar.update(min(BATCH, len(events) - start))
        say(f"ingest: {totals}")

        self._set_budgets(tenants)
        inventory = inventory_sync()
        say(f"inventory sync: {inventory}")
        today = dt.datetime.now(dt.UTC).date()
        for offset in range(METERED_DAYS, -1, -1):
            storage_meter_day(day=today - dt.timedelta(days=offset))
        say(f"metered vector storage for the last {METERED_DAYS} days")
        reconciliation_reconcile(end_day=today - dt.timedelta(days=1), days=8, trigger="seed_demo")
        say("reconciled the last 8 days against the sandbox's Costs and Usage API")
        if not Sweep.objects.unscoped().filter(dry_run=True).exists():
            preview = sweep_create(kind="threads", dry_run=True, requested_label="seed_demo")
            sweep_run_to_completion(sweep_id=preview.pk)
            say("previewed a thread retention sweep (dry run)")
        say(self.style.SUCCESS(f"demo ready: {len(tenants)} tenants"))

    def _set_budgets(self, tenants) -> None:
        """Budgets scaled from each tenant's own last 30 days, so some run close to or over budget."""
        since = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=30)
        for tenant, spec in tenants:
            if tenant.monthly_budget_usd is not None:
                continue
            spent = (
                DailyRollup.objects.for_tenant(tenant).filter(day__gte=since).aggregate(total=Sum("cost_total_usd"))["total"]
                or Decimal("0")
            )
            budget = (spent * Decimal(str(spec.get("budget_factor", 1.5)))).quantize(Decimal("1"), ROUND_HALF_UP)
            tenant.monthly_budget_usd = max(budget, Decimal("10"))
            tenant.save(update_fields=["monthly_budget_usd"])
