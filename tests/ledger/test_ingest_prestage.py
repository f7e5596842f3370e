"""On PostgreSQL an ordinary batch stages the rows (and rollup share rows) of the runs it would create before it
takes the ingest lock; under the lock the runs that are indeed new go in from the stage, with thread ids
joined by openai id. Staged rows of runs that were stored after all, rejected, or merged otherwise must never
be inserted or counted."""

import datetime as dt

import pytest
from django.db import transaction

from apps.ledger import bulk, services
from apps.ledger.models import DailyRollup, Run, Thread
from apps.ledger.services import ingest_events, ledger_check
from tests import builders

WHEN = dt.datetime(2026, 11, 3, 8, 0, tzinfo=dt.UTC)
pytestmark = pytest.mark.postgres


def _run(run_id: str, thread_id: str, status: str = "completed", tokens: int = 1000) -> dict:
    return {"tenant": "acme", "object": builders.assistants_run(
        run_id=run_id, thread_id=thread_id, created_at=WHEN, status=status, prompt_tokens=tokens)}


def _no_direct_run_copy(monkeypatch) -> list[int]:
    """Count COPYs straight into the run table (the path for new runs the stage did not hold)."""
    copies: list[int] = []
    real = bulk.copy_into

    def counting(table, columns, rows):
        if table == Run._meta.db_table and rows:
            copies.append(len(rows))
        return real(table, columns, rows)

    monkeypatch.setattr(bulk, "copy_into", counting)
    return copies


@pytest.mark.django_db
def test_new_runs_go_in_from_the_stage_with_their_threads(tenant, monkeypatch):
    ingest_events(events=[_run("run_old", "thread_known")])
    copies = _no_direct_run_copy(monkeypatch)
    result = ingest_events(events=[_run("run_a", "thread_known"), _run("run_b", "thread_new"),
                                   _run("run_c", "thread_new")])
    assert [r.outcome for r in result.results] == ["created"] * 3
    assert copies == []  # all three came from the stage
    threads = dict(Thread.objects.for_tenant(tenant).values_list("openai_id", "id"))
    stored = dict(Run.objects.for_tenant(tenant).values_list("openai_id", "thread_id"))
    assert stored == {"run_old": threads["thread_known"], "run_a": threads["thread_known"],
                      "run_b": threads["thread_new"], "run_c": threads["thread_new"]}
    assert Thread.objects.for_tenant(tenant).get(openai_id="thread_new").run_count == 2
    assert ledger_check() == []


@pytest.mark.django_db
def test_staged_rows_of_runs_stored_after_all_are_neither_inserted_nor_counted(tenant):
    ingest_events(events=[_run("run_a", "thread_1", status="in_progress")])
    result = ingest_events(events=[_run("run_a", "thread_1"), _run("run_a", "thread_1"), _run("run_b", "thread_1")])
    assert [r.outcome for r in result.results] == ["updated", "unchanged", "created"]
    assert Run.objects.for_tenant(tenant).count() == 2
    assert sum(DailyRollup.objects.for_tenant(tenant).values_list("runs", flat=True)) == 2
    assert ledger_check() == []


@pytest.mark.django_db
def test_a_batch_of_runs_all_stored_already_counts_nothing_twice(tenant):
    batch = [_run("run_a", "thread_1"), _run("run_b", "thread_1")]
    ingest_events(events=batch)
    assert ingest_events(events=batch).unchanged == 2
    assert sum(DailyRollup.objects.for_tenant(tenant).values_list("runs", flat=True)) == 2
    assert ledger_check() == []


@pytest.mark.django_db
def test_a_run_whose_report_is_rejected_under_the_lock_goes_in_as_its_other_report_says(tenant, other_tenant):
    # The stage merged both reports (the conversation filled in from the first); under the lock the first is
    # rejected (its conversation is another tenant's), so the stored run must not carry it.
    ingest_events(events=[{"tenant": "globex", "object": builders.conversation(conversation_id="conv_globex",
                                                                                  created_at=WHEN)}])
    first = {"tenant": "acme", "object": builders.response(response_id="resp_x", created_at=WHEN, status="in_progress",
                                                           conversation_id="conv_globex")}
    second = {"tenant": "acme", "object": builders.response(response_id="resp_x", created_at=WHEN)}
    result = ingest_events(events=[first, second])
    assert [r.outcome for r in result.results] == ["rejected", "created"]
    run = Run.objects.for_tenant(tenant).get(openai_id="resp_x")
    assert (run.thread_id, run.thread_openai_id, run.status) == (None, "", "completed")
    assert ledger_check() == []


@pytest.mark.django_db
def test_a_batch_fails_whole_if_the_stage_ever_disagrees_with_the_runs_it_takes(tenant, monkeypatch):
    # A guard, not a path: if the stage ever held other rows than the ones taken, the batch fails whole.
    monkeypatch.setattr(services._Prestaged, "take", lambda self, inserts: (setattr(self, "taken", set()), inserts)[1])
    with pytest.raises(RuntimeError, match="prestaged runs inserted"):
        ingest_events(events=[_run("run_a", "thread_1")])
    assert not Run.objects.for_tenant(tenant).exists()


@pytest.mark.django_db(transaction=True)
def test_staging_outside_a_transaction_is_refused():
    assert not transaction.get_connection().in_atomic_block
    with pytest.raises(RuntimeError, match="needs a transaction"):
        bulk.stage(services.SHARE_STAGE, [])
