"""The collector against the sandbox: non-terminal runs are refreshed to terminal, and runs of recorded
threads that nobody reported are found and attributed to the thread's tenant."""

import datetime as dt
from decimal import Decimal

from django.utils import timezone

from apps.ledger.collector import collect_runs_refresh, collect_thread_runs
from apps.ledger.models import Run, Thread
from apps.ledger.services import ingest_events, ledger_check
from apps.ledger.tasks import collect_runs


def _assistant(openai_client):
    return openai_client.beta.assistants.create(model="gpt-5.4", tools=[{"type": "code_interpreter"}])


def test_collect_runs_refreshes_a_reported_run_until_terminal(tenant, sandbox, openai_client, provider):
    assistant = _assistant(openai_client)
    thread = openai_client.beta.threads.create()
    run = openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    ingest_events(events=[{"tenant": "acme", "object": run.to_dict()}])
    assert Run.objects.for_tenant(tenant).get().status == "queued"

    sandbox.advance(10)
    result = collect_runs_refresh(provider=provider)
    assert (result.checked, result.updated) == (1, 1)
    stored = Run.objects.for_tenant(tenant).get()
    assert stored.status == "completed" and stored.input_tokens > 0 and stored.priced
    assert stored.code_interpreter_sessions == 1  # counted from the run's steps
    assert stored.cost_tools_usd == Decimal("0.03") and stored.cost_total_usd > Decimal("0.03")
    # Terminal now: nothing left to refresh.
    assert collect_runs_refresh(provider=provider).checked == 0
    assert ledger_check() == []


def test_collect_runs_task_uses_the_default_provider(tenant, sandbox, openai_client, provider):
    assistant = _assistant(openai_client)
    thread = openai_client.beta.threads.create()
    run = openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    ingest_events(events=[{"tenant": "acme", "object": run.to_dict()}])
    sandbox.advance(10)
    outcome = collect_runs.apply().get()
    assert outcome["updated"] == 1


def test_collect_thread_runs_records_unreported_runs_with_the_threads_tenant(tenant, other_tenant, sandbox,
                                                                            openai_client, provider):
    assistant = _assistant(openai_client)
    thread = openai_client.beta.threads.create()
    ingest_events(events=[{"tenant": "globex", "object": thread.to_dict()}])
    first = openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    sandbox.advance(10)
    second = openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    sandbox.advance(10)
    ingest_events(events=[{"tenant": "globex", "object": first.to_dict()}])

    result = collect_thread_runs(limit=50, active_since=timezone.now() - dt.timedelta(days=1), provider=provider)
    assert result.checked == 1 and result.created == 1
    runs = {r.openai_id: r for r in Run.objects.for_tenant(other_tenant)}
    assert set(runs) == {first.id, second.id}
    assert runs[second.id].status == "completed"
    assert not Run.objects.for_tenant(tenant).exists()
    assert Thread.objects.for_tenant(other_tenant).get(openai_id=thread.id).run_count == 2
    # Running again finds nothing new.
    again = collect_thread_runs(limit=50, active_since=timezone.now() - dt.timedelta(days=1), provider=provider)
    assert again.created == 0


def test_collect_runs_refreshes_each_run_with_its_own_projects_key(tenant, sandbox, provider, second_project):
    client = second_project.client
    assistant = client.beta.assistants.create(model="gpt-5.4")
    thread = client.beta.threads.create()
    run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    ingest_events(events=[{"tenant": "acme", "object": run.to_dict(), "openai_project": "proj_second"}])
    sandbox.advance(10)

    result = collect_runs_refresh(provider=provider)

    assert (result.checked, result.updated, result.not_found) == (1, 1, 0)
    assert Run.objects.for_tenant(tenant).get().status == "completed"


def test_a_run_recorded_under_the_wrong_project_is_refreshed_from_the_one_that_holds_it(
        tenant, sandbox, provider, second_project):
    client = second_project.client
    assistant = client.beta.assistants.create(model="gpt-5.4")
    thread = client.beta.threads.create()
    run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    response = client.responses.create(model="gpt-5.4", input="hi", background=True)
    # Reported without their project: recorded under the default one, where OpenAI answers 404.
    ingest_events(events=[{"tenant": "acme", "object": obj.to_dict()} for obj in (run, response)])
    sandbox.advance(10)

    result = collect_runs_refresh(provider=provider)

    assert (result.checked, result.updated, result.not_found, result.found_elsewhere) == (2, 2, 0, 2)
    stored = {r.openai_id: (r.status, r.openai_project) for r in Run.objects.for_tenant(tenant)}
    assert stored == {run.id: ("completed", "proj_second"), response.id: ("completed", "proj_second")}
    assert ledger_check() == []  # the runs' shares moved to the project's rollup rows with them


def test_a_run_found_in_another_project_moves_there_at_once_even_unchanged(
        tenant, sandbox, provider, second_project):
    response = second_project.client.responses.create(model="gpt-5.4", input="hi", background=True)
    ingest_events(events=[{"tenant": "acme", "object": response.to_dict()}])  # under the default project
    # The sandbox's clock does not move: OpenAI still reports the state already recorded.

    first = collect_runs_refresh(provider=provider)

    assert (first.checked, first.updated, first.unchanged, first.found_elsewhere) == (1, 1, 0, 1)
    stored = Run.objects.for_tenant(tenant).get()
    assert (stored.status, stored.openai_project) == ("queued", "proj_second")
    assert ledger_check() == []
    # The next pass asks the right project straight away: no second lookup elsewhere.
    again = collect_runs_refresh(provider=provider)
    assert (again.checked, again.unchanged, again.found_elsewhere) == (1, 1, 0)


def test_thread_runs_of_a_thread_recorded_under_the_wrong_project_are_listed_where_it_is(
        tenant, sandbox, provider, second_project):
    client = second_project.client
    assistant = client.beta.assistants.create(model="gpt-5.4")
    thread = client.beta.threads.create()
    ingest_events(events=[{"tenant": "acme", "object": thread.to_dict()}])  # under the default project
    run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    sandbox.advance(10)

    result = collect_thread_runs(limit=50, active_since=timezone.now() - dt.timedelta(days=1), provider=provider)

    assert (result.checked, result.created, result.not_found, result.found_elsewhere) == (1, 1, 0, 1)
    assert Run.objects.for_tenant(tenant).get(openai_id=run.id).openai_project == "proj_second"


def _recorded_then_deleted_at_openai(openai_client) -> None:
    """A run recorded in the default project whose thread is then deleted there: every project answers 404."""
    assistant = _assistant(openai_client)
    thread = openai_client.beta.threads.create()
    run = openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    ingest_events(events=[{"tenant": "acme", "object": run.to_dict()}])
    openai_client.beta.threads.delete(thread.id)


def test_a_run_no_project_holds_is_counted_not_found(tenant, sandbox, openai_client, provider, second_project):
    _recorded_then_deleted_at_openai(openai_client)

    result = collect_runs_refresh(provider=provider)

    assert (result.checked, result.not_found, result.found_elsewhere) == (1, 1, 0)


def test_another_projects_rate_limit_passes_over_that_run_only_and_the_pass_goes_on(
        tenant, sandbox, openai_client, provider, second_project):
    elsewhere = second_project.client.responses.create(model="gpt-5.4", input="hi", background=True)
    assistant = _assistant(openai_client)
    thread = openai_client.beta.threads.create()
    healthy = openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    # The response recorded under the default project (404 there); its own project is rate limited.
    ingest_events(events=[{"tenant": "acme", "object": obj.to_dict()} for obj in (elsewhere, healthy)])
    Run.objects.for_tenant(tenant).filter(openai_id=elsewhere.id).update(updated_at=timezone.now() - dt.timedelta(hours=1))
    sandbox.faults.not_found(path=rf"^/v1/responses/{elsewhere.id}$", times=1)  # the default project's answer
    sandbox.faults.rate_limit(path=rf"^/v1/responses/{elsewhere.id}$", times=None, retry_after=0)
    sandbox.advance(10)

    result = collect_runs_refresh(provider=provider)

    assert (result.errors, result.not_found, result.stopped_early, result.updated) == (1, 0, "", 1)
    stored = {r.openai_id: r for r in Run.objects.for_tenant(tenant)}
    assert stored[healthy.id].status == "completed"
    assert stored[elsewhere.id].status == "queued"
    assert stored[elsewhere.id].updated_at > stored[healthy.id].created_at  # to the back of the queue


def test_a_404_is_not_counted_not_found_while_another_project_cannot_be_asked(tenant, sandbox, openai_client,
                                                                          provider, monkeypatch):
    from apps.reconciliation.models import OpenAIProject

    OpenAIProject.objects.create(project_id="proj_nokey", admin_key_env="RL_TEST_NOKEY_ADMIN",
                                 api_key_env="RL_TEST_NOKEY_API", base_url=sandbox.base_url)
    monkeypatch.delenv("RL_TEST_NOKEY_API", raising=False)
    _recorded_then_deleted_at_openai(openai_client)

    result = collect_runs_refresh(provider=provider)

    assert (result.checked, result.not_found, result.errors) == (0, 0, 1)


def test_runs_of_a_project_runledger_cannot_reach_are_counted_and_go_to_the_back_of_the_queue(
        tenant, sandbox, openai_client, provider):
    elsewhere = sandbox.client(project="proj_unknown")
    assistant = elsewhere.beta.assistants.create(model="gpt-5.4")
    thread = elsewhere.beta.threads.create()
    run = elsewhere.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    ingest_events(events=[{"tenant": "acme", "object": run.to_dict(), "openai_project": "proj_unknown"}])
    before = Run.objects.for_tenant(tenant).get().updated_at
    sandbox.advance(10)

    result = collect_runs_refresh(provider=provider)

    assert (result.checked, result.unreachable, result.not_found) == (0, 1, 0)
    stored = Run.objects.for_tenant(tenant).get()
    assert stored.status == "queued" and stored.updated_at > before  # rotated: it cannot hold the front


def test_collectors_without_the_deployments_api_key_fail_before_they_start(tenant, sandbox, provider, settings):
    import pytest

    from apps.provider.client import ProviderAuthError

    settings.OPENAI_API_KEY = ""
    for collect in (lambda: collect_runs_refresh(),
                    lambda: collect_thread_runs(active_since=timezone.now() - dt.timedelta(days=1))):
        with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY"):
            collect()


def test_a_collector_pass_slower_than_its_lock_keeps_it_so_beat_starts_no_second_copy(tenant, monkeypatch, settings,
                                                                                      time_machine):
    # Lock expiry read on the test's clock (Redis keeps its own, which time_machine cannot move).
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    time_machine.move_to("2026-11-02T12:00:00Z", tick=False)
    from apps.provider.client import OpenAIProvider
    from tests import builders

    reported = {obj["id"]: obj for obj in (builders.response(created_at=timezone.now() - dt.timedelta(hours=1),
                                                             status="in_progress") for _ in range(3))}
    ingest_events(events=[{"tenant": "acme", "object": obj} for obj in reported.values()])
    later_copies = []

    class TimingOutOpenAI:
        """Each answer comes after 6 minutes (timeouts retried): the pass outlasts the 10-minute lock."""

        def retrieve_response(self, openai_id):
            time_machine.shift(6 * 60)
            if not later_copies or later_copies[-1] is not None:
                later_copies.append(None)  # beat's next copy, sent while this pass is still running
                later_copies[-1] = collect_runs.apply().get()
            return reported[openai_id]

    monkeypatch.setattr(OpenAIProvider, "default", classmethod(lambda cls, **overrides: TimingOutOpenAI()))
    outcome = collect_runs.apply().get()
    assert outcome["checked"] == 3 and outcome["unchanged"] == 3
    assert later_copies == [{"skipped": True}] * 3


def test_threads_whose_runs_were_read_but_not_stored_are_listed_again_by_the_next_pass(tenant, sandbox, openai_client,
                                                                                        provider, monkeypatch):
    import pytest

    from apps.ledger import collector

    assistant = _assistant(openai_client)
    threads = [openai_client.beta.threads.create() for _ in range(2)]
    ingest_events(events=[{"tenant": "acme", "object": thread.to_dict()} for thread in threads])
    unreported = openai_client.beta.threads.runs.create(threads[0].id, assistant_id=assistant.id)
    sandbox.advance(10)
    active_since = timezone.now() - dt.timedelta(days=1)

    def ingest_fails(**kwargs):  # the worker killed, or the database gone, after the threads were listed
        raise RuntimeError("the database went away")

    with monkeypatch.context() as patched, pytest.raises(RuntimeError):
        patched.setattr(collector, "ingest_events", ingest_fails)
        collect_thread_runs(limit=1, active_since=active_since, provider=provider)

    collect_thread_runs(limit=1, active_since=active_since, provider=provider)
    assert Run.objects.for_tenant(tenant).filter(openai_id=unreported.id).exists()


def _quick_provider(sandbox, max_attempts=2):
    """The sandbox's provider with two tries a request and no waiting between them."""
    from apps.provider.client import OpenAIProvider

    return OpenAIProvider(base_url=sandbox.base_url, api_key=sandbox.api_key, admin_key=sandbox.admin_key,
                          project_id="proj_default", backoff_base=0.001, backoff_cap=0.001, rate_limiter=None,
                          max_attempts=max_attempts)


def _queued_runs(openai_client, tenant, count):
    """`count` recorded, queued runs of their own threads, oldest check first in list order."""
    assistant = _assistant(openai_client)
    runs = []
    for _ in range(count):
        thread = openai_client.beta.threads.create()
        runs.append(openai_client.beta.threads.runs.create(thread.id, assistant_id=assistant.id))
    ingest_events(events=[{"tenant": "acme", "object": run.to_dict()} for run in runs])
    for age, run in enumerate(reversed(runs), start=1):
        Run.objects.for_tenant(tenant).filter(openai_id=run.id).update(
            updated_at=timezone.now() - dt.timedelta(minutes=age))
    return runs


def test_collect_runs_stops_after_three_server_errors_in_a_row_and_leaves_the_rest_in_the_queue(
        tenant, sandbox, openai_client, provider):
    """OpenAI down (every answer 502): the pass stops after the third run instead of spending a request (and
    its retries) on each of its `limit` runs; the runs not asked about keep their place at the front."""
    runs = _queued_runs(openai_client, tenant, 5)
    before = {r.openai_id: r.updated_at for r in Run.objects.for_tenant(tenant)}
    sandbox.advance(10)
    sandbox.faults.server_error(path=r"^/v1/threads/[^/]+/runs/", times=None, status=502)
    down = _quick_provider(sandbox)

    result = collect_runs_refresh(provider=down)

    assert (result.checked, result.errors) == (0, 3)
    assert result.stopped_early.startswith("OpenAI unavailable: 3 server errors or timeouts in a row")
    assert down.attempts_made == 3 * 2  # three runs, two tries each; none for the other two
    after = {r.openai_id: r for r in Run.objects.for_tenant(tenant)}
    assert all(after[run.id].updated_at > before[run.id] for run in runs[:3])  # passed over: to the back
    assert all(after[run.id].updated_at == before[run.id] for run in runs[3:])  # not asked: where they were
    assert all(r.status == "queued" for r in after.values())

    sandbox.faults.clear_faults()  # OpenAI is back: the next pass starts with the runs not asked about
    again = collect_runs_refresh(limit=2, provider=_quick_provider(sandbox))
    assert (again.checked, again.updated, again.stopped_early) == (2, 2, "")
    assert {r.openai_id for r in Run.objects.for_tenant(tenant).filter(status="completed")} == {r.id for r in runs[3:]}


def test_collect_runs_outage_count_starts_again_after_any_answer_and_ignores_refused_keys(
        tenant, sandbox, openai_client, provider):
    """Only server errors in a row stop a pass: a refused key (401) between them is OpenAI answering, and
    its run is passed over as before; the pass goes on to the end."""
    runs = _queued_runs(openai_client, tenant, 5)
    for index, run in enumerate(runs):
        status = 401 if index == 2 else 503
        sandbox.faults.server_error(path=rf"^/v1/threads/{run.thread_id}/runs/", times=None, status=status)

    result = collect_runs_refresh(provider=_quick_provider(sandbox))

    assert (result.checked, result.errors, result.stopped_early) == (0, 5, "")


def test_collect_thread_runs_stops_after_three_server_errors_in_a_row_and_keeps_its_cursor_before_the_rest(
        tenant, sandbox, openai_client, provider):
    """Listing threads' runs while OpenAI is down stops after three failures; the cursor moves past those three
    only, so the next pass lists the threads not asked about."""
    from django.core.cache import cache

    from apps.ledger.collector import DISCOVER_CURSOR_KEY

    assistant = _assistant(openai_client)
    threads = [openai_client.beta.threads.create() for _ in range(5)]
    ingest_events(events=[{"tenant": "acme", "object": thread.to_dict()} for thread in threads])
    last = Thread.objects.for_tenant(tenant).order_by("pk").last()  # listed last: not asked in the outage
    unreported = openai_client.beta.threads.runs.create(last.openai_id, assistant_id=assistant.id)
    active_since = timezone.now() - dt.timedelta(days=1)
    sandbox.faults.server_error(path=r"^/v1/threads/[^/]+/runs$", times=None, status=500)
    down = _quick_provider(sandbox)

    result = collect_thread_runs(limit=50, active_since=active_since, provider=down)

    assert (result.checked, result.errors) == (3, 3)
    assert result.stopped_early.startswith("OpenAI unavailable: 3 server errors")
    assert down.attempts_made == 3 * 2
    listed_first = list(Thread.objects.for_tenant(tenant).order_by("pk").values_list("pk", flat=True))[:3]
    assert cache.get(DISCOVER_CURSOR_KEY) == listed_first[-1]

    sandbox.faults.clear_faults()
    again = collect_thread_runs(limit=50, active_since=active_since, provider=_quick_provider(sandbox))
    assert (again.checked, again.created, again.stopped_early) == (2, 1, "")
    assert Run.objects.for_tenant(tenant).filter(openai_id=unreported.id).exists()
