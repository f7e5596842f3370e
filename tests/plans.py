"""PostgreSQL query plans for tests that pin which index a read uses (issue #9)."""

from __future__ import annotations

from django.db import connection


def plan_of(query, params=(), *, switched_off: tuple[str, ...] = ("seqscan", "bitmapscan")) -> str:
    """EXPLAIN of a queryset or of SQL text, with the planner's scan kinds in `switched_off` disabled: a test's
    handful of rows would otherwise be read whole, where a large ledger is read through the index. SET LOCAL
    lasts until the test's transaction ends."""
    if hasattr(query, "query"):
        query, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        for kind in switched_off:
            cursor.execute(f"SET LOCAL enable_{kind} = off")
        cursor.execute(f"EXPLAIN {query}", params)
        return "\n".join(row[0] for row in cursor.fetchall())
