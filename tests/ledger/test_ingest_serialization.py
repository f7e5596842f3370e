"""Ingest write phases run one at a time on PostgreSQL (services.INGEST_LOCK_KEY): the batch parses and
rates outside the lock, then waits for it before touching a row, and new runs go in by plain COPY."""

import datetime as dt
from decimal import Decimal

import psycopg
import pytest

from apps.ledger import bulk
from apps.ledger.models import Run, Thread
from apps.ledger.services import INGEST_LOCK_KEY, ingest_events, ledger_check
from tests import builders
from tests.threads import InAnotherThread, dsn

WHEN = dt.datetime(2026, 11, 3, 8, 0, tzinfo=dt.UTC)


def _batch(prefix: str, count: int) -> list[dict]:
    return [{"tenant": "acme", "object": builders.assistants_run(
        run_id=f"run_{prefix}_{i}", thread_id=f"thread_{prefix}_{i % 3}", created_at=WHEN, prompt_tokens=500 + i)}
        for i in range(count)]


def _holding_the_lock(*, shared: bool = False):
    """Another session holds the ingest lock (as a batch or an import worker would) until the block ends."""
    holder = psycopg.connect(dsn(), autocommit=True)
    suffix = "_shared" if shared else ""
    holder.execute(f"SELECT pg_advisory_lock{suffix}(%s)", [INGEST_LOCK_KEY])
    return _Held(holder, suffix)


class _Held:
    def __init__(self, holder, suffix):
        self.holder, self.suffix = holder, suffix

    def __enter__(self):
        return self.holder

    def __exit__(self, *exc):
        self.holder.execute(f"SELECT pg_advisory_unlock{self.suffix}(%s)", [INGEST_LOCK_KEY])
        self.holder.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_batch_waits_for_the_ingest_lock_before_writing_anything(tenant):
    with _holding_the_lock() as holder:
        batch = InAnotherThread(lambda: ingest_events(events=_batch("wait", 20)))
        still_waiting = batch.waiting_after(1.0)
        visible_while_held = holder.execute("SELECT count(*) FROM ledger_run").fetchone()[0]
    assert still_waiting and visible_while_held == 0
    assert batch.finish().created == 20
    assert Run.objects.for_tenant(tenant).count() == 20
    assert ledger_check() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_lock_is_released_when_the_batch_commits(tenant):
    ingest_events(events=_batch("first", 5))
    with psycopg.connect(dsn(), autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [INGEST_LOCK_KEY]).fetchone()[0] is True
        other.execute("SELECT pg_advisory_unlock(%s)", [INGEST_LOCK_KEY])


@pytest.mark.django_db
def test_copy_into_inserts_rows_the_caller_knows_are_new(tenant):
    names = ["tenant_id", "openai_id", "kind", "openai_project", "created_at", "last_activity_at", "run_count",
             "cost_usd", "metadata", "status", "deletion_reason", "recorded_at"]
    bulk.copy_into(Thread._meta.db_table, bulk.columns_for(Thread, names), [
        [tenant.pk, f"thread_copy_{i}", "thread", "", WHEN, WHEN, 0, Decimal("0.5"), {"k": f"v{i}"}, "active", "", WHEN]
        for i in range(3)
    ])
    stored = {t.openai_id: (t.metadata, t.cost_usd) for t in Thread.objects.for_tenant(tenant)}
    assert stored == {f"thread_copy_{i}": ({"k": f"v{i}"}, Decimal("0.5")) for i in range(3)}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_partitioned_batches_share_the_lock_with_each_other_but_not_with_ordinary_batches(tenant):
    with _holding_the_lock(shared=True):  # another import worker
        partitioned = InAnotherThread(lambda: ingest_events(events=_batch("part", 10), partitioned=True))
        went_ahead = not partitioned.waiting_after(30)
        ordinary = InAnotherThread(lambda: ingest_events(events=_batch("ord", 10)))
        ordinary_waited = ordinary.waiting_after(1.0)
    assert went_ahead and partitioned.finish().created == 10
    assert ordinary_waited and ordinary.finish().created == 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_partitioned_batch_that_overlaps_another_after_all_is_written_again_exclusively(tenant, monkeypatch):
    from apps.ledger import services

    ingest_events(events=_batch("overlap", 4))
    real = services._lock_existing_runs
    calls = {"n": 0}

    def miss_once(openai_ids):
        # As if another worker committed these runs between this batch's read and its COPY.
        calls["n"] += 1
        return {} if calls["n"] == 1 else real(openai_ids)

    monkeypatch.setattr(services, "_lock_existing_runs", miss_once)
    result = ingest_events(events=_batch("overlap", 6), partitioned=True)
    assert [r.outcome for r in result.results] == ["unchanged"] * 4 + ["created"] * 2
    assert Run.objects.for_tenant(tenant).count() == 6
    assert ledger_check() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_repricing_takes_its_turn_under_the_ingest_lock(tenant):
    from apps.ledger.services import runs_reprice

    ingest_events(events=_batch("reprice", 5))
    with _holding_the_lock():
        reprice = InAnotherThread(lambda: runs_reprice(dry_run=False))
        waited = reprice.waiting_after(1.0)
    assert waited and reprice.finish().tenants[0].runs == 5
