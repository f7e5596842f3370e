"""Migration ledger.0006 rewrites the run table with its columns in alignment order (less padding per row):
the rows, constraints, indexes and the id sequence survive it unchanged."""

import datetime as dt
import importlib
from types import SimpleNamespace

import pytest
from django.db import connection

from apps.ledger.models import Run
from apps.ledger.services import ingest_events, ledger_check
from tests import builders

layout = importlib.import_module("apps.ledger.migrations.0006_run_columns_in_alignment_order")
WHEN = dt.datetime(2026, 11, 3, 8, 0, tzinfo=dt.UTC)


def _catalog() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'ledger_run'::regclass AND attnum > 0 "
                       "AND NOT attisdropped ORDER BY attnum")
        columns = [row[0] for row in cursor.fetchall()]
        cursor.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                       "WHERE conrelid = 'ledger_run'::regclass")
        constraints = set(cursor.fetchall())
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'ledger_run'")
        indexes = set(cursor.fetchall())
    return {"columns": columns, "constraints": constraints, "indexes": indexes}


def _report(number: int) -> dict:
    return {"tenant": "acme", "attribution": {"user_id": f"u{number}", "feature": "chat"},
            "object": builders.assistants_run(run_id=f"run_layout_{number}", thread_id="thread_layout",
                                              created_at=WHEN, prompt_tokens=1000 + number)}


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_run_table_is_laid_out_in_alignment_order():
    columns = _catalog()["columns"]
    assert columns == [name for name in layout.ALIGNMENT_ORDER if name in columns]
    assert set(columns) == {field.column for field in Run._meta.concrete_fields}


@pytest.mark.postgres
@pytest.mark.django_db
def test_rewriting_keeps_rows_constraints_indexes_and_the_id_sequence(tenant):
    ingest_events(events=[_report(n) for n in range(5)])
    before_rows = list(Run.objects.for_tenant(tenant).order_by("id").values())
    before = _catalog()
    layout.rewrite_in_alignment_order(None, SimpleNamespace(connection=connection))
    assert _catalog() == before
    assert list(Run.objects.for_tenant(tenant).order_by("id").values()) == before_rows
    ingest_events(events=[_report(9)])
    assert Run.objects.for_tenant(tenant).get(openai_id="run_layout_9").id > before_rows[-1]["id"]
    assert ledger_check() == []


@pytest.mark.django_db
def test_sqlite_is_left_alone():
    if connection.vendor == "postgresql":
        pytest.skip("this one is about SQLite")
    layout.rewrite_in_alignment_order(None, SimpleNamespace(connection=connection))  # no error, nothing to do
