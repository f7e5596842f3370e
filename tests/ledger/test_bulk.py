"""bulk.py's set-based writes: exact values through the staging COPY (decimals, JSON, timestamps), a staging
table reused within one transaction, and writes made outside any transaction (staged rows live until the
end of the transaction, so in autocommit they used to vanish before the statement that reads them ran)."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection

from apps.alerts.models import Alert
from apps.alerts.services import alert_raise
from apps.ledger import bulk
from apps.ledger.models import DailyRollup, EndUserDailyRollup, EndUserMonthlyRollup, Thread
from apps.ledger.services import END_USER_SUMS, ROLLUP_KEY, ROLLUP_SUMS
from apps.tenants.models import Tenant

DAY = dt.date(2026, 11, 3)
WHEN = dt.datetime(2026, 11, 3, 8, 0, 0, 123456, tzinfo=dt.UTC)


def _end_user_upsert(model, key_date: dt.date, tenant: Tenant, user_id: str, runs: int, cost_units: int) -> None:
    key = ("tenant_id", "month" if model is EndUserMonthlyRollup else "day", "user_id")
    values = {name: 0 for name in END_USER_SUMS} | {"runs": runs, "input_tokens": 1000 * runs,
                                                    "cost_total_units": cost_units}
    bulk.upsert(model._meta.db_table, bulk.columns_for(model, [*key, *END_USER_SUMS]),
                [[tenant.pk, key_date, user_id, *values.values()]], conflict=key, add=END_USER_SUMS)


def _thread_row(tenant: Tenant, openai_id: str, metadata: dict) -> list:
    return [tenant.pk, openai_id, "conversation", "proj_x", WHEN, WHEN, 0, Decimal("0"), metadata,
            Thread.Status.ACTIVE, "", WHEN]


THREAD_COLUMNS = ["tenant_id", "openai_id", "kind", "openai_project", "created_at", "last_activity_at",
                  "run_count", "cost_usd", "metadata", "status", "deletion_reason", "recorded_at"]


@pytest.mark.django_db
def test_upsert_adds_exact_decimals_and_integers(tenant):
    columns = bulk.columns_for(DailyRollup, [*ROLLUP_KEY, *ROLLUP_SUMS])
    for runs, cost in ((1, Decimal("0.0000000001")), (2, Decimal("1.2345678901"))):
        values = {name: 0 for name in ROLLUP_SUMS} | {"runs": runs, "input_tokens": 1000 * runs, "cost_total_usd": cost}
        bulk.upsert(DailyRollup._meta.db_table, columns, [[tenant.pk, DAY, "proj_x", "gpt-5.4", "", *values.values()]],
                    conflict=ROLLUP_KEY, add=ROLLUP_SUMS)
    row = DailyRollup.objects.unscoped().get(tenant=tenant, day=DAY)
    assert (row.runs, row.input_tokens, row.cost_total_usd) == (3, 3000, Decimal("1.2345678902"))


@pytest.mark.django_db
def test_one_staging_table_serves_two_writes_in_one_transaction(tenant):
    # The daily and monthly end-user rollups stage the same column types, so they share a staging table:
    # the second write must not see the first one's rows.
    _end_user_upsert(EndUserDailyRollup, DAY, tenant, "u_1", 1, 5_000_000_000)
    _end_user_upsert(EndUserMonthlyRollup, DAY.replace(day=1), tenant, "u_2", 4, 20_000_000_000)
    assert list(EndUserDailyRollup.objects.unscoped().values_list("user_id", "runs")) == [("u_1", 1)]
    assert list(EndUserMonthlyRollup.objects.unscoped().values_list("user_id", "runs")) == [("u_2", 4)]


@pytest.mark.django_db
def test_json_timestamps_and_text_survive_the_staging_copy(tenant):
    metadata = {"tenant": "acme", "note": "café ☕", "amount": Decimal("1.50"), "at": WHEN}
    returned = bulk.insert_returning(Thread._meta.db_table, bulk.columns_for(Thread, THREAD_COLUMNS),
                                     [_thread_row(tenant, "conv_1", metadata)], conflict=["openai_id"],
                                     returning=["openai_id"])
    assert returned == [("conv_1",)]
    thread = Thread.objects.unscoped().get(openai_id="conv_1")
    assert thread.metadata == {"tenant": "acme", "note": "café ☕", "amount": "1.50",
                               "at": "2026-11-03T08:00:00.123Z"}
    assert (thread.created_at, thread.cost_usd) == (WHEN, Decimal("0"))


@pytest.mark.django_db
def test_update_from_values_replaces_json_unless_empty_and_keeps_extremes(tenant):
    bulk.insert_returning(Thread._meta.db_table, bulk.columns_for(Thread, THREAD_COLUMNS),
                          [_thread_row(tenant, "conv_1", {"a": 1})], conflict=["openai_id"], returning=["id"])
    pk = Thread.objects.unscoped().get(openai_id="conv_1").pk
    later = WHEN + dt.timedelta(hours=1)
    columns = bulk.columns_for(Thread, ["run_count", "cost_usd", "created_at", "last_activity_at", "metadata"])
    key = bulk.columns_for(Thread, ["id"])[0]
    options = {"add": ("run_count", "cost_usd"), "least": ("created_at",), "greatest": ("last_activity_at",),
               "replace_unless_empty_json": ("metadata",)}
    bulk.update_from_values(Thread._meta.db_table, key, columns, [[pk, 2, Decimal("0.25"), later, later, {}]],
                            **options)
    bulk.update_from_values(Thread._meta.db_table, key, columns, [[pk, -1, Decimal("0.05"), None, None, {"b": 2}]],
                            **options)
    thread = Thread.objects.unscoped().get(pk=pk)
    assert (thread.run_count, thread.cost_usd) == (1, Decimal("0.30"))
    assert (thread.created_at, thread.last_activity_at, thread.metadata) == (WHEN, later, {"b": 2})


@pytest.mark.django_db(transaction=True)
def test_writes_outside_a_transaction_are_stored(tenant):
    assert connection.get_autocommit()
    _end_user_upsert(EndUserDailyRollup, DAY, tenant, "u_1", 1, 5_000_000_000)
    _end_user_upsert(EndUserDailyRollup, DAY, tenant, "u_1", 1, 5_000_000_000)
    assert EndUserDailyRollup.objects.unscoped().get(user_id="u_1").runs == 2


@pytest.mark.django_db(transaction=True)
def test_an_alert_raised_outside_a_transaction_is_stored_once(tenant):
    # Reconciliation, budgets and the requires_action watch raise alerts from tasks, outside any transaction.
    first = alert_raise(kind=Alert.Kind.UNPRICED_MODEL, cause_key="unpriced_model:gpt-x", title="No price")
    again = alert_raise(kind=Alert.Kind.UNPRICED_MODEL, cause_key="unpriced_model:gpt-x", title="No price")
    assert first is not None and again is None
    assert Alert.unscoped_objects.filter(cause_key="unpriced_model:gpt-x").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db
def test_select_by_key_returns_only_the_named_rows_with_json_decoded(tenant):
    rows = [_thread_row(tenant, f"conv_{i}", {"n": i}) for i in range(3)]
    bulk.insert_returning(Thread._meta.db_table, bulk.columns_for(Thread, THREAD_COLUMNS), rows,
                          conflict=["openai_id"], returning=["id"])
    names = ["openai_id", "tenant_id", "metadata"]
    for for_update in (False, True):
        found = bulk.select_by_key(Thread._meta.db_table, names, "openai_id", ["conv_2", "conv_0", "conv_missing"],
                                   for_update=for_update, json_columns=["metadata"])
        assert sorted((row["openai_id"], row["tenant_id"], row["metadata"]) for row in found) == [
            ("conv_0", tenant.pk, {"n": 0}), ("conv_2", tenant.pk, {"n": 2})]
    assert bulk.select_by_key(Thread._meta.db_table, names, "openai_id", []) == []
