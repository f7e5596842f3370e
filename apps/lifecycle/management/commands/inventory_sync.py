"""`manage.py inventory_sync`: list vector stores, files and containers at OpenAI (every project RunLedger can reach)
and record each with its project and tenant. Holds the lock of the hourly task lifecycle.inventory_sync, so the
two never list side by side."""

from django.core.management.base import BaseCommand, CommandError

from apps.lifecycle.tasks import INVENTORY_LEASE_SECONDS, inventory_sync_exclusive


class Command(BaseCommand):
    help = "List every vector store, file and container at OpenAI and record it with its tenant, or as an orphan."

    def handle(self, *args, **options):
        result = inventory_sync_exclusive(progress=self.stdout.write)
        if result is False:
            raise CommandError(
                "Another inventory sync is running (the hourly Celery task lifecycle.inventory_sync, or another "
                "`manage.py inventory_sync`) and holds its lock; nothing was listed. Wait for it to finish, or run "
                f"this again later (a lock left by a killed worker lapses within {INVENTORY_LEASE_SECONDS // 60} "
                "minutes)."
            )
        if result.unreachable and not result.listed:
            # Nothing listed (OpenAI unreachable, say, or no key works): a failure, not "inventory synced".
            reasons = "; ".join(f"{project_id}: {reason}" for project_id, reason in sorted(result.unreachable.items()))
            raise CommandError(f"No OpenAI project could be listed, so no resource was recorded or marked gone "
                               f"({reasons}). Fix that, then run this again.")
        for key, value in sorted(result.counts.items()):
            self.stdout.write(f"  {key}: {value}")
        self.stdout.write(self.style.SUCCESS(
            f"inventory synced: {result.orphans} orphan(s) without a tenant, {result.gone} gone at OpenAI; "
            f"orphan alerts: {len(result.orphan_alerts.raised)} raised, {len(result.orphan_alerts.resolved)} "
            "resolved. Assign or delete orphans at /lifecycle/orphans/."
        ))
        for project_id, reason in sorted(result.unreachable.items()):
            self.stdout.write(self.style.WARNING(f"OpenAI project {project_id} not listed, its resources left as they are: {reason}"))
