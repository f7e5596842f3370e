"""One unfinished confirmation per dry run, and one unfinished real sweep per kind, enforced by the database (two
requests at once passed sweep_create's checks; finished duplicates that earlier races left stay as they are). Stops, naming them, if earlier races left rows that break either rule."""

from django.conf import settings
from django.db import migrations, models
from django.db.models import Count


def refuse_duplicates(apps, schema_editor):
    Sweep = apps.get_model("lifecycle", "Sweep")
    unfinished = Sweep._default_manager.filter(status__in=["pending", "running"])
    problems = [f"dry run {row['preview_of']} has {row['n']} unfinished confirmations"
                for row in unfinished.exclude(preview_of=None).values("preview_of").annotate(n=Count("id"))
                .filter(n__gt=1)]
    problems += [f"{row['n']} unfinished real {row['kind']} sweeps"
                 for row in Sweep._default_manager.filter(dry_run=False, status__in=["pending", "running"]).values("kind")
                 .annotate(n=Count("id")).filter(n__gt=1)]
    if problems:
        raise RuntimeError("Sweeps break the rules this migration enforces: " + "; ".join(problems) + ". Let the "
                           "unfinished ones finish (or mark all but one failed in the admin), then migrate again.")


class Migration(migrations.Migration):

    dependencies = [
        ('lifecycle', '0005_sweepitem_resource_processed'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(refuse_duplicates, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='sweep',
            constraint=models.UniqueConstraint(condition=models.Q(('status__in', ['pending', 'running'])), fields=('preview_of',), name='sweep_one_confirmation_per_preview'),
        ),
        migrations.AddConstraint(
            model_name='sweep',
            constraint=models.UniqueConstraint(condition=models.Q(('dry_run', False), ('status__in', ['pending', 'running'])), fields=('kind',), name='sweep_one_real_sweep_per_kind_at_a_time'),
        ),
    ]
