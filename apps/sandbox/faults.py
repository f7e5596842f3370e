"""Fault injection: rules that turn matching requests into 429s, 5xxs, 404s or slow answers, and
billing drift that makes the Costs API disagree with what was served by an exact amount."""

from __future__ import annotations

import datetime as dt
import random
import re
import threading
from dataclasses import asdict, dataclass, field
from decimal import Decimal

FAULT_KINDS = {"rate_limit", "server_error", "not_found", "latency"}


@dataclass
class FaultRule:
    """`kind`: rate_limit (429 + Retry-After), server_error (`status`, default 500), not_found (404),
    latency (adds `latency_ms` then answers normally; the other kinds also wait `latency_ms` first).
    Matches requests whose path matches `path` (regex, searched) and `method` (or any).
    Fires `times` times (None = forever), on a `fraction` of matching requests (seeded)."""

    kind: str
    path: str = ".*"
    method: str | None = None
    times: int | None = None
    fraction: float = 1.0
    status: int | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    latency_ms: int = 0
    fired: int = 0
    id: int = 0

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {sorted(FAULT_KINDS)}, not {self.kind!r}")
        self._pattern = re.compile(self.path)
        if self.kind == "rate_limit":
            self.status = self.status or 429
        elif self.kind == "server_error":
            self.status = self.status or 500
        elif self.kind == "not_found":
            self.status = 404

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return bool(self._pattern.search(path))

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("_pattern", None)
        return data

    @classmethod
    def parse(cls, spec: str) -> FaultRule:
        """Command-line form: `KIND[:key=value[:key=value...]]`, e.g.
        `rate_limit:path=^/v1/threads:times=3:retry_after=1` or `latency:latency_ms=200:fraction=0.1`."""
        kind, *pairs = spec.split(":")
        kwargs: dict = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            if key in {"times", "status", "latency_ms", "retry_after_ms"}:
                kwargs[key] = int(value)
            elif key in {"fraction", "retry_after"}:
                kwargs[key] = float(value)
            elif key in {"path", "method"}:
                kwargs[key] = value
            else:
                raise ValueError(f"unknown fault option {key!r} in {spec!r}")
        return cls(kind=kind, **kwargs)


@dataclass
class DriftRule:
    """Costs reported for `day` (UTC) differ from what was served by `amount_usd` (positive: OpenAI
    reports more). `line_item`/`project_id` say where the difference lands. With `unattributed=True`
    the amount is an extra result of its own (spend the ledger has no object or tenant for)."""

    day: dt.date
    amount_usd: Decimal
    project_id: str = "proj_default"
    line_item: str | None = None
    unattributed: bool = False
    id: int = 0

    def to_dict(self) -> dict:
        return {"id": self.id, "day": self.day.isoformat(), "amount_usd": str(self.amount_usd),
                "project_id": self.project_id, "line_item": self.line_item, "unattributed": self.unattributed}

    @classmethod
    def from_dict(cls, data: dict) -> DriftRule:
        return cls(
            day=dt.date.fromisoformat(str(data["day"])),
            amount_usd=Decimal(str(data["amount_usd"])),
            project_id=data.get("project_id") or "proj_default",
            line_item=data.get("line_item"),
            unattributed=bool(data.get("unattributed", False)),
        )


@dataclass
class FaultInjector:
    """Thread-safe list of fault and drift rules, first matching fault rule wins."""

    seed: int = 0
    rules: list[FaultRule] = field(default_factory=list)
    drift: list[DriftRule] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self._next_id = 1

    # -- faults ------------------------------------------------------------------------------
    def add(self, kind: str, **options) -> FaultRule:
        rule = FaultRule(kind=kind, **options)
        with self._lock:
            rule.id = self._next_id
            self._next_id += 1
            self.rules.append(rule)
        return rule

    def rate_limit(self, *, path: str = ".*", times: int | None = 1, retry_after: float | None = 1,
                   **options) -> FaultRule:
        return self.add("rate_limit", path=path, times=times, retry_after=retry_after, **options)

    def server_error(self, *, path: str = ".*", times: int | None = 1, status: int = 500, **options) -> FaultRule:
        return self.add("server_error", path=path, times=times, status=status, **options)

    def not_found(self, *, path: str, times: int | None = 1, **options) -> FaultRule:
        return self.add("not_found", path=path, times=times, **options)

    def latency(self, *, latency_ms: int, path: str = ".*", times: int | None = None, **options) -> FaultRule:
        return self.add("latency", path=path, times=times, latency_ms=latency_ms, **options)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.drift.clear()

    def clear_faults(self) -> None:
        with self._lock:
            self.rules.clear()

    def match(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    if rule.fraction < 1.0 and self._rng.random() >= rule.fraction:
                        continue
                    rule.fired += 1
                    return rule
        return None

    # -- billing drift -----------------------------------------------------------------------
    def add_drift(self, *, day: dt.date | str, amount_usd, project_id: str = "proj_default",
                  line_item: str | None = None, unattributed: bool = False) -> DriftRule:
        rule = DriftRule.from_dict({"day": str(day), "amount_usd": amount_usd, "project_id": project_id,
                                    "line_item": line_item, "unattributed": unattributed})
        with self._lock:
            rule.id = self._next_id
            self._next_id += 1
            self.drift.append(rule)
        return rule

    def clear_drift(self) -> None:
        with self._lock:
            self.drift.clear()

    def drift_rules(self) -> list[DriftRule]:
        with self._lock:
            return list(self.drift)

    def describe(self) -> dict:
        with self._lock:
            return {"faults": [rule.to_dict() for rule in self.rules],
                    "drift": [rule.to_dict() for rule in self.drift]}
