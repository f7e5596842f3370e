"""The end-user rollups keep money as whole ledger units (bigint, 10**-10 USD: the same amounts exactly)
instead of numeric(24,10): usage by end user sums tens of thousands of these rows per request, and
PostgreSQL sums bigint about a third faster (issue #9). `cost_X_usd` becomes `cost_X_units`.

PostgreSQL converts each table in place with one rewrite (ALTER ... TYPE bigint USING amount * 10**10,
exact at the column's scale). SQLite cannot change a column's type: its columns are renamed and each amount
is rewritten as an integer in Python, exactly (SQLite keeps the declared type; its values are integers)."""

from decimal import Context, Decimal

from django.db import migrations, models

TABLES = ("enduserdailyrollup", "endusermonthlyrollup", "enduserhalfmonthrollup")
KINDS = ("input", "cached_input", "output", "tools", "total")
PLACES = 10  # apps.core.money.LEDGER_PLACES when this was written; a migration keeps its own copy


def _renames(forward: bool) -> list[tuple[str, str]]:
    pairs = [(f"cost_{kind}_usd", f"cost_{kind}_units") for kind in KINDS]
    return pairs if forward else [(new, old) for old, new in pairs]


def _convert(apps, schema_editor, *, forward: bool) -> None:
    quote = schema_editor.quote_name
    postgres = schema_editor.connection.vendor == "postgresql"
    for model_name in TABLES:
        table = quote(apps.get_model("ledger", model_name)._meta.db_table)
        for old, new in _renames(forward):
            schema_editor.execute(f"ALTER TABLE {table} RENAME COLUMN {quote(old)} TO {quote(new)}")
        new_names = [new for _, new in _renames(forward)]
        if postgres:
            if forward:
                types = [f"ALTER COLUMN {quote(n)} TYPE bigint USING ({quote(n)} * {10**PLACES})::bigint" for n in new_names]
            else:
                types = [f"ALTER COLUMN {quote(n)} TYPE numeric(24, {PLACES}) USING {quote(n)} * 1e-{PLACES}"
                         for n in new_names]
            schema_editor.execute(f"ALTER TABLE {table} {', '.join(types)}")
            continue
        _rewrite_sqlite_amounts(schema_editor, table, new_names, forward=forward)


def _rewrite_sqlite_amounts(schema_editor, table: str, names: list[str], *, forward: bool) -> None:
    """SQLite holds a decimal as REAL (15 significant digits) or as an integer: read back as Django's
    DecimalField reads it (those 15 digits, at the ledger's scale), then written as whole units, integers
    that SQLite keeps exactly (or back as decimal text)."""
    quantum = Decimal(1).scaleb(-PLACES)
    as_django_reads = Context(prec=15).create_decimal_from_float
    columns = ", ".join(schema_editor.quote_name(name) for name in names)
    sets = ", ".join(f"{schema_editor.quote_name(name)} = %s" for name in names)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"SELECT id, {columns} FROM {table}")
        rows = cursor.fetchall()
        for row_id, *values in rows:
            if forward:
                converted = [int((as_django_reads(value) if isinstance(value, float) else Decimal(value))
                                 .quantize(quantum).scaleb(PLACES)) for value in values]
            else:
                converted = [str(Decimal(int(value)).scaleb(-PLACES)) for value in values]
            cursor.execute(f"UPDATE {table} SET {sets} WHERE id = %s", [*converted, row_id])


def forwards(apps, schema_editor):
    _convert(apps, schema_editor, forward=True)


def backwards(apps, schema_editor):
    _convert(apps, schema_editor, forward=False)


class Migration(migrations.Migration):

    dependencies = [
        ("ledger", "0009_enduser_half_month_rollup"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                operation
                for model_name in TABLES
                for old, new in _renames(True)
                for operation in (
                    migrations.RenameField(model_name=model_name, old_name=old, new_name=new),
                    migrations.AlterField(model_name=model_name, name=new, field=models.BigIntegerField(default=0)),
                )
            ],
            database_operations=[migrations.RunPython(forwards, backwards)],
        ),
    ]
