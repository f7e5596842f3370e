"""The inventory's OpenAI ids are looked up exactly (the unique or plain index): Django's LIKE copies of those
indexes are dropped, as the run and thread tables' were. Archived items are one row per message of every
deleted thread, the biggest of these tables."""

from django.db import migrations

from apps.core.migration_support import create_pattern_ops_index, drop_pattern_ops_index

COLUMNS = (
    ("lifecycle_vectorstore", "openai_id"),
    ("lifecycle_storedfile", "openai_id"),
    ("lifecycle_container", "openai_id"),
    ("lifecycle_archiveditem", "thread_openai_id"),
)


def drop_like_indexes(apps, schema_editor):
    for table, column in COLUMNS:
        drop_pattern_ops_index(schema_editor, table, column)


def create_like_indexes(apps, schema_editor):
    for table, column in COLUMNS:
        create_pattern_ops_index(schema_editor, table, column)


class Migration(migrations.Migration):

    dependencies = [("lifecycle", "0010_storage_daily_total")]

    operations = [migrations.RunPython(drop_like_indexes, create_like_indexes)]
