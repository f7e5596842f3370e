"""Claiming the next item of a sweep: the lowest id among the pending items and the items whose worker's
lease ran out, never one claimed by a live worker or already done (read as two ordered index scans)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from apps.lifecycle import services
from apps.lifecycle.models import Sweep, SweepItem

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
