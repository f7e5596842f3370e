"""The scenario generator: deterministic per seed, realistic shape, models only once they are priced,
and the standalone command that serves it."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from apps.sandbox.clock import SandboxClock
from apps.sandbox.pricing import load_price_book
from apps.sandbox.server import Sandbox

FROZEN = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC).timestamp()
SUNSET = dt.datetime(2026, 8, 26, tzinfo=dt.UTC).timestamp()
ROOT = Path(__file__).resolve().parents[2]


def _export(seed: int, tenants: int = 3, days: int = 20) -> dict:
    sandbox = Sandbox(clock=SandboxClock(frozen_at=FROZEN))
    sandbox.load_scenario(tenants=tenants, days=days, seed=seed)
    return sandbox.export()


def test_same_seed_gives_the_same_world_and_another_seed_does_not():
    first, again, other = _export(4), _export(4), _export(5)
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    assert json.dumps(first, sort_keys=True) != json.dumps(other, sort_keys=True)


def test_demo_scale_shape():
    sandbox = Sandbox(clock=SandboxClock(frozen_at=FROZEN))
    started = time.monotonic()
    summary = sandbox.load_demo(seed=1)
    assert time.monotonic() - started < 15
    assert summary["days"] == 120 and summary["tenants"] == 8
    assert 10_000 <= summary["runs"] + summary["responses"] <= 25_000
    assert summary["runs"] > 500  # four months reach back before the Assistants sunset
    export = sandbox.export()
    assert len(export["tenants"]) == 8 and all(row["monthly_budget_usd"] for row in export["tenants"])
    book = load_price_book()
    objects = [row["object"] for row in export["runs"]] + [row["object"] for row in export["responses"]]
    for obj in objects:
        day = dt.datetime.fromtimestamp(obj["created_at"], tz=dt.UTC).date()
        assert book.model_price(obj["model"], day) is not None, obj["model"]
    run_models = {row["object"]["model"] for row in export["runs"]}
    response_models = {row["object"]["model"] for row in export["responses"]}
    assert all(model.startswith(("gpt-4", "gpt-5")) for model in run_models)
    assert any(model.startswith("gpt-6") for model in response_models)
    statuses = Counter(row["object"]["status"] for row in export["runs"])
    assert {"completed", "failed", "cancelled", "expired", "incomplete"} <= set(statuses)
    assert statuses["completed"] / sum(statuses.values()) > 0.85
    prompts = sorted(row["object"]["usage"]["prompt_tokens"] for row in export["runs"] if row["object"]["usage"])
    median, p99 = prompts[len(prompts) // 2], prompts[int(len(prompts) * 0.99)]
    assert 1000 < median < 5000 and p99 > 8 * median  # long tail
    metadata = [row["object"]["metadata"] for row in export["runs"] + export["responses"]]
    # The scenario's own traffic is all attributed; spend with no tenant is injected as billing drift.
    assert all(set(item) == {"tenant", "user_id", "session_id", "feature"} for item in metadata)
    assert summary["unattributed"] == 0
    assert len(summary["drift"]) == 2 and all(rule["unattributed"] for rule in summary["drift"])
    assert [rule.to_dict() for rule in sandbox.faults.drift_rules()] == summary["drift"]
    assert any(row["tenant"] is None for row in export["files"])  # orphaned files
    sizes = [row["object"]["usage_bytes"] for row in export["vector_stores"]]
    assert min(sizes) < 2 ** 20 and max(sizes) >= 2 * 2 ** 30
    assert any(row["deleted_at"] for row in export["vector_stores"])
    ages = [(FROZEN - row["object"]["created_at"]) / 86400 for row in export["conversations"]]
    assert min(ages) < 2 and max(ages) > 100
    assert max(row["object"]["created_at"] for row in export["runs"]) < SUNSET
    assert max(row["object"]["created_at"] for row in export["threads"]) < SUNSET
    assert any(row["object"]["status"] == "expired" for row in export["containers"])
    responses = [row["object"] for row in export["responses"] if row["object"]["usage"]]
    assert any(item["usage"]["input_tokens_details"]["cached_tokens"] for item in responses)
    assert any(item["usage"]["output_tokens_details"]["reasoning_tokens"] for item in responses)


def test_sandbox_openai_command_serves_until_interrupted():
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings.local", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "sandbox_openai", "--port", "0", "--tenants", "2", "--days", "2", "--seed", "3",
         "--fault", "latency:latency_ms=1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline and url is None:
            line = process.stdout.readline()
            lines.append(line)
            if "listening on" in line:
                url = line.strip().split("listening on ")[1]
        assert url, "".join(lines)
        base = url.removesuffix("/v1")
        with urllib.request.urlopen(f"{base}/_sandbox/health", timeout=5) as answer:
            assert json.loads(answer.read())["status"] == "ok"
        request = urllib.request.Request(f"{url}/files", headers={"Authorization": "Bearer sk-sandbox"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert json.loads(answer.read())["object"] == "list"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_assistants_traffic_fades_out_before_the_sunset_and_stops_on_it():
    from apps.sandbox.scenario import ASSISTANTS_SUNSET, assistants_share

    before = [assistants_share(ASSISTANTS_SUNSET - dt.timedelta(days=days)) for days in (60, 30, 15, 1)]
    assert before[0] == before[1] > before[2] > before[3] > 0
    assert assistants_share(ASSISTANTS_SUNSET) == 0
    assert assistants_share(ASSISTANTS_SUNSET + dt.timedelta(days=40)) == 0


def test_a_scenario_entirely_after_the_sunset_has_no_assistants_runs():
    export = _export(6, tenants=2, days=20)
    assert export["runs"] == [] and export["responses"]


def test_budgets_are_sized_from_a_month_of_tokens_and_vector_storage():
    # Storage is often most of a tenant's bill; sized from tokens alone, storage-heavy tenants started the demo
    # at several times their budget.
    from decimal import Decimal

    sandbox = Sandbox(clock=SandboxClock(frozen_at=FROZEN))
    sandbox.load_demo(seed=1)  # the demo `make run` seeds: storage is most of several tenants' bills
    gib = {}
    for store in sandbox.state.vector_stores.values():
        slug = (store.get("metadata") or {}).get("tenant")
        if slug and store["status"] != "expired":
            gib[slug] = gib.get(slug, 0) + Decimal(store["usage_bytes"]) / 1024**3
    billable = sum(gib.values()) - 1  # the organization's free GB, once
    assert billable > 0
    for row in sandbox.export()["tenants"]:
        # A month of its share of the storage bill at $0.10 a GiB-day, times a budget factor of at least 0.7.
        storage_month = billable * gib.get(row["slug"], 0) / sum(gib.values()) * Decimal("0.10") * 30
        assert Decimal(row["monthly_budget_usd"]) >= (storage_month * Decimal("0.7")).quantize(Decimal("1")) - 1, row


def test_the_demo_generated_again_on_a_later_day_with_its_end_is_the_same_world():
    # `make run` on a later day: generated for the new now, the window's objects took the old ids and the
    # ledger held both scenarios. With the first seeding's end, every object and drift rule is the same.
    first = Sandbox(clock=SandboxClock(frozen_at=FROZEN))
    summary = first.load_demo(seed=1)
    later = Sandbox(clock=SandboxClock(frozen_at=FROZEN + 3 * 86400))
    again = later.load_demo(seed=1, end=summary["ends_at"])
    moved = Sandbox(clock=SandboxClock(frozen_at=FROZEN + 3 * 86400)).load_demo(seed=1)

    def world(sandbox):
        export = sandbox.export()
        return {kind: sorted((row["tenant"], row["object"]["id"], row["object"]["created_at"]) for row in export[kind])
                for kind in ("runs", "responses", "threads", "conversations", "vector_stores")}

    assert summary["ends_at"] == FROZEN and again["ends_at"] == FROZEN
    assert world(later) == world(first)
    assert again["drift"] == summary["drift"]
    assert moved["last_day"] != summary["last_day"]  # without it, a new window (and new ids for its objects)
