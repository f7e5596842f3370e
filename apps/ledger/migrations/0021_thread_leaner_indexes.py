"""The thread table loses two indexes that nothing reads, as the run table did in 0002: the tenant key's own
index (thread_tenant_status_activity leads with tenant) and the LIKE copy of the OpenAI id's. Ingest inserts
a thread for every new conversation and updates each active one's totals every batch; last_activity_at is
in an index, so those updates cannot be made in place and write an entry in every index of the table."""

import django.db.models.deletion
from django.db import migrations, models

from apps.core.migration_support import create_pattern_ops_index, drop_pattern_ops_index


def drop_like_index(apps, schema_editor):
    drop_pattern_ops_index(schema_editor, "ledger_thread", "openai_id")


def create_like_index(apps, schema_editor):
    create_pattern_ops_index(schema_editor, "ledger_thread", "openai_id")


class Migration(migrations.Migration):

    dependencies = [
        ('ledger', '0020_every_tenant_daily_rollup'),
        ('tenants', '0004_apikey_verbose_name'),
    ]

    operations = [
        migrations.AlterField(
            model_name='thread',
            name='tenant',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tenants.tenant'),
        ),
        migrations.RunPython(drop_like_index, create_like_index),
    ]
