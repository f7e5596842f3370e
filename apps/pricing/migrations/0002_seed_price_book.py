"""Seed the shipped price book (apps/pricing/data/price_book.json) into every new database; idempotent."""

from django.db import migrations


def seed(apps, schema_editor):
    from apps.pricing.seed import PRICE_BOOK_FILE, price_book_apply, read_price_book

    price_book_apply(
        read_price_book(PRICE_BOOK_FILE),
        model_price_cls=apps.get_model("pricing", "ModelPrice"),
        tool_price_cls=apps.get_model("pricing", "ToolPrice"),
        overwrite=False,
    )


class Migration(migrations.Migration):
    dependencies = [("pricing", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
