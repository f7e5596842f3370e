"""Which indexes the big tables of OpenAI ids keep (PostgreSQL): ids are looked up exactly, by the unique or
plain index, so Django's LIKE copy of it (varchar_pattern_ops) is dropped, and a tenant key whose table has
indexes leading with tenant has no index of its own. Each would be as big as the index it copies and written
by every insert, and by every update of a thread's totals (issue #9). Migrations 0021 (ledger) and 0011
(lifecycle) drop them from existing databases and put them back when reversed."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection

from apps.ledger.models import Thread, ThreadKind
from tests.ledger.migrations import migrate_app_to, migrate_ledger_to, migrate_ledger_to_latest
from tests.plans import plan_of

pytestmark = pytest.mark.postgres

ID_COLUMNS = (
    ("ledger_run", "openai_id"),
    ("ledger_thread", "openai_id"),
    ("lifecycle_vectorstore", "openai_id"),
    ("lifecycle_storedfile", "openai_id"),
    ("lifecycle_container", "openai_id"),
    ("lifecycle_archiveditem", "thread_openai_id"),
)


def _index_definitions(table: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s ORDER BY indexname", [table])
        return [definition for (definition,) in cursor.fetchall()]


def _like_copies() -> list[str]:
    return [definition for table, column in ID_COLUMNS for definition in _index_definitions(table)
            if f"({column} varchar_pattern_ops)" in definition]


@pytest.mark.django_db
def test_no_id_column_has_a_like_copy_of_its_index():
    assert _like_copies() == []
    for table, column in ID_COLUMNS:  # the exact lookups still have theirs
        assert any(f"({column})" in definition for definition in _index_definitions(table)), table


@pytest.mark.django_db
@pytest.mark.parametrize("table", ["ledger_run", "ledger_thread"])
def test_the_tenant_key_has_no_index_of_its_own_beside_indexes_leading_with_it(table):
    definitions = _index_definitions(table)
    assert not [d for d in definitions if d.endswith("(tenant_id)")], definitions
    assert [d for d in definitions if "(tenant_id, " in d], definitions


@pytest.mark.django_db
def test_a_tenants_threads_are_read_through_the_index_leading_with_tenant(tenant):
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    Thread.unscoped_objects.bulk_create(
        Thread(tenant=tenant, openai_id=f"thread_{number}", kind=ThreadKind.THREAD, created_at=now,
               last_activity_at=now) for number in range(50))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ledger_thread")
    plan = plan_of(Thread.objects.for_tenant(tenant).values("id"))
    assert "thread_tenant_status_activity" in plan, plan


@pytest.mark.django_db(transaction=True)
def test_the_migrations_drop_the_redundant_indexes_and_put_them_back_when_reversed():
    try:
        migrate_app_to("lifecycle", "0010_storage_daily_total")
        migrate_ledger_to("0020_every_tenant_daily_rollup")
        assert len(_like_copies()) == len(ID_COLUMNS) - 1  # the run table's went in 0002
        assert any(d.endswith("(tenant_id)") for d in _index_definitions("ledger_thread"))
    finally:
        migrate_ledger_to_latest()
    assert _like_copies() == []
    assert not any(d.endswith("(tenant_id)") for d in _index_definitions("ledger_thread"))
