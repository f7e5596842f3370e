"""`manage.py prune_alerts [--dry-run] [--days N] [--at-most N]`: what the nightly alerts.prune task does."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.alerts.services import PRUNE_AT_MOST, alerts_prune


class Command(BaseCommand):
    help = ("Delete the alerts last opened more than ALERT_RETENTION_DAYS ago: resolved ones, and those about one "
            "moment (a high-cost or wasted run, a run left waiting on tool outputs, a month's budget threshold). "
            "Open alerts about a condition that still holds are kept. Oldest first; one audit record per "
            "5,000 deleted.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count them by kind; delete nothing")
        parser.add_argument("--days", type=int, default=None,
                            help=f"keep this many days instead of ALERT_RETENTION_DAYS ({settings.ALERT_RETENTION_DAYS}"
                                 f"); at least {settings.ALERT_RETENTION_MIN_DAYS}")
        parser.add_argument("--at-most", type=int, default=PRUNE_AT_MOST,
                            help=f"stop after deleting this many (default {PRUNE_AT_MOST:,})")

    def handle(self, *args, dry_run, days, at_most, **options):
        if days is not None and days < settings.ALERT_RETENTION_MIN_DAYS:
            raise CommandError(f"--days must be at least {settings.ALERT_RETENTION_MIN_DAYS}: ingest checks the "
                               "budget alerts of this month and the last, and would raise a deleted one again.")
        if at_most < 1:
            raise CommandError("--at-most must be at least 1.")
        with tqdm(unit="alert", disable=None, file=self.stderr) as bar:
            result = alerts_prune(retention_days=days, dry_run=dry_run, at_most=at_most,
                                  progress=lambda deleted: bar.update(deleted - bar.n))
        if result.cutoff is None:
            self.stdout.write(self.style.WARNING("ALERT_RETENTION_DAYS is 0: every alert is kept. Pass --days N to "
                                                 "prune once anyway."))
            return
        for kind, count in sorted(result.by_kind.items()):
            self.stdout.write(f"{kind:<28}{count:>12,}")
        opened = f"last opened before {result.cutoff:%Y-%m-%d %H:%M} UTC ({result.retention_days} days)"
        if dry_run:
            self.stdout.write(self.style.WARNING(f"Dry run: {result.total:,} alerts {opened} would be deleted. "
                                                 "Nothing was deleted; run again without --dry-run."))
        elif result.complete:
            self.stdout.write(self.style.SUCCESS(f"Deleted {result.total:,} alerts {opened}; none is left."))
        else:
            self.stdout.write(self.style.WARNING(f"Deleted {result.total:,} alerts {opened} and stopped (--at-most); "
                                                 "more are left. Run again to go on."))
