"""Vector storage reconciles per OpenAI project. OpenAI's Costs bill storage per project while RunLedger meters
it per tenant; with one tenant's stores in two projects (and another tenant's in the second), each project's
"vector storage" line matches the sandbox's bill for that project, and the two add up to the day's meters.
Before, the whole meter was compared on the default project, so both projects' lines flagged every day."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from apps.lifecycle.models import StorageMeter
from apps.lifecycle.services import inventory_sync, storage_meter_day
from apps.reconciliation.models import ReconciliationLine
from apps.reconciliation.services import reconciliation_reconcile
from apps.sandbox import objects

pytestmark = pytest.mark.django_db

GIB = 1024**3
NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
DAY = dt.date(2026, 11, 18)


def _add_store(sandbox, *, project: str, tenant_slug: str, usage_bytes: int) -> str:
    """A store of `usage_bytes` held since three days before NOW, in `project`, as OpenAI lists it."""
    state = sandbox.state
    created = int(NOW.timestamp()) - 3 * 86400
    store_id = state.new_id("vs_")
    store = objects.vector_store(vector_store_id=store_id, created_at=created, name=f"{tenant_slug} docs",
                                 usage_bytes=usage_bytes, file_counts={}, last_active_at=created,
                                 metadata={"tenant": tenant_slug})
    state.add_vector_store(store, project_id=project)
    return store_id


def test_vector_storage_in_two_projects_matches_openai_on_each_project(sandbox, provider, second_project,
                                                                       tenant, other_tenant):
    sandbox.clock.set(NOW.timestamp())
    _add_store(sandbox, project="proj_default", tenant_slug=tenant.slug, usage_bytes=3 * GIB)
    _add_store(sandbox, project="proj_second", tenant_slug=tenant.slug, usage_bytes=1 * GIB)
    _add_store(sandbox, project="proj_second", tenant_slug=other_tenant.slug, usage_bytes=2 * GIB)
    inventory_sync(provider=provider)
    storage_meter_day(day=DAY)

    reconciliation_reconcile(end_day=DAY, days=1, trigger="test", provider_factory=lambda project: provider,
                             raise_errors=True)

    storage = {line.run.openai_project: line for line in ReconciliationLine.objects.filter(
        run__is_current=True, run__day=DAY, line="vector storage").select_related("run")}
    assert set(storage) == {"proj_default", "proj_second"}
    # 6 GiB in the organization, 5 billable at $0.10: $0.50, half of the bytes in each project.
    for project, line in storage.items():
        assert line.status == "matched", (project, line.ledger_value, line.openai_value)
        assert line.ledger_value == Decimal("0.25"), project
        assert abs(line.openai_value - Decimal("0.25")) < Decimal("1E-9"), project
    assert sum(line.ledger_value for line in storage.values()) == sum(
        StorageMeter.objects.unscoped().filter(day=DAY, tenant__isnull=False).values_list("cost_usd", flat=True))
