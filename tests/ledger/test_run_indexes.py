"""The runs pages' reads of high-cost runs (all tenants or one, filtered by status, model or feature) test their
filters inside a high-cost partial index and visit the run table only for the runs that match: at 10M runs the
"failed" filter visited it for every high-cost run of the period (~800 ms), one tenant's count for each of its
runs (~250 ms) (issue #9). Plans are read from PostgreSQL with sequential and bitmap scans switched off, so the
tiny test ledger is planned the way a large one is."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection

from apps.ledger import selectors
from apps.ledger.models import HIGH_COST_FILTER_COLUMNS
from apps.tenants.scoping import TenantScope
from tests.dashboard.seed import run_row
from tests.plans import plan_of

pytestmark = pytest.mark.postgres

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def ledger(tenant, other_tenant):
    for number in range(20):
        for owner in (tenant, other_tenant):
            run_row(owner, created_at=NOW - dt.timedelta(hours=7 * number), cost="9.00" if number % 5 == 0 else "0.01",
                    status="failed" if number % 3 == 0 else "completed", model=("gpt-5.4", "gpt-5.4-mini")[number % 2],
                    feature=("chat", "search")[number % 2])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ledger_run")


def _filters(tenant=None, **chosen) -> selectors.RunFilters:
    return selectors.RunFilters(start=(NOW - dt.timedelta(days=29)).date(), end=NOW.date(), tenant=tenant, **chosen)


@pytest.mark.parametrize("chosen", [{}, {"status": "failed"}, {"status": "failed", "model": "gpt-5.4-mini", "feature": "chat"}])
@pytest.mark.parametrize("one_tenant", [False, True])
@pytest.mark.parametrize("ordering", ["-cost", "-created", "count"])
def test_high_cost_runs_are_filtered_in_a_partial_index_not_on_the_table(tenant, ledger, chosen, one_tenant, ordering):
    runs = selectors.runs_filtered(scope=TenantScope.every_tenant(), filters=_filters(tenant if one_tenant else None, **chosen),
                                   ordering="-cost" if ordering == "count" else ordering)
    if ordering == "count":  # what the capped paginator counts
        runs = runs.order_by().values("id")[:10_001]
    plan = plan_of(runs)
    assert re.search(r"Index (Only )?Scan( Backward)? using run_high_cost_", plan), plan
    # Every filter is an index condition: none is tested on rows fetched from the table.
    assert "Filter:" not in plan, plan
    for column in ("created_at", *chosen, *(["tenant_id"] if one_tenant else [])):
        assert re.search(rf"Index Cond: .*\b{column}\b", plan), (column, plan)


def test_the_partial_indexes_carry_every_column_the_runs_page_filters_on(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'ledger_run' "
                       "AND indexname LIKE 'run_high_cost_%%'")
        definitions = dict(cursor.fetchall())
    assert set(definitions) == {"run_high_cost_of_tenant", "run_high_cost_by_cost", "run_high_cost_by_created"}
    for name, definition in definitions.items():
        assert definition.endswith("WHERE is_high_cost"), definition
        for column in (*HIGH_COST_FILTER_COLUMNS, "tenant_id"):
            assert column in definition, (name, column)
