"""`manage.py ledger_check [--fix]`: recompute rollups and thread totals from runs and report differences."""

from django.core.management.base import BaseCommand

from apps.ledger.services import ledger_check


class Command(BaseCommand):
    help = "Recompute daily rollups and thread totals from the run rows; exit 1 if any differ (--fix rewrites them)."

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true", help="rewrite rollups and thread totals from the runs")
        parser.add_argument("--limit", type=int, default=50, help="differences to print (default 50)")

    def handle(self, *args, fix, limit, **options):
        differences = ledger_check(fix=fix)
        if not differences:
            self.stdout.write(self.style.SUCCESS("Rollups and thread totals match the runs."))
            return
        for difference in differences[:limit]:
            self.stdout.write(f"{difference.key}: {difference.field} stored {difference.stored}, "
                              f"expected {difference.expected}")
        if len(differences) > limit:
            self.stdout.write(f"... and {len(differences) - limit} more")
        if fix:
            self.stdout.write(self.style.WARNING(f"Fixed {len(differences)} differences."))
            return
        self.stderr.write(f"{len(differences)} differences. Rewrite them with `manage.py ledger_check --fix`.")
        raise SystemExit(1)
