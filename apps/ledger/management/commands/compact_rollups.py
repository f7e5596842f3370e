"""`manage.py compact_rollups [--dry-run] [--max-rows N]`: what the nightly ledger.compact_rollups task does."""

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.ledger.compaction import MAX_ROWS_PER_PASS, rollups_compact


class Command(BaseCommand):
    help = ("Rewrite each closed period's end-user rollup rows tenant by tenant, so a tenant's rows of a period "
            "sit together, and the open months and month parts again (apps/ledger/compaction.py). Newest periods "
            "first; stops after --max-rows rows.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="list the periods and their rows; move nothing")
        parser.add_argument("--max-rows", type=int, default=MAX_ROWS_PER_PASS,
                            help=f"stop after moving this many rows (default {MAX_ROWS_PER_PASS:,})")

    def handle(self, *args, dry_run, max_rows, **options):
        if max_rows < 1:
            raise CommandError("--max-rows must be at least 1.")
        with tqdm(unit="row", disable=None, file=self.stderr) as bar:
            result = rollups_compact(dry_run=dry_run, max_rows=max_rows,
                                     progress=lambda table, period, rows: bar.update(rows))
        if result.skipped:
            self.stdout.write(self.style.WARNING(f"Nothing to do: {result.skipped}."))
            return
        for table, period, rows, closed in result.periods:
            self.stdout.write(f"{table:<34}{period.isoformat():<12}{rows:>12,} rows{'' if closed else '  (open)'}")
        if dry_run:
            self.stdout.write(self.style.WARNING(
                f"Dry run: {len(result.periods)} periods to compact, "
                f"{sum(period.rows for period in result.periods):,} rows. Nothing was moved; run again without "
                f"--dry-run."))
        elif not result.periods:
            self.stdout.write(self.style.SUCCESS("Nothing to do: every closed period is compacted, and the open "
                                                 "months and parts (if any) were rewritten today."))
        elif result.complete:
            self.stdout.write(self.style.SUCCESS(
                f"Compacted {len(result.periods)} periods, {result.rows_moved:,} rows moved."))
        else:
            self.stdout.write(self.style.WARNING(
                f"Stopped after {result.rows_moved:,} rows (--max-rows): closed periods are left. Run again to go "
                f"on where this pass stopped."))
