import logging

from django.apps import AppConfig

logger = logging.getLogger(__name__)


class AlertsConfig(AppConfig):
    name = "apps.alerts"
    label = "alerts"

    def ready(self):
        from apps.tenants.services import tenant_policy_changed

        tenant_policy_changed.connect(_budget_check_on_new_budget, dispatch_uid="alerts.budget_on_new_budget")


def _budget_check_on_new_budget(sender, *, tenant, changed, **kwargs):
    # Budget crossings are otherwise checked only when spend arrives (a run, the nightly meter): a budget lowered
    # below what the tenant has already spent this month raised no alert until its next run, and none at all
    # for a tenant that had stopped sending runs. Only this month: a budget is today's limit, and last month's
    # crossings were measured against the budget it had then.
    if "monthly_budget_usd" not in changed or not tenant.monthly_budget_usd:
        return
    from django.utils import timezone

    from apps.core.timeutils import month_start

    from .services import alerts_for_budgets

    try:
        alerts_for_budgets(months={tenant.pk: {month_start(timezone.now().date())}})
    except Exception:  # noqa: BLE001 - the new budget stands; the next run or meter checks the crossing again
        logger.exception("budget check after tenant %s's new budget failed", tenant.pk)
