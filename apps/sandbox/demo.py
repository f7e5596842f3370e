"""Load a sandbox export into RunLedger through the product's own paths, as a deployment would have recorded it.

Shared by `manage.py seed_demo` and the end-to-end reconciliation tests, so what the demo shows is what the
tests pin: every object an application created is sent through the ingest API's service (ingest_events) with
its tenant, in the order an application sends them; vector stores deleted at OpenAI are recorded as deleted
at the time they went; storage is metered for every day of the scenario (as the daily meter would have done);
then the Costs and Usage API is reconciled against the ledger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from apps.core.models import AuditEvent
from apps.core.services import audit_record
from apps.core.timeutils import from_unix
from apps.ledger.services import ingest_events
from apps.lifecycle.services import resource_record_deleted, storage_meter_day
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_create

BATCH = 1000
# Kinds an application reports while they are live only: a deleted thread, conversation, file or container
# was reported when it was created, but the ledger needs nothing from it that its runs do not carry.
_LIVE_ONLY = ("threads", "conversations", "files", "containers")


@dataclass
class IngestTotals:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged, "rejected": self.rejected}


# Recorded once per scenario seed, at the first seeding: when that scenario's traffic ends.
DEMO_SEEDED = "demo.seed"


def demo_scenario_end(seed: int) -> float | None:
    """When the demo scenario of `seed` that this ledger was first seeded with ends (Unix seconds); None if it
    never was. `make run` has the sandbox generate that same scenario again: generated for a later now, the
    new window's objects took the old ones' ids, and the ledger held both (31,444 runs against 16,125)."""
    event = AuditEvent.objects.filter(action=DEMO_SEEDED, target_id=str(seed)).order_by("at", "id").first()
    return event.data.get("scenario_end") if event else None


def demo_seeded_record(export: dict) -> None:
    """Record, the first time, when the exported demo scenario's traffic ends (for demo_scenario_end). Before
    anything is ingested: a first seeding stopped half way has already recorded some of its objects."""
    scenario = export.get("scenario") or {}
    seed = export.get("seed")
    if (scenario.get("name") != "demo" or scenario.get("ends_at") is None or seed is None
            or demo_scenario_end(seed) is not None):
        return
    audit_record(action=DEMO_SEEDED, target_type="demo_scenario", target_id=str(seed), actor_label="command:seed_demo",
                 data={"scenario_end": scenario["ends_at"], "first_day": scenario.get("first_day"),
                       "last_day": scenario.get("last_day")})


def export_today(export: dict) -> dt.date:
    """The sandbox clock's day when the export was taken: the scenario's last day, or a later one when the
    scenario was generated as of an earlier end (make run on a later day, demo_scenario_end)."""
    return from_unix(export["generated_at"]).date()


def export_first_day(export: dict) -> dt.date:
    scenario = export.get("scenario") or {}
    if scenario.get("first_day"):
        return dt.date.fromisoformat(scenario["first_day"])
    created = [row["object"]["created_at"] for kind in ("runs", "responses") for row in export.get(kind, [])]
    return from_unix(min(created)).date() if created else export_today(export)


def export_tenants_ensure(export: dict) -> list[tuple[Tenant, dict]]:
    """The scenario's tenants, created once (an existing slug is kept as it is)."""
    tenants = []
    for spec in export.get("tenants") or []:
        tenant = Tenant.objects.filter(slug=spec["slug"]).first() or tenant_create(slug=spec["slug"], name=spec["name"])
        tenants.append((tenant, spec))
    return tenants


def export_events(export: dict) -> list[dict]:
    """Ingest events in the order an application sends them: the objects runs use first, then the runs (with
    the steps it read) and responses. Objects with no tenant are left to the inventory sync (orphans)."""
    events: list[dict] = []

    def add(rows, *, keep_deleted: bool, with_steps: bool = False) -> None:
        for row in rows:
            if not row.get("tenant") or (row.get("deleted_at") and not keep_deleted):
                continue
            event = {"tenant": row["tenant"], "object": row["object"], "openai_project": row["project_id"]}
            if with_steps:
                event["steps"] = row.get("steps") or []
            events.append(event)

    for kind in _LIVE_ONLY[:2]:
        add(export[kind], keep_deleted=False)
    # A store deleted since was reported when it was created and billed until it went: the meter needs it.
    add(export["vector_stores"], keep_deleted=True)
    for kind in _LIVE_ONLY[2:]:
        add(export[kind], keep_deleted=False)
    add(export["runs"], keep_deleted=True, with_steps=True)
    add(export["responses"], keep_deleted=True)
    return events


def export_ingest(export: dict, *, batch: int = BATCH, progress: Callable[[int], None] | None = None) -> IngestTotals:
    """Send every event through ingest_events in batches of the ingest API's maximum; idempotent."""
    events = export_events(export)
    totals = IngestTotals()
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        result = ingest_events(events=chunk).as_dict()
        for key in ("created", "updated", "unchanged", "rejected"):
            setattr(totals, key, getattr(totals, key) + result[key])
        totals.errors += [item for item in result["results"] if item["outcome"] == "rejected"]
        if progress:
            progress(len(chunk))
    return totals


def export_deletions_record(export: dict) -> int:
    """Vector stores deleted at OpenAI are marked deleted at the time they went (what the daily inventory sync
    would have noticed), so metering stops billing them after that day. Returns how many were marked."""
    marked = 0
    for row in export["vector_stores"]:
        if row.get("tenant") and row.get("deleted_at"):
            marked += resource_record_deleted(resource_type="vector_store", openai_id=row["object"]["id"],
                                              at=from_unix(row["deleted_at"]), reason="deleted at OpenAI")
    return marked


def storage_meter_range(*, first_day: dt.date, last_day: dt.date) -> int:
    """Meter vector storage for every day first_day..last_day (inclusive), as the daily meter would have."""
    day, count = first_day, 0
    while day <= last_day:
        storage_meter_day(day=day)
        day += dt.timedelta(days=1)
        count += 1
    return count


__all__ = [
    "BATCH", "DEMO_SEEDED", "IngestTotals", "demo_scenario_end", "demo_seeded_record", "export_deletions_record",
    "export_events", "export_first_day", "export_ingest",
    "export_tenants_ensure", "export_today", "storage_meter_range",
]
