"""`manage.py meter_storage [--day YYYY-MM-DD] [--rerate]`: GB-days and cost of vector storage per tenant."""

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.lifecycle import services


class Command(BaseCommand):
    help = ("Meter vector storage for a UTC day (default today): snapshot each live store's usage_bytes, then "
            "rate GB-days per tenant with the price book. --rerate re-rates a past day from its stored snapshot.")

    def add_arguments(self, parser):
        parser.add_argument("--day", help="UTC date, YYYY-MM-DD (default: today).")
        parser.add_argument("--rerate", action="store_true", help="Re-rate the stored snapshot; do not re-snapshot.")

    def handle(self, *args, day=None, rerate=False, **options):
        try:
            on = dt.date.fromisoformat(day) if day else timezone.now().date()
        except ValueError as exc:
            raise CommandError("--day must be YYYY-MM-DD.") from exc
        if not rerate and on < timezone.now().date() and services.storage_snapshot_exists(day=on):
            # A new snapshot records the stores as they are now: a past day would be billed at today's sizes, and
            # a closed month then gain a storage adjustment that never happened.
            raise CommandError(f"{on} is already metered: re-snapshotting it would bill it at today's store sizes. "
                               f"Re-rate it from its own snapshot with --rerate.")
        try:
            rows = services.storage_meter_day(day=on, snapshot=not rerate)
        except services.LifecycleError as exc:
            raise CommandError(str(exc)) from exc
        for row in rows:
            self.stdout.write(f"  {row.tenant.slug if row.tenant_id else 'unassigned'}: {row.gb_days} GB-days, "
                              f"${row.cost_usd} (free GB share {row.free_gb_share}), saved ${row.saved_usd}")
        self.stdout.write(self.style.SUCCESS(f"metered {on}: {len(rows)} row(s)"))
