"""Set-based sweep planning (threads and confirmations: one INSERT ... SELECT per page of source rows): the
same items and audit rule text as the per-row planning it replaced, whatever the page size; a repeated or
resumed step adds nothing; a step costs the same few queries whatever the number of threads."""

from __future__ import annotations

import datetime as dt

import pytest

from apps.ledger.models import Thread
from apps.lifecycle import services
from apps.lifecycle.models import Outcome, Sweep, SweepItem
from apps.tenants.models import Tenant

from .fakes import FakeProvider

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
ITEM_FIELDS = ("tenant_id", "resource_type", "openai_id", "rule", "last_activity_at", "dry_run", "state", "outcome",
               "detail", "usage_bytes", "saved_usd_per_day", "archived", "fingerprint", "attempts", "claimed_by",
               "claimed_at", "processed_at")


def _thread(tenant, openai_id, last, *, kind="thread", status="active"):
    return Thread.objects.create(tenant=tenant, openai_id=openai_id, kind=kind, created_at=last, last_activity_at=last,
                                 status=status)


@pytest.fixture
def ledger(tenant, other_tenant):
    """Three tenants with two retentions and one on legal hold; threads and conversations on both sides of
    each cutoff (one a microsecond before it), deleted ones, interleaved so every page mixes them."""
    tenant.thread_retention_days = 30
    tenant.save()
    other_tenant.thread_retention_days = 90
    other_tenant.save()
    held = Tenant.objects.create(slug="held", name="Held", external_id="cus_held", legal_hold=True)
    expected = []
    for i in range(12):
        # 23:59:59.999999 must read 23:59 (truncated, as Python's %H:%M does), never rounded up.
        old = NOW - dt.timedelta(days=31 + i, hours=i, seconds=1) + dt.timedelta(microseconds=i * 83_333)
        kind = "conversation" if i % 3 == 0 else "thread"
        expected.append(_thread(tenant, f"a_old_{i:02d}", old, kind=kind).openai_id)
        _thread(tenant, f"a_new_{i:02d}", NOW - dt.timedelta(days=29, hours=23))
        _thread(other_tenant, f"b_mid_{i:02d}", NOW - dt.timedelta(days=60 + i))  # old for 30 days, not for 90
        expected.append(_thread(other_tenant, f"b_old_{i:02d}", NOW - dt.timedelta(days=91 + i)).openai_id)
        _thread(held, f"h_old_{i:02d}", NOW - dt.timedelta(days=400))
        _thread(tenant, f"a_gone_{i:02d}", NOW - dt.timedelta(days=200), status="deleted")
    edge = NOW - dt.timedelta(days=30)
    _thread(tenant, "a_edge", edge)  # exactly at the cutoff: not older than 30 days
    expected.append(_thread(tenant, "a_edge_minus", edge - dt.timedelta(microseconds=1)).openai_id)
    _thread(tenant, "a_late", dt.datetime(2026, 10, 1, 23, 59, 59, 999_999, tzinfo=dt.UTC))
    expected.append("a_late")
    return tenant, other_tenant, held, expected


def _items(sweep) -> list[tuple]:
    return list(SweepItem.objects.unscoped().filter(sweep=sweep).order_by("pk").values_list(*ITEM_FIELDS))


def _plan(sweep) -> int:
    steps = 1
    while not services._plan_step(sweep):
        steps += 1
    return steps


def _python_rule(thread: Thread, days: int) -> str:
    """The rule text the per-row planner wrote (and the audit shows)."""
    return f"thread_retention_days={days}: last activity {thread.last_activity_at:%Y-%m-%d %H:%M} UTC"


def test_planning_in_many_small_pages_gives_the_same_items_as_one_page(ledger, settings):
    tenant, other, _held, expected = ledger
    one = services.sweep_create(kind="threads", dry_run=True, as_of=NOW)
    assert _plan(one) == 1
    settings.LIFECYCLE_SWEEP_SET_PLAN_PAGE = 5
    many = services.sweep_create(kind="threads", dry_run=True, as_of=NOW)
    assert _plan(many) > 10
    assert _items(many) == _items(one)
    one.refresh_from_db()
    many.refresh_from_db()
    assert one.planned_count == many.planned_count == len(expected)
    assert one.cursor == many.cursor == "" and many.planned_at is not None
    # Exactly the rule's threads, in the ledger's order, each with the rule text the per-row planner wrote.
    threads = {t.openai_id: t for t in Thread.objects.unscoped().filter(openai_id__in=expected)}
    ordered = sorted(expected, key=lambda oid: threads[oid].pk)
    items = list(SweepItem.objects.unscoped().filter(sweep=many).order_by("pk"))
    assert [item.openai_id for item in items] == ordered
    days = {tenant.pk: 30, other.pk: 90}
    for item in items:
        thread = threads[item.openai_id]
        assert item.rule == _python_rule(thread, days[thread.tenant_id])
        assert item.last_activity_at == thread.last_activity_at and item.tenant_id == thread.tenant_id
        assert item.resource_type == thread.kind and item.dry_run and item.state == SweepItem.State.PENDING
    assert threads["a_late"].last_activity_at.microsecond == 999_999
    assert items[-1].rule.endswith("last activity 2026-10-01 23:59 UTC")


def test_a_repeated_or_resumed_planning_step_adds_no_duplicate(ledger, settings):
    _, _, _, expected = ledger
    settings.LIFECYCLE_SWEEP_SET_PLAN_PAGE = 7
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    services._plan_step(sweep)
    services._plan_step(sweep)
    first_pages = _items(sweep)
    # A worker that stored a page but died before its cursor moved (or a redelivered task) plans again from
    # the start: the items already stored are left as they are.
    Sweep.objects.unscoped().filter(pk=sweep.pk).update(cursor="")
    sweep.refresh_from_db()
    _plan(sweep)
    items = _items(sweep)
    assert items[:len(first_pages)] == first_pages
    assert sorted(item[2] for item in items) == sorted(expected)
    sweep.refresh_from_db()
    assert sweep.planned_count == len(expected)
    # Once planned, a step is a no-op.
    assert services._plan_step(sweep) is True and _items(sweep) == items


def test_planning_spread_over_many_batches_then_swept_once_each(ledger, settings):
    _, _, _, expected = ledger
    settings.LIFECYCLE_SWEEP_SET_PLAN_PAGE = 4
    provider = FakeProvider()
    for thread in Thread.objects.unscoped().filter(status="active"):
        if thread.kind == "thread":
            provider.add_thread(thread.openai_id, thread.last_activity_at)
        else:
            provider.conversations[thread.openai_id] = {"id": thread.openai_id, "object": "conversation",
                                                        "created_at": int(thread.last_activity_at.timestamp())}
    sweep = services.sweep_create(kind="threads", as_of=NOW)
    # batch_size 10 plans one page a batch, as one task invocation re-enqueued after each.
    batches = 0
    while True:
        result = services.sweep_run_batch(sweep_id=sweep.pk, worker="worker", provider=provider, batch_size=10)
        batches += 1
        if result.status == "finished":
            break
        assert result.status == "more" and batches < 100
    assert batches > len(expected) // 4
    assert SweepItem.objects.unscoped().filter(sweep=sweep).count() == len(expected)
    # Conversations are kept the first time a sweep looks at their items (they carry no timestamps); the
    # next sweep finds them unchanged and deletes them.
    conversations = set(Thread.objects.unscoped().filter(openai_id__in=expected, kind="conversation")
                        .values_list("openai_id", flat=True))
    assert conversations and sorted(provider.deletes) == sorted(set(expected) - conversations)
    services.sweep_run_to_completion(sweep_id=services.sweep_create(kind="threads", as_of=NOW).pk, provider=provider)
    assert sorted(provider.deletes) == sorted(expected)


def test_dry_run_and_real_run_plan_the_same_items(ledger):
    dry = services.sweep_create(kind="threads", dry_run=True, as_of=NOW)
    _plan(dry)
    real = services.sweep_create(kind="threads", as_of=NOW)
    _plan(real)
    strip = [item[:5] + item[6:] for item in _items(dry)]  # all but dry_run
    assert strip == [item[:5] + item[6:] for item in _items(real)]
    assert {item[5] for item in _items(dry)} == {True} and {item[5] for item in _items(real)} == {False}


def test_a_tenant_sweep_plans_only_that_tenant_and_a_held_tenant_nothing(ledger):
    tenant, other, held, expected = ledger
    sweep = services.sweep_create(kind="threads", tenant=other, as_of=NOW)
    _plan(sweep)
    assert sorted(i[2] for i in _items(sweep)) == sorted(e for e in expected if e.startswith("b_"))
    # Everyone on hold: the step finds no eligible tenant and finishes planning with nothing.
    Tenant.objects.update(legal_hold=True)
    everyone = services.sweep_create(kind="threads", dry_run=True, as_of=NOW)
    assert _plan(everyone) == 1
    everyone.refresh_from_db()
    assert everyone.planned_count == 0 and everyone.planned_at is not None


def test_a_confirmation_copies_its_previews_would_delete_list_page_by_page(ledger, settings):
    preview = services.sweep_create(kind="threads", dry_run=True, as_of=NOW)
    _plan(preview)
    items = list(SweepItem.objects.unscoped().filter(sweep=preview).order_by("pk"))
    for index, item in enumerate(items):  # what processing the preview leaves, with fingerprints and sizes
        outcome = Outcome.SKIPPED_ACTIVE if index % 4 == 1 else Outcome.WOULD_DELETE
        SweepItem.objects.unscoped().filter(pk=item.pk).update(
            state=SweepItem.State.DONE, outcome=outcome, detail="re-checked", fingerprint=f"msg_{index}",
            usage_bytes=index * 1000, processed_at=NOW, attempts=1, claimed_by="w")
    Sweep.objects.unscoped().filter(pk=preview.pk).update(status=Sweep.Status.FINISHED)
    settings.LIFECYCLE_SWEEP_SET_PLAN_PAGE = 3
    real = services.sweep_create(kind="threads", preview_of=preview)
    assert _plan(real) > 3
    source = SweepItem.objects.unscoped().filter(sweep=preview, outcome=Outcome.WOULD_DELETE).order_by("pk")
    copied = ("tenant_id", "resource_type", "openai_id", "rule", "last_activity_at", "usage_bytes", "fingerprint")
    assert (list(SweepItem.objects.unscoped().filter(sweep=real).order_by("pk").values_list(*copied))
            == list(source.values_list(*copied)))
    fresh = SweepItem.objects.unscoped().filter(sweep=real)
    assert set(fresh.values_list("dry_run", "state", "outcome", "detail", "attempts", "claimed_by")) == {
        (False, SweepItem.State.PENDING, "", "", 0, "")}
    assert not fresh.exclude(processed_at=None).exists()


def test_a_planning_step_runs_the_same_queries_for_ten_threads_or_two_hundred(tenant, settings,
                                                                               django_assert_max_num_queries):
    """Nothing per thread goes through Python: the plan of a million threads stays flat in memory."""
    tenant.thread_retention_days = 30
    tenant.save()
    old = NOW - dt.timedelta(days=45)
    Thread.objects.bulk_create([Thread(tenant=tenant, openai_id=f"t_{i:04d}", kind="thread", created_at=old,
                                       last_activity_at=old) for i in range(200)])
    settings.LIFECYCLE_SWEEP_SET_PLAN_PAGE = 10
    small = services.sweep_create(kind="threads", as_of=NOW)
    with django_assert_max_num_queries(8):
        services._plan_step(small)
    settings.LIFECYCLE_SWEEP_SET_PLAN_PAGE = 1000
    large = services.sweep_create(kind="threads", dry_run=True, as_of=NOW)
    with django_assert_max_num_queries(8):
        assert services._plan_step(large)
    assert SweepItem.objects.unscoped().filter(sweep=large).count() == 200
