"""The end users' half-month rollup (days 1-15, 16 to the end), filled from the daily rollup it sums; on
PostgreSQL with room on its pages for ingest's in-place updates, like the monthly one (0008)."""

import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models

SUMS = ("runs", "unpriced_runs", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
        "cost_input_usd", "cost_cached_input_usd", "cost_output_usd", "cost_tools_usd", "cost_total_usd")


def backfill(apps, schema_editor):
    daily = apps.get_model("ledger", "EndUserDailyRollup")
    half = apps.get_model("ledger", "EndUserHalfMonthRollup")
    if schema_editor.connection.vendor == "postgresql":
        table = schema_editor.quote_name(half._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")
        columns = ", ".join(SUMS)
        schema_editor.execute(
            f"INSERT INTO {table} (tenant_id, half, user_id, {columns}) "
            f"SELECT tenant_id, date_trunc('month', day)::date + CASE WHEN extract(day FROM day) >= 16 THEN 15 ELSE 0 END, "
            f"user_id, {', '.join(f'sum({name})' for name in SUMS)} "
            f"FROM {schema_editor.quote_name(daily._meta.db_table)} GROUP BY 1, 2, 3"
        )
        return
    # SQLite sums decimals as floating point: add them up here, exactly.
    totals: dict[tuple, list] = {}
    for row in daily._default_manager.values_list("tenant_id", "day", "user_id", *SUMS).iterator(chunk_size=5000):
        tenant_id, day, user_id, *values = row
        key = (tenant_id, day.replace(day=1 if day.day < 16 else 16), user_id)
        current = totals.get(key)
        totals[key] = values if current is None else [a + b for a, b in zip(current, values, strict=True)]
    half._default_manager.bulk_create(
        [half(tenant_id=key[0], half=key[1], user_id=key[2], **dict(zip(SUMS, values, strict=True)))
         for key, values in totals.items()], batch_size=1000)


class Migration(migrations.Migration):

    dependencies = [
        ('ledger', '0008_rollups_leave_room_for_hot_updates'),
        ('tenants', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='EndUserHalfMonthRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('user_id', models.CharField(blank=True, default='', max_length=200)),
                ('runs', models.BigIntegerField(default=0)),
                ('unpriced_runs', models.BigIntegerField(default=0)),
                ('input_tokens', models.BigIntegerField(default=0)),
                ('cached_input_tokens', models.BigIntegerField(default=0)),
                ('output_tokens', models.BigIntegerField(default=0)),
                ('reasoning_tokens', models.BigIntegerField(default=0)),
                ('cost_input_usd', models.DecimalField(decimal_places=10, default=0, max_digits=24)),
                ('cost_cached_input_usd', models.DecimalField(decimal_places=10, default=0, max_digits=24)),
                ('cost_output_usd', models.DecimalField(decimal_places=10, default=0, max_digits=24)),
                ('cost_tools_usd', models.DecimalField(decimal_places=10, default=0, max_digits=24)),
                ('cost_total_usd', models.DecimalField(decimal_places=10, default=0, max_digits=24)),
                ('half', models.DateField()),
                ('tenant', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tenants.tenant')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('tenant', 'half', 'user_id'), name='enduser_half_unique_key')],
            },
            managers=[
                ('unscoped_objects', django.db.models.manager.Manager()),
            ],
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
