"""The end users' rollup by part of a month (days 1-8, 9-15, 16-23, 24 to the end) replaces the half-month one
(0009): a range ending mid-month then reads at most four days of daily rows at each end instead of a week
(issue #9). Filled from the daily rollup it sums; on PostgreSQL with room on its pages for ingest's in-place
updates, like the monthly one (0008)."""

import django.db.models.deletion
import django.db.models.manager
from django.db import migrations, models

SUMS = ("runs", "unpriced_runs", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
        "cost_input_units", "cost_cached_input_units", "cost_output_units", "cost_tools_units", "cost_total_units")
PART_FIRST_DAYS = (1, 9, 16, 24)  # apps.ledger.models.MONTH_PART_FIRST_DAYS when this was written
HALF_FIRST_DAYS = (1, 16)


def _fill_from_daily(apps, schema_editor, model_name: str, period: str, first_days: tuple[int, ...]) -> None:
    """Sum the end-user daily rollup into `model_name`'s rows, one per (tenant, period, user): the period
    starting on the greatest of `first_days` not after the day. PostgreSQL leaves room on its pages for
    ingest's in-place updates, like the monthly rollup (0008)."""
    daily = apps.get_model("ledger", "EndUserDailyRollup")
    model = apps.get_model("ledger", model_name)
    if schema_editor.connection.vendor == "postgresql":
        table = schema_editor.quote_name(model._meta.db_table)
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")
        offset = "CASE " + " ".join(f"WHEN extract(day FROM day) >= {first} THEN {first - 1}"
                                    for first in reversed(first_days[1:])) + " ELSE 0 END"
        schema_editor.execute(
            f"INSERT INTO {table} (tenant_id, {period}, user_id, {', '.join(SUMS)}) "
            f"SELECT tenant_id, date_trunc('month', day)::date + {offset}, user_id, "
            f"{', '.join(f'sum({name})' for name in SUMS)} "
            f"FROM {schema_editor.quote_name(daily._meta.db_table)} GROUP BY 1, 2, 3"
        )
        return
    totals: dict[tuple, list] = {}
    for row in daily._default_manager.values_list("tenant_id", "day", "user_id", *SUMS).iterator(chunk_size=5000):
        tenant_id, day, user_id, *values = row
        key = (tenant_id, day.replace(day=max(first for first in first_days if first <= day.day)), user_id)
        current = totals.get(key)
        totals[key] = values if current is None else [a + b for a, b in zip(current, values, strict=True)]
    model._default_manager.bulk_create(
        [model(tenant_id=key[0], **{period: key[1]}, user_id=key[2], **dict(zip(SUMS, values, strict=True)))
         for key, values in totals.items()], batch_size=1000)


def backfill(apps, schema_editor):
    _fill_from_daily(apps, schema_editor, "EndUserMonthPartRollup", "part", PART_FIRST_DAYS)


def refill_halves(apps, schema_editor):
    """Undone: the half-month table (recreated empty just before) is filled again, so the code of 0010 reads
    right numbers at once."""
    _fill_from_daily(apps, schema_editor, "EndUserHalfMonthRollup", "half", HALF_FIRST_DAYS)


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
        migrations.RunPython(backfill, refill_halves),
        migrations.DeleteModel(name="EndUserHalfMonthRollup"),
    ]
