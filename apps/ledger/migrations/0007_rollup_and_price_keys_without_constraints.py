"""Rollup tenants and run price keys lose their database foreign-key constraints (issue #9): each one was a
deferred check per inserted row at COMMIT, inside the ingest lock (about 2 µs each, seven per run), and the
daily rollup loses its tenant index (a copy of the prefix of its unique key). Django's PROTECT still guards
deletes; rollups are derived from runs, whose tenant and thread keys keep their constraints."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('ledger', '0006_run_columns_in_alignment_order'),
        ('pricing', '0002_seed_price_book'),
        ('tenants', '0001_initial'),
    ]

    operations = [
        migrations.AlterField(
            model_name='dailyrollup',
            name='tenant',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tenants.tenant'),
        ),
        migrations.AlterField(
            model_name='enduserdailyrollup',
            name='tenant',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tenants.tenant'),
        ),
        migrations.AlterField(
            model_name='endusermonthlyrollup',
            name='tenant',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tenants.tenant'),
        ),
        migrations.AlterField(
            model_name='promptsizerollup',
            name='tenant',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tenants.tenant'),
        ),
        migrations.AlterField(
            model_name='run',
            name='model_price',
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='pricing.modelprice'),
        ),
        migrations.AlterField(
            model_name='run',
            name='tool_price',
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='pricing.toolprice'),
        ),
        migrations.AlterField(
            model_name='toolusagerollup',
            name='tenant',
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tenants.tenant'),
        ),
    ]
