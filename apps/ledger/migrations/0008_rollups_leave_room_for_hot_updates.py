"""Rollup tables whose rows ingest keeps updating leave 30% of every page free (fillfactor 70).

Ingest adds each batch's sums to rollup rows that already exist (the day's, the month's). A full page forces
every such update to write the new row version on another page and a new entry in each of the table's
indexes; with room on the page PostgreSQL updates in place (a HOT update: the sums are in no index). Measured
with `bench ingest --profile` (docs/benchmarks-history.md, session 8): the write phase under the ingest lock went
from 88 to 81-83 µs a report. The end-user daily rollup is left full: nearly all its writes are new rows.

Only pages written from now on keep the room; existing rows are not rewritten (no table lock)."""

from django.db import migrations

TABLES = ("ledger_dailyrollup", "ledger_endusermonthlyrollup", "ledger_promptsizerollup", "ledger_toolusagerollup")


def leave_room(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} SET (fillfactor = 70)")


def fill_pages(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("ledger", "0007_rollup_and_price_keys_without_constraints")]

    operations = [migrations.RunPython(leave_room, fill_pages)]
