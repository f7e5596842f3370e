"""Costs computed here, independently of the rating module, from a price table and a set of runs, match
the ledger to the cent: cached tokens, reasoning tokens, tool fees and a price change mid-month."""

import datetime as dt
import random
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Sum

from apps.core.models import AuditEvent
from apps.ledger.models import DailyRollup, Run
from apps.ledger.services import RepriceOverflow, ingest_events, ledger_check, runs_reprice
from apps.pricing.models import ModelPrice, ToolPrice
from tests import builders

# The test's own price table: one model whose price drops on Oct 15, tools repriced from Oct 1.
PRICES = {
    "acct-model": [
        (dt.date(2026, 10, 1), {"input": Decimal("2.00"), "cached": Decimal("0.50"), "output": Decimal("8.00")}),
        (dt.date(2026, 10, 15), {"input": Decimal("1.00"), "cached": Decimal("0.25"), "output": Decimal("4.00")}),
    ],
}
TOOLS = {"session": Decimal("0.05"), "file_search_per_1k": Decimal("3.00"), "web_search_per_1k": Decimal("12.00")}


def _install_prices():
    for model, versions in PRICES.items():
        for day, price in versions:
            ModelPrice.objects.create(model=model, effective_from=day, input_usd_per_1m=price["input"],
                                      cached_input_usd_per_1m=price["cached"], output_usd_per_1m=price["output"])
    ToolPrice.objects.create(effective_from=dt.date(2026, 10, 1), code_interpreter_session_usd=TOOLS["session"],
                             file_search_call_usd_per_1k=TOOLS["file_search_per_1k"],
                             web_search_call_usd_per_1k=TOOLS["web_search_per_1k"],
                             vector_storage_usd_per_gb_day=Decimal("0.10"), vector_storage_free_gb=Decimal("1"))


def _expected_cost(run: dict) -> Decimal:
    day = run["created_at"].date()
    price = [p for start, p in PRICES["acct-model"] if start <= day][-1]
    uncached = run["input"] - run["cached"]
    tokens = (Decimal(uncached) * price["input"] + Decimal(run["cached"]) * price["cached"]
              + Decimal(run["output"]) * price["output"]) / Decimal(1_000_000)
    sessions = 1 if run["ci_calls"] else 0  # all calls in one container
    tools = (sessions * TOOLS["session"] + run["fs_calls"] * TOOLS["file_search_per_1k"] / 1000
             + run["ws_calls"] * TOOLS["web_search_per_1k"] / 1000)
    return tokens + tools


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def test_independent_costs_match_to_the_cent_across_a_mid_month_price_change(tenant, other_tenant):
    _install_prices()
    rng = random.Random(42)
    runs, events = [], []
    for number in range(200):
        created = dt.datetime(2026, 10, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=rng.randrange(0, 30 * 24 * 60))
        input_tokens = rng.randrange(0, 400_000)
        output_tokens = rng.randrange(0, 40_000)
        run = {"id": f"resp_cost_{number}", "tenant": rng.choice(["acme", "globex"]), "created_at": created,
               "input": input_tokens, "cached": rng.randrange(0, input_tokens + 1), "output": output_tokens,
               "reasoning": rng.randrange(0, output_tokens + 1), "ci_calls": rng.choice([0, 0, 1, 4]),
               "fs_calls": rng.randrange(0, 3), "ws_calls": rng.randrange(0, 3)}
        runs.append(run)
        events.append({"tenant": run["tenant"], "object": builders.response(
            response_id=run["id"], created_at=created, model="acct-model", input_tokens=run["input"],
            cached_tokens=run["cached"], output_tokens=run["output"], reasoning_tokens=run["reasoning"],
            code_interpreter_calls=run["ci_calls"], file_search_calls=run["fs_calls"], web_search_calls=run["ws_calls"])})
    assert ingest_events(events=events).created == 200
    assert any(r["created_at"].date() < dt.date(2026, 10, 15) for r in runs)
    assert any(r["created_at"].date() >= dt.date(2026, 10, 15) for r in runs)

    stored = dict(Run.objects.unscoped().values_list("openai_id", "cost_total_usd"))
    for run in runs:
        assert _cents(stored[run["id"]]) == _cents(_expected_cost(run)), run
    for slug, tenant_obj in (("acme", tenant), ("globex", other_tenant)):
        expected = sum((_expected_cost(r) for r in runs if r["tenant"] == slug), Decimal(0))
        from_rollups = DailyRollup.objects.for_tenant(tenant_obj).aggregate(total=Sum("cost_total_usd"))["total"]
        assert _cents(from_rollups) == _cents(expected)
        # Before and after the change separately: the effective date splits the month.
        before = sum((_expected_cost(r) for r in runs if r["tenant"] == slug and r["created_at"].day < 15), Decimal(0))
        rolled_before = DailyRollup.objects.for_tenant(tenant_obj).filter(day__lt=dt.date(2026, 10, 15)).aggregate(
            total=Sum("cost_total_usd"))["total"]
        assert _cents(rolled_before) == _cents(before)


def test_reprice_dry_run_shows_the_diff_and_apply_changes_runs_rollups_and_audits(tenant, capsys):
    ModelPrice.objects.create(model="acct-model", effective_from=dt.date(2026, 10, 1), input_usd_per_1m=Decimal("2"),
                              output_usd_per_1m=Decimal("8"))
    events = [{"tenant": "acme", "object": builders.response(created_at=dt.datetime(2026, 10, day, tzinfo=dt.UTC),
                                                             model="acct-model", input_tokens=1_000_000,
                                                             output_tokens=0)}
              for day in (5, 20)]
    ingest_events(events=events)
    assert DailyRollup.objects.for_tenant(tenant).aggregate(t=Sum("cost_total_usd"))["t"] == Decimal("4")
    # A price correction effective mid-month.
    ModelPrice.objects.create(model="acct-model", effective_from=dt.date(2026, 10, 15), input_usd_per_1m=Decimal("3"),
                              output_usd_per_1m=Decimal("8"))
    call_command("reprice", "--start", "2026-10-01", "--end", "2026-10-31", "--dry-run")
    out = capsys.readouterr().out
    assert "acme" in out and "4.0000000000" in out and "5.0000000000" in out and "+1.0000000000" in out
    assert "Dry run" in out
    assert DailyRollup.objects.for_tenant(tenant).aggregate(t=Sum("cost_total_usd"))["t"] == Decimal("4")
    assert not AuditEvent.objects.filter(action="ledger.reprice").exists()

    call_command("reprice", "--start", "2026-10-01", "--end", "2026-10-31")
    assert "Applied: 1 runs change" in capsys.readouterr().out
    assert DailyRollup.objects.for_tenant(tenant).aggregate(t=Sum("cost_total_usd"))["t"] == Decimal("5")
    late = Run.objects.for_tenant(tenant).get(created_at__day=20)
    assert late.model_price.effective_from == dt.date(2026, 10, 15)
    audit = AuditEvent.objects.get(action="ledger.reprice")
    assert audit.data["tenants"][0]["difference_usd"] == "1.0000000000"
    assert ledger_check() == []
    call_command("reprice", "--start", "2026-10-01", "--end", "2026-10-31")
    assert "Applied: 0 runs change" in capsys.readouterr().out


def test_reprice_outside_the_period_or_for_another_tenant_changes_nothing(tenant, other_tenant, capsys):
    ModelPrice.objects.create(model="acct-model", effective_from=dt.date(2026, 10, 1), input_usd_per_1m=Decimal("2"),
                              output_usd_per_1m=Decimal("8"))
    ingest_events(events=[{"tenant": slug, "object": builders.response(
        created_at=dt.datetime(2026, 10, 20, tzinfo=dt.UTC), model="acct-model", input_tokens=1_000_000)}
        for slug in ("acme", "globex")])
    ModelPrice.objects.filter(model="acct-model").update(input_usd_per_1m=Decimal("3"))
    call_command("reprice", "--start", "2026-10-21", "--end", "2026-10-31")
    call_command("reprice", "--start", "2026-10-01", "--end", "2026-10-31", "--tenant", "globex")
    costs = dict(Run.objects.unscoped().values_list("tenant__slug", "cost_total_usd"))
    assert costs == {"acme": Decimal("2.0008"), "globex": Decimal("3.0008")}  # + 100 output x $8/1M


@pytest.mark.parametrize(("option", "value"), [("--end", "9999-12-31"), ("--start", "0001-01-01")])
def test_reprice_refuses_a_date_out_of_range_naming_the_option(tenant, option, value):
    # --end 9999-12-31 ("everything") overflowed into a traceback working out the day after it.
    period = {"--start": "2026-10-01", "--end": "2026-10-31", option: value}
    with pytest.raises(CommandError, match=f"{option} {value} is out of range: use a date from 1970-01-01"):
        call_command("reprice", *[word for pair in period.items() for word in pair])
    with pytest.raises(CommandError, match="--start '2026-13-01' is not a date; use YYYY-MM-DD"):
        call_command("reprice", "--start", "2026-13-01", "--end", "2026-10-31")


def _unpriced_runs_of_a_model_then_an_absurd_price(monkeypatch) -> None:
    """A small run and one of 10**12 output tokens (the most ingest takes), stored unpriced; then a price of
    $1,000 per million output tokens, which makes the big one cost a billion USD: past the ~922 million an end
    user's month can hold. Re-pricing goes one run a batch, so the small run's batch comes first."""
    monkeypatch.setattr("apps.ledger.services.REPRICE_BATCH", 1)
    when = dt.datetime(2026, 10, 20, tzinfo=dt.UTC)
    for run_id, output_tokens in (("resp_small", 1_000_000), ("resp_huge", 10**12)):  # in this order of id
        ingest_events(events=[{"tenant": "acme", "attribution": {"user_id": "u_big"}, "object": builders.response(
            response_id=run_id, created_at=when, model="gpt-huge", input_tokens=1, output_tokens=output_tokens)}])
    ModelPrice.objects.create(model="gpt-huge", effective_from=dt.date(2026, 1, 1), input_usd_per_1m=Decimal("0"),
                              output_usd_per_1m=Decimal("1000"))


def test_a_reprice_that_would_overflow_a_total_stops_naming_the_run_and_keeps_the_batches_before_it(
        tenant, monkeypatch):
    _unpriced_runs_of_a_model_then_an_absurd_price(monkeypatch)

    with pytest.raises(RepriceOverflow) as stopped:
        runs_reprice(unpriced_only=True)

    assert "run resp_huge (model gpt-huge, tenant acme)" in str(stopped.value)
    assert "Check the price of gpt-huge" in str(stopped.value)
    priced = dict(Run.objects.for_tenant(tenant).values_list("openai_id", "cost_total_usd"))
    assert priced == {"resp_small": Decimal("1000"), "resp_huge": Decimal("0")}  # the batch before it is applied
    assert ledger_check() == []
    # What was applied is audited, with why it stopped.
    audit = AuditEvent.objects.get(action="ledger.reprice")
    assert audit.data["tenants"][0]["changed_runs"] == 1 and "resp_huge" in audit.data["stopped"]
    # The next step it names finishes the job once the price is corrected: the run rated at the absurd price
    # is re-rated too (an unpriced-only re-price would not look at it again).
    assert stopped.value.next_step().startswith("The batches before it were applied")
    assert "`manage.py reprice --start 2026-10-20 --end 2026-10-20`" in stopped.value.next_step()
    ModelPrice.objects.filter(model="gpt-huge").update(output_usd_per_1m=Decimal("0.1"))
    call_command("reprice", "--start", "2026-10-20", "--end", "2026-10-20")
    priced = dict(Run.objects.for_tenant(tenant).values_list("openai_id", "cost_total_usd"))
    assert priced == {"resp_small": Decimal("0.1"), "resp_huge": Decimal("100000")}
    assert ledger_check() == []


def test_the_reprice_command_prints_what_was_applied_and_says_what_to_do_next(tenant, monkeypatch, capsys):
    _unpriced_runs_of_a_model_then_an_absurd_price(monkeypatch)

    with pytest.raises(CommandError) as stopped:
        call_command("reprice", "--unpriced")

    assert "run resp_huge (model gpt-huge, tenant acme)" in str(stopped.value)
    assert "re-rate them with `manage.py reprice --start 2026-10-20 --end 2026-10-20`" in str(stopped.value)
    out = capsys.readouterr().out
    assert "Applied before it stopped:" in out and "acme" in out and "+1000.0000000000" in out
    assert ledger_check() == []


def test_a_reprice_stopped_in_its_first_batch_changes_nothing_and_says_to_run_it_again(tenant, monkeypatch):
    _unpriced_runs_of_a_model_then_an_absurd_price(monkeypatch)
    monkeypatch.setattr("apps.ledger.services.REPRICE_BATCH", 2)  # both runs in one batch

    with pytest.raises(RepriceOverflow) as stopped:
        runs_reprice(unpriced_only=True)

    assert stopped.value.next_step() == "Nothing was changed: correct the price and run the same re-price again."
    assert not Run.objects.for_tenant(tenant).filter(priced=True).exists()
    assert not AuditEvent.objects.filter(action="ledger.reprice").exists()


def test_a_stopped_ranged_reprice_says_to_run_the_same_range_again(tenant, monkeypatch):
    """A ranged re-price re-rates runs already priced too: the same range again finishes the job, the runs
    applied before the stop included (naming only their days would leave the rest of the range)."""
    _unpriced_runs_of_a_model_then_an_absurd_price(monkeypatch)

    with pytest.raises(RepriceOverflow) as stopped:
        runs_reprice(start=dt.date(2026, 10, 1), end=dt.date(2026, 10, 31))

    assert stopped.value.next_step().endswith("after correcting the price, run the same re-price again.")
