"""The ledger's admin pages over a big ledger: no page scans every run (a full COUNT, the date drill-down's
DISTINCT over all runs, a LIKE search over four columns), as the dashboard's run pages do not (issue #9)."""

from __future__ import annotations

import datetime as dt

from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.ledger import admin as ledger_admin
from apps.ledger.services import ingest_events
from tests import builders


def _runs_sql(client, url: str) -> tuple[str, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return response.content.decode(), [q["sql"] for q in queries.captured_queries
                                       if '"ledger_run"' in q["sql"] or '"ledger_thread"' in q["sql"]]


def test_the_run_and_thread_admin_lists_do_not_scan_the_whole_ledger(client, staff_user, tenant, monkeypatch):
    """Each load of /admin/ledger/run/ counted every run (COUNT(*) FROM ledger_run) and listed the years with a
    SELECT DISTINCT DATE_TRUNC over every run; a search ran UPPER(..) LIKE '%q%' over openai_id, user_id,
    thread_openai_id and the tenant's slug (no index can serve it). On 10M runs each is seconds."""
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    when = dt.datetime(2026, 11, 10, 9, tzinfo=dt.UTC)
    ingest_events(events=[{"tenant": "acme", "object": builders.response(response_id=f"resp_{n}", created_at=when)}
                          for n in range(3)])
    monkeypatch.setattr(ledger_admin, "ADMIN_COUNT_CAP", 2)

    html, sql = _runs_sql(client, "/admin/ledger/run/")
    assert "2+ runs" in html  # three runs, counted up to the cap
    assert "2+ results" in html and "2 results" not in html  # beside the search box too
    counts = [q for q in sql if "COUNT(" in q]
    assert counts and all("LIMIT" in q for q in counts)
    assert not [q for q in sql if "DATE_TRUNC" in q.upper() or "DISTINCT" in q.upper()]

    html, sql = _runs_sql(client, "/admin/ledger/run/?q=resp_1")
    assert "resp_1" in html and "resp_2" not in html and "1 run" in html
    assert not [q for q in sql if "LIKE" in q.upper()]

    html, sql = _runs_sql(client, "/admin/ledger/thread/?q=thread_1")
    assert not [q for q in sql if "LIKE" in q.upper()]
    assert all("LIMIT" in q for q in sql if "COUNT(" in q)
