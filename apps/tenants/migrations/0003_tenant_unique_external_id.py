"""One tenant per external billing id (blank ids may repeat): a statement carries the id, and the billing system
posts its charges to whoever holds it.

While two tenants share a non-blank id the migration stops before changing anything and names them: which one
keeps the id is a commercial decision for an operator, not for a migration."""

from django.db import migrations, models
from django.db.models import Count


def refuse_shared_ids(apps, schema_editor):
    Tenant = apps.get_model("tenants", "Tenant")
    shared = (Tenant.objects.exclude(external_id="").values("external_id").annotate(holders=Count("id"))
              .filter(holders__gt=1).values_list("external_id", flat=True))
    problems = []
    for external_id in shared:
        slugs = ", ".join(Tenant.objects.filter(external_id=external_id).order_by("slug").values_list("slug", flat=True))
        problems.append(f"{external_id!r}: {slugs}")
    if problems:
        raise RuntimeError(
            "These tenants share an external billing id; give each its own (or blank it) in the admin, then "
            "migrate again: " + "; ".join(problems)
        )


class Migration(migrations.Migration):

    dependencies = [
        ("tenants", "0002_policy_day_and_markup_bounds"),
    ]

    operations = [
        migrations.RunPython(refuse_shared_ids, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="tenant",
            constraint=models.UniqueConstraint(
                condition=models.Q(("external_id", ""), _negated=True), fields=("external_id",),
                name="tenant_unique_external_id",
                violation_error_message="Another tenant already has this external billing id.",
            ),
        ),
    ]
