"""Give the shipped price book's versions their long-context pricing (apps/pricing/data/price_book.json).

0002 created them before the fields existed. A version that already rated a request above its threshold is
left without it: those runs' stored costs were rated without the surcharge, and a version must rate its runs
as they are stored. For those, `manage.py load_price_book` sets it and `manage.py reprice` re-rates the runs
(docs/pricing.md, "Long context")."""

from django.db import migrations


def fill(apps, schema_editor):
    from apps.pricing.seed import PRICE_BOOK_FILE, long_context_by_version, read_price_book

    ModelPrice = apps.get_model("pricing", "ModelPrice")
    Run = apps.get_model("ledger", "Run")
    for (model, effective_from), values in long_context_by_version(read_price_book(PRICE_BOOK_FILE)).items():
        above = values["long_context_above_tokens"]
        if above is None:
            continue
        version = ModelPrice.objects.filter(model=model, effective_from=effective_from,
                                            long_context_above_tokens__isnull=True).first()
        if version is None or Run._base_manager.filter(model_price_id=version.pk, input_tokens__gt=above).exists():
            continue
        ModelPrice.objects.filter(pk=version.pk).update(**values)


class Migration(migrations.Migration):
    dependencies = [
        ("pricing", "0004_model_price_long_context"),
        ("ledger", "0020_every_tenant_daily_rollup"),
    ]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]
