"""ingest_events: idempotency, state ordering, rating at ingest, threads, rollups and ledger_check."""

import datetime as dt
import itertools
import random
from decimal import Decimal

import pytest
from django.core.management import CommandError

from apps.alerts.models import Alert
from apps.ledger.models import DailyRollup, EndUserDailyRollup, Run, Thread
from apps.ledger.services import ingest_events, ledger_check, runs_reprice_unpriced
from apps.lifecycle.models import Container, StoredFile, VectorStore
from apps.pricing.models import ModelPrice
from tests import builders

WHEN = dt.datetime(2026, 11, 10, 9, 30, tzinfo=dt.UTC)


def _event(obj, tenant="acme", **extra):
    return {"tenant": tenant, "object": obj, **extra}


def _totals(tenant):
    rows = DailyRollup.objects.for_tenant(tenant)
    return (
        sum(r.runs for r in rows), sum(r.cost_total_usd for r in rows), sum(r.input_tokens for r in rows),
        sum(r.output_tokens for r in rows), sum(r.wasted_cost_usd for r in rows),
    )


def _lifecycle(run_id, final="completed", **kwargs):
    """Successive states of one run as OpenAI would report them."""
    states = ["queued", "in_progress", "requires_action", "in_progress", final]
    return [builders.assistants_run(run_id=run_id, created_at=WHEN, status=s, thread_id=f"thread_{run_id}", **kwargs)
            for s in states]


def test_same_batch_twice_in_any_order_leaves_totals_unchanged(tenant):
    batch = [_event(obj) for obj in _lifecycle("run_a") + _lifecycle("run_b", final="failed", prompt_tokens=5000)]
    first = ingest_events(events=batch)
    assert (first.created, first.rejected) == (2, 0)
    totals = _totals(tenant)
    assert totals[0] == 2
    for seed in range(3):
        shuffled = batch[:]
        random.Random(seed).shuffle(shuffled)
        again = ingest_events(events=shuffled)
        assert again.unchanged == len(batch) and again.created == again.updated == 0
        assert _totals(tenant) == totals
    assert ledger_check() == []


def test_reversed_order_ends_in_the_same_state_as_forward_order(tenant, other_tenant):
    forward = [_event(obj) for obj in _lifecycle("run_fwd")]
    backward = [_event(obj, tenant="globex") for obj in reversed(_lifecycle("run_bwd"))]
    ingest_events(events=forward)
    result = ingest_events(events=backward)
    # The first report (completed) creates the row; every older state that follows changes nothing.
    assert [r.outcome for r in result.results] == ["created"] + ["unchanged"] * 4
    a = Run.objects.for_tenant(tenant).get()
    b = Run.objects.for_tenant(other_tenant).get()
    for field in ("status", "input_tokens", "output_tokens", "cost_total_usd", "completed_at", "started_at"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.status == "completed"


def test_later_state_updates_run_and_rollup_by_the_difference(tenant):
    running = builders.assistants_run(run_id="run_up", created_at=WHEN, status="in_progress")
    done = builders.assistants_run(run_id="run_up", created_at=WHEN, status="completed", prompt_tokens=20000,
                                   completion_tokens=500)
    assert ingest_events(events=[_event(running)]).created == 1
    assert _totals(tenant)[:2] == (1, Decimal("0"))
    result = ingest_events(events=[_event(done)])
    assert result.updated == 1
    assert _totals(tenant)[:2] == (1, Decimal("0.0575"))
    assert ingest_events(events=[_event(running)]).unchanged == 1  # late, older report
    assert Run.objects.for_tenant(tenant).get().status == "completed"
    thread = Thread.objects.for_tenant(tenant).get(openai_id="thread_test")
    assert (thread.run_count, thread.cost_usd) == (1, Decimal("0.0575"))


def test_attribution_arriving_later_is_filled_in_and_moves_the_rollup(tenant):
    run = builders.assistants_run(run_id="run_attr", created_at=WHEN)
    ingest_events(events=[_event(run)])
    result = ingest_events(events=[_event(run, attribution={"user_id": "u9", "feature": "search"})])
    assert result.updated == 1
    stored = Run.objects.for_tenant(tenant).get()
    assert (stored.user_id, stored.feature) == ("u9", "search")
    assert list(DailyRollup.objects.for_tenant(tenant).filter(runs__gt=0).values_list("feature", flat=True)) == ["search"]
    assert ledger_check() == []


def _project_costs(tenant) -> dict[str, Decimal]:
    return {row.openai_project: row.cost_total_usd for row in DailyRollup.objects.for_tenant(tenant).filter(runs__gt=0)}


def test_a_report_of_the_same_state_from_another_project_leaves_the_run_where_it_is(tenant):
    done = builders.assistants_run(run_id="run_proj", created_at=WHEN, status="completed", prompt_tokens=20000)
    ingest_events(events=[_event(done, openai_project="proj_a")])
    # A stale or mislabelled report does not move a run: only a newer state carries its project.
    assert ingest_events(events=[_event(done, openai_project="proj_b")]).unchanged == 1
    assert Run.objects.for_tenant(tenant).get().openai_project == "proj_a"


def test_a_confirmed_project_moves_the_run_and_its_cost_even_with_the_same_state(tenant):
    done = builders.assistants_run(run_id="run_proj", created_at=WHEN, status="completed", prompt_tokens=20000)
    ingest_events(events=[_event(done, openai_project="proj_a")])
    cost = Run.objects.for_tenant(tenant).get().cost_total_usd
    assert _project_costs(tenant) == {"proj_a": cost}

    result = ingest_events(events=[_event(done, openai_project="proj_b")], projects_confirmed=True)

    assert result.updated == 1
    assert Run.objects.for_tenant(tenant).get().openai_project == "proj_b"
    assert _project_costs(tenant) == {"proj_b": cost}
    assert ledger_check() == []
    # Confirmed again, where it now is: nothing to change.
    assert ingest_events(events=[_event(done, openai_project="proj_b")], projects_confirmed=True).unchanged == 1


def test_a_confirmed_project_wins_over_an_older_state_of_the_run(tenant):
    running = builders.assistants_run(run_id="run_proj", created_at=WHEN, status="in_progress")
    done = builders.assistants_run(run_id="run_proj", created_at=WHEN, status="completed", prompt_tokens=20000)
    ingest_events(events=[_event(done, openai_project="proj_a")])
    # An older state read from the project that holds the run: the state stays, the project moves.
    assert ingest_events(events=[_event(running, openai_project="proj_b")], projects_confirmed=True).updated == 1
    stored = Run.objects.for_tenant(tenant).get()
    assert (stored.status, stored.openai_project) == ("completed", "proj_b")
    assert ledger_check() == []


@pytest.mark.parametrize("newest_first", [False, True])
@pytest.mark.parametrize("one_batch", [False, True])
def test_attribution_only_an_older_report_carries_lands_in_the_end_user_rollups(tenant, newest_first, one_batch):
    # Each report's rollup shares are worked out before the write phase; a merge that takes the end user
    # or feature from the other report must not reuse the shares keyed by the empty attribution.
    early = builders.assistants_run(run_id="run_merge", created_at=WHEN, status="in_progress", prompt_tokens=0,
                                    completion_tokens=0)
    final = builders.assistants_run(run_id="run_merge", created_at=WHEN)
    reports = [_event(early, attribution={"user_id": "u7", "feature": "search"}), _event(final)]
    if newest_first:
        reports.reverse()
    for batch in ([reports] if one_batch else [[report] for report in reports]):
        ingest_events(events=batch)
    stored = Run.objects.for_tenant(tenant).get()
    assert (stored.status, stored.user_id, stored.feature) == ("completed", "u7", "search")
    assert ledger_check() == []
    by_user = EndUserDailyRollup.objects.for_tenant(tenant).filter(runs__gt=0)
    assert list(by_user.values_list("user_id", "runs")) == [("u7", 1)]


def test_tenant_from_metadata_and_attribution_from_metadata(tenant):
    run = builders.response(response_id="resp_meta", created_at=WHEN,
                            metadata={"tenant": "acme", "user_id": "u1", "session_id": "s1", "feature": "chat"})
    assert ingest_events(events=[{"object": run}]).created == 1
    stored = Run.objects.for_tenant(tenant).get()
    assert (stored.user_id, stored.session_id, stored.feature, stored.metadata["tenant"]) == ("u1", "s1", "chat", "acme")


@pytest.mark.parametrize("obj", [builders.response(response_id="resp_typo", created_at=WHEN),
                                 builders.assistants_run(run_id="run_typo", created_at=WHEN)])
def test_an_attribution_key_it_does_not_know_rejects_that_event_naming_it_and_keeps_the_rest(tenant, obj):
    # Ignored, `feture` stored the run without the feature its sender meant to give it.
    good = builders.response(response_id="resp_good", created_at=WHEN)
    result = ingest_events(events=[{"tenant": "acme", "object": obj, "attribution": {"feture": "chat"}},
                                   {"tenant": "acme", "object": good, "attribution": {"feature": "chat"}}])

    rejected, created = result.results
    assert rejected.outcome == "rejected" and rejected.error["field"] == "attribution.feture"
    assert "user_id, session_id and feature" in rejected.error["message"]
    assert created.outcome == "created"
    assert list(Run.objects.for_tenant(tenant).values_list("openai_id", "feature")) == [("resp_good", "chat")]


def test_conversation_without_a_response_and_threads_are_recorded(tenant):
    conversation = builders.conversation(conversation_id="conv_lonely", created_at=WHEN, metadata={"k": "v"})
    thread = builders.thread(thread_id="thread_lonely", created_at=WHEN)
    result = ingest_events(events=[_event(conversation), _event(thread), _event(conversation)])
    assert [r.outcome for r in result.results] == ["created", "created", "unchanged"]
    rows = {t.openai_id: t for t in Thread.objects.for_tenant(tenant)}
    assert rows["conv_lonely"].kind == "conversation" and rows["conv_lonely"].metadata == {"k": "v"}
    assert rows["thread_lonely"].kind == "thread" and rows["thread_lonely"].run_count == 0
    # A response in that conversation later attaches to the same row.
    ingest_events(events=[_event(builders.response(created_at=WHEN + dt.timedelta(hours=1),
                                                   conversation_id="conv_lonely"))])
    conv = Thread.objects.for_tenant(tenant).get(openai_id="conv_lonely")
    assert conv.run_count == 1 and conv.last_activity_at == WHEN + dt.timedelta(hours=1)
    assert conv.created_at == WHEN


def test_a_conversation_taken_for_gone_is_live_again_when_activity_after_that_is_reported(tenant):
    """One spurious 404 to a sweep recorded a live conversation as gone at OpenAI; a new response in it is
    proof it is not. Left deleted, no sweep would look at it again, and conversations cannot be listed."""
    from apps.core.models import AuditEvent

    def respond(response_id, conversation_id, when):
        ingest_events(events=[_event(builders.response(response_id=response_id, created_at=when,
                                                       conversation_id=conversation_id))])

    for conversation_id in ("conv_spurious", "conv_late_report", "conv_swept"):
        respond(f"resp_{conversation_id}", conversation_id, WHEN)
    gone_at = WHEN + dt.timedelta(days=1)
    threads = Thread.objects.for_tenant(tenant)
    threads.filter(openai_id__in=["conv_spurious", "conv_late_report"]).update(
        status="deleted", deleted_at=gone_at, deletion_reason="gone at OpenAI (sweep 7)")
    threads.filter(openai_id="conv_swept").update(  # RunLedger deleted it itself: that is not a finding to doubt
        status="deleted", deleted_at=gone_at, deletion_reason="idle past 30 days (sweep 7)")

    respond("resp_after", "conv_spurious", gone_at + dt.timedelta(hours=2))
    respond("resp_reported_late", "conv_late_report", gone_at - dt.timedelta(hours=2))  # ran before the 404
    respond("resp_swept_after", "conv_swept", gone_at + dt.timedelta(hours=2))

    assert dict(threads.values_list("openai_id", "status")) == {
        "conv_spurious": "active", "conv_late_report": "deleted", "conv_swept": "deleted"}
    revived = threads.get(openai_id="conv_spurious")
    assert (revived.deleted_at, revived.deletion_reason, revived.run_count) == (None, "", 2)
    audit = AuditEvent.objects.get(action="lifecycle.thread.restore")
    assert (audit.target_id, audit.tenant_id, audit.data["was"]) == ("conv_spurious", tenant.pk,
                                                                     "gone at OpenAI (sweep 7)")


def test_thread_of_another_tenant_cannot_be_claimed(tenant, other_tenant):
    ingest_events(events=[_event(builders.thread(thread_id="thread_owned", created_at=WHEN))])
    intruder = builders.assistants_run(run_id="run_intruder", thread_id="thread_owned", created_at=WHEN)
    result = ingest_events(events=[_event(intruder, tenant="globex")])
    assert result.results[0].error == {"field": "object.thread_id", "message": "this thread is recorded for another tenant"}
    assert not Run.objects.for_tenant(other_tenant).exists()


def test_a_conversation_of_another_tenant_is_named_as_the_responses_conversation(tenant, other_tenant):
    ingest_events(events=[_event(builders.conversation(conversation_id="conv_owned", created_at=WHEN))])
    intruder = builders.response(response_id="resp_intruder", conversation_id="conv_owned", created_at=WHEN)

    result = ingest_events(events=[_event(intruder, tenant="globex")])

    assert result.results[0].error == {"field": "object.conversation.id",
                                       "message": "this thread is recorded for another tenant"}


def test_a_report_refused_as_another_tenants_run_does_not_claim_a_new_thread_from_the_good_report_beside_it(
        tenant, other_tenant):
    ingest_events(events=[_event(builders.assistants_run(run_id="run_acme", thread_id="thread_old", created_at=WHEN))])
    # The first report naming thread_new (so its owner, were it stored) is globex's report of acme's run: refused,
    # it used to take thread_new to globex and acme's own run in that thread was refused with it.
    result = ingest_events(events=[
        _event(builders.assistants_run(run_id="run_acme", thread_id="thread_new", created_at=WHEN), tenant="globex"),
        _event(builders.assistants_run(run_id="run_acme_2", thread_id="thread_new", created_at=WHEN)),
    ])

    assert [(r.outcome, r.error) for r in result.results] == [
        ("rejected", {"field": "object.id", "message": "this run is recorded for another tenant"}), ("created", None)]
    assert dict(Thread.objects.unscoped().values_list("openai_id", "tenant__slug")) == {
        "thread_old": "acme", "thread_new": "acme"}
    assert Run.objects.for_tenant(tenant).get(openai_id="run_acme").thread_openai_id == "thread_old"
    assert not Run.objects.for_tenant(other_tenant).exists()
    assert ledger_check() == []


@pytest.mark.parametrize(("order", "outcomes", "owner"), [
    (("conversation", "response"),
     {"conv_new": ("created", None), "resp_in_conv": ("rejected", "object.conversation.id")}, "acme"),
    (("response", "conversation"),
     {"resp_in_conv": ("created", None), "conv_new": ("rejected", "object.id")}, "globex"),
], ids=["conversation-first", "response-first"])
def test_a_conversation_new_to_the_ledger_belongs_to_the_first_event_in_the_batch_that_reports_it(
        tenant, other_tenant, order, outcomes, owner):
    # Reported for acme as an object and for globex as a response's conversation, in one batch.
    events = {
        "conversation": _event(builders.conversation(conversation_id="conv_new", created_at=WHEN)),
        "response": _event(builders.response(response_id="resp_in_conv", created_at=WHEN, conversation_id="conv_new"),
                            tenant="globex"),
    }

    result = ingest_events(events=[events[kind] for kind in order])

    assert {r.id: (r.outcome, (r.error or {}).get("field")) for r in result.results} == outcomes
    assert Thread.objects.unscoped().get(openai_id="conv_new").tenant.slug == owner


def _with(obj: dict, **changes) -> dict:
    return {**obj, **changes}


# Every string ingest stores in a column: (object kind, where the event carries it, model, column).
_STORED_STRINGS = [
    ("thread.run", "object.id", Run, "openai_id"),
    ("thread.run", "object.model", Run, "model"),
    ("thread.run", "object.status", Run, "status"),
    ("thread.run", "object.assistant_id", Run, "assistant_id"),
    ("thread.run", "object.thread_id", Run, "thread_openai_id"),
    ("thread.run", "object.last_error.code", Run, "error_code"),
    ("thread.run", "object.incomplete_details.reason", Run, "incomplete_reason"),
    ("thread.run", "object.metadata.user_id", Run, "user_id"),
    ("thread.run", "object.metadata.session_id", Run, "session_id"),
    ("thread.run", "object.metadata.feature", Run, "feature"),
    ("thread.run", "attribution.user_id", Run, "user_id"),
    ("thread.run", "attribution.session_id", Run, "session_id"),
    ("thread.run", "attribution.feature", Run, "feature"),
    ("thread.run", "openai_project", Run, "openai_project"),
    ("response", "object.conversation.id", Run, "thread_openai_id"),
    ("response", "object.prompt.id", Run, "prompt_id"),
    ("response", "object.service_tier", Run, "service_tier"),
    ("thread", "object.id", Thread, "openai_id"),
    ("thread", "openai_project", Thread, "openai_project"),
    ("conversation", "object.id", Thread, "openai_id"),
    ("vector_store", "object.id", VectorStore, "openai_id"),
    ("vector_store", "object.name", VectorStore, "name"),
    ("vector_store", "object.status", VectorStore, "openai_status"),
    ("vector_store", "openai_project", VectorStore, "openai_project"),
    ("file", "object.filename", StoredFile, "filename"),
    ("file", "object.purpose", StoredFile, "purpose"),
    ("container", "object.name", Container, "name"),
    ("container", "object.status", Container, "openai_status"),
]
_OBJECTS = {
    "thread.run": lambda openai_id: builders.assistants_run(run_id=openai_id, created_at=WHEN),
    "response": lambda openai_id: builders.response(response_id=openai_id, created_at=WHEN),
    "thread": lambda openai_id: builders.thread(thread_id=openai_id, created_at=WHEN),
    "conversation": lambda openai_id: builders.conversation(conversation_id=openai_id, created_at=WHEN),
    "vector_store": lambda openai_id: builders.vector_store(vector_store_id=openai_id, created_at=WHEN),
    "file": lambda openai_id: builders.file(file_id=openai_id, created_at=WHEN),
    "container": lambda openai_id: builders.container(container_id=openai_id, created_at=WHEN),
}


def _set_path(event: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    target = event
    for key in parents:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[last] = value
    return event


def test_every_string_ingest_stores_is_refused_naming_it_or_cut_to_its_column_when_longer(tenant):
    """The normalizers' length limits against the columns: a string one character past its column's max_length
    is either rejected naming where the event carries it or stored cut to fit. PostgreSQL refuses a longer
    string (a 500 for the whole batch); SQLite stores it, so the stored length is what is compared."""
    too_long = [model._meta.get_field(column).max_length + 1 for _, _, model, column in _STORED_STRINGS]
    events = [_set_path(_event(_OBJECTS[kind](f"obj_{number}")), path, "x" * length)
              for number, ((kind, path, _, _), length) in enumerate(zip(_STORED_STRINGS, too_long, strict=True))]

    results = ingest_events(events=events).results

    def refused_naming_it_or_cut_to_fit(case, length, event, result) -> bool:
        _, path, model, column = case
        stored = model.objects.unscoped().filter(openai_id=event["object"]["id"]).values_list(column, flat=True)
        return ((result.outcome, (result.error or {}).get("field")) == ("rejected", path)
                or (result.outcome == "created" and [len(value) < length for value in stored] == [True]))

    assert [(case[:2], result.outcome) for case, length, event, result
            in zip(_STORED_STRINGS, too_long, events, results, strict=True)
            if not refused_naming_it_or_cut_to_fit(case, length, event, result)] == []


def test_a_fine_tuned_model_named_past_100_characters_is_recorded_not_refused(tenant):
    """A fine-tuned model is "ft:<base>:<organization>:<suffix of up to 64 characters>:<job id>": with a long
    suffix its name runs past 100 characters, and its runs were refused (lost) by both normalizer paths."""

    model = f"ft:gpt-4.1-mini-2025-04-14:acme-analytics-incorporated:{'support-triage-' * 4}v2:BkX9a7Qz"
    assert 120 < len(model) <= 255
    events = [{"tenant": "acme", "object": builders.response(response_id="resp_ft", created_at=WHEN, model=model)},
              {"tenant": "acme", "object": builders.assistants_run(run_id="run_ft", created_at=WHEN, model=model)}]

    assert [result.outcome for result in ingest_events(events=events).results] == ["created", "created"]
    assert set(Run.objects.for_tenant(tenant).values_list("model", flat=True)) == {model}
    assert set(DailyRollup.objects.for_tenant(tenant).values_list("model", flat=True)) == {model}


@pytest.mark.parametrize(("event", "field"), [
    ({"object": builders.response(created_at=WHEN), "attribution": {"user_id": "u\x00"}}, "attribution.user_id"),
    ({"object": _with(builders.response(created_at=WHEN), metadata={"user_id": "u\x00"})}, "object.metadata.user_id"),
    ({"object": builders.response(response_id="resp_\ud800x", created_at=WHEN)}, "object.id"),
    ({"object": _with(builders.response(created_at=WHEN), status=["completed"])}, "object.status"),
    ({"object": _with(builders.assistants_run(created_at=WHEN), status={"s": 1})}, "object.status"),
    ({"object": _with(builders.response(created_at=WHEN), metadata={"tenant": "acme\x00"})}, "object.metadata.tenant"),
    ({"object": _with(builders.assistants_run(created_at=WHEN), status="failed",
                      last_error={"code": "server\x00error", "message": "x"})}, "object.last_error.code"),
])
def test_a_rejection_names_the_field_as_the_event_sent_it(tenant, event, field):
    result = ingest_events(events=[{"tenant": tenant.slug, **event}])

    assert (result.results[0].outcome, result.results[0].error["field"]) == ("rejected", field)


def test_unknown_model_is_unpriced_alerted_once_then_rated_when_priced(tenant):
    runs = [builders.response(response_id=f"resp_new_{i}", created_at=WHEN, model="gpt-7-nova-2026-11-01",
                              input_tokens=1_000_000, output_tokens=100_000) for i in range(3)]
    ingest_events(events=[_event(runs[0]), _event(runs[1])])
    ingest_events(events=[_event(runs[2])])
    stored = list(Run.objects.for_tenant(tenant))
    assert all(not r.priced and r.cost_total_usd == 0 and r.model_price_id is None for r in stored)
    alerts = Alert.objects.for_tenant(tenant) | Alert.unscoped_objects.filter(kind="unpriced_model")
    assert list(alerts.values_list("cause_key", flat=True)) == ["unpriced_model:gpt-7-nova-2026-11-01"]
    assert DailyRollup.objects.for_tenant(tenant).get().unpriced_runs == 3

    ModelPrice.objects.create(model="gpt-7-nova", effective_from=dt.date(2026, 11, 1), input_usd_per_1m=Decimal("3"),
                              output_usd_per_1m=Decimal("12"))
    result = runs_reprice_unpriced(models=["gpt-7-nova"])
    assert sum(d.newly_priced_runs for d in result.tenants) == 3
    for run in Run.objects.for_tenant(tenant):
        assert run.priced and run.cost_total_usd == Decimal("4.2")  # 1M x $3 + 100k x $12
    rollup = DailyRollup.objects.for_tenant(tenant).get()
    assert (rollup.unpriced_runs, rollup.cost_total_usd) == (0, Decimal("12.6"))
    assert ledger_check() == []


def _waiting_round_trip(run_id):
    """An Assistants run's reports through two tool rounds: in progress, waiting for tool outputs, resumed once
    they were submitted, waiting again; each wait (and the resume) sets a later expires_at, as OpenAI does."""
    def state(status, minutes):
        obj = builders.assistants_run(run_id=run_id, created_at=WHEN, status=status)
        obj["expires_at"] = int((WHEN + dt.timedelta(minutes=minutes)).timestamp())
        return obj

    return [state("in_progress", 10), state("requires_action", 11), state("in_progress", 13),
            state("requires_action", 18)]


def test_a_run_resumed_after_its_tool_outputs_is_in_progress_again(tenant):
    _, waiting, resumed, _ = _waiting_round_trip("run_resumed")
    ingest_events(events=[_event(waiting)])
    assert ingest_events(events=[_event(resumed)]).results[0].outcome == "updated"
    stored = Run.objects.for_tenant(tenant).get()
    assert (stored.status, stored.expires_at) == ("in_progress", WHEN + dt.timedelta(minutes=13))


def test_a_second_tool_round_keeps_its_own_deadline_in_any_arrival_order(tenant):
    from apps.lifecycle.services import runs_requires_action_watch

    reports = _waiting_round_trip("run_two_rounds")
    for order in (reports, list(reversed(reports)), [reports[3], reports[1], reports[0], reports[2]]):
        Run.objects.unscoped().delete()
        for report in order:
            ingest_events(events=[_event(report)])
        stored = Run.objects.for_tenant(tenant).get()
        assert (stored.status, stored.expires_at) == ("requires_action", WHEN + dt.timedelta(minutes=18))
    # Past the first round's deadline the run is still waiting in its second: no "expired" alert for it.
    runs_requires_action_watch(now=WHEN + dt.timedelta(minutes=12))
    assert not Alert.unscoped_objects.filter(cause_key="wasted_spend:run_two_rounds").exists()


def test_a_terminal_state_still_outranks_every_live_one(tenant):
    reports = _waiting_round_trip("run_done")
    done = builders.assistants_run(run_id="run_done", created_at=WHEN, status="completed")
    ingest_events(events=[_event(done)])
    assert all(ingest_events(events=[_event(r)]).results[0].outcome == "unchanged" for r in reports)
    assert Run.objects.for_tenant(tenant).get().status == "completed"


def test_a_newer_report_naming_no_project_leaves_the_run_where_another_report_put_it(tenant):
    running = builders.response(response_id="resp_project", created_at=WHEN, status="in_progress")
    done = builders.response(response_id="resp_project", created_at=WHEN, status="completed")
    # The collector confirms the run in proj_other; the app's own later report names no project.
    ingest_events(events=[_event(running, openai_project="proj_other")], projects_confirmed=True)
    assert ingest_events(events=[_event(done)]).results[0].outcome == "updated"
    assert Run.objects.for_tenant(tenant).get().openai_project == "proj_other"
    projects = DailyRollup.objects.for_tenant(tenant).filter(runs__gt=0).values_list("openai_project", flat=True)
    assert set(projects) == {"proj_other"}
    assert ledger_check() == []


def test_in_one_batch_a_named_project_beats_an_unnamed_newer_report(tenant):
    running = builders.response(response_id="resp_named", created_at=WHEN, status="in_progress")
    done = builders.response(response_id="resp_named", created_at=WHEN, status="completed")
    ingest_events(events=[_event(done), _event(running, openai_project="proj_other")])
    assert Run.objects.for_tenant(tenant).values_list("status", "openai_project").get() == ("completed", "proj_other")


def test_a_run_first_seen_without_a_project_is_in_the_default_one(tenant, settings):
    ingest_events(events=[_event(builders.response(response_id="resp_default", created_at=WHEN))])
    assert Run.objects.for_tenant(tenant).get().openai_project == settings.OPENAI_PROJECT_ID


def _steps(function_calls: int) -> list[dict]:
    """An Assistants run's steps (as the run-steps list returns them) in which no code ran."""
    steps = [{"object": "thread.run.step", "step_details": {"type": "message_creation",
                                                            "message_creation": {"message_id": "msg_1"}}}]
    if function_calls:
        steps.append({"object": "thread.run.step", "step_details": {"type": "tool_calls", "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": "lookup", "arguments": "{}", "output": "ok"}}
            for i in range(function_calls)]}})
    return steps


@pytest.mark.parametrize("function_calls", [0, 1])
def test_exact_tool_counts_from_steps_replace_the_guess_whichever_report_comes_first(tenant, function_calls):
    # Without steps a finished run with code_interpreter enabled is billed one session (the documented guess);
    # its steps show no code ran. The exact counts must stand in either order, with the costs that go with them.
    run = builders.assistants_run(run_id="run_steps", created_at=WHEN, code_interpreter=True)
    guessed, exact = _event(run), _event(run, steps=_steps(function_calls))
    for order in ([guessed, exact], [exact, guessed], [guessed, exact, guessed]):
        Run.objects.unscoped().delete()
        DailyRollup.objects.unscoped().delete()
        EndUserDailyRollup.objects.unscoped().delete()
        outcomes = [ingest_events(events=[event]).results[0].outcome for event in order]
        stored = Run.objects.for_tenant(tenant).get()
        assert (stored.code_interpreter_sessions, stored.function_calls, stored.cost_tools_usd) == (
            0, function_calls, Decimal("0")), order
        assert outcomes[1] == ("updated" if order[0] is guessed else "unchanged")
        assert DailyRollup.objects.for_tenant(tenant).get().cost_tools_usd == 0


def test_exact_tool_counts_in_the_same_batch_as_the_guess_win_too(tenant):
    run = builders.assistants_run(run_id="run_steps_batch", created_at=WHEN, code_interpreter=True)
    ingest_events(events=[_event(run, steps=_steps(0)), _event(run)])
    ingest_events(events=[_event(run), _event(run, steps=_steps(0))])
    assert Run.objects.for_tenant(tenant).values_list("code_interpreter_sessions", "cost_tools_usd").get() == (
        0, Decimal("0"))
    assert ledger_check() == []


def _attributed(status, metadata):
    return builders.response(response_id="resp_attributed", created_at=WHEN, status=status, metadata=metadata)


def test_attribution_sent_beside_the_object_outlives_a_newer_report_of_the_metadata(tenant):
    # The app's report names the user and feature; the collector's later, final one carries only the metadata.
    metadata = {"feature": "chat", "user_id": "anonymous"}
    ingest_events(events=[_event(_attributed("in_progress", metadata),
                                 attribution={"feature": "doc-qa", "user_id": "u_42"})])
    ingest_events(events=[_event(_attributed("completed", metadata))], projects_confirmed=True)
    stored = Run.objects.for_tenant(tenant).get()
    assert (stored.status, stored.feature, stored.user_id) == ("completed", "doc-qa", "u_42")
    assert set(EndUserDailyRollup.objects.for_tenant(tenant).filter(runs__gt=0).values_list("user_id", flat=True)) == {
        "u_42"}
    assert ledger_check() == []


def test_attribution_sent_after_the_metadata_report_still_overrides_it(tenant):
    metadata = {"feature": "chat", "user_id": "anonymous"}
    ingest_events(events=[_event(_attributed("completed", metadata))])
    result = ingest_events(events=[_event(_attributed("in_progress", metadata), attribution={"feature": "doc-qa"})])
    assert result.results[0].outcome == "updated"
    assert Run.objects.for_tenant(tenant).values_list("feature", "user_id").get() == ("doc-qa", "anonymous")
    assert ledger_check() == []


def test_a_newer_report_of_changed_metadata_still_moves_the_attribution_metadata_gave(tenant):
    ingest_events(events=[_event(_attributed("in_progress", {"feature": "chat"}))])
    ingest_events(events=[_event(_attributed("completed", {"feature": "search"}))])
    assert Run.objects.for_tenant(tenant).values_list("feature", flat=True).get() == "search"


def _rate_then(change, monkeypatch):
    """Make the next batch run `change` after it has rated its runs and before it takes the ingest lock."""
    from apps.ledger import services

    real = services._rate_reported

    def rate_then_change(run_events):
        rated = real(run_events)
        change()
        return rated

    monkeypatch.setattr(services, "_rate_reported", rate_then_change)


def test_a_batch_rated_before_a_price_was_added_is_rated_again_with_it(tenant, monkeypatch):
    # Adding the price re-rated the runs stored unpriced at that moment; this batch's were not stored yet.
    from apps.pricing.services import model_price_add

    _rate_then(lambda: model_price_add(model="gpt-7-nova", effective_from=dt.date(2026, 11, 1),
                                       input_usd_per_1m=Decimal("3"), output_usd_per_1m=Decimal("12")), monkeypatch)
    ingest_events(events=[_event(builders.response(response_id="resp_race", created_at=WHEN, model="gpt-7-nova",
                                                   input_tokens=1_000_000, output_tokens=100_000))])
    stored = Run.objects.for_tenant(tenant).get()
    assert (stored.priced, stored.cost_total_usd) == (True, Decimal("4.2"))  # 1M x $3 + 100k x $12
    assert stored.model_price_id == ModelPrice.objects.get(model="gpt-7-nova").pk
    rollup = DailyRollup.objects.for_tenant(tenant).get()
    assert (rollup.unpriced_runs, rollup.cost_total_usd) == (0, Decimal("4.2"))
    assert ledger_check() == []


def test_a_batch_rated_with_a_price_removed_before_it_writes_does_not_keep_that_price(tenant, monkeypatch):
    correction = ModelPrice.objects.create(model="gpt-5.4", effective_from=dt.date(2026, 11, 5),
                                           input_usd_per_1m=Decimal("99"), output_usd_per_1m=Decimal("99"))
    _rate_then(lambda: ModelPrice.objects.filter(pk=correction.pk).delete(), monkeypatch)
    ingest_events(events=[_event(builders.response(response_id="resp_withdrawn", created_at=WHEN, model="gpt-5.4",
                                                   input_tokens=1_000_000, output_tokens=0))])
    stored = Run.objects.for_tenant(tenant).get()
    shipped = ModelPrice.objects.get(model="gpt-5.4")
    assert (stored.model_price_id, stored.cost_total_usd) == (shipped.pk, Decimal("2.5"))
    assert ledger_check() == []


def test_high_cost_flag_uses_the_tenants_threshold(tenant):
    tenant.high_cost_run_usd = Decimal("0.05")
    tenant.save()
    cheap = builders.assistants_run(run_id="run_cheap", created_at=WHEN, prompt_tokens=1000, completion_tokens=10)
    dear = builders.assistants_run(run_id="run_dear", created_at=WHEN, prompt_tokens=20000, completion_tokens=500)
    ingest_events(events=[_event(cheap), _event(dear)])
    flags = dict(Run.objects.for_tenant(tenant).values_list("openai_id", "is_high_cost"))
    assert flags == {"run_cheap": False, "run_dear": True}
    assert DailyRollup.objects.for_tenant(tenant).get().high_cost_runs == 1


def test_ledger_check_finds_tampering_and_fix_repairs(tenant, capsys):
    from django.core.management import call_command

    ingest_events(events=[_event(obj) for obj in _lifecycle("run_chk")])
    DailyRollup.objects.for_tenant(tenant).update(cost_total_usd=Decimal("99"))
    Thread.objects.for_tenant(tenant).update(run_count=7)
    with pytest.raises(SystemExit) as exit_info:
        call_command("ledger_check")
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert "cost_total_usd stored 99" in out and "run_count stored 7" in out
    call_command("ledger_check", "--fix")
    call_command("ledger_check")
    assert "match the runs" in capsys.readouterr().out


def test_events_for_two_tenants_in_one_batch_stay_separate(tenant, other_tenant):
    ingest_events(events=[
        _event(builders.assistants_run(created_at=WHEN, thread_id="thread_acme")),
        _event(builders.assistants_run(created_at=WHEN, thread_id="thread_globex", prompt_tokens=40000), tenant="globex"),
    ])
    assert _totals(tenant)[:3] == (1, Decimal("0.004"), 1000)
    assert _totals(other_tenant)[:3] == (1, Decimal("0.1015"), 40000)


def test_import_runs_is_safe_to_rerun(tenant, tmp_path, capsys):
    import json

    from django.core.management import call_command

    lines = [json.dumps(builders.assistants_run(run_id=f"run_imp_{i}", created_at=WHEN)) for i in range(5)]
    lines.append(json.dumps({"tenant": "acme", "object": builders.response(response_id="resp_imp", created_at=WHEN)}))
    lines.append("{broken")
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")
    # A rejected line makes the command fail (exit status 1) once it has stored the rest: a cron job or a CI
    # step must notice lines it lost.
    with pytest.raises(CommandError, match=r"1 line\(s\) rejected \(named above\): fix them"):
        call_command("import_runs", str(path), "--tenant", "acme")
    assert "6 created, 0 updated, 0 unchanged, 1 rejected" in capsys.readouterr().out
    with pytest.raises(CommandError, match="rejected"):
        call_command("import_runs", str(path), "--tenant", "acme")
    assert "0 created, 0 updated, 6 unchanged, 1 rejected" in capsys.readouterr().out
    assert Run.objects.for_tenant(tenant).count() == 6
    path.write_text("\n".join(lines[:-1]) + "\n")  # the broken line fixed (here: left out)
    call_command("import_runs", str(path), "--tenant", "acme")
    assert "0 created, 0 updated, 6 unchanged, 0 rejected" in capsys.readouterr().out


def test_import_runs_rejects_a_line_nested_too_deeply_to_read_and_imports_the_rest(tenant, tmp_path, capsys):
    import json

    from django.core.management import call_command

    # 100,000 levels: orjson refuses past 1,024 and json's fallback recursed into a RecursionError that ended the
    # import on that line, the valid line before it (same batch) unstored, at every re-run.
    lines = [json.dumps(builders.response(response_id="resp_before_deep", created_at=WHEN)),
             "[" * 100_000 + "]" * 100_000,
             json.dumps(builders.response(response_id="resp_after_deep", created_at=WHEN))]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")

    with pytest.raises(CommandError, match="1 line"):
        call_command("import_runs", str(path), "--tenant", "acme")

    captured = capsys.readouterr()
    assert "2 created, 0 updated, 0 unchanged, 1 rejected." in captured.out
    assert "line 2: not JSON (nested too deeply)" in captured.err
    assert set(Run.objects.for_tenant(tenant).values_list("openai_id", flat=True)) == {
        "resp_before_deep", "resp_after_deep"}


def _raise_reading(monkeypatch, openai_id: str, error: BaseException) -> None:
    """import_runs raises `error` when it reads the line of `openai_id`, and reads every other line as before."""
    from apps.ledger.management.commands import import_runs

    event_from = import_runs._event_from

    def reading(item, default_slug):
        if item["id"] == openai_id:
            raise error
        return event_from(item, default_slug)

    monkeypatch.setattr(import_runs, "_event_from", reading)


def test_import_runs_that_crashes_stores_the_lines_it_read_and_says_how_far_it_got(tenant, tmp_path, capsys,
                                                                                   monkeypatch):
    import json

    from django.core.management import call_command


    lines = [json.dumps(builders.response(response_id=f"resp_crash_{i}", created_at=WHEN)) for i in range(4)]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")
    _raise_reading(monkeypatch, "resp_crash_2", RuntimeError("unexpected"))  # the third line

    with pytest.raises(RuntimeError, match="unexpected"):
        call_command("import_runs", str(path), "--tenant", "acme")  # one batch of 1,000: nothing written yet

    assert "Import stopped after reading line 3: 2 created, 0 updated, 0 unchanged, 0 rejected." in (
        capsys.readouterr().out)
    assert set(Run.objects.for_tenant(tenant).values_list("openai_id", flat=True)) == {"resp_crash_0", "resp_crash_1"}


def test_import_runs_stopped_with_ctrl_c_says_how_far_it_got(tenant, tmp_path, capsys, monkeypatch):
    """Ctrl-C used to end in a bare KeyboardInterrupt traceback: the operator learnt nothing of what was stored.
    It now gets the same summary as any other stop (the batch being read is not written: the user asked to
    stop), and the interrupt still ends the command."""
    import json

    from django.core.management import call_command


    lines = [json.dumps(builders.response(response_id=f"resp_int_{i}", created_at=WHEN)) for i in range(5)]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")
    _raise_reading(monkeypatch, "resp_int_3", KeyboardInterrupt())  # the fourth line

    with pytest.raises(KeyboardInterrupt):
        call_command("import_runs", str(path), "--tenant", "acme", "--batch-size", "2")

    assert "Import stopped after reading line 4: 2 created, 0 updated, 0 unchanged, 0 rejected." in (
        capsys.readouterr().out)
    assert set(Run.objects.for_tenant(tenant).values_list("openai_id", flat=True)) == {"resp_int_0", "resp_int_1"}

def test_import_runs_progress_bar_redraws_in_place_on_a_terminal(tenant, tmp_path):
    """On a terminal the bar went through Django's stderr wrapper, which ends every write with a newline: each
    redraw became a new line (thousands over a long import), and rejected lines were printed into the bar's.
    Now the bar redraws in place and a rejected line gets a line of its own above it."""
    import io
    import json

    from django.core.management import call_command

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    lines = [json.dumps(builders.response(response_id=f"resp_bar_{i}", created_at=WHEN)) for i in range(6)]
    lines.insert(3, "{broken")
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")
    terminal = Terminal()

    with pytest.raises(CommandError, match="1 line"):
        call_command("import_runs", str(path), "--tenant", "acme", "--batch-size", "1", stderr=terminal,
                     stdout=io.StringIO())

    output = terminal.getvalue()
    assert "100%" in output
    # What each line of the terminal ends up showing: the text after its last carriage return.
    shown = [line.rsplit("\r", 1)[-1] for line in output.split("\n") if line.strip()]
    assert len(shown) == 2, output
    assert shown[0].startswith("line 4: not JSON") and shown[1].startswith("100%"), output


def test_rollup_upserts_batch_many_keys(tenant):
    # Many runs across days, models and features in one batch: each rollup key written once.
    events = []
    for day, model, feature in itertools.product(range(3), ["gpt-5.4", "gpt-5-mini"], ["a", "b"]):
        events.append(_event(builders.assistants_run(created_at=WHEN + dt.timedelta(days=day), model=model),
                             attribution={"feature": feature}))
    ingest_events(events=events)
    assert DailyRollup.objects.for_tenant(tenant).count() == 12
    assert ledger_check() == []


@pytest.mark.parametrize(("event_object", "field"), [
    (builders.response(response_id="resp_a/b", created_at=WHEN), "object.id"),
    (builders.response(response_id="resp_a\nb", created_at=WHEN), "object.id"),
    (builders.response(conversation_id="conv_a/b", created_at=WHEN),
     "object.conversation.id"),
    (builders.assistants_run(thread_id="thread_a\x7fb", created_at=WHEN),
     "object.thread_id"),
    (builders.vector_store(vector_store_id="vs_a/b", created_at=WHEN), "object.id"),
])
def test_an_id_with_a_slash_or_a_control_character_is_rejected_and_the_events_beside_it_are_stored(
        tenant, event_object, field):
    """Ids go into page URLs and export file names; OpenAI's never hold "/" or control characters."""
    good = builders.response(response_id="resp_good", created_at=WHEN)
    result = ingest_events(events=[{"tenant": tenant.slug, "object": event_object},
                                   {"tenant": tenant.slug, "object": good}]).as_dict()
    assert result["results"][0]["outcome"] == "rejected" and result["results"][0]["error"]["field"] == field
    assert result["results"][1]["outcome"] == "created"
    assert list(Run.objects.unscoped().values_list("openai_id", flat=True)) == ["resp_good"]


def _priced_at_a_thousand_dollars_per_million_output_tokens() -> str:
    ModelPrice.objects.create(model="gpt-huge", effective_from=dt.date(2026, 1, 1), input_usd_per_1m=Decimal("1"),
                              cached_input_usd_per_1m=Decimal("1"), output_usd_per_1m=Decimal("1000"))
    return "gpt-huge"


def _huge(run_id: str, output_tokens: int) -> dict:
    # 10**12 output tokens (the most ingest takes) at $1,000 per million: a billion USD.
    return _event(builders.response(response_id=run_id, created_at=WHEN, model="gpt-huge", input_tokens=1,
                                    output_tokens=output_tokens), attribution={"user_id": "u_big"})


def test_a_run_whose_cost_overflows_a_total_is_refused_and_the_records_beside_it_are_stored(tenant, other_tenant):
    _priced_at_a_thousand_dollars_per_million_output_tokens()
    batch = [_event(builders.response(response_id="resp_before", created_at=WHEN)),
             _huge("resp_huge", 10**12),  # past the ~922 million USD an end user's rollup holds for a month
             _event(builders.response(response_id="resp_after", created_at=WHEN), tenant="globex")]

    result = ingest_events(events=batch)

    assert [r.outcome for r in result.results] == ["created", "rejected", "created"]
    assert result.results[1].id == "resp_huge"
    assert result.results[1].error["field"] == "object.usage"
    assert "past what the ledger can hold" in result.results[1].error["message"]
    assert sorted(Run.objects.unscoped().values_list("openai_id", flat=True)) == ["resp_after", "resp_before"]
    assert ledger_check() == []


@pytest.mark.postgres  # SQLite turns an integer sum past 64 bits into a float without a word (docs/ledger.md)
def test_the_run_that_would_take_an_end_users_month_past_the_limit_is_the_one_refused(tenant):
    _priced_at_a_thousand_dollars_per_million_output_tokens()
    # Half a billion USD each: the first fits, the second would take u_big's November past ~922 million.
    result = ingest_events(events=[_huge("resp_half_1", 5 * 10**11), _huge("resp_half_2", 5 * 10**11)])

    assert [r.outcome for r in result.results] == ["created", "rejected"]
    assert Run.objects.for_tenant(tenant).get().cost_total_usd == Decimal("500000000.000001")
    assert ledger_check() == []


def test_import_runs_gives_its_tenant_to_event_lines_that_send_tenant_null_or_empty(tenant, other_tenant, tmp_path,
                                                                                      capsys):
    import json

    from django.core.management import call_command

    # A null or empty `tenant` names none (the API then reads metadata's, then the key's): --tenant must apply,
    # as it does to a line without the field. A line whose metadata names a tenant keeps it.
    lines = [json.dumps({"tenant": None, "object": builders.assistants_run(run_id="run_null_tenant", created_at=WHEN)}),
             json.dumps({"tenant": "", "object": builders.response(response_id="resp_empty_tenant", created_at=WHEN)}),
             json.dumps({"tenant": None, "object": builders.response(response_id="resp_theirs", created_at=WHEN,
                                                                     metadata={"tenant": "globex"})})]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")

    call_command("import_runs", str(path), "--tenant", "acme")

    assert "3 created, 0 updated, 0 unchanged, 0 rejected." in capsys.readouterr().out
    assert set(Run.objects.for_tenant(tenant).values_list("openai_id", flat=True)) == {
        "run_null_tenant", "resp_empty_tenant"}
    assert list(Run.objects.for_tenant(other_tenant).values_list("openai_id", flat=True)) == ["resp_theirs"]
