"""Ledger rows for dashboard tests: a run plus the rollup deltas the ingest path would add for it."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

from apps.ledger.models import STATUS_RANK, Run, Thread
from apps.ledger.services import RUN_FIELDS, _Deltas

_ids = itertools.count(1)


def thread_row(tenant, *, openai_id=None, last_activity_at: dt.datetime, created_at=None, cost="0", run_count=0,
               status=Thread.Status.ACTIVE) -> Thread:
    return Thread.objects.create(
        tenant=tenant, openai_id=openai_id or f"thread_{next(_ids):05d}", kind="thread",
        created_at=created_at or last_activity_at, last_activity_at=last_activity_at, run_count=run_count,
        cost_usd=Decimal(cost), status=status,
    )


def run_row(tenant, *, created_at: dt.datetime, cost: str, model="gpt-5.4", feature="chat", status="completed",
            input_tokens=1000, output_tokens=100, cached_input_tokens=0, reasoning_tokens=0, user_id="user-1",
            thread=None, openai_id=None, high_cost=None, **extra) -> Run:
    from apps.pricing.models import ModelPrice

    cost_total = Decimal(cost)
    model_price = ModelPrice.objects.filter(model=model, effective_from__lte=created_at.date()).order_by("-effective_from").first()
    is_high_cost = cost_total > tenant.high_cost_run_usd if high_cost is None else high_cost
    run = Run.objects.create(
        tenant=tenant, openai_id=openai_id or f"resp_{next(_ids):06d}", api="responses", model=model, status=status,
        status_rank=STATUS_RANK[status], created_at=created_at, input_tokens=input_tokens,
        cached_input_tokens=cached_input_tokens, output_tokens=output_tokens, reasoning_tokens=reasoning_tokens,
        user_id=user_id, feature=feature, cost_total_usd=cost_total, cost_input_usd=cost_total, priced=model_price is not None,
        model_price=model_price, is_high_cost=is_high_cost, thread=thread, thread_openai_id=thread.openai_id if thread else "", **extra,
    )
    # Every rollup (daily, end-user, prompt-size) gets the run's contribution exactly as ingest adds it;
    # thread totals are left to the caller, as before.
    state = Run.objects.unscoped().filter(pk=run.pk).values(*RUN_FIELDS).get()
    state["thread_id"] = None
    deltas = _Deltas()
    deltas.apply(None, state)
    deltas.write()
    return run


def demo_ledger(tenants, *, now: dt.datetime, runs_per_tenant: int = 60, seed: int = 7) -> dict:
    """A few weeks of varied runs (models, features, users, statuses, a long tail of prompt sizes) and threads
    for each tenant, deterministic for a given seed. Returns {tenant slug: [runs]}."""
    import random

    rng = random.Random(seed)
    models = ["gpt-5.4", "gpt-5-mini", "gpt-5.5"]
    features = ["chat", "search", "summarize", ""]
    statuses = ["completed"] * 12 + ["failed", "cancelled", "incomplete", "expired"]
    created = {}
    for tenant_index, tenant in enumerate(tenants):
        threads = [
            thread_row(tenant, last_activity_at=now - dt.timedelta(days=rng.choice([1, 5, 20, 55, 58, 70])),
                       cost=f"{rng.randint(1, 900) / 100:.2f}", run_count=rng.randint(1, 30))
            for _ in range(4)
        ]
        runs = []
        for index in range(runs_per_tenant):
            prompt = int(rng.lognormvariate(7.5, 1.3)) + 50
            output = rng.randint(50, 2000)
            cost = Decimal(prompt * 25 + output * 150) / Decimal(10_000_000) * (tenant_index + 1)
            runs.append(run_row(
                tenant,
                created_at=now - dt.timedelta(days=rng.randint(0, 45), hours=rng.randint(0, 23)),
                cost=str(cost.quantize(Decimal("0.000001"))),
                model=rng.choice(models), feature=rng.choice(features), status=rng.choice(statuses),
                input_tokens=prompt, output_tokens=output, user_id=f"user-{rng.randint(1, 8)}",
                thread=rng.choice(threads), openai_id=f"resp_{tenant.slug}_{index:04d}",
                metadata={"tenant": tenant.slug, "feature": "chat"},
            ))
        created[tenant.slug] = runs
    return created


def demo_ledger_ingested(tenants, *, now: dt.datetime, runs_per_tenant: int = 60, seed: int = 7) -> dict:
    """The same kind of varied ledger, sent through the real ingest path (raw OpenAI responses built by
    tests/builders.py, rated with the seeded price book, rolled up by ledger.services). Returns
    {tenant slug: [openai ids]}."""
    import random

    from apps.ledger.services import ingest_events
    from tests import builders

    rng = random.Random(seed)
    models = ["gpt-5.4", "gpt-5-mini", "gpt-5.5"]
    features = ["chat", "search", "summarize", ""]
    statuses = ["completed"] * 12 + ["failed", "cancelled", "incomplete"]
    ids: dict[str, list[str]] = {}
    for tenant in tenants:
        conversations = [f"conv_{tenant.slug}_{index}" for index in range(4)]
        events = []
        for index in range(runs_per_tenant):
            prompt = int(rng.lognormvariate(7.5, 1.4)) + 50
            metadata = {"tenant": tenant.slug, "user_id": f"user-{rng.randint(1, 8)}"}
            feature = rng.choice(features)
            if feature:
                metadata["feature"] = feature
            events.append({"tenant": tenant.slug, "object": builders.response(
                response_id=f"resp_{tenant.slug}_{index:04d}",
                created_at=now - dt.timedelta(days=rng.randint(0, 45), hours=rng.randint(0, 23)),
                model=rng.choice(models), status=rng.choice(statuses), input_tokens=prompt,
                cached_tokens=prompt // 4, output_tokens=rng.randint(50, 3000), reasoning_tokens=rng.randint(0, 40),
                conversation_id=rng.choice(conversations), metadata=metadata,
                file_search_calls=rng.choice([0, 0, 1]),
            )})
        result = ingest_events(events=events)
        rejected = [r for r in result.results if r.outcome == "rejected"]
        assert not rejected, rejected[:3]
        ids[tenant.slug] = [event["object"]["id"] for event in events]
    return ids
