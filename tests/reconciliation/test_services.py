"""The reconciliation service: a day's result is computed in full, swapped in atomically, replaced on re-run
with its history kept, and a failure never leaves a partial day."""

import datetime as dt
from decimal import Decimal

import pytest

from apps.ledger.models import DailyRollup
from apps.reconciliation.models import OpenAIProject, ReconciliationLine, ReconciliationRun
from apps.reconciliation.selectors import reconciliation_projects
from apps.reconciliation.services import reconciliation_reconcile

from .fakes import FakeAdminProvider

pytestmark = pytest.mark.django_db

DAY = dt.date(2026, 11, 3)
PROJECT = "proj_default"


def _rollup(tenant, *, day=DAY, model="gpt-5.4", input_tokens=1_000_000, output_tokens=100_000,
            cost_input="2.50", cost_output="1.50", project=""):
    return DailyRollup.objects.create(
        tenant=tenant, day=day, openai_project=project, model=model, feature="", runs=10,
        input_tokens=input_tokens, output_tokens=output_tokens, cost_input_usd=Decimal(cost_input),
        cost_output_usd=Decimal(cost_output), cost_total_usd=Decimal(cost_input) + Decimal(cost_output),
    )


def _matching_provider(day=DAY):
    return (FakeAdminProvider()
            .cost(day, "gpt-5.4, input", 2.5).cost(day, "gpt-5.4, output", 1.5)
            .completions(day, "gpt-5.4", 1_000_000, 0, 100_000))


def _run(provider, *, days=1, end_day=DAY, **kwargs):
    return reconciliation_reconcile(end_day=end_day, days=days, trigger="test",
                                    provider_factory=lambda project: provider, raise_errors=True, **kwargs)


def _current_lines(day=DAY):
    return {line.line: line for line in ReconciliationLine.objects.filter(run__is_current=True, day=day)}


def test_the_default_project_needs_no_configuration(settings):
    settings.OPENAI_PROJECT_ID = "proj_default"
    assert [project.project_id for project in reconciliation_projects()] == ["proj_default"]


def test_configured_projects_are_reconciled_beside_the_default(settings, monkeypatch):
    settings.OPENAI_PROJECT_ID = "proj_default"
    OpenAIProject.objects.create(project_id="proj_b", admin_key_env="RL_TEST_ADMIN_B")
    OpenAIProject.objects.create(project_id="proj_off", admin_key_env="RL_TEST_ADMIN_OFF", is_active=False)
    monkeypatch.setenv("RL_TEST_ADMIN_B", "sk-admin-b")
    projects = {project.project_id: project for project in reconciliation_projects()}
    assert sorted(projects) == ["proj_b", "proj_default"]
    assert projects["proj_b"].admin_key() == "sk-admin-b"


def test_a_missing_key_variable_names_the_variable_not_the_secret(monkeypatch):
    OpenAIProject.objects.create(project_id="proj_c", admin_key_env="RL_TEST_UNSET_KEY")
    monkeypatch.delenv("RL_TEST_UNSET_KEY", raising=False)
    project = reconciliation_projects(project_id="proj_c")[0]
    with pytest.raises(Exception, match="RL_TEST_UNSET_KEY"):
        project.admin_key()


def test_a_clean_day_matches_every_line(tenant, other_tenant):
    _rollup(tenant, cost_input="1.25", cost_output="0.75", input_tokens=500_000, output_tokens=50_000)
    _rollup(other_tenant, cost_input="1.25", cost_output="0.75", input_tokens=500_000, output_tokens=50_000)
    _run(_matching_provider())
    lines = _current_lines()
    assert {name: line.status for name, line in lines.items()} == {
        "gpt-5.4, input": "matched", "gpt-5.4, output": "matched", "gpt-5.4, input tokens": "matched",
        "gpt-5.4, output tokens": "matched", "unattributed spend": "matched",
    }
    assert lines["gpt-5.4, input"].ledger_value == Decimal("2.50")
    run = ReconciliationRun.objects.get(is_current=True)
    assert (run.ledger_total_usd, run.openai_total_usd, run.flagged_count) == (Decimal("4.00"), Decimal("4.00"), 0)


def test_drift_is_found_on_its_day_and_line_with_its_amount(tenant):
    _rollup(tenant)
    provider = _matching_provider()
    provider.costs_rows[DAY][0] = (PROJECT, "gpt-5.4, input", 3.75)
    _run(provider)
    lines = _current_lines()
    flagged = {name: (line.status, line.difference) for name, line in lines.items() if line.status != "matched"}
    assert flagged == {"gpt-5.4, input": ("drift", Decimal("1.25"))}
    assert lines["unattributed spend"].openai_value == Decimal("1.25")  # shown, explained by the line above


def test_spend_on_a_model_named_longer_than_the_ledger_holds_is_a_line_missing_in_ledger_not_a_failed_day(tenant):
    # A fine-tuned model's id carries the organisation and a suffix of up to 64 characters: 140 here.
    fine_tuned = "ft:gpt-4.1-mini-2025-04-14:acme-corporation-europe:" + "s" * 64 + ":AbCdEf12"
    _rollup(tenant)
    provider = _matching_provider().cost(DAY, f"{fine_tuned}, input", 2.5).completions(DAY, fine_tuned, 1_000, 0, 10)
    _run(provider)
    run = ReconciliationRun.objects.get(day=DAY)
    assert (run.status, run.is_current, run.error) == ("complete", True, "")
    lines = _current_lines()
    missing = lines[f"{fine_tuned}, input"]
    assert (missing.status, missing.model, missing.openai_value) == ("missing_in_ledger", fine_tuned, Decimal("2.5"))
    assert lines[f"{fine_tuned}, input tokens"].status == "missing_in_ledger"
    assert lines["gpt-5.4, input"].status == "matched"


def test_rerunning_a_day_replaces_it_and_keeps_the_history(tenant):
    _rollup(tenant)
    provider = _matching_provider()
    provider.costs_rows[DAY][0] = (PROJECT, "gpt-5.4, input", 3.75)
    _run(provider)
    first = ReconciliationRun.objects.get(is_current=True)
    provider.costs_rows[DAY][0] = (PROJECT, "gpt-5.4, input", 2.5)  # OpenAI's late correction
    _run(provider)
    _run(provider)
    runs = list(ReconciliationRun.objects.filter(day=DAY).order_by("id"))
    assert len(runs) == 3 and [run.is_current for run in runs] == [False, False, True]
    assert all(run.status == "complete" for run in runs)
    assert first.lines.filter(status="drift").count() == 1  # history keeps what the first attempt saw
    assert ReconciliationLine.objects.filter(run__is_current=True, day=DAY, status="drift").count() == 0
    assert ReconciliationLine.objects.filter(run__is_current=True, day=DAY).count() == 5


def test_a_failed_fetch_leaves_the_previous_result_current_and_records_the_attempt(tenant):
    _rollup(tenant)
    _run(_matching_provider())
    good = ReconciliationRun.objects.get(is_current=True)
    broken = _matching_provider()
    broken.fail_with = ConnectionError("sandbox down")
    with pytest.raises(ConnectionError):
        _run(broken)
    failed = ReconciliationRun.objects.exclude(pk=good.pk).get()
    assert failed.status == "failed" and "sandbox down" in failed.error and not failed.lines.exists()
    assert ReconciliationRun.objects.get(is_current=True) == good


def test_a_crash_while_swapping_leaves_no_partial_day(tenant, monkeypatch):
    _rollup(tenant)
    _run(_matching_provider())
    good = ReconciliationRun.objects.get(is_current=True)

    from django.db.models.query import QuerySet

    original_update = QuerySet.update

    def crash_on_demote(self, **kwargs):
        if self.model is ReconciliationRun and kwargs == {"is_current": False}:
            raise RuntimeError("worker killed")
        return original_update(self, **kwargs)

    monkeypatch.setattr(QuerySet, "update", crash_on_demote)
    with pytest.raises(RuntimeError):
        _run(_matching_provider())
    monkeypatch.undo()
    assert ReconciliationRun.objects.get(is_current=True) == good
    attempt = ReconciliationRun.objects.exclude(pk=good.pk).get()
    assert attempt.status == "failed" and "worker killed" in attempt.error and not attempt.lines.exists()


def test_a_day_that_fails_to_save_fails_with_the_days_after_it_and_the_days_before_stay_swapped_in(
        tenant, monkeypatch):
    # Not left 'running' (in progress on the page) until the next attempt: nothing is working on them.
    days = [DAY - dt.timedelta(days=offset) for offset in (2, 1, 0)]
    provider = FakeAdminProvider()
    for day in days:
        _rollup(tenant, day=day)
        provider.cost(day, "gpt-5.4, input", 2.5).cost(day, "gpt-5.4, output", 1.5)
        provider.completions(day, "gpt-5.4", 1_000_000, 0, 100_000)
    _run(provider, days=3)
    earlier = {run.day: run for run in ReconciliationRun.objects.filter(is_current=True)}

    from apps.reconciliation import services

    original_swap_in = services._swap_in

    def failing_on_the_middle_day(*, run, **kwargs):
        if run.day == days[1]:
            raise RuntimeError("database went away")
        return original_swap_in(run=run, **kwargs)

    monkeypatch.setattr(services, "_swap_in", failing_on_the_middle_day)
    with pytest.raises(RuntimeError):
        _run(provider, days=3)
    attempt = {run.day: run for run in ReconciliationRun.objects.exclude(pk__in=[r.pk for r in earlier.values()])}
    assert attempt[days[0]].status == "complete" and attempt[days[0]].is_current
    for day in days[1:]:
        assert attempt[day].status == "failed" and "database went away" in attempt[day].error
        assert attempt[day].finished_at is not None and not attempt[day].lines.exists()
        assert ReconciliationRun.objects.get(day=day, is_current=True) == earlier[day]
    assert not ReconciliationRun.objects.filter(status="running").exists()


def test_eight_days_are_reconciled_by_default_with_one_fetch_per_endpoint(tenant):
    for offset in range(8):
        _rollup(tenant, day=DAY - dt.timedelta(days=offset))
    provider = FakeAdminProvider()
    for offset in range(8):
        day = DAY - dt.timedelta(days=offset)
        provider.cost(day, "gpt-5.4, input", 2.5).cost(day, "gpt-5.4, output", 1.5)
        provider.completions(day, "gpt-5.4", 1_000_000, 0, 100_000)
    outcomes = reconciliation_reconcile(end_day=DAY, trigger="test", provider_factory=lambda p: provider,
                                        raise_errors=True)
    assert [run.day for run in outcomes[0].runs] == [DAY - dt.timedelta(days=d) for d in range(7, -1, -1)]
    assert all(run.flagged_count == 0 for run in outcomes[0].runs)
    assert provider.calls.count("costs") == 1


def test_other_projects_results_in_an_organization_wide_answer_are_ignored(tenant):
    _rollup(tenant)
    provider = _matching_provider().cost(DAY, "gpt-5.4, input", 99.0, project="proj_elsewhere")
    _run(provider)
    assert _current_lines()["gpt-5.4, input"].status == "matched"


def test_cache_writes_are_compared_inside_input(tenant):
    _rollup(tenant, cost_input="2.50")
    provider = (FakeAdminProvider().cost(DAY, "gpt-5.4, input", 2.0).cost(DAY, "gpt-5.4, cache write", 0.5)
                .cost(DAY, "gpt-5.4, output", 1.5).completions(DAY, "gpt-5.4", 1_000_000, 0, 100_000))
    _run(provider)
    assert _current_lines()["gpt-5.4, input"].openai_value == Decimal("2.5")
    assert "gpt-5.4, cache write" not in _current_lines()


def test_openai_float_dollars_are_read_at_the_ledgers_scale(tenant):
    """OpenAI's amounts are floats: a float's tail is not a drift, and a residue of a line that nets to nothing
    is $0 (it was stored as 0 beside a percentage of it too large for the column: a crash on PostgreSQL, and
    every read of the line a crash on SQLite)."""
    _rollup(tenant)
    provider = (FakeAdminProvider().cost(DAY, "gpt-5.4, input", 1.3877787807814457e-17)
                .cost(DAY, "gpt-5.4, output", 1.5000000000000004).completions(DAY, "gpt-5.4", 1_000_000, 0, 100_000))
    _run(provider)
    lines = _current_lines()
    residue, tail = lines["gpt-5.4, input"], lines["gpt-5.4, output"]
    assert (residue.status, residue.openai_value, residue.difference, residue.difference_pct) == (
        "missing_at_openai", Decimal("0"), Decimal("-2.50"), None)
    assert (tail.status, tail.openai_value, tail.difference) == ("matched", Decimal("1.5"), Decimal("0"))
    run = ReconciliationRun.objects.get(is_current=True)
    assert (run.openai_total_usd, run.unattributed_usd) == (Decimal("1.5"), Decimal("-2.5"))


def test_unattributed_line_items_flag_the_unattributed_line_and_are_explained_in_the_notes(tenant):
    _rollup(tenant)
    _run(_matching_provider().cost(DAY, "unattributed usage", 7.25))
    lines = _current_lines()
    assert {name for name, line in lines.items() if line.status != "matched"} == {"unattributed spend"}
    assert lines["unattributed spend"].openai_value == Decimal("7.25")
    run = ReconciliationRun.objects.get(is_current=True)
    assert run.openai_total_usd == Decimal("11.25") and run.unattributed_usd == Decimal("7.25")
    assert any("unattributed usage $7.2500" in note for note in run.notes)


def test_drift_raises_one_alert_per_day_project_and_line(tenant, django_capture_on_commit_callbacks):
    from apps.alerts.models import Alert

    _rollup(tenant)
    provider = _matching_provider()
    provider.costs_rows[DAY][0] = (PROJECT, "gpt-5.4, input", 3.75)
    with django_capture_on_commit_callbacks(execute=True):
        _run(provider)
        _run(provider)
    alerts = list(Alert.unscoped_objects.filter(kind="reconciliation_drift"))
    assert len(alerts) == 1
    assert alerts[0].tenant_id is None
    assert alerts[0].cause_key == f"reconciliation:{PROJECT}:{DAY.isoformat()}:gpt-5.4, input:drift"
    assert alerts[0].data["difference"] == "1.25"


def test_a_drift_alert_writes_dollars_as_the_pages_do_and_keeps_the_exact_values_in_its_data(
        tenant, django_capture_on_commit_callbacks):
    from apps.alerts.models import Alert

    _rollup(tenant)
    provider = _matching_provider()
    provider.costs_rows[DAY][0] = (PROJECT, "gpt-5.4, input", 1.25)  # the ledger carries $2.50
    with django_capture_on_commit_callbacks(execute=True):
        _run(provider)
    alert = Alert.unscoped_objects.get(kind="reconciliation_drift", data__line="gpt-5.4, input")
    assert alert.message.startswith("drift: ledger $2.50 vs OpenAI $1.25 (usd); difference -$1.25 (-100.0000%).")
    assert (alert.data["ledger_value"], alert.data["difference"]) == ("2.5", "-1.25")


def test_a_line_missing_at_openai_that_later_shows_drift_raises_again(tenant, django_capture_on_commit_callbacks):
    """OpenAI's numbers arrive late: the first run sees the ledger's cost with nothing at OpenAI yet; when
    OpenAI's number arrives and differs, that is news, not the same alert again."""
    from apps.alerts.models import Alert

    _rollup(tenant)
    late = (FakeAdminProvider().cost(DAY, "gpt-5.4, output", 1.5)
            .completions(DAY, "gpt-5.4", 1_000_000, 0, 100_000))  # the input line not in yet
    with django_capture_on_commit_callbacks(execute=True):
        _run(late)
        assert _current_lines()["gpt-5.4, input"].status == "missing_at_openai"
        arrived = _matching_provider()
        arrived.costs_rows[DAY][0] = (PROJECT, "gpt-5.4, input", 5.0)
        _run(arrived)
    assert _current_lines()["gpt-5.4, input"].status == "drift"
    messages = sorted(Alert.unscoped_objects.filter(kind="reconciliation_drift").values_list("message", flat=True))
    assert len(messages) == 2
    assert messages[0].startswith("drift:") and messages[1].startswith("missing at openai:")
