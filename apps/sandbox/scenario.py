"""Scenario generator: N tenants over D days ending at the clock's now, with a realistic shape, written
straight into the sandbox state (every object terminal and billed), and the export the demo seeder reads.

Shape (all deterministic per seed):
- tenants of very different sizes (lognormal weights), each with 2-4 features and 5-150 end users;
  about 40 runs per tenant-day on average, fewer at weekends, growing slowly over the period;
- Assistants runs on older models (gpt-4.x / gpt-5.x) only before the Assistants API's sunset
  (2026-08-26): their share falls from ~60 % a month before it to none on the day, as tenants
  migrate to Responses on current models (gpt-6.x where the price book has them on that day);
- prompt tokens lognormal (median ~2,500) with a long tail up to 250k, output lognormal (median ~350),
  cached tokens on follow-up turns, reasoning tokens on reasoning models, cache writes where priced;
- tools: code interpreter, file search, function calls, web search; some failed, cancelled, expired
  and incomplete runs; every run and response carries its tenant's metadata unless `unattributed_share`
  says otherwise (spend with no tenant is what billing drift injects, see faults.DriftRule);
- threads / conversations of many ages, vector stores from kilobytes to 2-20 GB (some expiring, some
  already deleted), orphaned files with no tenant, and containers left idle."""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import asdict, dataclass
from decimal import Decimal

from . import objects
from .pricing import long_prompt, token_line_costs, vector_storage_shares
from .state import BillingEvent, SandboxState

TENANT_NAMES = [
    ("acme", "Acme Corp"), ("globex", "Globex Inc"), ("initech", "Initech"), ("umbrella", "Umbrella Health"),
    ("hooli", "Hooli"), ("stark", "Stark Industries"), ("wayne", "Wayne Enterprises"), ("wonka", "Wonka Foods"),
    ("tyrell", "Tyrell Systems"), ("cyberdyne", "Cyberdyne Labs"), ("soylent", "Soylent Co"), ("massive", "Massive Dynamic"),
]
FEATURES = ["support-bot", "doc-search", "code-review", "analytics", "onboarding", "summaries", "sales-assist",
            "translation"]
ASSISTANTS_MODELS = [("gpt-5.4", 30), ("gpt-5-mini", 25), ("gpt-5.5", 8), ("gpt-4o", 12), ("gpt-4.1", 10),
                     ("gpt-4o-mini", 10), ("gpt-5", 5)]
RESPONSES_MODELS = [("gpt-6.1-sol", 30), ("gpt-6.2-sol", 20), ("gpt-6-luna", 15), ("gpt-6.1-terra", 15),
                    ("gpt-6-astra", 8), ("gpt-6.2-astra", 6), ("gpt-5.4", 4), ("gpt-5-mini", 2)]
DAY = 86400
GB = 2 ** 30
# OpenAI shut the Assistants API down on this day: generated Assistants traffic stops the day before.
ASSISTANTS_SUNSET = dt.date(2026, 8, 26)
ASSISTANTS_MIGRATION_DAYS = 30
ASSISTANTS_PEAK_SHARE = 0.6

# The demo (`sandbox_openai --scenario demo`, `make run`): four months, so the Assistants history from before the
# sunset shows, at a volume that seeds in well under the time `make run` allows.
DEMO_TENANTS = 8
DEMO_DAYS = 120
DEMO_RUNS_PER_TENANT_DAY = 20.0


@dataclass
class ScenarioConfig:
    tenants: int = 8
    days: int = 60
    seed: int = 0
    name: str = "custom"
    runs_per_tenant_day: float = 40.0
    project_id: str = "proj_default"
    # Share of new sessions whose runs carry no tenant metadata (an application that forgot to tag them).
    # 0 by default: a scenario's own traffic is all attributed, so it reconciles with zero drift; spend with
    # no tenant comes from billing drift (FaultInjector.add_drift(unattributed=True)), an exact amount.
    unattributed_share: float = 0.0
    # The moment (Unix seconds) the scenario's traffic ends; None: the clock's now. The same seed and end give
    # the same objects and ids whenever it is generated: `make run` on a later day passes the first seeding's
    # end, or the new window's objects would take the old ids and the ledger would hold both (demo.py).
    end: float | None = None

    @property
    def runs_per_day(self) -> float:
        return self.runs_per_tenant_day * self.tenants

    @runs_per_day.setter
    def runs_per_day(self, value: float) -> None:
        self.runs_per_tenant_day = value / max(1, self.tenants)


def assistants_share(day: dt.date) -> float:
    """Share of a day's traffic still on the Assistants API: tenants migrate to Responses over the month
    before the sunset, and nothing runs on Assistants from the sunset on."""
    days_left = (ASSISTANTS_SUNSET - day).days
    if days_left <= 0:
        return 0.0
    return ASSISTANTS_PEAK_SHARE * min(1.0, days_left / ASSISTANTS_MIGRATION_DAYS)


def _weighted(rng: random.Random, choices: list[tuple[str, float]]) -> str:
    total = sum(weight for _, weight in choices)
    pick = rng.uniform(0, total)
    for value, weight in choices:
        pick -= weight
        if pick <= 0:
            return value
    return choices[-1][0]


def _poisson(rng: random.Random, mean: float) -> int:
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count


class _Generator:
    def __init__(self, state: SandboxState, config: ScenarioConfig):
        self.state = state
        self.config = config
        self.rng = random.Random(f"scenario-{config.seed}")
        self.now = state.now()
        self.today = dt.datetime.fromtimestamp(self.now, tz=dt.UTC).date()
        self.first_day = self.today - dt.timedelta(days=config.days - 1)
        self.project = config.project_id
        self.key_id = "key_scenario"
        self.counts = dict.fromkeys(["runs", "responses", "threads", "conversations", "vector_stores", "files",
                                     "containers", "orphaned_files", "unattributed"], 0)
        self.cost = {}

    # -- tenants -----------------------------------------------------------------------------
    def tenants(self) -> list[dict]:
        tenants = []
        for index in range(self.config.tenants):
            slug, name = TENANT_NAMES[index] if index < len(TENANT_NAMES) else (f"tenant-{index + 1}", f"Tenant {index + 1}")
            features = self.rng.sample(FEATURES, self.rng.randint(2, 4))
            tenants.append({
                "slug": slug, "name": name, "features": features,
                "weight": self.rng.lognormvariate(0, 0.8), "users": self.rng.randint(5, 150),
                "budget_factor": self.rng.choice([0.7, 0.9, 1.2, 1.5, 2.0]),
            })
        mean_weight = sum(tenant["weight"] for tenant in tenants) / len(tenants)
        for tenant in tenants:
            tenant["weight"] /= mean_weight
        return tenants

    # -- storage -----------------------------------------------------------------------------
    def vector_stores(self, tenant: dict) -> list[str]:
        state, rng = self.state, self.rng
        live = []
        for _ in range(rng.randint(2, 10)):
            created = self.now - rng.uniform(1, 200) * DAY
            size = int(rng.lognormvariate(math.log(40 * 2 ** 20), 2.0))
            if rng.random() < 0.15:
                size = int(rng.uniform(2, 20) * GB)
            size = max(2048, min(size, 25 * GB))
            store_id = state.new_id("vs_")
            files = []
            remaining = size
            file_count = rng.randint(1, 30)
            for index in range(file_count):
                part = remaining if index == file_count - 1 else int(remaining * rng.uniform(0.05, 0.5))
                remaining -= part
                file_id = state.new_id("file-", 22)
                state.add_file(objects.file(file_id=file_id, created_at=int(created), size_bytes=max(1, part // 3),
                                            filename=f"{tenant['slug']}-doc-{index + 1}.pdf"),
                               project_id=self.project, owner=tenant["slug"])
                self.counts["files"] += 1
                files.append(objects.vector_store_file(file_id=file_id, vector_store_id=store_id,
                                                       created_at=int(created), usage_bytes=part))
            last_active = created + rng.uniform(0, self.now - created)
            expires_after = {"anchor": "last_active_at", "days": rng.choice([7, 14, 30, 60])} if rng.random() < 0.3 else None
            store = objects.vector_store(
                vector_store_id=store_id, created_at=int(created), name=f"{tenant['slug']} {rng.choice(tenant['features'])}",
                usage_bytes=size, file_counts={}, last_active_at=int(last_active), expires_after=expires_after,
                metadata={"tenant": tenant["slug"], "feature": rng.choice(tenant["features"])})
            state.add_vector_store(store, project_id=self.project, files=files)
            state._refresh_vector_store(store)
            self.counts["vector_stores"] += 1
            if rng.random() < 0.1:  # deleted some time ago: billed for the days it existed, then gone
                deleted_at = last_active + rng.uniform(0, self.now - last_active)
                state.vector_stores.pop(store_id)
                state.vector_store_files.pop(store_id, None)
                state.vector_store_history[store_id].deleted_at = deleted_at
                state._bury("vector_store", store, deleted_at)
            elif store["status"] != "expired":
                live.append(store_id)
        return live

    def orphaned_files(self) -> None:
        for index in range(max(3, self.config.tenants * 3)):
            created = self.now - self.rng.uniform(1, 120) * DAY
            self.state.add_file(objects.file(file_id=self.state.new_id("file-", 22), created_at=int(created),
                                             size_bytes=int(self.rng.lognormvariate(math.log(200_000), 1.5)),
                                             filename=f"upload-{index + 1}.csv",
                                             purpose=self.rng.choice(["assistants", "user_data", "assistants_output"])),
                                project_id=self.project, owner=None)
            self.counts["orphaned_files"] += 1

    # -- traffic -------------------------------------------------------------------------------
    def generate(self) -> dict:
        state, rng, config = self.state, self.rng, self.config
        tenants = self.tenants()
        stores = {tenant["slug"]: self.vector_stores(tenant) for tenant in tenants}
        self.orphaned_files()
        assistants = {}
        for tenant in tenants:
            assistants[tenant["slug"]] = []
            for _ in range(rng.randint(1, 3)):
                tools = [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object", "properties": {}}}}]
                if rng.random() < 0.6:
                    tools.append({"type": "code_interpreter"})
                if stores[tenant["slug"]]:
                    tools.append({"type": "file_search"})
                created = self.now - (config.days + rng.uniform(1, 90)) * DAY
                obj = objects.assistant(assistant_id=state.new_id("asst_"), created_at=int(created),
                                        model=_weighted(rng, ASSISTANTS_MODELS), name=f"{tenant['name']} assistant",
                                        instructions="You are a helpful assistant for our customers.", tools=tools,
                                        metadata={"tenant": tenant["slug"]})
                state.assistants[obj["id"]] = obj
                state.project_of[obj["id"]] = self.project
                assistants[tenant["slug"]].append(obj)
        sessions: dict[tuple[str, str], list[dict]] = {}
        containers: dict[str, dict] = {}
        for day_index in range(config.days):
            day = self.first_day + dt.timedelta(days=day_index)
            day_start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
            day_end = min(day_start + DAY, self.now - 60)
            if day_end <= day_start:
                continue
            progress = day_index / max(1, config.days - 1)
            share = assistants_share(day)
            weekday_factor = 0.45 if day.weekday() >= 5 else 1.0
            available = set(state.price_book.models_available(day))
            responses_models = [(model, weight) for model, weight in RESPONSES_MODELS if model in available]
            if not responses_models and share == 0:
                responses_models = [(model, weight) for model, weight in RESPONSES_MODELS[-2:]]
            for tenant in tenants:
                mean = config.runs_per_tenant_day * tenant["weight"] * weekday_factor * (0.8 + 0.4 * progress)
                mean *= (day_end - day_start) / DAY
                moments = sorted(rng.uniform(day_start, day_end) for _ in range(_poisson(rng, mean)))
                for moment in moments:
                    use_assistants = rng.random() < share
                    self.one_run(tenant, moment, use_assistants, assistants[tenant["slug"]], responses_models,
                                 stores[tenant["slug"]], sessions, containers)
        summary = {
            "name": config.name, "seed": config.seed, "tenants": len(tenants), "days": config.days,
            "first_day": self.first_day.isoformat(), "last_day": self.today.isoformat(), "ends_at": self.now,
            "project_id": self.project,
            **self.counts,
        }
        served = self.served_by_tenant()
        storage = self.storage_by_tenant_per_day()
        month_days = 30
        tenant_rows = []
        for tenant in tenants:
            # A month of the tenant's spend as its statement bills it: tokens at their rate over the scenario's
            # days, and a month of its vector storage today (storage is often most of it).
            recent = (served.get(tenant["slug"], Decimal(0)) * Decimal(month_days) / Decimal(max(1, config.days))
                      + storage.get(tenant["slug"], Decimal(0)) * month_days)
            budget = max(Decimal(10), (recent * Decimal(str(tenant["budget_factor"]))).quantize(Decimal("1")))
            tenant_rows.append({"slug": tenant["slug"], "name": tenant["name"], "monthly_budget_usd": f"{budget:.2f}",
                                "features": tenant["features"], "end_users": tenant["users"]})
        state.tenants = tenant_rows
        state.scenario = summary
        state._touch()
        return {**summary, "tenant_list": tenant_rows}

    def served_by_tenant(self) -> dict[str, Decimal]:
        """Token spend per tenant (to size budgets), from the billing log and the run/response metadata."""
        tenant_of = {}
        for obj in list(self.state.runs.values()) + list(self.state.responses.values()):
            tenant_of[obj["id"]] = (obj.get("metadata") or {}).get("tenant")
        totals: dict[str, Decimal] = {}
        for event in self.state.billing:
            slug = tenant_of.get(event.object_id)
            if not slug:
                continue
            day = dt.datetime.fromtimestamp(event.at, tz=dt.UTC).date()
            price = self.state.price_book.model_price(event.model, day)
            costs = token_line_costs(price, input_tokens=event.input_tokens, cached_tokens=event.cached_tokens,
                                     cache_write_tokens=event.cache_write_tokens, output_tokens=event.output_tokens,
                                     service_tier=event.service_tier,
                                     long_context=long_prompt(price, event.input_tokens))
            totals[slug] = totals.get(slug, Decimal(0)) + sum(costs.values())
        return totals

    def storage_by_tenant_per_day(self) -> dict[str, Decimal]:
        """A day of each tenant's live vector storage at today's price, its share of the organization's bill by
        bytes (the free GB taken once, as the sandbox's Costs bill it), to size budgets."""
        bytes_by_tenant: dict[str, int] = {}
        for store in self.state.vector_stores.values():
            slug = (store.get("metadata") or {}).get("tenant")
            if slug and store.get("status") != "expired":
                bytes_by_tenant[slug] = bytes_by_tenant.get(slug, 0) + int(store.get("usage_bytes") or 0)
        shares = vector_storage_shares(bytes_by_tenant, self.state.price_book.tool_price(self.today))
        return {slug: amount for slug, (_billable, amount) in shares.items()}

    def _session(self, tenant: dict, kind: str, moment: float, sessions: dict) -> tuple[dict, bool]:
        """Reuse one of the tenant's recent sessions (a thread or conversation) or start a new one."""
        rng = self.rng
        open_sessions = sessions.setdefault((tenant["slug"], kind), [])
        open_sessions[:] = [session for session in open_sessions if moment - session["last"] < 3 * DAY][-40:]
        if open_sessions and rng.random() < 0.65:
            session = rng.choice(open_sessions)
            session["last"] = moment
            return session, True
        attributed = rng.random() >= self.config.unattributed_share
        user = f"user_{tenant['slug']}_{rng.randint(1, tenant['users']):03d}"
        metadata = ({"tenant": tenant["slug"], "user_id": user, "session_id": f"sess_{rng.getrandbits(48):012x}",
                     "feature": rng.choice(tenant["features"])} if attributed else {})
        session = {"metadata": metadata, "last": moment, "id": None, "created": moment}
        open_sessions.append(session)
        return session, False

    def one_run(self, tenant, moment, use_assistants, tenant_assistants, responses_models, stores, sessions, containers):
        rng = self.rng
        prompt = int(min(250_000, max(50, rng.lognormvariate(math.log(2500), 1.0))))
        output = int(min(32_000, max(1, rng.lognormvariate(math.log(350), 0.8))))
        if use_assistants or not responses_models:
            self.assistants_run(tenant, moment, tenant_assistants, stores, sessions, prompt, output)
        else:
            self.response(tenant, moment, responses_models, stores, sessions, containers, prompt, output)

    def assistants_run(self, tenant, moment, tenant_assistants, stores, sessions, prompt, output):
        state, rng = self.state, self.rng
        assistant = rng.choice(tenant_assistants)
        session, reused = self._session(tenant, "thread", moment, sessions)
        if session["id"] is None or session["id"] not in state.threads:
            tool_resources = {"file_search": {"vector_store_ids": [rng.choice(stores)]}} if stores and rng.random() < 0.5 else {}
            thread = objects.thread(thread_id=state.new_id("thread_"), created_at=int(moment),
                                    metadata=dict(session["metadata"]), tool_resources=tool_resources)
            state.add_thread(thread, project_id=self.project)
            session["id"] = thread["id"]
            self.counts["threads"] += 1
        thread_id = session["id"]
        created = int(moment)
        run = objects.run(run_id=state.new_id("run_"), thread_id=thread_id, assistant_id=assistant["id"],
                          created_at=created, model=assistant["model"], instructions=assistant["instructions"],
                          tools=assistant["tools"], metadata=dict(session["metadata"]))
        status = _weighted(rng, [("completed", 93), ("failed", 3), ("cancelled", 2), ("expired", 1), ("incomplete", 1)])
        tool_types = {tool["type"] for tool in assistant["tools"]}
        kinds = []
        if "code_interpreter" in tool_types and rng.random() < 0.2:
            kinds.append("code_interpreter")
        if "file_search" in tool_types and rng.random() < 0.4:
            kinds.append("file_search")
        function = rng.random() < 0.15 or status == "expired"
        duration = rng.uniform(2, 40)
        end = created + int(duration) + (600 if status == "expired" else 0)
        run["started_at"] = created + 1
        run["expires_at"] = None
        if status == "cancelled":
            output = 0
        elif status == "failed":
            output //= 3
        elif status == "expired":
            output = min(output, 40)
            kinds = []
        run["status"] = status
        run["usage"] = objects.usage(prompt, output)
        run[{"completed": "completed_at", "failed": "failed_at", "cancelled": "cancelled_at"}.get(status, "_none")] = end
        run.pop("_none", None)
        if status == "failed":
            run["last_error"] = {"code": rng.choice(["server_error", "rate_limit_exceeded"]), "message": "Sorry, something went wrong."}
        if status == "incomplete":
            run["incomplete_details"] = {"reason": "max_completion_tokens"}
            run["max_completion_tokens"] = output
        steps = []
        offset = 0
        for kind in kinds:
            call_id = state.new_id("call_")
            call = objects.code_interpreter_call(call_id) if kind == "code_interpreter" else objects.file_search_call(
                call_id, [{"file_id": "file-" + call_id[5:27], "file_name": "handbook.pdf", "score": 0.8}])
            calls = [call] + ([objects.code_interpreter_call(state.new_id("call_"))] if kind == "code_interpreter"
                              and rng.random() < 0.4 else [])
            steps.append(objects.run_step(step_id=state.new_id("step_"), run=run, created_at=created + 1 + offset,
                                          step_details={"type": "tool_calls", "tool_calls": calls},
                                          step_usage=objects.usage(0, 0), completed_at=created + 2 + offset))
            offset += 1
        if function:
            step_status = "expired" if status == "expired" else "completed"
            steps.append(objects.run_step(
                step_id=state.new_id("step_"), run=run, created_at=created + 1 + offset, status=step_status,
                step_details={"type": "tool_calls", "tool_calls": [objects.function_call(
                    state.new_id("call_"), "lookup_order", '{"order_id": "A-1"}',
                    None if status == "expired" else '{"status": "shipped"}')]},
                step_usage=objects.usage(0, 0), completed_at=end))
            offset += 1
        if status in {"completed", "incomplete"}:
            message_id = state.new_id("msg_")
            state.add_message(objects.message(message_id=message_id, thread_id=thread_id, created_at=end,
                                              role="assistant", text="Here is what I found.",
                                              assistant_id=assistant["id"], run_id=run["id"]))
            steps.append(objects.run_step(step_id=state.new_id("step_"), run=run, created_at=created + 1 + offset,
                                          step_details={"type": "message_creation", "message_creation": {"message_id": message_id}},
                                          step_usage=objects.usage(prompt, output), completed_at=end))
        elif steps:
            steps[-1]["usage"] = objects.usage(prompt, output)
        state.add_message(objects.message(message_id=state.new_id("msg_"), thread_id=thread_id, created_at=created,
                                          role="user", text="Question from the customer."))
        state.runs[run["id"]] = run
        state.run_steps[run["id"]] = steps
        state.thread_runs[thread_id].append(run["id"])
        state.project_of[run["id"]] = self.project
        state.thread_activity[thread_id] = max(state.thread_activity.get(thread_id, 0), end)
        ci_used = "code_interpreter" in kinds
        state.billing.append(BillingEvent(
            at=created, project_id=self.project, api_key_id=self.key_id, api="assistants", object_id=run["id"],
            model=run["model"], input_tokens=prompt, output_tokens=output,
            model_requests=1 + len(kinds) + (1 if function and status != "expired" else 0),
            code_interpreter_sessions=1 if ci_used else 0))
        self.counts["runs"] += 1
        if not session["metadata"]:
            self.counts["unattributed"] += 1

    def response(self, tenant, moment, models, stores, sessions, containers, prompt, output):
        state, rng = self.state, self.rng
        model = _weighted(rng, models)
        use_conversation = rng.random() < 0.7
        session, reused = self._session(tenant, "conversation" if use_conversation else "standalone", moment, sessions)
        conversation_id = None
        if use_conversation:
            if session["id"] is None:
                conversation = objects.conversation(conversation_id=state.new_hex_id("conv_"), created_at=int(moment),
                                                    metadata=dict(session["metadata"]))
                state.add_conversation(conversation, project_id=self.project)
                session["id"] = conversation["id"]
                self.counts["conversations"] += 1
            conversation_id = session["id"]
        day = dt.datetime.fromtimestamp(moment, tz=dt.UTC).date()
        price = state.price_book.model_price(model, day)
        cached = (int(prompt * rng.uniform(0.2, 0.9)) // 128) * 128 if reused else 0
        cache_write = int((prompt - cached) * 0.5) if price.cache_write is not None and rng.random() < 0.3 else 0
        reasoning = int(output * rng.uniform(0.1, 0.7)) if objects.is_reasoning_model(model) else 0
        status = _weighted(rng, [("completed", 95), ("failed", 2), ("incomplete", 2), ("cancelled", 1)])
        items: list[dict] = []
        tools: list[dict] = []
        vector_store_id = None
        if stores and rng.random() < 0.25:
            vector_store_id = rng.choice(stores)
            tools.append({"type": "file_search", "vector_store_ids": [vector_store_id]})
            for _ in range(rng.randint(1, 3)):
                items.append({"id": state.new_hex_id("fs_"), "type": "file_search_call", "status": "completed",
                              "queries": ["refund policy"], "results": None})
        if rng.random() < 0.1:
            tools.append({"type": "code_interpreter", "container": {"type": "auto"}})
            container = containers.get(tenant["slug"])
            if container is None or moment - container["last_active_at"] > container["expires_after"]["minutes"] * 60:
                container = objects.container(container_id=state.new_hex_id("cntr_"), created_at=int(moment),
                                              last_active_at=int(moment),
                                              minutes=43200 if rng.random() < 0.1 else 20)
                state.add_container(container, project_id=self.project, owner=tenant["slug"] if session["metadata"] else None)
                containers[tenant["slug"]] = container
                self.counts["containers"] += 1
            container["last_active_at"] = int(moment)
            for _ in range(rng.randint(1, 3)):
                items.append({"id": state.new_hex_id("ci_"), "type": "code_interpreter_call", "status": "completed",
                              "container_id": container["id"], "code": "df.describe()",
                              "outputs": [{"type": "logs", "logs": "ok"}]})
        if rng.random() < 0.1:
            tools.append({"type": "web_search"})
            for _ in range(rng.randint(1, 2)):
                items.append({"id": state.new_hex_id("ws_"), "type": "web_search_call", "status": "completed",
                              "action": {"type": "search", "query": "latest release notes"}})
        if rng.random() < 0.15:
            tools.append({"type": "function", "name": "lookup_order", "parameters": {"type": "object", "properties": {}},
                          "strict": True})
            items.append({"id": state.new_hex_id("fc_"), "type": "function_call", "status": "completed",
                          "call_id": state.new_id("call_"), "name": "lookup_order", "arguments": '{"order_id": "A-1"}'})
        if status == "failed":
            output, reasoning, items = 0, 0, []
        if status == "cancelled":
            items = []
        if status in {"completed", "incomplete"}:
            items.append(objects.output_message_item(item_id=state.new_hex_id("msg_"), text="Here is what I found.",
                                                     status="completed" if status == "completed" else "incomplete"))
        usage = None if status == "cancelled" else objects.response_usage(
            input_tokens=prompt, cached_tokens=cached, cache_write_tokens=cache_write, output_tokens=output,
            reasoning_tokens=reasoning)
        created = round(moment, 3)
        obj = objects.response(
            response_id=state.new_hex_id("resp_"), created_at=created, model=model, status=status, output=items,
            metadata=dict(session["metadata"]), usage_block=usage, tools=tools, conversation_id=conversation_id,
            background=status == "cancelled", completed_at=round(moment + rng.uniform(1, 30), 3) if status == "completed" else None,
            error={"code": "server_error", "message": "The model failed to generate a response."} if status == "failed" else None,
            incomplete_reason="max_output_tokens" if status == "incomplete" else None,
            web_search_requests=sum(1 for item in items if item["type"] == "web_search_call"))
        state.responses[obj["id"]] = obj
        state.project_of[obj["id"]] = self.project
        if conversation_id:
            state.conversation_items[conversation_id].append(objects.input_message_item(
                item_id=state.new_hex_id("msg_"), role="user", text="Question from the customer."))
            state.conversation_items[conversation_id].extend(items)
        if usage is not None:
            state._bill_response(obj, project_id=self.project, api_key_id=self.key_id, vector_store_id=vector_store_id)
        self.counts["responses"] += 1
        if not session["metadata"]:
            self.counts["unattributed"] += 1


def demo_config(seed: int, *, end: float | None = None) -> ScenarioConfig:
    return ScenarioConfig(tenants=DEMO_TENANTS, days=DEMO_DAYS, seed=seed, name="demo",
                          runs_per_tenant_day=DEMO_RUNS_PER_TENANT_DAY, end=end)


# The demo's billing drift: spend with no tenant metadata on two recent days (inside the week the daily
# reconciliation re-checks), each about this share of the day's token spend, so the reconciliation page shows
# the unattributed-spend line doing its job while every other line matches.
DEMO_DRIFT_DAYS_AGO = (3, 6)
DEMO_DRIFT_SHARE = Decimal("0.08")


def demo_drift(state: SandboxState, *, project_id: str | None = None, end: float | None = None) -> list[dict]:
    """Drift rules (FaultInjector.add_drift keyword arguments) for the demo: unattributed spend on the days
    DEMO_DRIFT_DAYS_AGO before the day of `end` (the scenario's end; default the clock's today), sized from what
    was served that day (at least $0.50)."""
    today = dt.datetime.fromtimestamp(state.now() if end is None else end, tz=dt.UTC).date()
    days = {today - dt.timedelta(days=ago) for ago in DEMO_DRIFT_DAYS_AGO}
    served = dict.fromkeys(days, Decimal(0))
    for event in state.billing:
        day = dt.datetime.fromtimestamp(event.at, tz=dt.UTC).date()
        if day in served:
            price = state.price_book.model_price(event.model, day)
            served[day] += sum(token_line_costs(price, input_tokens=event.input_tokens, cached_tokens=event.cached_tokens,
                                                cache_write_tokens=event.cache_write_tokens,
                                                output_tokens=event.output_tokens,
                                                service_tier=event.service_tier,
                                                long_context=long_prompt(price, event.input_tokens)).values())
    return [{"day": day, "amount_usd": max(Decimal("0.50"), (served[day] * DEMO_DRIFT_SHARE).quantize(Decimal("0.01"))),
             "project_id": project_id or state.default_project, "unattributed": True}
            for day in sorted(days)]


def generate(state: SandboxState, config: ScenarioConfig) -> dict:
    """Replace the state's contents with a generated scenario (same seed + clock → same objects)."""
    with state.lock:
        state.reset(seed=config.seed)
        if config.end is None:
            return _Generator(state, config).generate()
        with state.clock.held_at(config.end):
            return _Generator(state, config).generate()


def _tenant_of(state: SandboxState, obj: dict) -> str | None:
    metadata = obj.get("metadata") or {}
    if "tenant" in metadata:
        return metadata["tenant"]
    return state.owner.get(obj["id"])


def export_state(state: SandboxState) -> dict:
    """Every object the sandbox holds (and the ones deleted, with deleted_at), as raw OpenAI JSON with
    its tenant slug, plus the scenario's tenants. Runs carry their steps (the only place a run says it
    used code interpreter)."""
    with state.lock:
        state.advance_all()
        for container in state.containers.values():
            state._refresh_container(container)
        for store in state.vector_stores.values():
            state._refresh_vector_store(store)

        def entry(kind: str, obj: dict, **extra) -> dict:
            return {"tenant": _tenant_of(state, obj), "project_id": state.project_of.get(obj["id"], state.default_project),
                    "deleted_at": state.deleted_at.get(obj["id"]), "object": obj, **extra}

        def live_and_dead(kind: str, live: dict) -> list[dict]:
            rows = [entry(kind, obj) for obj in live.values()]
            rows += [entry(kind, obj) for object_id, obj in state.graveyard.items() if state.graveyard_kind[object_id] == kind]
            return rows

        runs = [entry("run", run, steps=state.run_steps.get(run["id"], [])) for run in state.runs.values()]
        # A deleted run keeps the steps the application read while it existed (they still say what it billed).
        runs += [entry("run", obj, steps=state.graveyard_steps.get(object_id, [])) for object_id, obj in state.graveyard.items()
                 if state.graveyard_kind[object_id] == "run"]
        stores = [dict(row, files=list(state.vector_store_files.get(row["object"]["id"], {}).values()))
                  for row in live_and_dead("vector_store", state.vector_stores)]
        return {
            "generated_at": state.now(),
            "seed": state.seed,
            "scenario": state.scenario,
            "tenants": state.tenants,
            "projects": sorted(set(state.project_of.values()) | {state.default_project}),
            "assistants": [entry("assistant", obj) for obj in state.assistants.values()],
            "threads": live_and_dead("thread", state.threads),
            "runs": runs,
            "conversations": live_and_dead("conversation", state.conversations),
            "responses": [entry("response", obj) for obj in state.responses.values()],
            "vector_stores": stores,
            "files": live_and_dead("file", state.files),
            "containers": live_and_dead("container", state.containers),
        }


__all__ = ["ScenarioConfig", "asdict", "assistants_share", "demo_config", "demo_drift", "export_state", "generate"]
