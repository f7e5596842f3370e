"""Indexes that nothing needs, dropped as the run table's were (ledger 0002, 0021):
- the LIKE copies of the inventory's OpenAI id indexes: ids are looked up exactly, by the unique index;
- the tenant key's own index on tables with an index that leads with tenant (an unassigned resource's NULL
  included), and likewise a sweep item's sweep, a vector store day's store and an archived item's thread id.
A million-thread sweep writes a million sweep items; archived items are one row per message of every deleted
thread: each index left out is one less written per row."""

import django.db.models.deletion
from django.db import migrations, models

from apps.core.migration_support import create_pattern_ops_index, drop_pattern_ops_index

ID_TABLES = ("lifecycle_vectorstore", "lifecycle_storedfile", "lifecycle_container")


def drop_like_indexes(apps, schema_editor):
    for table in ID_TABLES:
        drop_pattern_ops_index(schema_editor, table, "openai_id")


def create_like_indexes(apps, schema_editor):
    for table in ID_TABLES:
        create_pattern_ops_index(schema_editor, table, "openai_id")


def _maybe_unassigned_tenant():
    return models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT,
                             related_name='+', to='tenants.tenant')


class Migration(migrations.Migration):

    dependencies = [
        ("lifecycle", "0010_storage_daily_total"),
        ("tenants", "0004_apikey_verbose_name"),
    ]

    operations = [
        migrations.RunPython(drop_like_indexes, create_like_indexes),
        migrations.AlterField(
            model_name='archiveditem',
            name='thread_openai_id',
            field=models.CharField(max_length=100),
        ),
        migrations.AlterField(model_name='container', name='tenant', field=_maybe_unassigned_tenant()),
        migrations.AlterField(model_name='storagemeter', name='tenant', field=_maybe_unassigned_tenant()),
        migrations.AlterField(model_name='storedfile', name='tenant', field=_maybe_unassigned_tenant()),
        migrations.AlterField(
            model_name='sweepitem',
            name='sweep',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='items', to='lifecycle.sweep'),
        ),
        migrations.AlterField(model_name='sweepitem', name='tenant', field=_maybe_unassigned_tenant()),
        migrations.AlterField(model_name='vectorstore', name='tenant', field=_maybe_unassigned_tenant()),
        migrations.AlterField(
            model_name='vectorstoreday',
            name='vector_store',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='days', to='lifecycle.vectorstore'),
        ),
    ]
