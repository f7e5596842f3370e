"""The indexes of RunLedger's tables (PostgreSQL): none is a copy of another's leading columns, and the big
tables of OpenAI ids carry no LIKE copy of their id index. Either would be as big as the index it copies and
written by every insert, and by every update that cannot be made in place (issue #9). Django adds both by
default: an index per foreign key, a varchar_pattern_ops copy per unique or indexed CharField; a model opts
out where another index serves (apps.tenants.scoping.tenant_key_led_index and the like)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection

from apps.ledger.models import Thread, ThreadKind
from tests.ledger.migrations import migrate_app_to, migrate_ledger_to, migrate_ledger_to_latest
from tests.plans import plan_of

pytestmark = pytest.mark.postgres

OUR_APPS = ("alerts", "billing", "core", "ledger", "lifecycle", "pricing", "reconciliation", "tenants")
ID_COLUMNS = (
    ("ledger_run", "openai_id"),
    ("ledger_thread", "openai_id"),
    ("lifecycle_vectorstore", "openai_id"),
    ("lifecycle_storedfile", "openai_id"),
    ("lifecycle_container", "openai_id"),
    ("lifecycle_archiveditem", "thread_openai_id"),
)
# Each index of our tables: its table, name, (column, operator class) pairs in order, unique, partial.
_INDEXES = """
    SELECT t.relname, i.relname,
           ARRAY(SELECT a.attname || ' ' || o.opcname
                 FROM unnest(x.indkey::int2[], x.indclass::oid[]) WITH ORDINALITY AS k(attnum, opclass, position)
                 JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                 JOIN pg_opclass o ON o.oid = k.opclass ORDER BY k.position),
           x.indisunique, x.indpred IS NOT NULL
    FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
    WHERE t.relname LIKE ANY(%s) AND x.indexprs IS NULL
"""


def _indexes() -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(_INDEXES, [[f"{app}\\_%" for app in OUR_APPS]])
        return cursor.fetchall()


def _redundant() -> list[str]:
    """Plain indexes whose columns (and operator classes) lead another index of the same table."""
    indexes = _indexes()
    return sorted(
        f"{table}.{name} ({', '.join(columns)}) leads {other}"
        for table, name, columns, unique, partial in indexes if not unique and not partial
        for other_table, other, other_columns, _, other_partial in indexes
        if other_table == table and other != name and not other_partial and other_columns[:len(columns)] == columns
    )


def _like_copies() -> list[str]:
    return sorted(f"{table}.{name}" for table, name, columns, _, _ in _indexes() for id_table, column in ID_COLUMNS
                  if table == id_table and columns == [f"{column} varchar_pattern_ops"])


@pytest.mark.django_db
def test_no_index_is_a_copy_of_the_leading_columns_of_another():
    assert len(_indexes()) > 50  # the query reads every table of ours
    assert _redundant() == []


@pytest.mark.django_db
def test_the_big_tables_of_openai_ids_have_no_like_copy_of_their_id_index():
    assert _like_copies() == []
    for table, column in ID_COLUMNS:  # the exact lookups keep theirs
        assert any(columns[0] == f"{column} text_ops" for t, _, columns, _, _ in _indexes() if t == table), table


@pytest.mark.django_db
def test_a_tenants_threads_are_read_through_the_index_leading_with_tenant(tenant):
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    Thread.unscoped_objects.bulk_create(
        Thread(tenant=tenant, openai_id=f"thread_{number}", kind=ThreadKind.THREAD, created_at=now,
               last_activity_at=now) for number in range(50))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ledger_thread")
    assert "thread_tenant_status_activity" in plan_of(Thread.objects.for_tenant(tenant).values("id"))


@pytest.mark.django_db(transaction=True)
def test_the_migrations_drop_the_copies_and_put_them_back_when_reversed():
    try:
        migrate_app_to("lifecycle", "0010_storage_daily_total")
        migrate_ledger_to("0020_every_tenant_daily_rollup")
        # The run table's LIKE copy went in 0002; the archived items' is dropped with their plain index.
        assert len(_like_copies()) == len(ID_COLUMNS) - 1
        assert "ledger_thread.ledger_thread_tenant_id" in " ".join(_redundant())
        assert any(name.startswith("lifecycle_sweepitem.lifecycle_sweepitem_sweep_id") for name in _redundant())
    finally:
        migrate_ledger_to_latest()
    assert _like_copies() == []
    assert _redundant() == []
