"""The end users' rollup by part of a month (days 1-8, 9-15, 16-23, 24 to the end) replaces the half-month one
(0009): a range ending mid-month then reads at most four days of daily rows at each end instead of a week
(issue #9). Filled from the daily rollup it sums; on PostgreSQL with room on its pages for ingest's in-place
updates, like the monthly one (0008)."""

import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models

SUMS = ("runs", "unpriced_runs", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
        "cost_input_units", "cost_cached_input_units", "cost_output_units", "cost_tools_units", "cost_total_units")
FIRST_DAYS = (1, 9, 16, 24)  # apps.ledger.models.MONTH_PART_FIRST_DAYS when this was written


def _part_start(day):
    return day.replace(day=max(first for first in FIRST_DAYS if first <= day.day))


def backfill(apps, schema_editor):
    daily = apps.get_model("ledger", "EndUserDailyRollup")
    parts = apps.get_model("ledger", "EndUserMonthPartRollup")
    if schema_editor.connection.vendor == "postgresql":
        table = schema_editor.quote_name(parts._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")
        offset = "CASE " + " ".join(f"WHEN extract(day FROM day) >= {first} THEN {first - 1}"
                                    for first in reversed(FIRST_DAYS[1:])) + " ELSE 0 END"
        schema_editor.execute(
            f"INSERT INTO {table} (tenant_id, part, user_id, {', '.join(SUMS)}) "
            f"SELECT tenant_id, date_trunc('month', day)::date + {offset}, user_id, "
            f"{', '.join(f'sum({name})' for name in SUMS)} "
            f"FROM {schema_editor.quote_name(daily._meta.db_table)} GROUP BY 1, 2, 3"
        )
        return
    totals: dict[tuple, list] = {}
    for row in daily._default_manager.values_list("tenant_id", "day", "user_id", *SUMS).iterator(chunk_size=5000):
        tenant_id, day, user_id, *values = row
        key = (tenant_id, _part_start(day), user_id)
        current = totals.get(key)
        totals[key] = values if current is None else [a + b for a, b in zip(current, values, strict=True)]
    parts._default_manager.bulk_create(
        [parts(tenant_id=key[0], part=key[1], user_id=key[2], **dict(zip(SUMS, values, strict=True)))
         for key, values in totals.items()], batch_size=1000)


class Migration(migrations.Migration):

    dependencies = [
        ("ledger", "0010_enduser_money_in_ledger_units"),
        ("tenants", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="EndUserMonthPartRollup",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("user_id", models.CharField(blank=True, default="", max_length=200)),
                ("runs", models.BigIntegerField(default=0)),
                ("unpriced_runs", models.BigIntegerField(default=0)),
                ("input_tokens", models.BigIntegerField(default=0)),
                ("cached_input_tokens", models.BigIntegerField(default=0)),
                ("output_tokens", models.BigIntegerField(default=0)),
                ("reasoning_tokens", models.BigIntegerField(default=0)),
                ("cost_input_units", models.BigIntegerField(default=0)),
                ("cost_cached_input_units", models.BigIntegerField(default=0)),
                ("cost_output_units", models.BigIntegerField(default=0)),
                ("cost_tools_units", models.BigIntegerField(default=0)),
                ("cost_total_units", models.BigIntegerField(default=0)),
                ("part", models.DateField()),
                ("tenant", models.ForeignKey(db_constraint=False, db_index=False,
                                             on_delete=django.db.models.deletion.PROTECT, related_name="+",
                                             to="tenants.tenant")),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("tenant", "part", "user_id"),
                                                        name="enduser_part_unique_key")],
            },
            managers=[
                ("unscoped_objects", django.db.models.manager.Manager()),
            ],
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        # Undone, the half-month table comes back empty: `manage.py ledger_check --fix` refills it.
        migrations.DeleteModel(name="EndUserHalfMonthRollup"),
    ]
