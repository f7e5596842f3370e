"""Set-based writes the ingest path needs, for PostgreSQL and SQLite alike: multi-row insert with
ON CONFLICT DO NOTHING RETURNING, upsert that adds deltas (`col = table.col + excluded.col`), and a
multi-row UPDATE from a VALUES list.

On PostgreSQL the rows are first COPYed into a session temp table (psycopg formats COPY rows in C; no
client-side placeholder parsing, which is what makes `%s` multi-row inserts slow), and one set-based
statement moves them into place. SQLite gets plain multi-row VALUES, chunked under its variable limit.
Every write runs in a transaction of its own when called outside one: staged rows live until the end of
the transaction (ON COMMIT DELETE ROWS), so in autocommit they would vanish right after the COPY.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models, transaction

from apps.core.money import usd_as_units_sql

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


_DJANGO_JSON_DEFAULT = DjangoJSONEncoder().default


def _json_text(value) -> str:
    # orjson (about 10x json.dumps: every run row carries its metadata); anything it does not encode natively
    # — Decimal, and datetimes, passed through so they keep Django's format — goes to Django's encoder.
    return orjson.dumps(value, default=_DJANGO_JSON_DEFAULT, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()


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


class _PgCursor:
    """A cursor on Django's own connection (same transaction) that can stage rows with COPY: psycopg's C
    row formatter is an order of magnitude faster than quoting tens of thousands of parameters."""

    def __enter__(self):
        import psycopg

        connection.ensure_connection()
        self.cursor = psycopg.Cursor(connection.connection)
        return self

    def execute(self, sql: str, params: list | None = None) -> None:
        self.cursor.execute(sql, params)

    def stage(self, columns: Sequence[Column], rows: Sequence[Sequence], *, name: str | None = None,
              append: bool = False) -> str:
        """COPY rows into a session temp table (emptied at commit, and before each use unless `append`); its
        name. By default the name follows the column types, so every caller with the same types shares it:
        name it yourself to keep rows staged while other writes happen."""
        import hashlib

        signature = ",".join(c.pg_type for c in columns)
        name = name or "_bulk_stage_" + hashlib.sha1(signature.encode()).hexdigest()[:12]
        if not append:
            definition = ", ".join(f"c{i} {c.pg_type}" for i, c in enumerate(columns))
            # One round trip (no parameters: the simple protocol takes both statements). DELETE rather than
            # TRUNCATE: the table is empty unless used earlier in this transaction, and TRUNCATE of a temp
            # table swaps its files every time.
            self.cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} ({definition}) ON COMMIT DELETE ROWS; "
                                f"DELETE FROM {name}")
        self.copy(f"COPY {name} FROM STDIN", columns, rows)
        return name

    def copy(self, statement: str, columns: Sequence[Column], rows: Sequence[Sequence]) -> None:
        json_indexes = [i for i, c in enumerate(columns) if c.is_json]
        with self.cursor.copy(statement) as copy:
            for row in rows:
                if json_indexes:
                    row = list(row)
                    for i in json_indexes:
                        if row[i] is not None:
                            row[i] = _json_text(row[i])
                copy.write_row(row)

    def fetchall(self) -> list[tuple]:
        return self.cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self.cursor.rowcount

    def __exit__(self, *exc):
        self.cursor.close()


def _in_transaction(function):
    """Run a bulk write in a transaction of its own when called outside one (no savepoint inside one)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with transaction.atomic(savepoint=False):
            return function(*args, **kwargs)

    return wrapper


def _cursor():
    return _PgCursor() if is_postgres() else connection.cursor()


def stage(columns: Sequence[Column], rows: Sequence[Sequence], *, name: str | None = None,
          append: bool = False) -> str:
    """PostgreSQL, inside a transaction: COPY rows into a temp table whose columns are c0, c1, ... (the order
    of `columns`); it keeps them until the transaction ends, for set-based statements to read. Its name;
    see _PgCursor.stage."""
    if not connection.in_atomic_block:
        raise RuntimeError("bulk.stage needs a transaction (transaction.atomic()): staged rows last until it ends")
    with _PgCursor() as cursor:
        return cursor.stage(columns, rows, name=name, append=append)


def delete_staged(stage_name: str, column: int, values: Sequence) -> None:
    """PostgreSQL: drop the staged rows whose column c<column> is one of `values` (a hash join, not a scan
    of the array per row)."""
    if not values:
        return
    with _PgCursor() as cursor:
        cursor.execute(f"DELETE FROM {stage_name} AS s USING unnest(%b::text[]) AS v(value) WHERE s.c{column} = v.value",
                       [list(values)])


def insert_select(table: str, columns: Sequence[Column], select: str, params: list | None = None) -> int:
    """PostgreSQL: INSERT INTO table (columns) <select>; the number of rows inserted."""
    column_list = ", ".join(_quote(c.name) for c in columns)
    with _PgCursor() as cursor:
        cursor.execute(f"INSERT INTO {_quote(table)} ({column_list}) {select}", params)
        return cursor.rowcount


def upsert_grouped(table: str, columns: Sequence[Column], stage_name: str, *, source: Sequence[int],
                   key: Sequence[str], add: Sequence[str], greatest: Sequence[str] = (),
                   units: Sequence[str] = (), only_with: int | None = None) -> None:
    """PostgreSQL: one upsert of staged rows summed per key: column i of `columns` comes from staged column
    c<source[i]>; key columns are grouped on, `add` columns summed (and added to the stored row), `greatest`
    columns take the maximum; `units` columns (among `add`) sum staged USD amounts into whole ledger units;
    keys whose sums and maxima are all zero are left out; with `only_with`, only staged rows whose
    c<only_with> is not NULL count. Rows go in key order (writers lock rows in the same order)."""
    names = [c.name for c in columns]
    expressions = []
    for name, index in zip(names, source, strict=True):
        if name in units:
            expressions.append(usd_as_units_sql(f"SUM(s.c{index})"))
        elif name in add:
            expressions.append(f"SUM(s.c{index})")
        elif name in greatest:
            expressions.append(f"MAX(s.c{index})")
        else:
            expressions.append(f"s.c{index}")
    groups = ", ".join(f"s.c{source[names.index(k)]}" for k in key)
    nonzero = " OR ".join(f"{expressions[names.index(n)]} <> 0" for n in (*add, *greatest))
    where = f"WHERE s.c{only_with} IS NOT NULL " if only_with is not None else ""
    quoted_table = _quote(table)
    sets = [f"{_quote(c)} = {quoted_table}.{_quote(c)} + excluded.{_quote(c)}" for c in add]
    sets += [f"{_quote(c)} = GREATEST({quoted_table}.{_quote(c)}, excluded.{_quote(c)})" for c in greatest]
    column_list = ", ".join(_quote(n) for n in names)
    with _PgCursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quoted_table} ({column_list}) SELECT {', '.join(expressions)} FROM {stage_name} AS s "
            f"{where}GROUP BY {groups} HAVING {nonzero} ORDER BY {groups} "
            f"ON CONFLICT ({', '.join(_quote(k) for k in key)}) DO UPDATE SET {', '.join(sets)}"
        )


@_in_transaction
def copy_into(table: str, columns: Sequence[Column], rows: Sequence[Sequence]) -> None:
    """Insert rows the caller knows are new with one COPY straight into the table (PostgreSQL; plain
    multi-row INSERT on SQLite). No ON CONFLICT: a duplicate key fails the whole transaction, so only call
    it while holding whatever guarantees the keys are new."""
    if not rows:
        return
    if not is_postgres():
        with connection.cursor() as cursor:
            column_list = ", ".join(_quote(c.name) for c in columns)
            for placeholders, params in _sqlite_chunks(columns, rows):
                cursor.execute(f"INSERT INTO {_quote(table)} ({column_list}) VALUES {placeholders}", params)
        return
    column_list = ", ".join(_quote(c.name) for c in columns)
    with _PgCursor() as cursor:
        cursor.copy(f"COPY {_quote(table)} ({column_list}) FROM STDIN", columns, rows)


@_in_transaction
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
    with _cursor() as cursor:
        if is_postgres():
            stage = cursor.stage(columns, rows)
            select = ", ".join(f"u.c{i}" for i in range(len(columns)))
            # In key order, so two batches inserting the same new keys wait for each other, never deadlock.
            names = [c.name for c in columns]
            order = ", ".join(f"u.c{names.index(k)}" for k in conflict)
            cursor.execute(
                f"INSERT INTO {_quote(table)} ({column_list}) SELECT {select} FROM {stage} AS u ORDER BY {order} "
                f"ON CONFLICT ({conflict_list}) DO NOTHING RETURNING {returning_list}"
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


@_in_transaction
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
    with _cursor() as cursor:
        if is_postgres():
            stage = cursor.stage(columns, rows)
            select = ", ".join(f"u.c{i}" for i in range(len(columns)))
            # ORDER BY keeps the lock order of concurrent upserts the same (no deadlocks between batches).
            order = ", ".join(f"u.c{[c.name for c in columns].index(k)}" for k in conflict)
            cursor.execute(f"INSERT INTO {quoted_table} ({column_list}) SELECT {select} FROM {stage} AS u "
                           f"ORDER BY {order} {tail}")
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


def _update_sets(table: str, columns: Sequence[Column], alias: str, add, least, greatest, json_unless_empty) -> str:
    quoted_table = _quote(table)
    least_fn, greatest_fn = ("LEAST", "GREATEST") if is_postgres() else ("MIN", "MAX")
    empty_json = "'{}'::jsonb" if is_postgres() else "'{}'"
    sets = []
    for i, c in enumerate(columns):
        mine, theirs = f"{quoted_table}.{_quote(c.name)}", f"{alias}.c{i + 1}"
        if c.name in add:
            sets.append(f"{_quote(c.name)} = {mine} + {theirs}")
        elif c.name in least or c.name in greatest:
            # NULL means "no new value" (SQLite's MIN/MAX would return NULL, PostgreSQL's would skip it).
            function = least_fn if c.name in least else greatest_fn
            sets.append(f"{_quote(c.name)} = {function}({mine}, COALESCE({theirs}, {mine}))")
        elif c.name in json_unless_empty:
            sets.append(f"{_quote(c.name)} = CASE WHEN {theirs} IS NULL OR {theirs} = {empty_json} THEN {mine} "
                        f"ELSE {theirs} END")
        else:
            sets.append(f"{_quote(c.name)} = {theirs}")
    return ", ".join(sets)


@_in_transaction
def update_from_values(table: str, key: Column, columns: Sequence[Column], rows: Sequence[Sequence],
                       *, add: Sequence[str] = (), least: Sequence[str] = (), greatest: Sequence[str] = (),
                       replace_unless_empty_json: Sequence[str] = ()) -> int:
    """UPDATE table SET col = v.col for each row (key value first); `add` columns accumulate (col + v.col),
    `least`/`greatest` keep the extreme (a NULL value leaves the column alone), `replace_unless_empty_json`
    take the new value unless it is {} or NULL."""
    if not rows:
        return 0
    quoted_table = _quote(table)
    all_columns = [key, *columns]
    count = 0
    options = (add, least, greatest, replace_unless_empty_json)
    with _cursor() as cursor:
        if is_postgres():
            stage = cursor.stage(all_columns, rows)
            sets = _update_sets(table, columns, "u", *options)
            cursor.execute(
                f"UPDATE {quoted_table} SET {sets} FROM {stage} AS u WHERE {quoted_table}.{_quote(key.name)} = u.c0"
            )
            count += cursor.rowcount
        else:
            aliases = ", ".join(f"c{i}" for i in range(len(all_columns)))
            sets = _update_sets(table, columns, "v", *options)
            for placeholders, params in _sqlite_chunks(all_columns, rows):
                cursor.execute(
                    f"WITH v({aliases}) AS (VALUES {placeholders}) "
                    f"UPDATE {quoted_table} SET {sets} FROM v WHERE {quoted_table}.{_quote(key.name)} = v.c0",
                    params,
                )
                count += cursor.rowcount
    return count


def advisory_xact_lock(key: int, *, shared: bool = False) -> bool:
    """PostgreSQL: wait for, then hold until the transaction ends, the advisory lock `key` (a signed
    64-bit integer; `shared` holders exclude only exclusive ones), and return True; on SQLite do nothing
    and return False (its writers take the database lock only at their first write, so reads before it
    are not serialized)."""
    if not is_postgres():
        return False
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s)", [key])
    return True


def lock_rows(table: str, key: str, values: Sequence) -> None:
    """PostgreSQL: lock these rows in key order (concurrent batches then always lock in the same order);
    a no-op on SQLite, which has one writer at a time."""
    if not values or not is_postgres():
        return
    select_by_key(table, [key], key, values, for_update=True)


def select_by_key(table: str, names: Sequence[str], key: str, values: Sequence, *, for_update: bool = False,
                  json_columns: Sequence[str] = ()) -> list[dict]:
    """PostgreSQL: rows whose `key` is in `values`, as dicts of column -> value; with `for_update`, locked in
    key order. `values` go as one array parameter bound in binary: Django's cursor would instead inline a
    placeholder per value and parse the statement for them (a few ms per 1,000 ids). Django's connection
    loads jsonb as text: `json_columns` are decoded."""
    import psycopg

    connection.ensure_connection()
    column_list = ", ".join(_quote(n) for n in names)
    locking = f" ORDER BY {_quote(key)} FOR UPDATE" if for_update else ""
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(f"SELECT {column_list} FROM {_quote(table)} WHERE {_quote(key)} = ANY(%b){locking}",
                       [list(values)])
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:
        for name in json_columns:
            if isinstance(row[name], str):
                row[name] = orjson.loads(row[name])
    return rows
