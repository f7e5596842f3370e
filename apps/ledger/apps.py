import logging

from django.apps import AppConfig

logger = logging.getLogger(__name__)


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

        try:
            reflag_high_cost_task.apply_async((tenant.pk,), retry=False)
        except Exception:  # noqa: BLE001 - the broker is down: the change stands, the hourly check re-flags
            logger.warning("could not queue the high-cost re-flag of tenant %s; the hourly check will", tenant.pk,
                           exc_info=True)
