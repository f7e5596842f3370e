"""`manage.py load_price_book [FILE]`: load or refresh prices from a price book file, idempotently."""

from django.core.management.base import BaseCommand, CommandError

from apps.ledger.services import RepriceOverflow
from apps.pricing.models import REPRICE_COMMAND
from apps.pricing.seed import PRICE_BOOK_FILE, PriceBookFileError
from apps.pricing.services import price_book_load


class Command(BaseCommand):
    help = "Load the price book file (default: the shipped apps/pricing/data/price_book.json); safe to re-run."

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", default=str(PRICE_BOOK_FILE))
        parser.add_argument("--keep-existing", action="store_true",
                            help="Only add missing price versions; never change an existing one.")

    def handle(self, *args, file, keep_existing, **options):
        try:
            result = price_book_load(path=file, overwrite=not keep_existing)
        except PriceBookFileError as exc:
            raise CommandError(f"{exc}. Fix the file and run the command again.") from exc
        except RepriceOverflow as exc:
            if exc.applied.dry_run:  # refused by the check before the load committed
                raise CommandError(f"Nothing was loaded: {exc} Correct it in the file and run the command again.") from exc
            # Runs that came in between the check and the rating: the file is loaded, the rating stopped.
            raise CommandError(f"The file was loaded, but rating its models' unpriced runs stopped: {exc} "
                               f"{exc.next_step()}") from exc
        for label in result.created:
            self.stdout.write(f"created  {label}")
        for label in result.updated:
            self.stdout.write(f"updated  {label}")
        for label, reason in result.refused.items():
            self.stderr.write(f"refused  {label}: {reason}")
        counts = (f"{len(result.created)} created, {len(result.updated)} updated, {len(result.unchanged)} unchanged, "
                  f"{len(result.refused)} refused.")
        self.stdout.write(counts if result.refused else self.style.SUCCESS(counts))
        if result.newly_priced_runs:
            self.stdout.write(f"{result.newly_priced_runs} unpriced runs are now rated.")
        if result.updated:
            self.stdout.write(f"Prices changed: re-rate affected runs with {REPRICE_COMMAND}.")
        if result.refused:
            # The rest of the file is loaded and committed; a non-zero exit so a script notices what was not.
            raise CommandError(f"{len(result.refused)} price versions were left as they are (see above); "
                               "the rest of the file is loaded.")
