"""Give the shipped price book's gpt-6 versions their long-context pricing (as apps/pricing/data/price_book.json
gives them from this release on): above 272,000 input tokens, 2x input and 1.5x output.

0002 created them before the fields existed. A version that already rated a request above its threshold is
left without it, and named: those runs' stored costs were rated without the surcharge, and a version must
rate its runs as they are stored. For those, `manage.py load_price_book` sets it and `manage.py reprice`
re-rates the runs (docs/pricing.md, "Long context"). The values are written here, not read from the file,
so that a later edit of the file cannot change what this migration did."""

import datetime as dt
import sys
from decimal import Decimal

from django.db import migrations

LONG_CONTEXT = {"long_context_above_tokens": 272_000, "long_context_input_multiplier": Decimal("2"),
                "long_context_output_multiplier": Decimal("1.5")}
VERSIONS = [("gpt-6.2-astra", dt.date(2026, 11, 17)), ("gpt-6.2-sol", dt.date(2026, 11, 17)),
            ("gpt-6-astra", dt.date(2026, 9, 1)), ("gpt-6.1-sol", dt.date(2026, 9, 1)),
            ("gpt-6.1-terra", dt.date(2026, 10, 26)), ("gpt-6-luna", dt.date(2026, 9, 1))]


def fill(apps, schema_editor):
    ModelPrice = apps.get_model("pricing", "ModelPrice")
    Run = apps.get_model("ledger", "Run")
    above = LONG_CONTEXT["long_context_above_tokens"]
    for model, effective_from in VERSIONS:
        version = ModelPrice.objects.filter(model=model, effective_from=effective_from,
                                            long_context_above_tokens__isnull=True).first()
        if version is None:
            continue
        if Run._base_manager.filter(model_price_id=version.pk, input_tokens__gt=above).exists():
            sys.stdout.write(
                f"\n  pricing.0005: {model}@{effective_from} already rated runs past {above:,} input tokens "
                "without the long-context surcharge; left as it was. To bill them as OpenAI does: python manage.py "
                f"load_price_book, then python manage.py reprice --start {effective_from} --end <today>")
            continue
        ModelPrice.objects.filter(pk=version.pk).update(**LONG_CONTEXT)


class Migration(migrations.Migration):
    dependencies = [
        ("pricing", "0004_model_price_long_context"),
        ("ledger", "0020_every_tenant_daily_rollup"),
    ]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]
