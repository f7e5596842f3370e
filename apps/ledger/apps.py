from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "apps.ledger"
    label = "ledger"

    def ready(self):
        from apps.tenants.services import tenant_policy_changed

        tenant_policy_changed.connect(_reflag_on_new_threshold, dispatch_uid="ledger.reflag_high_cost")


def _reflag_on_new_threshold(sender, *, tenant, changed, **kwargs):
    # Which runs are high-cost is stored with each run (lists and rollups read the flag, not a join): a new
    # threshold re-flags the tenant's recorded runs in the worker.
    if "high_cost_run_usd" in changed:
        from .tasks import reflag_high_cost_task

        reflag_high_cost_task.delay(tenant.pk)
