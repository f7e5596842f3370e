"""ledger_bigint_sum(bigint): a sum of bigint that stays bigint, for reading the end-user rollups (issue #9).

PostgreSQL's own SUM(bigint) adds in 128 bits and answers numeric. Over the tens of thousands of rollup rows
a 30-day usage by end user groups, that was about a third of the statement. This aggregate steps with int8pl,
bigint plus bigint, which raises "bigint out of range" instead of wrapping, so it is never silently wrong; the
reader then sums again with SUM (apps.ledger.selectors). Nothing on SQLite, which sums integers as integers."""

from django.db import migrations

CREATE = "CREATE AGGREGATE ledger_bigint_sum(bigint) (SFUNC = int8pl, STYPE = bigint)"
DROP = "DROP AGGREGATE IF EXISTS ledger_bigint_sum(bigint)"


def _on_postgresql(statement: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("ledger", "0011_enduser_month_parts_replace_halves")]

    operations = [migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP), elidable=False)]
