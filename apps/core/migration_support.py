"""Schema operations that Django's migration operations do not express, shared by several apps' migrations."""

from __future__ import annotations


def drop_pattern_ops_index(schema_editor, table: str, column: str) -> None:
    """PostgreSQL: drop the varchar_pattern_ops copy that Django adds beside the index of every unique or
    indexed CharField, for LIKE 'prefix%' queries. Ids are looked up exactly, by the plain index; the copy is
    as big as it and one more index written by every insert and by every update it cannot make in place."""
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s",
                       [table, f"%({column} varchar_pattern_ops)"])
        for (name,) in cursor.fetchall():
            cursor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


def create_pattern_ops_index(schema_editor, table: str, column: str) -> None:
    """The reverse of drop_pattern_ops_index (under a name of its own: Django's has a hash in it)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {schema_editor.quote_name(f'{table}_{column}_like')} "
                          f"ON {schema_editor.quote_name(table)} ({schema_editor.quote_name(column)} varchar_pattern_ops)")
