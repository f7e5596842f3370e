"""Budget alerts' cause keys gain the budget they were raised against (`budget:<tenant>:<YYYY-MM>:<percent>`
becomes `...:<percent>:<budget>`), so that a budget raised mid-month warns again at the new amount.

The alerts already raised are given the key they would have now, from the budget their `data` recorded:
without that, the first budget check after the upgrade would raise this month's crossings a second time."""

import re
from decimal import Decimal, InvalidOperation

from django.db import migrations

OLD_KEY = re.compile(r"^budget:\d+:\d{4}-\d{2}:\d+$")


def _new_key(alert) -> str | None:
    if not OLD_KEY.match(alert.cause_key):
        return None
    try:
        budget = Decimal(str((alert.data or {}).get("budget_usd")))
    except InvalidOperation:
        return None  # no budget recorded: the key stays as it was
    if not budget.is_finite():
        return None
    # As apps.alerts.services.budget_cause_key writes it (a migration keeps its own copy of the rule).
    return f"{alert.cause_key}:{budget.normalize():f}"


def name_the_budget(apps, schema_editor):
    Alert = apps.get_model("alerts", "Alert")
    changed = []
    for alert in Alert._base_manager.filter(kind="budget", cause_key__startswith="budget:").iterator(chunk_size=2000):
        key = _new_key(alert)
        if key is not None:
            alert.cause_key = key
            changed.append(alert)
    Alert._base_manager.bulk_update(changed, ["cause_key"], batch_size=2000)


def drop_the_budget(apps, schema_editor):
    Alert = apps.get_model("alerts", "Alert")
    changed, heads = [], set()
    # Oldest first: of the alerts raised against several budgets for one threshold and month, the first keeps
    # the old key (it is unique) and the later ones keep theirs.
    for alert in Alert._base_manager.filter(kind="budget", cause_key__startswith="budget:").order_by("pk"):
        head, _, _budget = alert.cause_key.rpartition(":")
        if OLD_KEY.match(head) and head not in heads and not Alert._base_manager.filter(cause_key=head).exists():
            heads.add(head)
            alert.cause_key = head
            changed.append(alert)
    Alert._base_manager.bulk_update(changed, ["cause_key"], batch_size=2000)


class Migration(migrations.Migration):

    dependencies = [
        ("alerts", "0002_reconciliation_failed_kind"),
    ]

    operations = [
        migrations.RunPython(name_the_budget, drop_the_budget),
    ]
