"""Which ledger keys the database constrains (migration ledger.0007): the run's tenant and thread and the
thread's tenant do; rollup tenants and run price keys do not (each constraint was a deferred check per
inserted row at COMMIT, inside the ingest lock) — and Django's PROTECT still refuses the deletes that
would orphan them."""

import datetime as dt

import pytest
from django.db import connection
from django.db.models import ProtectedError

from apps.ledger.models import Run
from apps.ledger.services import ingest_events
from apps.pricing.models import ModelPrice
from tests import builders

WHEN = dt.datetime(2026, 11, 3, 8, 0, tzinfo=dt.UTC)


def _foreign_keys() -> set[tuple[str, str]]:
    """(table, referenced table) of every foreign-key constraint on the ledger's tables."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
                           "WHERE contype = 'f' AND conrelid::regclass::text LIKE 'ledger\\_%'")
            return {(table, target) for table, target in cursor.fetchall()}
        found = set()
        for table in connection.introspection.table_names(cursor):
            if table.startswith("ledger_"):
                cursor.execute(f"PRAGMA foreign_key_list({table})")
                found |= {(table, row[2]) for row in cursor.fetchall()}
        return found


@pytest.mark.django_db
def test_only_run_and_thread_keys_are_constrained_in_the_database():
    assert _foreign_keys() == {
        ("ledger_run", "tenants_tenant"), ("ledger_run", "ledger_thread"), ("ledger_thread", "tenants_tenant"),
    }


@pytest.mark.django_db
def test_a_price_that_rated_runs_still_cannot_be_deleted(tenant):
    result = ingest_events(events=[{"tenant": "acme", "object": builders.assistants_run(
        run_id="run_priced", thread_id="thread_1", created_at=WHEN, prompt_tokens=1000, completion_tokens=10)}])
    assert result.created == 1
    run = Run.objects.unscoped().get(openai_id="run_priced")
    assert run.priced and run.model_price_id is not None
    with pytest.raises(ProtectedError):
        ModelPrice.objects.get(pk=run.model_price_id).delete()


@pytest.mark.django_db
def test_a_tenant_with_runs_and_rollups_cannot_be_deleted(tenant):
    ingest_events(events=[{"tenant": "acme", "object": builders.assistants_run(
        run_id="run_1", thread_id="thread_1", created_at=WHEN, prompt_tokens=1000, completion_tokens=10)}])
    with pytest.raises(ProtectedError):
        tenant.delete()


@pytest.mark.postgres
@pytest.mark.django_db
def test_rollups_that_ingest_updates_leave_room_on_their_pages_for_in_place_updates():
    """Migrations ledger.0008, 0011, 0015 and 0020: fillfactor 70 on the rollups whose rows ingest keeps adding to; the
    end-user daily rollup (almost only new rows) and the run table (its updates change indexed columns) stay full."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reloptions FROM pg_class WHERE relkind = 'r' AND relname LIKE 'ledger\\_%'")
        options = {table: reloptions for table, reloptions in cursor.fetchall()}
    assert {table for table, reloptions in options.items() if reloptions} == {
        "ledger_dailyrollup", "ledger_endusermonthlyrollup", "ledger_endusermonthpartrollup", "ledger_promptsizerollup",
        "ledger_toolusagerollup", "ledger_tenantdailyrollup", "ledger_everytenantdailyrollup",
    }
    assert options["ledger_dailyrollup"] == ["fillfactor=70"]
