"""Set-based writes the ingest path needs, for PostgreSQL and SQLite alike: multi-row insert with
ON CONFLICT DO NOTHING RETURNING, upsert that adds deltas (`col = table.col + excluded.col`), and a
multi-row UPDATE from a VALUES list.

On PostgreSQL each column travels as ONE array parameter and is expanded with `unnest(...)`, so a
1,000-row statement has a few dozen parameters instead of tens of thousands (the client-side placeholder
parsing that makes `%s` multi-row inserts slow never happens). SQLite gets plain multi-row VALUES, chunked
under its variable limit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models

_SQLITE_MAX_VARIABLES = 30_000


@dataclass(frozen=True)
class Column:
    name: str  # database column
    pg_type: str  # PostgreSQL element type for the unnest array
    field: models.Field | None = None
    is_json: bool = False


def columns_for(model: type[models.Model], names: Sequence[str]) -> list[Column]:
    """Columns by attname (`tenant_id`, `metadata`, ...) with their PostgreSQL array types."""
    fields = {f.attname: f for f in model._meta.concrete_fields}
    result = []
    for name in names:
        field = fields[name]
        internal = field.get_internal_type()
        if internal in ("CharField", "TextField"):
            pg_type = "text"
        elif internal in ("BigIntegerField", "BigAutoField", "PositiveIntegerField", "PositiveSmallIntegerField",
                          "IntegerField", "SmallIntegerField", "ForeignKey"):
            pg_type = "bigint"
        elif internal == "DecimalField":
            pg_type = "numeric"
        elif internal == "DateTimeField":
            pg_type = "timestamptz"
        elif internal == "DateField":
            pg_type = "date"
        elif internal == "BooleanField":
            pg_type = "boolean"
        elif internal == "JSONField":
            pg_type = "jsonb"
        else:
            raise TypeError(f"bulk.py does not handle {internal} ({model.__name__}.{name})")
        if isinstance(field, models.ForeignKey):
            target = field.target_field.get_internal_type()
            pg_type = "bigint" if target in ("BigAutoField", "BigIntegerField", "AutoField") else "text"
        result.append(Column(field.column, pg_type, field, internal == "JSONField"))
    return result


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def _json_text(value) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":"))


def _pg_arrays(columns: Sequence[Column], rows: Sequence[Sequence]) -> list[list]:
    arrays: list[list] = [[] for _ in columns]
    for row in rows:
        for index, value in enumerate(row):
            arrays[index].append(_json_text(value) if columns[index].is_json and value is not None else value)
    return arrays


def _pg_source(columns: Sequence[Column]) -> tuple[str, str]:
    """(`unnest(%s::t[], ...) AS u(c1, ...)`, select list with json casts)."""
    array_params = ", ".join(f"%s::{'text' if c.is_json else c.pg_type}[]" for c in columns)
    aliases = ", ".join(f"c{index}" for index in range(len(columns)))
    select = ", ".join(f"u.c{index}::jsonb" if c.is_json else f"u.c{index}" for index, c in enumerate(columns))
    return f"unnest({array_params}) AS u({aliases})", select


def _sqlite_value(column: Column, value):
    if value is None:
        return None
    if column.is_json:
        return _json_text(value)
    if column.field is not None:
        return column.field.get_db_prep_value(value, connection, prepared=False)
    return value


def _sqlite_chunks(columns: Sequence[Column], rows: Sequence[Sequence]):
    size = max(1, _SQLITE_MAX_VARIABLES // max(1, len(columns)))
    for start in range(0, len(rows), size):
        chunk = rows[start:start + size]
        params = [_sqlite_value(columns[i], value) for row in chunk for i, value in enumerate(row)]
        placeholders = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(chunk))
        yield placeholders, params


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def insert_returning(table: str, columns: Sequence[Column], rows: Sequence[Sequence], *, conflict: Sequence[str],
                     returning: Sequence[str]) -> list[tuple]:
    """INSERT rows, skipping those whose `conflict` key exists (or is being inserted by a concurrent
    transaction, which PostgreSQL waits for); returns `returning` of the rows actually inserted."""
    if not rows:
        return []
    column_list = ", ".join(_quote(c.name) for c in columns)
    conflict_list = ", ".join(_quote(c) for c in conflict)
    returning_list = ", ".join(_quote(c) for c in returning)
    results: list[tuple] = []
    with connection.cursor() as cursor:
        if is_postgres():
            source, select = _pg_source(columns)
            cursor.execute(
                f"INSERT INTO {_quote(table)} ({column_list}) SELECT {select} FROM {source} "
                f"ON CONFLICT ({conflict_list}) DO NOTHING RETURNING {returning_list}",
                _pg_arrays(columns, rows),
            )
            results.extend(cursor.fetchall())
        else:
            for placeholders, params in _sqlite_chunks(columns, rows):
                cursor.execute(
                    f"INSERT INTO {_quote(table)} ({column_list}) VALUES {placeholders} "
                    f"ON CONFLICT ({conflict_list}) DO NOTHING RETURNING {returning_list}",
                    params,
                )
                results.extend(cursor.fetchall())
    return results


def upsert(table: str, columns: Sequence[Column], rows: Sequence[Sequence], *, conflict: Sequence[str],
           add: Sequence[str] = (), least: Sequence[str] = (), greatest: Sequence[str] = (),
           replace_unless_empty_json: Sequence[str] = (), returning: Sequence[str] = ()) -> list[tuple]:
    """INSERT ... ON CONFLICT (conflict) DO UPDATE: `add` columns accumulate (table.col + excluded.col),
    `least`/`greatest` keep the extreme, `replace_unless_empty_json` take the new value unless it is {}.
    Rows must be sorted by the conflict key by the caller, so concurrent upserts lock in the same order."""
    if not rows:
        return []
    quoted_table = _quote(table)
    least_fn, greatest_fn = ("LEAST", "GREATEST") if is_postgres() else ("MIN", "MAX")
    assignments = [f"{_quote(c)} = {quoted_table}.{_quote(c)} + excluded.{_quote(c)}" for c in add]
    assignments += [f"{_quote(c)} = {least_fn}({quoted_table}.{_quote(c)}, excluded.{_quote(c)})" for c in least]
    assignments += [f"{_quote(c)} = {greatest_fn}({quoted_table}.{_quote(c)}, excluded.{_quote(c)})" for c in greatest]
    empty_json = "'{}'::jsonb" if is_postgres() else "'{}'"
    assignments += [
        f"{_quote(c)} = CASE WHEN excluded.{_quote(c)} = {empty_json} THEN {quoted_table}.{_quote(c)} "
        f"ELSE excluded.{_quote(c)} END"
        for c in replace_unless_empty_json
    ]
    if not assignments:
        raise ValueError("upsert needs at least one column to update")
    column_list = ", ".join(_quote(c.name) for c in columns)
    conflict_list = ", ".join(_quote(c) for c in conflict)
    tail = f"ON CONFLICT ({conflict_list}) DO UPDATE SET {', '.join(assignments)}"
    if returning:
        tail += " RETURNING " + ", ".join(_quote(c) for c in returning)
    results: list[tuple] = []
    with connection.cursor() as cursor:
        if is_postgres():
            source, select = _pg_source(columns)
            cursor.execute(
                f"INSERT INTO {quoted_table} ({column_list}) SELECT {select} FROM {source} {tail}",
                _pg_arrays(columns, rows),
            )
            if returning:
                results.extend(cursor.fetchall())
        else:
            for placeholders, params in _sqlite_chunks(columns, rows):
                # "WHERE true" resolves SQLite's parsing ambiguity between VALUES and an upsert clause.
                cursor.execute(
                    f"INSERT INTO {quoted_table} ({column_list}) SELECT * FROM (VALUES {placeholders}) WHERE true {tail}",
                    params,
                )
                if returning:
                    results.extend(cursor.fetchall())
    return results


def update_from_values(table: str, key: Column, columns: Sequence[Column], rows: Sequence[Sequence],
                       *, add: Sequence[str] = ()) -> int:
    """UPDATE table SET col = v.col (or col = col + v.col for `add`) for each row (key value first)."""
    if not rows:
        return 0
    quoted_table = _quote(table)
    all_columns = [key, *columns]
    count = 0
    with connection.cursor() as cursor:
        if is_postgres():
            source, _ = _pg_source(all_columns)
            sets = ", ".join(
                f"{_quote(c.name)} = {quoted_table}.{_quote(c.name)} + u.c{i + 1}" if c.name in add
                else f"{_quote(c.name)} = u.c{i + 1}{'::jsonb' if c.is_json else ''}"
                for i, c in enumerate(columns)
            )
            cursor.execute(
                f"UPDATE {quoted_table} SET {sets} FROM {source} WHERE {quoted_table}.{_quote(key.name)} = u.c0",
                _pg_arrays(all_columns, rows),
            )
            count += cursor.rowcount
        else:
            aliases = ", ".join(f"c{i}" for i in range(len(all_columns)))
            sets = ", ".join(
                f"{_quote(c.name)} = {quoted_table}.{_quote(c.name)} + v.c{i + 1}" if c.name in add
                else f"{_quote(c.name)} = v.c{i + 1}"
                for i, c in enumerate(columns)
            )
            for placeholders, params in _sqlite_chunks(all_columns, rows):
                cursor.execute(
                    f"WITH v({aliases}) AS (VALUES {placeholders}) "
                    f"UPDATE {quoted_table} SET {sets} FROM v WHERE {quoted_table}.{_quote(key.name)} = v.c0",
                    params,
                )
                count += cursor.rowcount
    return count
