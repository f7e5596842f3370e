"""One UTC day of the default OpenAI project, 20 days back (outside the daily run's window: yesterday and the
7 days before), reconciled once and then changed in the ledger: the setting of the tests that compare a day
again (after a re-rating, after late runs)."""

import datetime as dt
from decimal import Decimal

from django.utils import timezone

from apps.ledger.services import ingest_events
from apps.pricing.models import ModelPrice
from apps.reconciliation.models import ReconciliationLine, ReconciliationRun
from apps.reconciliation.services import reconciliation_reconcile
from tests import builders

from .fakes import FakeAdminProvider

PROJECT = "proj_default"
MODEL = "recon-model"
DAY = timezone.now().astimezone(dt.UTC).date() - dt.timedelta(days=20)


def price(input_per_1m: str, *, effective_from: dt.date = dt.date(2026, 1, 1)) -> ModelPrice:
    return ModelPrice.objects.create(model=MODEL, effective_from=effective_from,
                                     input_usd_per_1m=Decimal(input_per_1m), output_usd_per_1m=Decimal("8"))


def ingest(slug: str = "acme", *, model: str = MODEL, day: dt.date = DAY, expect: str = "created", **fields) -> str:
    """One run of 1M input and 100k output tokens created at noon on `day` (`expect`: what ingest makes of the
    report, "created", "updated" or "unchanged"); returns its id."""
    created = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC)
    event = builders.response(created_at=created, model=model, input_tokens=1_000_000, output_tokens=100_000,
                              **fields)
    result = ingest_events(events=[{"tenant": slug, "object": event}])
    assert getattr(result, expect) == 1, result.as_dict()
    return event["id"]


def openai_bill(input_usd: float, *, runs: int = 1) -> FakeAdminProvider:
    """OpenAI's bill for DAY: `runs` runs of 1M input and 100k output tokens, output at $8/1M."""
    return (FakeAdminProvider().cost(DAY, f"{MODEL}, input", input_usd * runs).cost(DAY, f"{MODEL}, output", 0.8 * runs)
            .completions(DAY, MODEL, 1_000_000 * runs, 0, 100_000 * runs))


def reconcile(provider: FakeAdminProvider) -> ReconciliationRun:
    reconciliation_reconcile(end_day=DAY, days=1, trigger="test", provider_factory=lambda project: provider,
                             raise_errors=True)
    return ReconciliationRun.objects.get(day=DAY, openai_project=PROJECT, is_current=True)


def current() -> tuple[ReconciliationRun, dict[str, ReconciliationLine]]:
    run = ReconciliationRun.objects.get(day=DAY, openai_project=PROJECT, is_current=True)
    return run, {line.line: line for line in run.lines.all()}
