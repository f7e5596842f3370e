"""`manage.py inventory_sync`: list vector stores, files and containers at OpenAI (every project RunLedger can reach)
and record each with its project and tenant."""

from django.core.management.base import BaseCommand

from apps.lifecycle import services


class Command(BaseCommand):
    help = "List every vector store, file and container at OpenAI and record it with its tenant, or as an orphan."

    def handle(self, *args, **options):
        result = services.inventory_sync(progress=self.stdout.write)
        for key, value in sorted(result.counts.items()):
            self.stdout.write(f"  {key}: {value}")
        self.stdout.write(self.style.SUCCESS(
            f"inventory synced: {result.orphans} orphan(s) without a tenant, {result.gone} gone at OpenAI. "
            f"Assign or delete orphans at /lifecycle/orphans/."
        ))
        for project_id, reason in sorted(result.unreachable.items()):
            self.stdout.write(self.style.WARNING(f"OpenAI project {project_id} not listed, its resources left as they are: {reason}"))
