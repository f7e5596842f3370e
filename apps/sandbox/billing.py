"""Organization Costs and Usage computed from what the sandbox served (its billing log and vector
store histories), bucketed by UTC time, grouped and paginated exactly like OpenAI's admin API.

Money is summed in Decimal per result and converted to float only when the JSON is written, so each
`amount.value` is the exact Decimal total rounded once to the nearest double (relative error < 1e-16):
the totals of a month agree with an independent Decimal computation far below a cent."""

from __future__ import annotations

import base64
import datetime as dt
from collections import defaultdict
from decimal import Decimal

from .pricing import EXACT, ModelPrice, long_prompt, token_line_costs, vector_storage_shares
from .state import SandboxError, SandboxState, bad_request

BUCKET_SECONDS = {"1m": 60, "1h": 3600, "1d": 86400}
BUCKET_LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}
COSTS_LIMITS = (7, 180)
GROUPS = {
    "costs": {"project_id", "line_item", "api_key_id"},
    "completions": {"project_id", "user_id", "api_key_id", "model", "batch", "service_tier", "api_source"},
    "vector_stores": {"project_id"},
    "code_interpreter_sessions": {"project_id"},
    "file_search_calls": {"project_id", "user_id", "api_key_id", "vector_store_id"},
}
RESULT_OBJECTS = {
    "completions": "organization.usage.completions.result",
    "vector_stores": "organization.usage.vector_stores.result",
    "code_interpreter_sessions": "organization.usage.code_interpreter_sessions.result",
    "file_search_calls": "organization.usage.file_searches.result",
}
ZERO = Decimal(0)


def _encode_page(bucket_start: int) -> str:
    return base64.urlsafe_b64encode(f"bucket:{bucket_start}".encode()).decode().rstrip("=")


def _decode_page(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, value = raw.split(":")
        if prefix != "bucket":
            raise ValueError
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise bad_request(f"Invalid 'page': '{token}' is not a page cursor from this endpoint.", param="page") from None


def _buckets(state: SandboxState, request, *, width_name: str, limits: tuple[int, int]):
    raw_start = request.arg("start_time")
    if raw_start is None:
        raise bad_request("Missing required parameter: 'start_time'.", param="start_time")
    try:
        start_time = int(raw_start)
        end_time = int(request.arg("end_time")) if request.arg("end_time") is not None else int(state.now()) + 1
    except ValueError:
        raise bad_request("Invalid 'start_time'/'end_time': expected Unix seconds.", param="start_time") from None
    if end_time <= start_time:
        raise bad_request("'end_time' must be after 'start_time'.", param="end_time")
    width = BUCKET_SECONDS[width_name]
    limit = request.int_arg("limit", limits[0], 1, limits[1])
    first = start_time - start_time % width
    page = request.arg("page")
    cursor = _decode_page(page) if page else first
    starts = []
    bucket = cursor
    while bucket < end_time and len(starts) <= limit:
        starts.append(bucket)
        bucket += width
    has_more = len(starts) > limit
    starts = starts[:limit]
    next_page = _encode_page(starts[-1] + width) if has_more else None
    return start_time, end_time, width, starts, has_more, next_page


def _group_by(request, endpoint: str) -> list[str]:
    fields = request.args("group_by")
    allowed = GROUPS[endpoint]
    for name in fields:
        if name not in allowed:
            raise bad_request(f"Invalid value for 'group_by': '{name}'. Supported values are: {sorted(allowed)}.",
                              param="group_by")
    return fields


def _events_by_bucket(state: SandboxState, width: int, start_time: int, end_time: int, starts: list[int],
                      project_ids: list[str]):
    state.advance_all()
    wanted = set(starts)
    grouped = defaultdict(list)
    for event in state.billing:
        if not start_time <= event.at < end_time:
            continue
        if project_ids and event.project_id not in project_ids:
            continue
        bucket = int(event.at) - int(event.at) % width
        if bucket in wanted:
            grouped[bucket].append(event)
    return grouped


def _storage_bytes(state: SandboxState, start: float, stop: float, project_ids: list[str]) -> dict[str, int]:
    """usage_bytes per project for one bucket: each store counts with the most it held in the bucket."""
    now = state.now()
    totals: dict[str, int] = defaultdict(int)
    for store_id, history in state.vector_store_history.items():
        if project_ids and history.project_id not in project_ids:
            continue
        store = state.vector_stores.get(store_id) or state.graveyard.get(store_id) or {}
        size = history.max_bytes_between(start, stop, store, now)
        if size:
            totals[history.project_id] += size
    return totals


def cost_atoms(state: SandboxState, bucket: int, events, project_ids: list[str]) -> dict[tuple, list]:
    """Served cost for one day at the finest grain: (project_id, line_item, api_key_id) → [amount,
    quantity, unit], all Decimal, before any drift."""
    day = dt.datetime.fromtimestamp(bucket, tz=dt.UTC).date()
    tools = state.price_book.tool_price(day)
    tokens: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    tool_counts: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    prices: dict[str, ModelPrice | None] = {}  # model -> its price on the day, looked up once

    def price_of(model: str) -> ModelPrice | None:
        if model not in prices:
            prices[model] = state.price_book.model_price(model, day)
        return prices[model]

    for event in events:
        price = price_of(event.model)
        # Long prompts bill at other multiples: their tokens are summed apart (keyed by it), as OpenAI rates each
        # request on its own prompt.
        long = price is not None and long_prompt(price, event.input_tokens)
        sums = tokens[(event.project_id, event.api_key_id, event.model, event.service_tier, long)]
        sums[0] += event.input_tokens
        sums[1] += event.cached_tokens
        sums[2] += event.cache_write_tokens
        sums[3] += event.output_tokens
        counts = tool_counts[(event.project_id, event.api_key_id)]
        counts[0] += event.code_interpreter_sessions
        if event.api == "responses":  # file search calls are billed per call only on the Responses API
            counts[1] += event.file_search_calls
        counts[2] += event.web_search_calls
    atoms: dict[tuple, list] = {}
    for (project_id, key_id, model, tier, long), (input_tokens, cached, cache_write, output) in tokens.items():
        price = price_of(model)
        if price is None:
            raise SandboxError(500, f"sandbox: no list price for {model} on {day}", type="server_error")
        costs = token_line_costs(price, input_tokens=input_tokens, cached_tokens=cached,
                                 cache_write_tokens=cache_write, output_tokens=output, service_tier=tier,
                                 long_context=long)
        quantities = {"input": input_tokens - cached - cache_write, "cached input": cached,
                      "cache write": cache_write, "output": output}
        for kind, amount in costs.items():
            if quantities[kind]:
                # One line item per model and token kind, whatever the tiers its tokens were served on.
                atom = atoms.setdefault((project_id, f"{model}, {kind}", key_id), [Decimal(0), Decimal(0), "tokens"])
                atom[0] += amount
                atom[1] += quantities[kind]
    for (project_id, key_id), (sessions, file_searches, web_searches) in tool_counts.items():
        if sessions:
            atoms[(project_id, "code interpreter", key_id)] = [
                EXACT.multiply(sessions, tools.code_interpreter_session), Decimal(sessions), "sessions"]
        if file_searches:
            atoms[(project_id, "file search", key_id)] = [
                EXACT.divide(EXACT.multiply(file_searches, tools.file_search_per_1k), 1000), Decimal(file_searches), "calls"]
        if web_searches:
            atoms[(project_id, "web search", key_id)] = [
                EXACT.divide(EXACT.multiply(web_searches, tools.web_search_per_1k), 1000), Decimal(web_searches), "calls"]
    for project_id, (billable, amount) in _storage_costs(state, bucket, tools, project_ids).items():
        if amount:
            atoms[(project_id, "vector storage", None)] = [amount, billable, "gibibyte_days"]
    return atoms


def _storage_costs(state: SandboxState, bucket: int, tools, project_ids: list[str]) -> dict[str, tuple[Decimal, Decimal]]:
    """(billable GB, cost) of vector storage per project for one day. The free GB is the organization's, once
    (the price list's "first GB free"; OpenAI does not say how its Costs API splits it between projects):
    the organization's bill is split across its projects in proportion to their bytes, whichever projects
    the request asks about."""
    shares = vector_storage_shares(_storage_bytes(state, bucket, bucket + 86400, []), tools)
    return {project_id: share for project_id, share in shares.items() if not project_ids or project_id in project_ids}


def apply_drift(atoms: dict[tuple, list], drift_rules, day: dt.date, project_ids: list[str]) -> None:
    for rule in drift_rules:
        if rule.day != day or (project_ids and rule.project_id not in project_ids):
            continue
        if rule.unattributed:
            key = (rule.project_id, rule.line_item or "unattributed usage", "key_unattributed")
            atoms.setdefault(key, [ZERO, ZERO, "tokens"])[0] += rule.amount_usd
            continue
        line_item = rule.line_item
        if line_item is None:
            candidates = [key for key in atoms if key[0] == rule.project_id]
            line_item = max(candidates, key=lambda key: (atoms[key][0], key[1]))[1] if candidates else "unattributed usage"
        matching = [key for key in atoms if key[0] == rule.project_id and key[1] == line_item]
        key = matching[0] if matching else (rule.project_id, line_item, None)
        atoms.setdefault(key, [ZERO, ZERO, "tokens"])[0] += rule.amount_usd


def costs_page(state: SandboxState, faults, request) -> dict:
    width_name = request.arg("bucket_width", "1d")
    if width_name != "1d":
        raise bad_request(f"Invalid value for 'bucket_width': '{width_name}'. Supported values are: ['1d'].",
                          param="bucket_width")
    group_by = _group_by(request, "costs")
    project_ids = request.args("project_ids")
    line_items = set(request.args("line_items"))
    api_key_ids = set(request.args("api_key_ids"))
    start_time, end_time, width, starts, has_more, next_page = _buckets(state, request, width_name="1d",
                                                                        limits=COSTS_LIMITS)
    events = _events_by_bucket(state, width, start_time, end_time, starts, project_ids)
    drift = faults.drift_rules()
    data = []
    for bucket in starts:
        atoms = cost_atoms(state, bucket, events.get(bucket, []), project_ids)
        apply_drift(atoms, drift, dt.datetime.fromtimestamp(bucket, tz=dt.UTC).date(), project_ids)
        grouped: dict[tuple, list] = {}
        for (project_id, line_item, key_id), (amount, quantity, unit) in sorted(atoms.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
            if line_items and line_item not in line_items or api_key_ids and key_id not in api_key_ids:
                continue
            group = (project_id if "project_id" in group_by else None, line_item if "line_item" in group_by else None,
                     key_id if "api_key_id" in group_by else None)
            slot = grouped.setdefault(group, [ZERO, ZERO, unit])
            slot[0] += amount
            slot[1] += quantity
        results = []
        for (project_id, line_item, key_id), (amount, quantity, unit) in grouped.items():
            results.append({
                "object": "organization.costs.result",
                "amount": {"value": float(amount), "currency": "usd"},
                "line_item": line_item, "project_id": project_id, "api_key_id": key_id,
                "user_id": None, "api_source": None,
                "quantity": float(quantity) if "line_item" in group_by else None,
                "quantity_unit": unit if "line_item" in group_by else None,
            })
        data.append({"object": "bucket", "start_time": bucket, "end_time": bucket + width, "results": results})
    return {"object": "page", "data": data, "has_more": has_more, "next_page": next_page}


def usage_page(state: SandboxState, request, endpoint: str) -> dict:
    width_name = request.arg("bucket_width", "1d")
    if width_name not in BUCKET_SECONDS:
        raise bad_request(f"Invalid value for 'bucket_width': '{width_name}'. Supported values are: "
                          "['1m', '1h', '1d'].", param="bucket_width")
    group_by = _group_by(request, endpoint)
    project_ids = request.args("project_ids")
    start_time, end_time, width, starts, has_more, next_page = _buckets(
        state, request, width_name=width_name, limits=BUCKET_LIMITS[width_name])
    events = _events_by_bucket(state, width, start_time, end_time, starts, project_ids)
    filters = {
        "model": set(request.args("models")), "api_key_id": set(request.args("api_key_ids")),
        "user_id": set(request.args("user_ids")), "vector_store_id": set(request.args("vector_store_ids")),
    }
    data = []
    for bucket in starts:
        if endpoint == "vector_stores":
            rows = [({"project_id": project_id}, {"usage_bytes": size})
                    for project_id, size in sorted(_storage_bytes(state, max(bucket, start_time),
                                                                  min(bucket + width, end_time), project_ids).items())]
        else:
            rows = [row for row in (_usage_row(endpoint, event) for event in events.get(bucket, [])) if row]
        grouped: dict[tuple, dict] = {}
        for keys, values in rows:
            if any(allowed and keys.get(name) not in allowed for name, allowed in filters.items()):
                continue
            group = tuple((name, keys.get(name)) for name in sorted(GROUPS[endpoint]) if name in group_by)
            slot = grouped.setdefault(group, dict.fromkeys(values, 0))
            for name, value in values.items():
                slot[name] += value
        results = []
        for group, values in grouped.items():
            if not any(values.values()):
                continue
            result = {"object": RESULT_OBJECTS[endpoint], **values}
            for name in GROUPS[endpoint]:
                result[name] = dict(group).get(name)
            results.append(result)
        data.append({"object": "bucket", "start_time": bucket, "end_time": bucket + width, "results": results})
    return {"object": "page", "data": data, "has_more": has_more, "next_page": next_page}


def _usage_row(endpoint: str, event):
    if endpoint == "completions":
        uncached = event.input_tokens - event.cached_tokens - event.cache_write_tokens
        return ({"project_id": event.project_id, "api_key_id": event.api_key_id, "model": event.model,
                 "user_id": None, "batch": False, "service_tier": event.service_tier, "api_source": "unlabeled"},
                {"input_tokens": event.input_tokens, "input_cached_tokens": event.cached_tokens,
                 "input_uncached_tokens": uncached, "input_cache_write_tokens": event.cache_write_tokens,
                 "output_tokens": event.output_tokens, "num_model_requests": event.model_requests})
    if endpoint == "code_interpreter_sessions":
        return ({"project_id": event.project_id}, {"num_sessions": event.code_interpreter_sessions})
    if endpoint == "file_search_calls":
        if event.api != "responses" or not event.file_search_calls:
            return None
        return ({"project_id": event.project_id, "api_key_id": event.api_key_id, "user_id": None,
                 "vector_store_id": event.vector_store_id}, {"num_requests": event.file_search_calls})
    return None
