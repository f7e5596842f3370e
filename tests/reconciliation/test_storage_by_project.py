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


def test_storage_in_a_project_runledger_cannot_list_is_named_in_a_day_note(sandbox, provider, tenant):
    # Under the organization's free GB the unlisted project's 8 GiB take most of it, so the default project's
    # line reads lower in the ledger than at OpenAI: the note explains the drift and says what to configure.
    sandbox.clock.set(NOW.timestamp())
    _add_store(sandbox, project="proj_default", tenant_slug=tenant.slug, usage_bytes=2 * GIB)
    _add_store(sandbox, project="proj_other_team", tenant_slug="someone-else", usage_bytes=8 * GIB)
    inventory_sync(provider=provider)
    storage_meter_day(day=DAY)

    run = reconciliation_reconcile(end_day=DAY, days=1, trigger="test", provider_factory=lambda project: provider,
                                   raise_errors=True)[0].runs[0]

    line = ReconciliationLine.objects.get(run=run, line="vector storage")
    assert (line.ledger_value, line.status) == (Decimal("0.1"), "drift")
    assert abs(line.openai_value - Decimal("0.18")) < Decimal("1E-9")  # 2/10 of (10 − 1) × $0.10
    unlisted = [note for note in run.notes if "cannot list" in note]
    assert unlisted == [
        f"OpenAI reports 8.00 GiB ({8 * GIB:,} bytes) of vector storage in projects RunLedger cannot list (proj_other_team). "
        "The free GB is shared with them, so vector storage reads lower in the ledger than at OpenAI: configure "
        "those projects with an API key (admin: OpenAI projects) so their stores are metered."]


def test_no_storage_note_when_every_project_holding_stores_is_listed(sandbox, provider, second_project, tenant):
    sandbox.clock.set(NOW.timestamp())
    _add_store(sandbox, project="proj_default", tenant_slug=tenant.slug, usage_bytes=2 * GIB)
    _add_store(sandbox, project="proj_second", tenant_slug=tenant.slug, usage_bytes=2 * GIB)
    inventory_sync(provider=provider)
    storage_meter_day(day=DAY)

    outcome = reconciliation_reconcile(end_day=DAY, days=1, trigger="test", provider_factory=lambda project: provider,
                                       raise_errors=True)
    notes = [note for result in outcome for run in result.runs for note in run.notes]
    assert f"OpenAI reports 2.00 GiB ({2 * GIB:,} bytes) of vector storage." in notes
    assert not [note for note in notes if "cannot list" in note]
