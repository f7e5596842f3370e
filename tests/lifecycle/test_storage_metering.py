"""Vector storage metering: GB-days per tenant rated with the price book, OpenAI's free GB shared in
proportion to bytes, reproduced to the cent against an independent computation and the seed's examples."""

from __future__ import annotations

import datetime as dt
import io
import random
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.test import override_settings

from apps.lifecycle import selectors, services
from apps.lifecycle.models import StorageMeter, VectorStore, VectorStoreDay
from apps.tenants.models import Tenant
from apps.tenants.scoping import TenantScope, TenantScopeError
from tests import builders
from tests.golden import golden_examples

GIB = 1024**3
START = dt.date(2026, 6, 1)


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _store(tenant, *, usage_bytes: int, created: dt.date = START, store_id: str | None = None,
           project: str = "") -> VectorStore:
    obj = builders.vector_store(vector_store_id=store_id, usage_bytes=usage_bytes,
                                created_at=dt.datetime(created.year, created.month, created.day, tzinfo=dt.UTC))
    services.resources_record(tenant=tenant, obj=obj, openai_project=project)
    return VectorStore.objects.unscoped().get(openai_id=obj["id"])


def _store_in_ledger_and_at_openai(tenant, provider, store_id: str, *, usage_bytes: int, created: dt.datetime,
                                   last_active: dt.datetime) -> None:
    """A vector store the ledger lists and the fake OpenAI answers for, alike."""
    services.resources_record(tenant=tenant, obj=builders.vector_store(
        vector_store_id=store_id, usage_bytes=usage_bytes, created_at=created, last_active_at=last_active))
    provider.vector_stores[store_id] = {"id": store_id, "object": "vector_store", "usage_bytes": usage_bytes,
                                        "created_at": int(created.timestamp()),
                                        "last_active_at": int(last_active.timestamp())}


def _sweep_stores_idle_30_days(tenant, provider):
    """A vector-store sweep run to its end on 2026-11-19 10:00 UTC against `provider`, stores idle 30 days due."""
    import time_machine

    tenant.vector_store_idle_days = 30
    tenant.save()
    with time_machine.travel(dt.datetime(2026, 11, 19, 10, 0, tzinfo=dt.UTC), tick=False):
        sweep = services.sweep_create(kind="vector_stores")
        services.sweep_run_to_completion(sweep_id=sweep.pk, provider=provider, sleep=lambda seconds: None)
    return sweep


def _golden_storage_examples() -> list[dict]:
    data = golden_examples()
    return [e for e in data["examples"] if "stored_gb" in e]


@pytest.mark.parametrize("example", _golden_storage_examples(), ids=lambda e: e["what"])
def test_seed_vector_storage_examples_are_reproduced_exactly(example, tenant):
    tool_prices = golden_examples()["tool_prices_usd"]
    _store(tenant, usage_bytes=int(Decimal(example["stored_gb"]) * GIB))
    days = example.get("days", 1)
    total = Decimal(0)
    for offset in range(days):
        rows = services.storage_meter_day(day=START + dt.timedelta(days=offset))
        total += sum(row.cost_usd for row in rows)
    expected = example.get("cost_usd") or example["cost_usd_per_day"]
    assert _cents(total) == Decimal(expected)
    row = StorageMeter.objects.for_tenant(tenant).get(day=START)
    assert row.gb_days == Decimal(example["stored_gb"])
    assert row.free_gb_share == min(Decimal(example["stored_gb"]), Decimal(tool_prices["vector_storage_free_gb"]))


def test_free_gb_is_shared_in_proportion_to_bytes(tenant, other_tenant):
    _store(tenant, usage_bytes=3 * GIB)
    _store(other_tenant, usage_bytes=1 * GIB)
    rows = {row.tenant_id: row for row in services.storage_meter_day(day=START)}
    # 4 GiB in all, 3 billable at $0.10: $0.30 split 3:1; the free GB 0.75 : 0.25.
    assert rows[tenant.pk].cost_usd == Decimal("0.225")
    assert rows[other_tenant.pk].cost_usd == Decimal("0.075")
    assert rows[tenant.pk].free_gb_share == Decimal("0.75")
    assert rows[other_tenant.pk].free_gb_share == Decimal("0.25")


def test_parts_always_add_up_to_the_organisation_bill_to_the_ledger_quantum(tenant, other_tenant, db):
    third = Tenant.objects.create(slug="initech", name="Initech")
    for owner, size in ((tenant, 1_000_000_007), (other_tenant, 2_333_333_333), (third, 777_777_777)):
        _store(owner, usage_bytes=size)
    rows = services.storage_meter_day(day=START)
    total_bytes = sum(row.usage_bytes for row in rows)
    org = (Decimal(total_bytes) / GIB - 1) * Decimal("0.10")
    assert sum(row.cost_usd for row in rows) == org.quantize(Decimal("1e-10"), rounding=ROUND_HALF_UP)


def test_generated_month_equals_an_independent_computation_to_the_cent(tenant, other_tenant, db):
    """30 days of stores appearing, growing, shrinking and being deleted, with unassigned stores too."""
    rng = random.Random(20260601)
    tenants = [tenant, other_tenant, Tenant.objects.create(slug="initech", name="Initech"), None]
    stores: dict[str, tuple] = {}
    expected = {t.pk if t else None: Decimal(0) for t in tenants}
    for offset in range(30):
        day = START + dt.timedelta(days=offset)
        for _ in range(rng.randint(0, 3)):
            owner = rng.choice(tenants)
            store = _store(owner, usage_bytes=rng.randint(0, 3 * GIB), created=day)
            stores[store.openai_id] = (owner, store)
        for openai_id, (_owner, store) in list(stores.items()):
            roll = rng.random()
            if roll < 0.1:
                VectorStore.objects.unscoped().filter(pk=store.pk).update(status="deleted")
                del stores[openai_id]
            elif roll < 0.5:
                VectorStore.objects.unscoped().filter(pk=store.pk).update(usage_bytes=rng.randint(0, 4 * GIB))
        services.storage_meter_day(day=day)
        # Independent: bytes per tenant today, org bill = max(0, GiB - 1) * 0.10, split by bytes.
        live = VectorStore.objects.unscoped().filter(status="active").values_list("tenant_id", "usage_bytes")
        per_tenant: dict = {}
        for tenant_id, size in live:
            per_tenant[tenant_id] = per_tenant.get(tenant_id, 0) + size
        total = sum(per_tenant.values())
        bill = max(Decimal(0), Decimal(total) / GIB - 1) * Decimal("0.10")
        for tenant_id, size in per_tenant.items():
            expected[tenant_id] += bill * size / total
    for owner in tenants:
        key = owner.pk if owner else None
        metered = sum(StorageMeter.objects.unscoped().filter(tenant_id=key).values_list("cost_usd", flat=True), Decimal(0))
        assert _cents(metered) == _cents(expected[key]), owner
    assert any(expected.values())


def test_re_metering_a_day_replaces_it(tenant):
    store = _store(tenant, usage_bytes=5 * GIB)
    services.storage_meter_day(day=START)
    VectorStore.objects.unscoped().filter(pk=store.pk).update(usage_bytes=10 * GIB)
    services.storage_meter_day(day=START)
    assert StorageMeter.objects.for_tenant(tenant).get(day=START).cost_usd == Decimal("0.9")
    # Re-rating from the stored snapshot does not look at today's bytes.
    VectorStore.objects.unscoped().filter(pk=store.pk).update(usage_bytes=GIB)
    services.storage_meter_day(day=START, snapshot=False)
    assert StorageMeter.objects.for_tenant(tenant).get(day=START).cost_usd == Decimal("0.9")


def test_re_rating_a_day_never_metered_is_refused_so_the_nightly_catch_up_still_meters_it(tenant):
    _store(tenant, usage_bytes=5 * GIB)
    with pytest.raises(services.LifecycleError, match="no storage snapshot to re-rate: meter it first"):
        services.storage_meter_day(day=START, snapshot=False)
    assert not StorageMeter.objects.for_tenant(tenant).filter(day=START).exists()


def test_a_day_that_has_not_begun_is_not_metered(tenant):
    from django.core.management import CommandError, call_command

    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    with pytest.raises(CommandError, match="has not begun yet"):
        call_command("meter_storage", "--day", tomorrow.isoformat())
    assert not StorageMeter.objects.for_tenant(tenant).exists()


def test_a_past_day_already_metered_is_re_rated_not_re_snapshotted_by_the_command(tenant):
    """Re-snapshotting yesterday records the stores as they are today: the day would be billed at today's
    sizes, and a closed month gain a storage adjustment that never happened."""
    from django.core.management import CommandError, call_command

    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    store = _store(tenant, usage_bytes=5 * GIB, created=day - dt.timedelta(days=3))
    call_command("meter_storage", "--day", day.isoformat(), stdout=io.StringIO())
    metered = StorageMeter.objects.for_tenant(tenant).get(day=day)
    VectorStore.objects.unscoped().filter(pk=store.pk).update(usage_bytes=50 * GIB)  # it grew today

    with pytest.raises(CommandError, match="already metered.*--rerate"):
        call_command("meter_storage", "--day", day.isoformat(), stdout=io.StringIO())
    call_command("meter_storage", "--day", day.isoformat(), "--rerate", stdout=io.StringIO())
    again = StorageMeter.objects.for_tenant(tenant).get(day=day)
    assert (again.gb_days, again.cost_usd) == (metered.gb_days, metered.cost_usd)
    assert VectorStoreDay.objects.unscoped().get(day=day).usage_bytes == 5 * GIB


def _at(day: dt.date, hour: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)


def _metered_bytes(tenant, day: dt.date) -> int:
    row = StorageMeter.objects.for_tenant(tenant).filter(day=day).first()
    return row.usage_bytes if row else 0


def test_a_store_is_metered_on_every_day_it_existed_including_the_day_it_was_deleted(tenant):
    """OpenAI bills a store for each day it held bytes at some moment: the deletion day too, not the day after."""
    store = _store(tenant, usage_bytes=3 * GIB, created=START - dt.timedelta(days=2))
    deleted_day = START + dt.timedelta(days=1)
    assert services.resource_record_deleted(resource_type="vector_store", openai_id=store.openai_id,
                                            at=_at(deleted_day, 15), reason="deleted at OpenAI") is True
    for offset in range(-1, 3):
        services.storage_meter_day(day=START + dt.timedelta(days=offset))
    assert [_metered_bytes(tenant, START + dt.timedelta(days=offset)) for offset in range(-1, 3)] == [
        3 * GIB, 3 * GIB, 3 * GIB, 0]


def test_an_expired_store_stops_being_metered_after_the_day_it_expired(tenant):
    obj = builders.vector_store(usage_bytes=2 * GIB, created_at=_at(START - dt.timedelta(days=5)))
    obj.update(status="expired", expires_at=int(_at(START, 6).timestamp()),
               expires_after={"anchor": "last_active_at", "days": 7})
    services.resources_record(tenant=tenant, obj=obj)
    for offset in range(-1, 2):
        services.storage_meter_day(day=START + dt.timedelta(days=offset))
    assert [_metered_bytes(tenant, START + dt.timedelta(days=offset)) for offset in range(-1, 2)] == [
        2 * GIB, 2 * GIB, 0]


def test_recording_a_deletion_keeps_the_first_one_and_ignores_unknown_ids(tenant):
    store = _store(tenant, usage_bytes=GIB)
    first = _at(START, 9)
    assert services.resource_record_deleted(resource_type="vector_store", openai_id=store.openai_id, at=first,
                                            reason="deleted at OpenAI")
    assert not services.resource_record_deleted(resource_type="vector_store", openai_id=store.openai_id,
                                                at=_at(START, 20), reason="again")
    assert not services.resource_record_deleted(resource_type="vector_store", openai_id="vs_unknown", at=first,
                                                reason="deleted at OpenAI")
    store.refresh_from_db()
    assert (store.status, store.deleted_at, store.deletion_reason) == ("deleted", first, "deleted at OpenAI")
    with pytest.raises(services.LifecycleError):
        services.resource_record_deleted(resource_type="assistant", openai_id="asst_1", at=first, reason="x")


def test_the_same_resource_reported_again_is_unchanged_but_seen(tenant):
    obj = builders.vector_store(usage_bytes=GIB, created_at=_at(START))
    assert services.resources_record(tenant=tenant, obj=obj, seen_at=_at(START, 1)) == "created"
    assert services.resources_record(tenant=tenant, obj=dict(obj), seen_at=_at(START, 2)) == "unchanged"
    assert VectorStore.objects.unscoped().get(openai_id=obj["id"]).last_seen_at == _at(START, 2)
    assert services.resources_record(tenant=tenant, obj={**obj, "usage_bytes": 2 * GIB}) == "updated"


def test_the_nightly_meter_delivered_after_midnight_meters_the_day_it_was_scheduled_for(tenant):
    """Beat fires at 23:50; a worker that picks the task up at 00:04 meters the day that just ended."""
    import time_machine

    from apps.lifecycle import tasks

    _store(tenant, usage_bytes=3 * GIB, created=dt.date(2026, 11, 1))
    with time_machine.travel(dt.datetime(2026, 11, 20, 0, 4, tzinfo=dt.UTC), tick=False):
        tasks.meter_storage()
    assert set(StorageMeter.objects.unscoped().values_list("day", flat=True)) >= {dt.date(2026, 11, 19)}
    assert not StorageMeter.objects.unscoped().filter(day=dt.date(2026, 11, 20)).exists()


def test_the_nightly_meter_fills_in_missed_days_of_the_last_week_and_leaves_metered_days_alone(tenant):
    scheduled = dt.date(2026, 11, 19)
    _store(tenant, usage_bytes=3 * GIB, created=dt.date(2026, 11, 1))
    services.storage_meter_day(day=scheduled - dt.timedelta(days=2))
    metered_before = StorageMeter.objects.unscoped().get(day=scheduled - dt.timedelta(days=2)).metered_at
    services.storage_meter_scheduled(now=dt.datetime(2026, 11, 19, 23, 50, tzinfo=dt.UTC))
    days = set(StorageMeter.objects.unscoped().values_list("day", flat=True))
    assert days == {scheduled - dt.timedelta(days=offset) for offset in range(8)}  # the day and the 7 before
    assert StorageMeter.objects.unscoped().get(day=scheduled - dt.timedelta(days=2)).metered_at == metered_before


def test_a_store_a_sweep_deleted_saves_its_cost_from_the_day_after_its_deletion(tenant):
    """The deletion day still bills the store (it existed that day), so it saves nothing until the next day."""

    from apps.lifecycle.models import VectorStoreDay

    from .fakes import FakeProvider

    old = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    provider = FakeProvider()
    for store_id, size in (("vs_keep", 3 * GIB), ("vs_old", 2 * GIB)):
        _store_in_ledger_and_at_openai(tenant, provider, store_id, usage_bytes=size, created=old, last_active=old)
    recent = dt.datetime(2026, 11, 19, tzinfo=dt.UTC)
    VectorStore.objects.unscoped().filter(openai_id="vs_keep").update(last_active_at=recent)
    provider.vector_stores["vs_keep"]["last_active_at"] = int(recent.timestamp())
    _sweep_stores_idle_30_days(tenant, provider)
    assert provider.deletes == ["vs_old"]
    deletion_day = services.storage_meter_day(day=dt.date(2026, 11, 19))[0]
    assert "vs_old" in set(VectorStoreDay.objects.unscoped().filter(day=dt.date(2026, 11, 19))
                           .values_list("vector_store__openai_id", flat=True))
    assert deletion_day.saved_usd == Decimal("0")
    next_day = services.storage_meter_day(day=dt.date(2026, 11, 20))[0]
    assert next_day.saved_usd > 0
    assert next_day.saved_usd == _deleted_store_saving_per_day(tenant)


def test_a_staff_delete_records_the_drop_in_the_bill_across_the_free_gb(tenant):
    """$0.10/GB-day with 1 GB free: a 1 GiB orphan beside a 0.5 GiB store takes the bill from $0.05 to $0."""
    import time_machine

    from apps.lifecycle.models import SweepItem

    from .fakes import FakeProvider

    orphan = _store(None, usage_bytes=GIB, store_id="vs_orphan")
    _store(tenant, usage_bytes=GIB // 2, store_id="vs_small")
    provider = FakeProvider()
    provider.vector_stores["vs_orphan"] = {"id": "vs_orphan", "object": "vector_store"}

    with time_machine.travel(dt.datetime(2026, 11, 19, 10, 0, tzinfo=dt.UTC), tick=False):
        services.resource_delete(resource_type="vector_store", pk=orphan.pk, actor=None, provider=provider)

    assert provider.deletes == ["vs_orphan"]
    assert SweepItem.objects.unscoped().get(openai_id="vs_orphan").saved_usd_per_day == Decimal("0.0500000000")


def test_a_store_openai_reports_empty_at_its_recheck_saves_nothing_whatever_the_ledger_last_listed(tenant):
    """The ledger's usage_bytes is as old as the last inventory listing: a store whose files were removed since
    answers usage_bytes 0 at the sweep's re-check, and deleting it takes nothing off the bill. $0.10/GB-day with
    1 GB free; the ledger still has it at 3 GiB beside another 3 GiB store (the stale figure read $0.30)."""

    from apps.lifecycle.models import SweepItem

    from .fakes import FakeProvider

    old = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    provider = FakeProvider()
    for store_id, last_active in (("vs_emptied", old), ("vs_busy", dt.datetime(2026, 11, 19, tzinfo=dt.UTC))):
        _store_in_ledger_and_at_openai(tenant, provider, store_id, usage_bytes=3 * GIB, created=old,
                                       last_active=last_active)
    provider.vector_stores["vs_emptied"]["usage_bytes"] = 0
    sweep = _sweep_stores_idle_30_days(tenant, provider)

    assert provider.deletes == ["vs_emptied"]
    item = SweepItem.objects.unscoped().get(sweep=sweep)
    assert (item.usage_bytes, item.saved_usd_per_day) == (0, Decimal("0"))


def test_an_expired_store_is_out_of_the_bill_so_deleting_it_or_beside_it_saves_only_what_is_billed(tenant):
    """OpenAI stops billing a store at its expires_at (the meter leaves it out from then), so deleting an
    expired store saves nothing, and an expired store beside one being deleted is not part of the bill whose
    drop is the saving. $0.10/GB-day, 1 GB free: the only billed store is 0.5 GiB, so the bill is $0 with or
    without it (counted in, the expired 3 GiB stores read $0.30 and $0.05 saved per day)."""

    from apps.lifecycle.models import SweepItem

    from .fakes import FakeProvider

    old = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    recent = dt.datetime(2026, 11, 17, tzinfo=dt.UTC)
    expired = dt.datetime(2026, 11, 18, tzinfo=dt.UTC)
    provider = FakeProvider()
    for store_id, size, last_active, expires_at in (("vs_expired_idle", 3 * GIB, old, expired),
                                                   ("vs_expired_recent", 3 * GIB, recent, expired),
                                                   ("vs_small", GIB // 2, old, None)):
        obj = builders.vector_store(vector_store_id=store_id, usage_bytes=size, created_at=old,
                                    last_active_at=last_active)
        if expires_at is not None:
            obj.update(status="expired", expires_at=int(expires_at.timestamp()))
        services.resources_record(tenant=tenant, obj=obj)
        provider.vector_stores[store_id] = dict(obj)
    sweep = _sweep_stores_idle_30_days(tenant, provider)

    assert sorted(provider.deletes) == ["vs_expired_idle", "vs_small"]
    saved = dict(SweepItem.objects.unscoped().filter(sweep=sweep).values_list("openai_id", "saved_usd_per_day"))
    assert saved == {"vs_expired_idle": Decimal("0"), "vs_small": Decimal("0")}


def _deleted_store_saving_per_day(tenant) -> Decimal:
    from apps.lifecycle.models import SweepItem

    return SweepItem.objects.unscoped().get(tenant=tenant, dry_run=False, outcome="deleted").saved_usd_per_day


# --- by OpenAI project (what reconciliation compares with OpenAI's per-project Costs) ------------------------


def _by_project(scope, day=START) -> dict[str, Decimal]:
    return {project: amount for (d, project), amount in
            selectors.storage_cost_by_project(scope=scope, start=day, end=day + dt.timedelta(days=1)).items()}


@pytest.mark.django_db
@override_settings(OPENAI_PROJECT_ID="proj_default")
def test_each_tenants_day_is_split_across_its_stores_projects_by_bytes_and_adds_up_to_the_meter(tenant, other_tenant):
    _store(tenant, usage_bytes=3 * GIB, project="proj_default")
    _store(tenant, usage_bytes=1 * GIB, project="proj_second")
    _store(other_tenant, usage_bytes=2 * GIB, project="proj_second")
    meters = {row.tenant_id: row.cost_usd for row in services.storage_meter_day(day=START)}
    # 6 GiB in all, 5 billable at $0.10: $0.50; acme 4/6 of it, split 3:1 by project; globex 2/6, all second.
    assert meters == {tenant.pk: Decimal("0.3333333333"), other_tenant.pk: Decimal("0.1666666667")}

    both = TenantScope.of([tenant.pk, other_tenant.pk])
    # acme's 3,333,333,333 ledger units split 3:1 → 2,499,999,999.75 and 833,333,333.25: the unit left over
    # goes to the larger remainder.
    assert _by_project(both) == {"proj_default": Decimal("0.2500000000"), "proj_second": Decimal("0.2500000000")}
    assert sum(_by_project(both).values()) == sum(meters.values())
    # A tenant's own scope sees only its own split.
    assert _by_project(TenantScope.of([other_tenant.pk])) == {"proj_second": Decimal("0.1666666667")}


@pytest.mark.django_db
@override_settings(OPENAI_PROJECT_ID="proj_default")
def test_a_store_recorded_without_its_project_counts_in_the_default_project(tenant):
    _store(tenant, usage_bytes=2 * GIB)
    _store(tenant, usage_bytes=2 * GIB, project="proj_default")
    services.storage_meter_day(day=START)
    assert _by_project(TenantScope.of([tenant.pk])) == {"proj_default": Decimal("0.3000000000")}


@pytest.mark.django_db
@override_settings(OPENAI_PROJECT_ID="proj_default")
def test_bytes_the_days_snapshot_no_longer_accounts_for_count_in_the_default_project(tenant):
    # RunLedger never deletes a store's rows; only an edit of the database loses snapshot rows. Lost in part or
    # in whole, the meter's bytes they held go to the default project, and the split still adds up.
    first = _store(tenant, usage_bytes=1 * GIB, project="proj_second")
    second = _store(tenant, usage_bytes=3 * GIB, project="proj_third")
    services.storage_meter_day(day=START)  # 4 GiB, 3 billable: $0.30
    VectorStoreDay.objects.unscoped().filter(vector_store=second).delete()
    assert _by_project(TenantScope.of([tenant.pk])) == {"proj_second": Decimal("0.0750000000"),
                                                        "proj_default": Decimal("0.2250000000")}
    VectorStoreDay.objects.unscoped().filter(vector_store=first).delete()
    assert _by_project(TenantScope.of([tenant.pk])) == {"proj_default": Decimal("0.3000000000")}


@pytest.mark.django_db
@override_settings(OPENAI_PROJECT_ID="proj_default")
def test_a_day_is_split_for_the_tenant_the_meter_billed_even_after_the_store_changes_hands(tenant, other_tenant):
    store = _store(tenant, usage_bytes=3 * GIB, project="proj_second")
    services.storage_meter_day(day=START)
    VectorStore.objects.unscoped().filter(pk=store.pk).update(tenant=other_tenant)  # staff re-assign it later
    assert _by_project(TenantScope.of([tenant.pk])) == {"proj_second": Decimal("0.2000000000")}
    assert _by_project(TenantScope.of([other_tenant.pk])) == {}


@pytest.mark.django_db
@override_settings(OPENAI_PROJECT_ID="proj_default")
def test_a_corrected_project_re_attributes_past_days(tenant):
    # OpenAI objects never move between projects: a project recorded later (the inventory lists the store in
    # its own project) is the one it always had.
    store = _store(tenant, usage_bytes=3 * GIB)
    services.storage_meter_day(day=START)
    assert _by_project(TenantScope.of([tenant.pk])) == {"proj_default": Decimal("0.2000000000")}
    VectorStore.objects.unscoped().filter(pk=store.pk).update(openai_project="proj_second")
    assert _by_project(TenantScope.of([tenant.pk])) == {"proj_second": Decimal("0.2000000000")}


@pytest.mark.django_db
@override_settings(OPENAI_PROJECT_ID="proj_default")
def test_the_split_takes_two_queries_however_many_days_tenants_and_projects(tenant, other_tenant,
                                                                           django_assert_num_queries):
    for offset in range(3):
        _store(tenant, usage_bytes=(offset + 1) * GIB, project=f"proj_{offset}")
        _store(other_tenant, usage_bytes=2 * GIB, project=f"proj_{offset}")
    for offset in range(4):
        services.storage_meter_day(day=START + dt.timedelta(days=offset))
    scope = TenantScope.of([tenant.pk, other_tenant.pk])
    with django_assert_num_queries(2):
        costs = selectors.storage_cost_by_project(scope=scope, start=START, end=START + dt.timedelta(days=4))
    assert {day for day, _ in costs} == {START + dt.timedelta(days=offset) for offset in range(4)}


@pytest.mark.django_db
def test_the_unassigned_stores_stay_out_of_a_scope_of_tenants(tenant):
    _store(tenant, usage_bytes=2 * GIB, project="proj_default")
    _store(None, usage_bytes=2 * GIB, project="proj_default")
    services.storage_meter_day(day=START)
    assert sum(_by_project(TenantScope.of([tenant.pk])).values()) == Decimal("0.1500000000")


def test_orphan_stores_are_priced_with_one_read_of_the_price_book_however_many(tenant):
    # The orphans page and the lifecycle overview list every store with no tenant and what it costs a day.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries_for(count: int) -> int:
        VectorStore.objects.unscoped().delete()
        _store(tenant, usage_bytes=2 * GIB, store_id=f"vs_owned_{count}")
        for index in range(count):
            _store(None, usage_bytes=GIB, store_id=f"vs_orphan_{count}_{index}")
        with CaptureQueriesContext(connection) as captured:
            listed = selectors.orphans(scope=TenantScope.every_tenant(), on_date=START)
        assert len(listed) == count
        return len(captured.captured_queries)

    assert queries_for(5) == queries_for(50)


def test_an_orphan_store_costs_its_share_of_the_bill_above_the_free_gb(tenant):
    # 1 GiB owned + 1 GiB orphan with 1 free GB at $0.10 per GB-day: the orphan is what the bill drops by.
    _store(tenant, usage_bytes=GIB, store_id="vs_owned")
    _store(None, usage_bytes=GIB, store_id="vs_orphan")
    (orphan,) = selectors.orphans(scope=TenantScope.every_tenant(), on_date=START)
    assert orphan.cost_usd_per_day == Decimal("0.1")  # (2 - 1) GB x $0.10 - (1 - 1) GB x $0.10


def test_an_expired_store_costs_nothing_on_the_orphans_page_nor_raises_the_others_cost(tenant):
    # OpenAI stops billing a store at its expires_at: 1 GiB of live orphan is inside the 1 free GB, so nothing
    # here costs anything (counted in, the expired 3 GiB owned store made each orphan read $0.10 a day).
    expired = int(dt.datetime(2026, 5, 31, tzinfo=dt.UTC).timestamp())
    for tenant_of, store_id, size, expires_at in ((tenant, "vs_owned_expired", 3 * GIB, expired),
                                                 (None, "vs_orphan_expired", GIB, expired),
                                                 (None, "vs_orphan_live", GIB, None)):
        obj = builders.vector_store(vector_store_id=store_id, usage_bytes=size,
                                    created_at=dt.datetime(2026, 5, 1, tzinfo=dt.UTC))
        if expires_at:
            obj.update(status="expired", expires_at=expires_at)
        services.resources_record(tenant=tenant_of, obj=obj)
    costs = {o.openai_id: o.cost_usd_per_day for o in selectors.orphans(scope=TenantScope.every_tenant(), on_date=START)}
    assert costs == {"vs_orphan_expired": Decimal("0"), "vs_orphan_live": Decimal("0")}


def test_a_days_total_over_every_tenant_is_written_with_its_meters_and_leaves_the_unassigned_stores_out(
        tenant, other_tenant):
    """The staff overview reads a day's storage from StorageDailyTotal: it must be what summing the day's
    tenant meters gives, after each re-metering too, and absent where no tenant was metered."""
    from django.db.models import Sum

    from apps.lifecycle.models import StorageDailyTotal

    def summed_per_day() -> dict:
        return {row["day"]: row["cost"] for row in selectors.tenant_storage_meters(scope=TenantScope.every_tenant())
                .values("day").order_by("day").annotate(cost=Sum("cost_usd"))}

    _store(tenant, usage_bytes=3 * GIB)
    other = _store(other_tenant, usage_bytes=1 * GIB)
    unassigned = _store(tenant, usage_bytes=4 * GIB, store_id="vs_unassigned")
    VectorStore.objects.unscoped().filter(pk=unassigned.pk).update(tenant=None)
    rows = services.storage_meter_day(day=START)
    assert any(row.tenant_id is None and row.cost_usd for row in rows)  # the unassigned stores bear a share
    assert StorageDailyTotal.objects.get(day=START).cost_usd == sum(row.cost_usd for row in rows if row.tenant_id)
    VectorStore.objects.unscoped().filter(pk=other.pk).update(usage_bytes=9 * GIB)
    services.storage_meter_day(day=START)  # metered again: replaced, not added to
    assert selectors.storage_daily_totals(scope=TenantScope.every_tenant(), start=START, end=START) == summed_per_day() != {}

    VectorStore.objects.unscoped().exclude(pk=unassigned.pk).update(tenant=None)
    next_day = START + dt.timedelta(days=1)
    services.storage_meter_day(day=next_day)  # only the unassigned stores: no tenant's day to total
    assert selectors.storage_daily_totals(scope=TenantScope.every_tenant(), start=START, end=next_day) == summed_per_day()
    assert not StorageDailyTotal.objects.filter(day=next_day).exists()
    with pytest.raises(TenantScopeError):  # every tenant's storage: never a member's answer
        selectors.storage_daily_totals(scope=TenantScope.of([tenant]), start=START, end=next_day)
