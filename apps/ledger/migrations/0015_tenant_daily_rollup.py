"""Each tenant's runs and spend per UTC day (TenantDailyRollup), for the pages that read many tenants at once:
90 days of the daily rollup (a row per project, model and feature) were ~430,000 rows at 1M runs of realistic
traffic (issue #9). Filled from the daily rollup it sums; on PostgreSQL with room on its pages for ingest's
in-place updates, like the daily rollup (0008)."""

import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models

SUMS = ("runs", "unpriced_runs", "cost_total_usd")


def backfill(apps, schema_editor):
    daily = apps.get_model("ledger", "DailyRollup")
    model = apps.get_model("ledger", "TenantDailyRollup")
    if schema_editor.connection.vendor == "postgresql":
        table = schema_editor.quote_name(model._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")
        schema_editor.execute(
            f"INSERT INTO {table} (tenant_id, day, {', '.join(SUMS)}) "
            f"SELECT tenant_id, day, {', '.join(f'sum({name})' for name in SUMS)} "
            f"FROM {schema_editor.quote_name(daily._meta.db_table)} GROUP BY 1, 2")
        return
    # Added up in Python: SQLite's SUM over a decimal column adds floats, and money must stay exact.
    totals: dict[tuple, list] = {}
    for tenant_id, day, *values in daily._default_manager.values_list("tenant_id", "day", *SUMS).iterator(
            chunk_size=5000):
        current = totals.get((tenant_id, day))
        totals[(tenant_id, day)] = values if current is None else [a + b for a, b in zip(current, values, strict=True)]
    model._default_manager.bulk_create(
        [model(tenant_id=tenant_id, day=day, **dict(zip(SUMS, values, strict=True)))
         for (tenant_id, day), values in totals.items()], batch_size=1000)


class Migration(migrations.Migration):

    dependencies = [
        ("ledger", "0014_model_names_as_long_as_fine_tuned_ids"),
        ("tenants", "0004_apikey_verbose_name"),
    ]

    operations = [
        migrations.CreateModel(
            name="TenantDailyRollup",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("day", models.DateField()),
                ("runs", models.BigIntegerField(default=0)),
                ("unpriced_runs", models.BigIntegerField(default=0)),
                ("cost_total_usd", models.DecimalField(decimal_places=10, default=0, max_digits=24)),
                ("tenant", models.ForeignKey(db_constraint=False, db_index=False,
                                             on_delete=django.db.models.deletion.PROTECT, related_name="+",
                                             to="tenants.tenant")),
            ],
            options={
                "indexes": [models.Index(fields=["day", "tenant"], name="tenant_day_by_day")],
                "constraints": [models.UniqueConstraint(fields=("tenant", "day"), name="tenant_day_unique_key")],
            },
            managers=[
                ("unscoped_objects", django.db.models.manager.Manager()),
            ],
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
