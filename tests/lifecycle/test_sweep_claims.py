"""Claiming the next item of a sweep: the lowest id among the pending items and the items whose worker's
lease ran out, never one claimed by a live worker or already done (read as two ordered index scans). A claim
is renewed before every provider call, so an item slower than the lease stays its worker's; a worker whose
claim was taken over anyway writes nothing and stops."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from apps.ledger.models import Thread
from apps.lifecycle import services
from apps.lifecycle.models import Outcome, Sweep, SweepItem

from .fakes import FakeProvider

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def sweep(tenant, settings):
    settings.LIFECYCLE_ITEM_LEASE_SECONDS = 300
    sweep = services.sweep_create(kind="threads", dry_run=True, as_of=NOW)
    Sweep.objects.unscoped().filter(pk=sweep.pk).update(planned_at=NOW)
    sweep.refresh_from_db()
    return sweep


def _items(sweep, tenant, states: str) -> list[SweepItem]:
    """One item per letter: p pending, l claimed by a live worker, e claimed with an expired lease, d done."""
    now = timezone.now()
    rows = []
    for index, code in enumerate(states):
        rows.append(SweepItem(
            sweep=sweep, tenant=tenant, resource_type="thread", openai_id=f"thread_{index:03d}", rule="r",
            state={"p": "pending", "l": "claimed", "e": "claimed", "d": "done"}[code],
            claimed_by="" if code == "p" else "other",
            claimed_at={"l": now - dt.timedelta(seconds=10), "e": now - dt.timedelta(seconds=900)}.get(code),
            outcome="would_delete" if code == "d" else "",
        ))
    return SweepItem.objects.bulk_create(rows)


def test_items_are_claimed_in_id_order_across_pending_and_expired_claims(sweep, tenant):
    states = "ddlepdelpppeedlpd" + "p" * 30 + "e"
    items = _items(sweep, tenant, states)
    claimable = [item.openai_id for item, code in zip(items, states, strict=True) if code in "pe"]
    claimed = []
    while (item := services._claim_next_item(sweep, "me")) is not None:
        assert item.state == SweepItem.State.CLAIMED and item.claimed_by == "me"
        claimed.append(item.openai_id)
    assert claimed == claimable
    # The live worker's claims and the done items were never touched.
    untouched = SweepItem.objects.unscoped().filter(sweep=sweep).exclude(claimed_by="me")
    assert sorted(untouched.values_list("openai_id", flat=True)) == [
        item.openai_id for item, code in zip(items, states, strict=True) if code in "ld"]


def test_a_claim_costs_the_same_few_queries_at_any_sweep_size(sweep, tenant, django_assert_num_queries):
    _items(sweep, tenant, "d" * 300 + "e" + "p" * 300)
    with django_assert_num_queries(4):  # pending ids, expired ids, the conditional UPDATE, the item
        item = services._claim_next_item(sweep, "me")
    assert item.openai_id == "thread_300"


@pytest.mark.parametrize(("states", "reaped"), [
    ("ddl", False),  # only a dead worker's claim left, inside its lease: the sweep waits for it
    ("dlp", True),   # items still pending: a new worker takes them on now
    ("dde", True),   # the claim's lease has run out: nothing to wait for
    ("del", True),   # one claim's lease has run out: a new worker takes that item now
])
def test_the_reaper_leaves_a_sweep_that_only_waits_for_a_dead_workers_claim_to_run_out(sweep, tenant, settings,
                                                                                         states, reaped):
    # Re-enqueued while it waits, its new chain only waited again, audited as a reap at every tick.
    from apps.core.models import AuditEvent

    settings.LIFECYCLE_SWEEP_STALE_SECONDS = 5
    _items(sweep, tenant, states)
    Sweep.objects.unscoped().filter(pk=sweep.pk).update(
        status=Sweep.Status.RUNNING, heartbeat_at=timezone.now() - dt.timedelta(seconds=8))

    assert services.sweeps_reap() == ([sweep.pk] if reaped else [])
    assert AuditEvent.objects.filter(action="lifecycle.sweep.reap").exists() is reaped


class SlowProvider(FakeProvider):
    """Every call takes `seconds` of (travelled) time; `during_delete` runs once, inside the first delete."""

    def __init__(self, traveller, seconds: float):
        super().__init__()
        self.traveller, self.seconds = traveller, seconds
        self.delete_calls: list[str] = []
        self.during_delete = None

    def _get(self, table, key):
        self.traveller.shift(dt.timedelta(seconds=self.seconds))
        return super()._get(table, key)

    def delete_thread(self, thread_id):
        self.delete_calls.append(thread_id)
        self.traveller.shift(dt.timedelta(seconds=self.seconds))
        if self.during_delete is not None:
            during, self.during_delete = self.during_delete, None
            during()
        return super().delete_thread(thread_id)


def _stale_thread(tenant, provider, openai_id):
    last = NOW - dt.timedelta(days=45)
    Thread.objects.create(tenant=tenant, openai_id=openai_id, kind="thread", created_at=last, last_activity_at=last)
    provider.add_thread(openai_id, last)


@pytest.fixture
def retention(tenant, settings):
    settings.LIFECYCLE_ITEM_LEASE_SECONDS = 300
    settings.LIFECYCLE_SWEEP_STALE_SECONDS = 300
    tenant.thread_retention_days = 30
    tenant.save()
    return tenant


def test_an_item_whose_calls_together_outlast_the_lease_is_not_reclaimed_or_deleted_twice(retention):
    # Each call takes 200 s (429 retries) and a thread takes 4 (retrieve, runs, messages, delete): 800 s in all,
    # but the lease and heartbeat are renewed before each call, so at 800 s they are only 200 s old.
    with time_machine.travel(NOW + dt.timedelta(hours=1), tick=False) as traveller:
        provider = SlowProvider(traveller, seconds=200)
        _stale_thread(retention, provider, "thread_slow")
        sweep = services.sweep_create(kind="threads", as_of=NOW)
        other = {}

        def reaper_and_second_worker():
            other["reaped"] = services.sweeps_reap()
            other["batch"] = services.sweep_run_batch(sweep_id=sweep.pk, worker="B", provider=provider).status

        provider.during_delete = reaper_and_second_worker
        result = services.sweep_run_batch(sweep_id=sweep.pk, worker="A", provider=provider)
    assert other == {"reaped": [], "batch": "busy"}
    assert provider.delete_calls == ["thread_slow"]
    item = SweepItem.objects.unscoped().get(sweep=sweep)
    assert (item.outcome, item.claimed_by) == (Outcome.DELETED, "A")
    assert result.status == "finished"


def test_a_worker_that_lost_its_claim_mid_call_writes_nothing_and_stops(retention):
    # One call slower than the lease (the only case renewal cannot cover): worker B resumes the sweep and
    # deletes both threads. A's late answer (404: already gone) must not overwrite B's audit or the ledger's
    # deletion reason, and A must not go on to another item.
    with time_machine.travel(NOW + dt.timedelta(hours=1), tick=False) as traveller:
        provider = SlowProvider(traveller, seconds=0)
        _stale_thread(retention, provider, "thread_a")
        _stale_thread(retention, provider, "thread_b")
        sweep = services.sweep_create(kind="threads", as_of=NOW)

        def second_worker_takes_over():
            traveller.shift(dt.timedelta(seconds=700))
            assert services.sweeps_reap() == [sweep.pk]
            assert services.sweep_run_batch(sweep_id=sweep.pk, worker="B", provider=provider).status == "finished"

        provider.during_delete = second_worker_takes_over
        result = services.sweep_run_batch(sweep_id=sweep.pk, worker="A", provider=provider)
    assert result.status == "busy" and result.processed == 0
    items = {i.openai_id: (i.outcome, i.claimed_by) for i in SweepItem.objects.unscoped().filter(sweep=sweep)}
    assert items == {"thread_a": (Outcome.DELETED, "B"), "thread_b": (Outcome.DELETED, "B")}
    assert provider.deletes == ["thread_a", "thread_b"]  # A's DELETE reached OpenAI after B's: a 404
    assert "thread_retention_days=30" in Thread.objects.unscoped().get(openai_id="thread_a").deletion_reason
    sweep.refresh_from_db()
    assert sweep.status == Sweep.Status.FINISHED
