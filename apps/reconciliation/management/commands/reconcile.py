"""`python manage.py reconcile [--date YYYY-MM-DD] [--project ID] [--days N]`: reconcile the ledger against
OpenAI's Costs and Usage API, day by day, showing progress."""

from __future__ import annotations

import argparse
import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from apps.core.timeutils import EARLIEST_DAY
from apps.reconciliation.services import (
    RECHECK_DAYS,
    ReconciliationError,
    default_end_day,
    reconciliation_reconcile,
)


def _date(value: str) -> dt.date:
    # argparse turns ArgumentTypeError into a one-line usage error; a CommandError raised while parsing the
    # command line would print a traceback.
    try:
        day = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--date must be YYYY-MM-DD, got {value!r}.") from exc
    if day < EARLIEST_DAY:
        # The days before it (--days) would start before Python's first date: a traceback, not an answer.
        raise argparse.ArgumentTypeError(f"--date must be {EARLIEST_DAY} or later, got {value!r}.")
    return day


class Command(BaseCommand):
    help = ("Compare the ledger with OpenAI's Costs and Usage API for --date (default: yesterday, UTC) and the "
            f"{RECHECK_DAYS} days before it. Re-running a day replaces its result and keeps the history.")

    def add_arguments(self, parser):
        parser.add_argument("--date", type=_date, help="Last UTC day to reconcile (default: yesterday).")
        parser.add_argument("--project", help="Only this OpenAI project id (default: every configured project).")
        parser.add_argument("--days", type=int, default=RECHECK_DAYS + 1,
                            help=f"How many days ending with --date (default {RECHECK_DAYS + 1}).")

    def handle(self, *args, **options):
        days = options["days"]
        if days < 1 or days > 366:
            raise CommandError("--days must be between 1 and 366.")
        end_day = options["date"] or default_end_day()
        if end_day > default_end_day() + dt.timedelta(days=1):
            raise CommandError(f"--date {end_day} is in the future; OpenAI has no numbers for it yet.")
        try:
            outcomes = reconciliation_reconcile(
                end_day=end_day, days=days, project_id=options["project"], trigger="command:reconcile",
                progress=lambda message: self.stdout.write(message),
            )
        except ReconciliationError as exc:
            raise CommandError(str(exc)) from exc
        failed = [outcome for outcome in outcomes if outcome.error]
        flagged = sum(run.flagged_count for outcome in outcomes for run in outcome.runs)
        runs = sum(len(outcome.runs) for outcome in outcomes)
        style = self.style.WARNING if flagged else self.style.SUCCESS
        self.stdout.write(style(f"{runs} project-days reconciled, {flagged} lines flagged. "
                                "See /reconciliation/ or GET /api/v1/reconciliation/."))
        if failed:
            details = "; ".join(f"{outcome.project_id}: {outcome.error}" for outcome in failed)
            raise CommandError(f"Reconciliation failed for {len(failed)} project(s): {details}")
