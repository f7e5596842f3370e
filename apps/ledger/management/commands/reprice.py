"""`manage.py reprice --start YYYY-MM-DD --end YYYY-MM-DD [--tenant SLUG] [--dry-run] [--unpriced]`."""

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.core.money import money_text
from apps.core.timeutils import EARLIEST_DAY, LATEST_DAY
from apps.ledger.models import Run
from apps.ledger.services import RepriceOverflow, runs_reprice
from apps.tenants.models import Tenant


def _date(value: str, option: str) -> dt.date:
    try:
        day = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"{option} '{value}' is not a date; use YYYY-MM-DD.") from exc
    if not EARLIEST_DAY <= day <= LATEST_DAY:
        # The period ends before the day after --end: 9999-12-31, "everything", overflowed into a traceback.
        raise CommandError(f"{option} {value} is out of range: use a date from {EARLIEST_DAY} to {LATEST_DAY}.")
    return day


class Command(BaseCommand):
    help = "Re-rate runs with the current price book and show the per-tenant difference (apply unless --dry-run)."

    def add_arguments(self, parser):
        parser.add_argument("--start", help="first UTC day (inclusive) of run creation, YYYY-MM-DD")
        parser.add_argument("--end", help="last UTC day (inclusive), YYYY-MM-DD")
        parser.add_argument("--tenant", help="only this tenant (slug)")
        parser.add_argument("--dry-run", action="store_true", help="show the diff; change nothing")
        parser.add_argument("--unpriced", action="store_true", help="only runs stored unpriced (no period needed)")

    def handle(self, *args, start, end, tenant, dry_run, unpriced, **options):
        if not unpriced and not (start and end):
            raise CommandError("Give --start and --end (or --unpriced to rate the runs that had no price).")
        start_day = _date(start, "--start") if start else None
        end_day = _date(end, "--end") if end else None
        if start_day and end_day and end_day < start_day:
            raise CommandError("--end is before --start.")
        tenant_obj = None
        if tenant:
            tenant_obj = Tenant.objects.filter(slug=tenant).first()
            if tenant_obj is None:
                raise CommandError(f"No tenant '{tenant}'. List them with the admin or GET /api/v1/tenants/.")
        total = (Run.objects.for_tenant(tenant_obj) if tenant_obj else Run.objects.unscoped())
        if start_day:
            total = total.filter(created_at__date__gte=start_day)
        if end_day:
            total = total.filter(created_at__date__lte=end_day)
        if unpriced:
            total = total.filter(priced=False)
        with tqdm(total=total.count(), unit="run", disable=None, file=self.stderr) as bar:
            try:
                result = runs_reprice(start=start_day, end=end_day, tenant=tenant_obj, unpriced_only=unpriced,
                                      dry_run=dry_run, progress=bar.update)
            except RepriceOverflow as error:
                stopped = error
                result = error.applied
            else:
                stopped = None
        if stopped is not None:
            if result.changed_runs:
                self.stdout.write("Applied before it stopped:")
                self._table(result)
            raise CommandError(f"{stopped} {stopped.next_step()}")
        self._table(result)
        summary = f"{result.changed_runs} runs change, difference {money_text(result.difference_usd)}."
        if dry_run:
            self.stdout.write(self.style.WARNING(f"Dry run: {summary} Nothing was changed; run again without --dry-run."))
        else:
            self.stdout.write(self.style.SUCCESS(f"Applied: {summary}"))

    def _table(self, result) -> None:
        self.stdout.write(f"{'tenant':<24}{'runs':>10}{'changed':>10}{'old total':>18}{'new total':>18}{'difference':>16}")
        for diff in result.tenants:
            self.stdout.write(
                f"{diff.tenant_slug:<24}{diff.runs:>10}{diff.changed_runs:>10}{diff.old_total_usd:>18.10f}"
                f"{diff.new_total_usd:>18.10f}{diff.difference_usd:>+16.10f}"
            )
