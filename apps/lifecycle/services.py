"""Writes of the lifecycle app: recording OpenAI resources, inventory sync, sweeps (plan, claim, re-check,
delete, audit), orphan actions, vector-storage metering and the requires_action watch.

Safety rules every sweep follows (see docs/lifecycle.md):
- a tenant on legal hold is never swept (checked when planning, when an item is processed and again right
  before its archive and delete), and an item is judged by its resource's tenant now: one whose tenant
  changed since planning is kept for the next sweep;
- the last activity of a thread/conversation/store/container is re-checked at OpenAI right before the
  delete, so something used during the sweep survives;
- each item is claimed with a conditional UPDATE before it is touched, the claim is renewed before every
  provider call, every write is conditional on still holding it, and a re-processed item is re-checked
  first (a 404 then reads "already gone"), so nothing is deleted twice or audited twice;
- a dry run runs the same code path with the archive copy and the delete left out, so it lists exactly what a
  real run deletes.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, CharField, Count, Exists, F, Func, OuterRef, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce, Concat
from django.utils import timezone

from apps.core.money import ZERO, allocate, money_text, quantize_ledger
from apps.core.services import audit_record
from apps.core.timeutils import day_start, from_unix, moment_shifted, month_start
from apps.ledger.models import GONE_REASON, Run, RunStatus, Thread, ThreadKind, ThreadToolResource
from apps.provider.client import ProviderError, error_status, is_not_found, is_transient
from apps.provider.projects import (
    ProjectKeyMissing,
    ProjectProviders,
    not_found_unasked,
    other_projects,
    project_holding,
)
from apps.reconciliation.projects import object_project_ids, project_q
from apps.tenants.models import Tenant

from .conf import setting
from .models import (
    ArchivedItem,
    Container,
    Outcome,
    ResourceStatus,
    ResourceType,
    StorageDailyTotal,
    StorageMeter,
    StoredFile,
    Sweep,
    SweepItem,
    SweepKind,
    VectorStore,
    VectorStoreDay,
)

logger = logging.getLogger(__name__)

RESOURCE_MODELS = {
    ResourceType.VECTOR_STORE: VectorStore,
    ResourceType.FILE: StoredFile,
    ResourceType.CONTAINER: Container,
}
OBJECT_TYPES = {"vector_store": ResourceType.VECTOR_STORE, "file": ResourceType.FILE, "container": ResourceType.CONTAINER}
KIND_RESOURCE_TYPES = {
    SweepKind.THREADS: (ResourceType.THREAD, ResourceType.CONVERSATION),
    SweepKind.VECTOR_STORES: (ResourceType.VECTOR_STORE,),
    SweepKind.FILES: (ResourceType.FILE,),
    SweepKind.CONTAINERS: (ResourceType.CONTAINER,),
}


class LifecycleError(Exception):
    """A request the lifecycle app refuses, with a message saying what to do instead."""


class SweepRefused(LifecycleError):
    pass


class SweepBusy(LifecycleError):
    pass


class DeleteOutcomeUnknown(LifecycleError):
    """A staff delete answered by a 5xx, a timeout or a lost connection (after every retry): OpenAI may have
    carried it out all the same, so it is neither "deleted" nor "nothing changed". Nothing is recorded."""


# --- talking to OpenAI through the one provider -------------------------------------------------------


def _default_provider():
    from apps.provider.client import OpenAIProvider

    return OpenAIProvider.default()


def _providers(default=None) -> ProjectProviders:
    """One provider per OpenAI project (a resource is reached only with its own project's key). The default
    project's is built first (or `default` stands in for it: tests, benches): without the deployment's own
    key this process is not set up, and the work fails before it starts, holding nothing."""
    return ProjectProviders(default=default or _default_provider())


def _as_dict(obj) -> dict:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    for method in ("model_dump", "to_dict", "dict"):
        if hasattr(obj, method):
            return getattr(obj, method)()
    return dict(obj)


def _deleted_outcome(result) -> str:
    """The provider's delete answer as an outcome: deleted now, or already gone (a 404)."""
    if isinstance(result, bool):
        return Outcome.DELETED if result else Outcome.ALREADY_GONE
    if isinstance(result, str):
        return Outcome.ALREADY_GONE if "gone" in result or "not_found" in result else Outcome.DELETED
    value = getattr(result, "value", None)
    if isinstance(value, str):
        return _deleted_outcome(value)
    for attr in ("already_gone", "was_missing"):
        if getattr(result, attr, False):
            return Outcome.ALREADY_GONE
    data = result if isinstance(result, dict) else None
    if data is not None and data.get("already_gone"):
        return Outcome.ALREADY_GONE
    return Outcome.DELETED


def _newest_timestamp(rows: Iterable) -> dt.datetime | None:
    newest = None
    for row in rows:
        data = _as_dict(row)
        for key in ("created_at", "completed_at", "failed_at", "cancelled_at", "started_at"):
            moment = _moment(data.get(key))
            if moment and (newest is None or moment > newest):
                newest = moment
    return newest


def _moment(value) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, (int, float)):
        return from_unix(value)
    return None


def _first(iterable, limit: int):
    out = []
    for row in iterable:
        out.append(row)
        if len(out) >= limit:
            break
    return out




# --- recording resources --------------------------------------------------------------------------------


def _tenant_from_metadata(metadata: dict | None) -> Tenant | None:
    slug = (metadata or {}).get("tenant")
    if not slug or not isinstance(slug, str):
        return None
    return Tenant.objects.filter(slug=slug).first()


def _ids(values) -> list[str]:
    return sorted({str(v) for v in values or [] if v})


def resources_record(*, tenant: Tenant | None, obj: dict, seen_at: dt.datetime | None = None,
                     openai_project: str = "", listed: bool = False) -> str:
    """Record one raw OpenAI vector store, file or container, listed in or reported from `openai_project`
    ("" = not said: the default project, or what is already recorded); returns "created", "updated", "unchanged" (the
    same object again: only its last-seen time moves), "deleted_kept"
    (a resource RunLedger knows is deleted stays deleted) or "tenant_conflict" (its tenant is already another
    one: only staff re-assign). The tenant is, in order: the one given (ingest key or URL), the
    `metadata.tenant` slug, the tenant already recorded, else none (an orphan)."""
    obj = _as_dict(obj)
    kind = OBJECT_TYPES.get(obj.get("object", ""))
    if kind is None:
        raise LifecycleError(f"object must be one of {', '.join(OBJECT_TYPES)}; got {obj.get('object')!r}.")
    openai_id = obj.get("id")
    if not openai_id or not isinstance(openai_id, str):
        raise LifecycleError("object.id is required.")
    seen_at = seen_at or timezone.now()
    model = RESOURCE_MODELS[kind]
    fields = _resource_fields(kind, obj)
    if openai_project:
        # Sweeps reach the resource with this project's key only (OpenAI scopes objects by project).
        fields["openai_project"] = openai_project
    given_tenant, source = tenant, "ingest"
    if given_tenant is None:
        given_tenant, source = _tenant_from_metadata(obj.get("metadata")), "metadata"

    with transaction.atomic():
        existing = model.objects.unscoped().select_for_update().filter(openai_id=openai_id).first()
        if existing is None:
            try:
                with transaction.atomic():
                    model.objects.create(
                        openai_id=openai_id, tenant=given_tenant, tenant_source=source if given_tenant else "",
                        last_seen_at=seen_at, raw=obj, **fields,
                    )
                return "created"
            except IntegrityError:
                # Recorded concurrently: update it below. With no such row, the insert broke some other
                # constraint (SQLite's JSON_VALID on a value no JSON holds, say): that error, not a DoesNotExist.
                existing = model.objects.unscoped().select_for_update().filter(openai_id=openai_id).first()
                if existing is None:
                    raise
        restored = False
        if existing.status == ResourceStatus.DELETED:
            if not (listed and existing.deletion_reason.startswith(GONE_REASON)):
                return "deleted_kept"
            # Listed by its own project: the "gone" was a 404 to another project's key (RunLedger asked every
            # project with the default key before it reached each with its own). It is live: back in the sweeps.
            existing.status, existing.deleted_at, existing.deletion_reason = ResourceStatus.ACTIVE, None, ""
            restored = True
        # The same object reported again changes nothing but when it was last seen (what "gone" is judged by).
        changed = existing.raw != obj or any(getattr(existing, name) != value for name, value in fields.items())
        outcome = "updated" if changed else "unchanged"
        if given_tenant is not None:
            if existing.tenant_id is None:
                existing.tenant, existing.tenant_source = given_tenant, source
                outcome = "updated"
            elif existing.tenant_id != given_tenant.pk:
                if source == "ingest":
                    # A report sent for one tenant must not rewrite another tenant's resource (its size is
                    # billed, its dates decide the sweeps): refused, nothing changes.
                    return "tenant_conflict"
                outcome = "tenant_conflict"  # OpenAI's own listing: its fields are news, its tenant is not
        for name, value in fields.items():
            setattr(existing, name, value)
        existing.last_seen_at, existing.raw = seen_at, obj
        existing.save()
        return "restored" if restored else outcome


def resources_record_ingest(tenant_id_by_index: dict[int, int], records: dict,
                            project_by_index: dict[int, str]) -> dict[int, str]:
    """The ledger ingest hook: one batch of vector store / file / container events, each with the tenant the
    ingest resolved. Answers in the ingest's vocabulary (created | updated | unchanged), or tenant_conflict
    for a resource recorded for another tenant: left exactly as it is (only staff re-assign), and the ingest
    rejects that event."""
    tenants = Tenant.objects.in_bulk(set(tenant_id_by_index.values()))
    outcomes = {}
    for index, record in records.items():
        obj = dict(getattr(record, "raw", None) or record)
        outcome = resources_record(tenant=tenants.get(tenant_id_by_index.get(index)), obj=obj,
                                   openai_project=project_by_index.get(index, ""))
        if outcome == "tenant_conflict":
            logger.warning("ingest: %s %s belongs to another tenant; refused", obj.get("object"), obj.get("id"))
        outcomes[index] = outcome if outcome in ("created", "updated", "tenant_conflict") else "unchanged"
    return outcomes


def _resource_fields(kind: str, obj: dict) -> dict:
    """The model fields of a raw resource. Attachments and expiry are read by the provider's normalizer
    functions (the ones ingest validates events with, rejecting a bad one on its own); a value they refuse
    here (a direct caller) is a LifecycleError naming the field, never a TypeError or an overflowing insert."""
    from apps.provider.normalizers import NormalizationError

    try:
        return _resource_fields_read(kind, obj)
    except NormalizationError as exc:
        raise LifecycleError(str(exc)) from exc


def _resource_fields_read(kind: str, obj: dict) -> dict:
    from apps.provider.normalizers import container_expiry_minutes, resource_id_list

    created_at = _moment(obj.get("created_at")) or timezone.now()
    if kind == ResourceType.VECTOR_STORE:
        fields = {
            "created_at": created_at,
            "name": (obj.get("name") or "")[:300],
            "usage_bytes": int(obj.get("usage_bytes") or 0),
            "last_active_at": _moment(obj.get("last_active_at")),
            "expires_at": _moment(obj.get("expires_at")),
            "openai_status": obj.get("status") or "",
            "metadata": obj.get("metadata") or {},
        }
        thread_ids = resource_id_list(obj, "thread_ids") or (
            (obj.get("metadata") or {}).get("thread_id") and [obj["metadata"]["thread_id"]])
        if thread_ids:
            fields["thread_openai_ids"] = _ids(thread_ids)
        return fields
    if kind == ResourceType.FILE:
        fields = {
            "created_at": created_at,
            "filename": (obj.get("filename") or "")[:300],
            "bytes": int(obj.get("bytes") or 0),
            "purpose": obj.get("purpose") or "",
            "expires_at": _moment(obj.get("expires_at")),
        }
        # Not sent: the attachments already recorded (e.g. by the inventory's store listing) stay.
        if (store_ids := resource_id_list(obj, "vector_store_ids")) is not None:
            fields["vector_store_openai_ids"] = _ids(store_ids)
        if (thread_ids := resource_id_list(obj, "thread_ids")) is not None:
            fields["thread_openai_ids"] = _ids(thread_ids)
        return fields
    return {
        "created_at": created_at,
        "name": (obj.get("name") or "")[:300],
        "last_active_at": _moment(obj.get("last_active_at")),
        "openai_status": obj.get("status") or "",
        "expires_after_minutes": container_expiry_minutes(obj),
    }


def _resource_mark_deleted(*, resource_type: str, openai_id: str, reason: str, at: dt.datetime) -> None:
    if resource_type in (ResourceType.THREAD, ResourceType.CONVERSATION):
        Thread.objects.unscoped().filter(openai_id=openai_id, status=Thread.Status.ACTIVE).update(
            status=Thread.Status.DELETED, deleted_at=at, deletion_reason=reason[:200]
        )
        return
    RESOURCE_MODELS[resource_type].objects.unscoped().filter(
        openai_id=openai_id, status=ResourceStatus.ACTIVE
    ).update(status=ResourceStatus.DELETED, deleted_at=at, deletion_reason=reason[:200])


def resource_record_deleted(*, resource_type: str, openai_id: str, at: dt.datetime, reason: str) -> bool:
    """Record that a resource RunLedger knows was deleted outside it at a known time (an application reports
    the deletion, or history is imported). True when a live row was marked; a row already deleted keeps its
    first deletion; an unknown id changes nothing."""
    if resource_type not in RESOURCE_MODELS and resource_type not in (ResourceType.THREAD, ResourceType.CONVERSATION):
        raise LifecycleError(f"resource_type must be one of {', '.join(RESOURCE_MODELS)}, thread or conversation.")
    live = _ledger_model(resource_type).objects.unscoped().filter(openai_id=openai_id, status=ResourceStatus.ACTIVE).exists()
    _resource_mark_deleted(resource_type=resource_type, openai_id=openai_id, reason=reason, at=at)
    return live


def _file_attach(file_ids: Iterable[str], *, field: str, owner_id: str, tenant_id: int | None) -> None:
    for file in StoredFile.objects.unscoped().filter(openai_id__in=list(file_ids)):
        current = set(getattr(file, field) or [])
        changed = owner_id not in current
        if changed:
            setattr(file, field, sorted(current | {owner_id}))
        if file.tenant_id is None and tenant_id is not None:
            file.tenant_id, file.tenant_source, changed = tenant_id, field.split("_openai")[0], True
        if changed:
            file.save()


def _thread_attachments_record(thread: Thread, thread_obj: dict) -> None:
    """A thread's tool_resources name the vector store and files it uses; record them so a store or file a
    live thread needs is never swept, and an orphan store inherits the thread's tenant."""
    from apps.provider.normalizers import thread_tool_resource_ids

    store_ids, file_ids = thread_tool_resource_ids(thread_obj)
    for store in VectorStore.objects.unscoped().filter(openai_id__in=store_ids):
        if thread.openai_id not in (store.thread_openai_ids or []) or store.tenant_id is None:
            store.thread_openai_ids = _ids([*(store.thread_openai_ids or []), thread.openai_id])
            if store.tenant_id is None:
                store.tenant_id, store.tenant_source = thread.tenant_id, "thread"
            store.save(update_fields=["thread_openai_ids", "tenant", "tenant_source"])
    if file_ids:
        _file_attach(file_ids, field="thread_openai_ids", owner_id=thread.openai_id, tenant_id=thread.tenant_id)


# --- inventory sync -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrphanAlerts:
    raised: list[int]  # new alerts (one resolved before and opened again now is not among them)
    resolved: list[int]


@dataclass
class InventoryResult:
    counts: dict
    orphans: int
    gone: int
    # Projects whose objects could not be listed (no API key), with what to configure; their rows are left.
    unreachable: dict = dataclass_field(default_factory=dict)
    listed: list = dataclass_field(default_factory=list)  # the projects listed
    orphan_alerts: OrphanAlerts = dataclass_field(default_factory=lambda: OrphanAlerts(raised=[], resolved=[]))


INVENTORY_FILE_PAGE = 2000


def inventory_sync(*, provider=None, progress: Callable[[str], None] | None = None,
                   heartbeat: Callable[[], object] | None = None) -> InventoryResult:
    """List every vector store (and its files), file and container at OpenAI, in every project RunLedger can
    reach (the default one and each configured with an API key), and record each with its project and tenant
    or as an orphan. A resource RunLedger had as live but its project no longer lists is marked deleted
    ("gone at OpenAI"), only after every listing completed, so a failed listing never deletes rows; a
    project that cannot be listed leaves its rows as they are. `heartbeat` is called as the work goes on
    (each listed object, each page of a store's files, each page of the rebuild), where `progress` is told
    only every 500 objects: a lease renewed there keeps up with stores whose files take long to list."""
    providers = _providers(provider)
    say = progress or (lambda message: None)
    beat = heartbeat or (lambda: None)
    started = timezone.now()
    counts: dict[str, int] = {}
    gone = 0
    unreachable: dict[str, str] = {}
    listed_projects = []
    files_of_store: dict[str, set[str]] = {}  # what each store listed this time holds
    for project_id in object_project_ids():
        try:
            _inventory_project(providers.for_project(project_id), project_id, counts, say, files_of_store, beat)
        except (ProjectKeyMissing, ProviderError) as exc:
            # One project's missing or refused key (or OpenAI down for it) leaves its rows alone, not the others'.
            unreachable[project_id] = str(exc)
            say(f"{project_id}: not listed: {exc}")
            continue
        listed_projects.append(project_id)
    # Gone only once every listing completed: a row recorded without its project ("" reads as the default
    # project) that another project lists is re-recorded with it, not taken for gone by the default's
    # listing; while some project could not be listed, such a row may be one of its objects, so it stays.
    for project_id in listed_projects:
        listed_here = project_q(project_id) if not unreachable else Q(openai_project=project_id)
        for model in RESOURCE_MODELS.values():
            gone += model.objects.unscoped().filter(
                listed_here, status=ResourceStatus.ACTIVE, last_seen_at__lt=started,
            ).update(status=ResourceStatus.DELETED, deleted_at=timezone.now(),
                     deletion_reason=f"{GONE_REASON} (not listed)")
    # Files now in no store: drop the ids of stores that are gone, or that were listed without the file (it
    # was removed from a store that lives on), so such files become eligible once old enough.
    live_stores = set(VectorStore.objects.unscoped().filter(status=ResourceStatus.ACTIVE).values_list("openai_id", flat=True))
    in_stores = (StoredFile.objects.unscoped().filter(status=ResourceStatus.ACTIVE).exclude(vector_store_openai_ids=[])
                 .only("openai_id", "vector_store_openai_ids").order_by("pk"))
    last_pk = 0
    while page := list(in_stores.filter(pk__gt=last_pk)[:INVENTORY_FILE_PAGE]):  # pages: memory stays flat
        beat()
        for file in page:
            kept = [vs for vs in file.vector_store_openai_ids
                    if vs in live_stores and (vs not in files_of_store or file.openai_id in files_of_store[vs])]
            if kept != file.vector_store_openai_ids:
                file.vector_store_openai_ids = kept
                file.save(update_fields=["vector_store_openai_ids"])
        last_pk = page[-1].pk
    orphans = sum(
        model.objects.unassigned().filter(status=ResourceStatus.ACTIVE).count() for model in RESOURCE_MODELS.values()
    )
    alerts = orphan_alerts_refresh()
    audit_record(action="lifecycle.inventory_sync", target_type="inventory", target_id=started.isoformat(),
                 actor_label="task:inventory_sync",
                 data={"counts": counts, "gone": gone, "orphans": orphans, "unreachable": unreachable,
                       "orphan_alerts": {"raised": alerts.raised, "resolved": alerts.resolved}})
    return InventoryResult(counts=counts, orphans=orphans, gone=gone, unreachable=unreachable, listed=listed_projects,
                           orphan_alerts=alerts)


def _inventory_project(provider, project_id: str, counts: dict[str, int], say: Callable[[str], None],
                       files_of_store: dict[str, set[str]], beat: Callable[[], object]) -> None:
    """List one project's resources into the ledger, each recorded with the project and seen now; each listed
    store's files go into `files_of_store`."""
    # Files first: listing a store then attaches its (already recorded) files and hands them its tenant.
    for resource_type, lister in (
        (ResourceType.FILE, provider.list_files),
        (ResourceType.CONTAINER, provider.list_containers),
        (ResourceType.VECTOR_STORE, provider.list_vector_stores),
    ):
        listed = 0
        for raw in lister():
            beat()
            obj = _as_dict(raw)
            obj.setdefault("object", resource_type)
            outcome = resources_record(tenant=None, obj=obj, seen_at=timezone.now(), openai_project=project_id,
                                       listed=True)
            counts[f"{resource_type}:{outcome}"] = counts.get(f"{resource_type}:{outcome}", 0) + 1
            listed += 1
            if resource_type == ResourceType.VECTOR_STORE:
                store = VectorStore.objects.unscoped().get(openai_id=obj["id"])
                file_ids = []
                for position, listed_file in enumerate(provider.list_vector_store_files(obj["id"]), 1):
                    file_ids.append(_as_dict(listed_file).get("id"))
                    if position % 100 == 0:  # a page of them (a store holds up to 10,000)
                        beat()
                beat()
                _file_attach([f for f in file_ids if f], field="vector_store_openai_ids",
                             owner_id=store.openai_id, tenant_id=store.tenant_id)
                files_of_store[store.openai_id] = {f for f in file_ids if f}
            if listed % 500 == 0:
                say(f"{project_id} {resource_type}: {listed} listed")
        say(f"{project_id} {resource_type}: {listed} listed")


# --- threads taken for gone: the repair ------------------------------------------------------------------


@dataclass
class GoneRecheck:
    asked: int = 0
    restored: list = dataclass_field(default_factory=list)  # (openai_id, project)
    unreachable: dict = dataclass_field(default_factory=dict)
    last_pk: int = 0  # the last thread asked about: --after continues from it
    stopped: str = ""  # why the run stopped early (OpenAI rate-limited or down), if it did


GONE_RECHECK_PAGE = 500


def threads_recheck_gone(*, provider=None, dry_run: bool = False, limit: int | None = None, after: int = 0,
                         progress: Callable[[str], None] | None = None) -> GoneRecheck:
    """Ask every OpenAI project RunLedger can reach about the threads and conversations the ledger has as
    gone at OpenAI (a 404 to a sweep), and restore the ones a project still holds, with that project, so the
    next sweep deletes them with its key. Before sweeps reached each project with its own key, every other
    project's thread answered the default key 404 and was recorded as gone; OpenAI lists no threads, so the
    hourly inventory cannot find them as it finds stores. Bounded by `limit`, in pages of threads in id
    order from `after` (the result's `last_pk` continues a bounded run); a project whose answers fail is
    left out and named. With `dry_run` it only says what it would restore. Audited per restored thread and
    once for the run."""
    say = progress or (lambda message: None)
    providers = _providers(provider)
    reachable = {}
    result = GoneRecheck()
    for project_id in object_project_ids():
        try:
            reachable[project_id] = providers.for_project(project_id)
        except ProjectKeyMissing as exc:
            result.unreachable[project_id] = str(exc)
    gone = (Thread.objects.unscoped().filter(status=Thread.Status.DELETED, deletion_reason__startswith=GONE_REASON)
            .order_by("pk"))
    result.last_pk = after
    try:
        while limit is None or result.asked < limit:
            page = list(gone.filter(pk__gt=result.last_pk).values("pk", "openai_id", "kind", "tenant_id")
                        [:GONE_RECHECK_PAGE])
            if not page:
                break
            for row in page[: None if limit is None else limit - result.asked]:
                kind = ResourceType.CONVERSATION if row["kind"] == ThreadKind.CONVERSATION else ResourceType.THREAD
                holder, refused = _project_holding(reachable.__getitem__, list(reachable), kind, row["openai_id"])
                for project_id, why in refused.items():  # a refused key: left out for the rest of the run
                    result.unreachable[project_id] = why
                    del reachable[project_id]
                result.last_pk = row["pk"]  # asked in every project it could be: --after continues here
                result.asked += 1
                if holder is not None and (dry_run or _thread_restore(row, holder)):
                    result.restored.append((row["openai_id"], holder))
            say(f"{result.asked} asked, {len(result.restored)} still at OpenAI")
    except ProviderError as exc:
        # A rate limit or OpenAI down (after the client's retries): stopped before the thread it was on.
        result.stopped = str(exc)
    if not dry_run:
        audit_record(action="lifecycle.threads_recheck_gone", target_type="thread", target_id="",
                     actor_label="command:recheck_gone",
                     data={"asked": result.asked, "restored": len(result.restored), "unreachable": result.unreachable,
                           "after": after, "last_pk": result.last_pk, "stopped": result.stopped})
    return result


def _thread_restore(row: dict, project_id: str) -> bool:
    """Restore one thread a project still holds; False if it is no longer the deleted row that was read."""
    with transaction.atomic():
        restored = Thread.objects.unscoped().filter(pk=row["pk"], status=Thread.Status.DELETED).update(
            status=Thread.Status.ACTIVE, deleted_at=None, deletion_reason="", openai_project=project_id)
        if restored:
            audit_record(action="lifecycle.thread.restore", target_type=row["kind"], target_id=row["openai_id"],
                         actor_label="command:recheck_gone", tenant_id=row["tenant_id"],
                         data={"openai_project": project_id, "why": "taken for gone; its project still holds it"})
        return bool(restored)


# --- orphans: staff actions -----------------------------------------------------------------------------


def _resource_get(resource_type: str, pk: int):
    model = RESOURCE_MODELS.get(resource_type)
    if model is None:
        raise LifecycleError(f"resource_type must be one of {', '.join(RESOURCE_MODELS)}.")
    return model.objects.unscoped().get(pk=pk)


def resource_assign(*, resource_type: str, pk: int, tenant: Tenant, actor) -> object:
    resource = _resource_get(resource_type, pk)
    previous = resource.tenant_id
    resource.tenant, resource.tenant_source = tenant, "staff"
    resource.save(update_fields=["tenant", "tenant_source"])
    if resource_type == ResourceType.VECTOR_STORE:
        # Orphan files in the store follow it (JSON containment lookups differ by database: filter here).
        for file in StoredFile.objects.unassigned().filter(status=ResourceStatus.ACTIVE).exclude(vector_store_openai_ids=[]):
            if resource.openai_id in (file.vector_store_openai_ids or []):
                file.tenant, file.tenant_source = tenant, "vector_store"
                file.save(update_fields=["tenant", "tenant_source"])
    audit_record(action="lifecycle.resource.assign", target_type=resource_type, target_id=resource.openai_id,
                 actor=actor, tenant_id=tenant.pk, data={"previous_tenant_id": previous})
    orphan_alerts_refresh()
    return resource


def resource_delete(*, resource_type: str, pk: int, actor, provider=None) -> str:
    """Delete one resource now (staff, from the orphans list). Refused for a tenant on legal hold."""
    resource = _resource_get(resource_type, pk)
    if resource.tenant_id and resource.tenant.legal_hold:
        raise SweepRefused(f"{resource.tenant.slug} is on legal hold; lift the hold first.")
    if resource.status == ResourceStatus.DELETED:
        return Outcome.ALREADY_GONE
    providers = _providers(provider)
    project = resource.openai_project or settings.OPENAI_PROJECT_ID
    try:
        outcome = _staff_provider_delete(providers.for_project(project), resource_type, resource.openai_id)
    except ProjectKeyMissing as exc:
        raise LifecycleError(f"{resource.openai_id} is in OpenAI project {project}, which RunLedger "
                             f"cannot reach: {exc}") from exc
    if outcome == Outcome.ALREADY_GONE:
        # A 404 is "gone" only if no other project holds it (a row recorded under the wrong project).
        holder, unreachable = _project_holding(providers.for_project, other_projects(project), resource_type,
                                               resource.openai_id)
        if holder is not None:
            _project_correct(resource_type, resource.openai_id, holder, actor=actor)
            outcome = _staff_provider_delete(providers.for_project(holder), resource_type, resource.openai_id)
        elif unreachable:
            raise LifecycleError(f"{resource.openai_id}: {not_found_unasked(project, unreachable)}: nothing recorded.")
    now = timezone.now()
    reason = "deleted by staff" if outcome == Outcome.DELETED else f"{GONE_REASON} (staff delete)"
    with transaction.atomic():
        # Valued while the store still counts as live: the saving is the bill with it minus the bill without
        # it, and once marked deleted it is no longer in the total (a 1 GiB store beside 0.5 GiB read $0).
        saved_usd_per_day = (_vector_store_saving(resource.usage_bytes, now, openai_id=resource.openai_id)
                             if resource_type == ResourceType.VECTOR_STORE and outcome == Outcome.DELETED else ZERO)
        _resource_mark_deleted(resource_type=resource_type, openai_id=resource.openai_id, reason=reason, at=now)
        _staff_delete_audit(resource, resource_type, outcome, reason, actor, now, saved_usd_per_day)
        audit_record(action="lifecycle.resource.delete", target_type=resource_type, target_id=resource.openai_id,
                     actor=actor, tenant_id=resource.tenant_id, data={"outcome": outcome})
    orphan_alerts_refresh()
    return outcome


def orphan_cause_key(project_id: str) -> str:
    return f"orphaned_resource:{project_id}"


def orphan_alerts_refresh(*, now: dt.datetime | None = None) -> OrphanAlerts:
    """One alert per OpenAI project whose vector stores with no tenant the organisation pays for: deleting them
    would take something off the day's storage bill (the free GB applied; an expired store is not billed).
    Files and idle containers cost nothing (the stores that hold a file bill its bytes) and raise none. An open
    alert whose project no longer has such stores (assigned, deleted, expired, or within the free GB) is
    resolved; one whose stores come back is opened again. Run after every inventory sync, every staff
    assignment or deletion of an orphan, and every vector-store sweep that finishes."""
    from apps.alerts.models import Alert
    from apps.alerts.services import AlertSpec, alerts_raise_many, alerts_resolve
    from apps.pricing.rating import bytes_to_gb

    now = now or timezone.now()
    rate = storage_rate(now.date())
    total = billed_storage_bytes(now)
    stores_by_project: dict[str, list[int]] = {}  # project -> [stores, bytes]
    for project, stores, size in (VectorStore.objects.unassigned()
                                  .filter(billed_stores(now), status=ResourceStatus.ACTIVE, usage_bytes__gt=0)
                                  .values_list("openai_project").annotate(Count("pk"), Sum("usage_bytes"))
                                  .order_by()):
        counted = stores_by_project.setdefault(project or settings.OPENAI_PROJECT_ID, [0, 0])
        counted[0] += stores
        counted[1] += size
    specs = []
    for project, (stores, size) in sorted(stores_by_project.items()):
        saving = quantize_ledger(storage_daily_saving(total, size, rate))
        if saving <= 0:
            continue
        specs.append(AlertSpec(
            kind=Alert.Kind.ORPHANED_RESOURCE, cause_key=orphan_cause_key(project),
            title=f"Vector stores with no tenant are billed in OpenAI project {project}",
            message=(f"When raised: {stores:,} store{'s' if stores != 1 else ''} with no tenant, "
                     f"{bytes_to_gb(size):.2f} GB, {money_text(saving)} a day of the storage bill. Assign each to "
                     "a tenant or delete it on the Orphans page; this alert resolves once no store of the project "
                     "without a tenant costs anything."),
            data={"openai_project": project, "vector_stores": stores, "usage_bytes": size,
                  "usd_per_day": str(saving)},
        ))
    wanted = [spec.cause_key for spec in specs]
    resolved = alerts_resolve(
        alerts=Alert.unscoped_objects.filter(kind=Alert.Kind.ORPHANED_RESOURCE).exclude(cause_key__in=wanted),
        reason="No vector store of the project without a tenant is billed any more (assigned, deleted or expired, "
               "or the storage is within the free GB).")
    raised = [alert.pk for alert in alerts_raise_many(specs)]
    return OrphanAlerts(raised=raised, resolved=resolved)


_SWEEP_KIND_OF = {ResourceType.THREAD: SweepKind.THREADS, ResourceType.CONVERSATION: SweepKind.THREADS,
                  ResourceType.VECTOR_STORE: SweepKind.VECTOR_STORES, ResourceType.FILE: SweepKind.FILES,
                  ResourceType.CONTAINER: SweepKind.CONTAINERS}


def _staff_delete_audit(resource, resource_type: str, outcome: str, reason: str, actor, now: dt.datetime,
                        saved_usd_per_day: Decimal) -> None:
    """A staff delete goes in the deletion audit (/lifecycle/audit/ and its CSV) beside the sweeps': as a
    finished one-item sweep requested by that person."""
    usage_bytes = int(getattr(resource, "usage_bytes", None) or getattr(resource, "bytes", None) or 0)
    sweep = Sweep.objects.unscoped().create(
        kind=_SWEEP_KIND_OF[resource_type], tenant_id=resource.tenant_id, dry_run=False, as_of=now,
        status=Sweep.Status.FINISHED, planned_at=now, started_at=now, finished_at=now, planned_count=1,
        counts={outcome: 1}, requested_by=actor if getattr(actor, "pk", None) else None,
        requested_label="staff: delete now",
    )
    SweepItem.objects.unscoped().create(
        sweep=sweep, tenant_id=resource.tenant_id, resource_type=resource_type, openai_id=resource.openai_id,
        openai_project=resource.openai_project, rule="deleted by staff (delete now)", dry_run=False,
        state=SweepItem.State.DONE, outcome=outcome, detail=reason, processed_at=now, usage_bytes=usage_bytes,
        saved_usd_per_day=saved_usd_per_day,
    )


def _staff_provider_delete(provider, resource_type: str, openai_id: str) -> str:
    """_provider_delete for a staff delete: an error that may have come after OpenAI deleted the object (the
    provider's `maybe_carried_out`: a 5xx, a timeout or a lost connection on this try or an earlier one) is
    DeleteOutcomeUnknown, not the refusal ("nothing changed") a 4xx before anything happened is."""
    try:
        return _provider_delete(provider, resource_type, openai_id)
    except ProviderError as exc:
        if not exc.maybe_carried_out:
            raise
        raise DeleteOutcomeUnknown(
            f"Whether OpenAI deleted {openai_id} is unknown: {exc}. A server error or timeout can come after the "
            "delete was carried out. RunLedger's row stays as it was (not marked deleted, not audited); the hourly "
            "inventory sync settles it, marking it gone if OpenAI no longer lists it. To delete it now, try "
            "again later."
        ) from exc


def _provider_delete(provider, resource_type: str, openai_id: str) -> str:
    deleter = {
        ResourceType.THREAD: provider.delete_thread,
        ResourceType.CONVERSATION: provider.delete_conversation,
        ResourceType.VECTOR_STORE: provider.delete_vector_store,
        ResourceType.FILE: provider.delete_file,
        ResourceType.CONTAINER: provider.delete_container,
    }[resource_type]
    try:
        return _deleted_outcome(deleter(openai_id))
    except Exception as exc:
        if is_not_found(exc):
            return Outcome.ALREADY_GONE
        raise


# --- sweeps: create ---------------------------------------------------------------------------------------


def _lock_key(kind: str) -> str:
    return f"lifecycle:sweep-lock:{kind}"


def sweep_create(
    *,
    kind: str,
    tenant: Tenant | None = None,
    dry_run: bool = False,
    as_of: dt.datetime | None = None,
    preview_of: Sweep | None = None,
    requested_by=None,
    requested_label: str = "",
) -> Sweep:
    """A new sweep, pending. A real sweep confirming a dry run (`preview_of`) deletes that preview's list,
    each item re-checked first. Refused for a tenant on legal hold, and while another real sweep of the
    same kind is unfinished (one at a time per kind)."""
    if kind not in SweepKind.values:
        raise SweepRefused(f"kind must be one of {', '.join(SweepKind.values)}.")
    if preview_of is not None:
        preview_of.refresh_from_db()
        if not preview_of.dry_run or preview_of.kind != kind:
            raise SweepRefused("preview_of must be a dry run of the same kind.")
        if preview_of.status == Sweep.Status.FAILED:
            raise SweepRefused("That dry run failed, so it has no list to confirm; start a new dry run.")
        if preview_of.status != Sweep.Status.FINISHED:
            raise SweepRefused("That dry run has not finished yet; wait for its preview, then confirm.")
        if dry_run:
            raise SweepRefused("A confirmation is a real run.")
        if preview_of.confirmations.exists():
            raise SweepRefused("That preview was already confirmed; start a new dry run.")
        if tenant is not None and tenant.pk != preview_of.tenant_id:
            # A confirmation deletes exactly the preview's list: never more tenants than were asked for.
            covers = f"tenant {preview_of.tenant.slug}" if preview_of.tenant_id else "every tenant"
            raise SweepRefused(f"Dry run {preview_of.pk} covers {covers}, not {tenant.slug}: confirm it without a "
                               f"tenant, or start a dry run for {tenant.slug} and confirm that.")
        tenant, as_of = preview_of.tenant, preview_of.as_of
    if tenant is not None and tenant.legal_hold:
        raise SweepRefused(f"{tenant.slug} is on legal hold: nothing of it is ever swept.")
    with transaction.atomic():
        if not dry_run:
            busy = Sweep.objects.unscoped().select_for_update().filter(
                kind=kind, dry_run=False, status__in=[Sweep.Status.PENDING, Sweep.Status.RUNNING]
            ).first()
            if busy is not None:
                raise SweepBusy(f"Sweep {busy.pk} ({kind}) is still {busy.status}; wait for it to finish.")
        try:
            with transaction.atomic():
                sweep = Sweep.objects.create(
                    kind=kind, tenant=tenant, dry_run=dry_run, as_of=as_of or timezone.now(), preview_of=preview_of,
                    requested_by=requested_by if getattr(requested_by, "pk", None) else None,
                    requested_label=requested_label,
                )
        except IntegrityError as exc:  # a concurrent request created it first (see Sweep.Meta.constraints)
            if preview_of is not None:
                raise SweepRefused("That preview was already confirmed; start a new dry run.") from exc
            raise SweepBusy(f"Another real {kind} sweep was just started; wait for it to finish.") from exc
    audit_record(
        action="lifecycle.sweep.create", target_type="sweep", target_id=sweep.pk, actor=requested_by,
        actor_label=requested_label, tenant_id=tenant.pk if tenant else None,
        data={"kind": kind, "dry_run": dry_run, "preview_of": preview_of.pk if preview_of else None,
              "as_of": sweep.as_of.isoformat()},
    )
    return sweep


# --- sweeps: planning ------------------------------------------------------------------------------------


def _eligible_tenants(sweep: Sweep) -> list[Tenant]:
    tenants = Tenant.objects.filter(legal_hold=False)
    if sweep.tenant_id:
        tenants = tenants.filter(pk=sweep.tenant_id)
    return list(tenants)


def _sweep_includes_unassigned(sweep: Sweep) -> bool:
    return sweep.tenant_id is None and bool(setting("LIFECYCLE_SWEEP_UNASSIGNED"))


class _UtcMinute(Func):
    """A timestamp as 'YYYY-MM-DD HH:MM' in UTC, the text `f"{value:%Y-%m-%d %H:%M}"` gives in Python, so a
    rule written by SQL reads exactly as one written by Python."""

    output_field = CharField()
    template = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')"

    def as_sqlite(self, compiler, conn, **extra):
        # SQLite stores an aware datetime as UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]'.
        return self.as_sql(compiler, conn, template="substr(%(expressions)s, 1, 16)", **extra)


def _thread_candidates(sweep: Sweep) -> QuerySet | None:
    """Every thread/conversation the sweep would delete, as SweepItem columns (None: no tenant is eligible).
    One queryset, so planning in one statement or in many pages selects the same rows with the same rule."""
    tenants = _eligible_tenants(sweep)
    if not tenants:
        return None
    # One condition per distinct retention, not per tenant: a sweep over every tenant stays a short query.
    by_days: dict[int, list[int]] = {}
    for t in tenants:
        by_days.setdefault(t.thread_retention_days, []).append(t.pk)
    selected = Q()
    for days, ids in by_days.items():
        selected |= Q(tenant_id__in=ids, last_activity_at__lt=moment_shifted(sweep.as_of, days=-days))
    rule_prefix = Case(
        *(When(tenant_id__in=ids, then=Value(f"thread_retention_days={days}: last activity "))
          for days, ids in by_days.items()),
        default=Value(""), output_field=CharField(),
    )
    return (
        Thread.objects.unscoped().filter(status=Thread.Status.ACTIVE).filter(selected)
        .annotate(
            item_tenant_id=F("tenant_id"),
            item_resource_type=Case(When(kind=ThreadKind.CONVERSATION, then=Value(ResourceType.CONVERSATION)),
                                    default=Value(ResourceType.THREAD), output_field=CharField()),
            item_openai_id=F("openai_id"),
            item_openai_project=F("openai_project"),
            item_last_activity_at=F("last_activity_at"),
            item_rule=Concat(rule_prefix, _UtcMinute("last_activity_at"), Value(" UTC"), output_field=CharField()),
        )
    )


def _confirmed_candidates(sweep: Sweep) -> QuerySet:
    """A confirmation's items: its preview's "would delete" list, copied as the preview planned it, and the
    items the preview found already gone at OpenAI: the real sweep records those gone in the ledger (a dry run
    writes nothing), or the threads OpenAI already deleted stayed "overdue" on the tenant page after the
    confirmed sweep."""
    return (
        SweepItem.objects.unscoped().filter(sweep_id=sweep.preview_of_id,
                                            outcome__in=[Outcome.WOULD_DELETE, Outcome.ALREADY_GONE])
        .annotate(
            item_tenant_id=F("tenant_id"), item_resource_type=F("resource_type"), item_openai_id=F("openai_id"),
            item_openai_project=F("openai_project"), item_rule=F("rule"),
            item_last_activity_at=F("last_activity_at"), item_usage_bytes=F("usage_bytes"),
            item_fingerprint=F("fingerprint"),
        )
    )


def _live_thread_ids(candidates: Iterable[str]) -> set[str]:
    return set(
        Thread.objects.unscoped().filter(openai_id__in=list(candidates), status=Thread.Status.ACTIVE)
        .values_list("openai_id", flat=True)
    )


def _threads_naming(resource_id: str) -> set[str]:
    return set(ThreadToolResource.objects.unscoped().filter(resource_openai_id=resource_id)
               .values_list("thread_openai_id", flat=True))


def _threads_of(rows: Sequence[VectorStore | StoredFile]) -> dict[str, set[str]]:
    """openai_id -> the threads that use each store or file: those recorded on its row (from a sweep's
    re-check or the resource itself) and those whose tool_resources named it when ingested, of its own
    tenant only (one tenant's report naming another's store must not keep it), or of any for an orphan."""
    threads = {row.openai_id: set(row.thread_openai_ids or []) for row in rows}
    owners = {row.openai_id: row.tenant_id for row in rows}
    named = ThreadToolResource.objects.unscoped().filter(resource_openai_id__in=list(threads))
    for resource_id, thread_id, tenant_id in named.values_list("resource_openai_id", "thread_openai_id", "tenant_id"):
        if owners[resource_id] is None or owners[resource_id] == tenant_id:
            threads[resource_id].add(thread_id)
    return threads


def _vector_store_candidates(sweep: Sweep, after_pk: int, limit: int) -> list[tuple[int, SweepItem]]:
    tenants = {t.pk: t for t in _eligible_tenants(sweep)}
    rule = Q()
    for t in tenants.values():
        rule |= Q(tenant_id=t.pk, activity__lt=moment_shifted(sweep.as_of, days=-t.vector_store_idle_days))
    unassigned_days = setting("LIFECYCLE_UNASSIGNED_VECTOR_STORE_IDLE_DAYS")
    if _sweep_includes_unassigned(sweep):
        rule |= Q(tenant__isnull=True, activity__lt=moment_shifted(sweep.as_of, days=-unassigned_days))
    if not rule:
        return []
    rows = list(
        VectorStore.objects.unscoped().annotate(activity=Coalesce("last_active_at", "created_at"))
        .filter(status=ResourceStatus.ACTIVE, pk__gt=after_pk).filter(rule).order_by("pk")[:limit]
    )
    threads = _threads_of(rows)
    live = _live_thread_ids(t for ids in threads.values() for t in ids)
    out = []
    for row in rows:
        if live.intersection(threads[row.openai_id]):
            out.append((row.pk, None))  # a live thread uses it: never a candidate
            continue
        days = tenants[row.tenant_id].vector_store_idle_days if row.tenant_id else unassigned_days
        out.append((row.pk, SweepItem(
            tenant_id=row.tenant_id, resource_type=ResourceType.VECTOR_STORE, openai_id=row.openai_id,
            openai_project=row.openai_project, last_activity_at=row.activity, usage_bytes=row.usage_bytes,
            rule=f"vector_store_idle_days={days}: last active {row.activity:%Y-%m-%d %H:%M} UTC",
        )))
    return out


def _file_candidates(sweep: Sweep, after_pk: int, limit: int) -> list[tuple[int, SweepItem]]:
    min_age = setting("LIFECYCLE_FILE_MIN_AGE_DAYS")
    tenant_filter = Q(tenant_id__in=[t.pk for t in _eligible_tenants(sweep)])
    if _sweep_includes_unassigned(sweep):
        tenant_filter |= Q(tenant__isnull=True)
    rows = list(
        StoredFile.objects.unscoped().filter(tenant_filter)
        .filter(status=ResourceStatus.ACTIVE, pk__gt=after_pk, created_at__lt=moment_shifted(sweep.as_of, days=-min_age))
        .order_by("pk")[:limit]
    )
    live_stores = set(VectorStore.objects.unscoped().filter(
        status=ResourceStatus.ACTIVE, openai_id__in=[v for row in rows for v in row.vector_store_openai_ids or []]
    ).values_list("openai_id", flat=True))
    threads = _threads_of(rows)
    live_threads = _live_thread_ids(t for ids in threads.values() for t in ids)
    out = []
    for row in rows:
        if live_stores.intersection(row.vector_store_openai_ids or []) or live_threads.intersection(threads[row.openai_id]):
            out.append((row.pk, None))
            continue
        out.append((row.pk, SweepItem(
            tenant_id=row.tenant_id, resource_type=ResourceType.FILE, openai_id=row.openai_id,
            openai_project=row.openai_project, last_activity_at=row.created_at, usage_bytes=row.bytes,
            rule=f"file attached to nothing live, older than {min_age} days (created {row.created_at:%Y-%m-%d})",
        )))
    return out


def _container_candidates(sweep: Sweep, after_pk: int, limit: int) -> list[tuple[int, SweepItem]]:
    idle = setting("LIFECYCLE_CONTAINER_IDLE_MINUTES")
    tenant_filter = Q(tenant_id__in=[t.pk for t in _eligible_tenants(sweep)])
    if _sweep_includes_unassigned(sweep):
        tenant_filter |= Q(tenant__isnull=True)
    cutoff = moment_shifted(sweep.as_of, minutes=-idle)
    rows = (
        Container.objects.unscoped().annotate(activity=Coalesce("last_active_at", "created_at"))
        .filter(tenant_filter).filter(status=ResourceStatus.ACTIVE, pk__gt=after_pk)
        .filter(Q(openai_status="expired") | Q(activity__lt=cutoff)).order_by("pk")[:limit]
    )
    return [(row.pk, SweepItem(
        tenant_id=row.tenant_id, resource_type=ResourceType.CONTAINER, openai_id=row.openai_id,
        openai_project=row.openai_project, last_activity_at=row.activity,
        rule=("container expired at OpenAI" if row.openai_status == "expired"
              else f"container idle over {idle} minutes (last active {row.activity:%Y-%m-%d %H:%M} UTC)"),
    )) for row in rows]


# Kinds planned row by row in Python (their rules read JSON lists of attachments); threads and
# confirmations are planned set-based (_plan_step_set).
CANDIDATES = {
    SweepKind.VECTOR_STORES: _vector_store_candidates,
    SweepKind.FILES: _file_candidates,
    SweepKind.CONTAINERS: _container_candidates,
}


def _set_plan_page() -> int:
    return int(setting("LIFECYCLE_SWEEP_SET_PLAN_PAGE"))


def _insert_items(sweep: Sweep, candidates: QuerySet) -> None:
    """INSERT ... SELECT the candidates (annotated item_<field> columns) as items of the sweep, in the source's
    primary-key order; a resource already planned is left as it is (ON CONFLICT DO NOTHING on the unique
    (sweep, resource)), so a repeated step adds nothing. Every other column gets the model's default."""
    select, params = candidates.annotate(item_source_pk=F("pk")).values(
        "item_source_pk", *[name for name in candidates.query.annotations if name.startswith("item_")]
    ).query.sql_with_params()
    given = {name.removeprefix("item_") for name in candidates.query.annotations if name.startswith("item_")}
    qn = connection.ops.quote_name
    fixed = {"sweep_id": sweep.pk, "dry_run": sweep.dry_run}
    columns, values, value_params = [], [], []
    for field in SweepItem._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(qn(field.column))
        if field.attname in given:
            values.append(f"candidate.{qn('item_' + field.attname)}")
            continue
        value = fixed[field.attname] if field.attname in fixed else field.get_default()
        values.append("%s")
        value_params.append(field.get_db_prep_save(value, connection))
    # "WHERE 1 = 1": SQLite would otherwise read ON CONFLICT as a join constraint of the SELECT.
    sql = (f"INSERT INTO {qn(SweepItem._meta.db_table)} ({', '.join(columns)}) "
           f"SELECT {', '.join(values)} FROM ({select}) AS candidate WHERE 1 = 1 "
           f"ORDER BY candidate.{qn('item_source_pk')} ON CONFLICT DO NOTHING")
    with connection.cursor() as cursor:
        cursor.execute(sql, [*value_params, *params])


def _plan_step_set(sweep: Sweep) -> tuple[str, bool]:
    """One set-based planning step: the next page of source rows (threads, or the preview's items) by
    primary key, its candidates inserted by one statement. Returns the new cursor and whether the source
    is exhausted. Nothing is loaded into Python but the page's last key."""
    page = _set_plan_page()
    after = int(sweep.cursor or 0)
    if sweep.preview_of_id:
        source = SweepItem.objects.unscoped().filter(sweep_id=sweep.preview_of_id)
        candidates = _confirmed_candidates(sweep)
    else:
        source = Thread.objects.unscoped().all()
        candidates = _thread_candidates(sweep)
    # The page ends at the page-th source row after the cursor; fewer left means this is the last page.
    end = list(source.filter(pk__gt=after).order_by("pk").values_list("pk", flat=True)[page - 1:page])
    if candidates is not None:
        in_page = Q(pk__gt=after) & (Q(pk__lte=end[0]) if end else Q())
        _insert_items(sweep, candidates.filter(in_page))
    return (str(end[0]) if end else sweep.cursor), not end


def _plan_step(sweep: Sweep) -> bool:
    """Plan one page of items; True when planning is complete. Idempotent: items are unique per
    (sweep, resource), and the cursor only moves forward after the page is stored."""
    if sweep.planned_at is not None:
        return True
    with transaction.atomic():
        if sweep.preview_of_id or sweep.kind == SweepKind.THREADS:
            # Set-based: at a million threads, building SweepItem objects page by page in Python was the cost.
            cursor, exhausted = _plan_step_set(sweep)
        else:
            page = setting("LIFECYCLE_SWEEP_PLAN_PAGE")
            # Candidate functions return every examined row, with None for one that is not a candidate, so the
            # cursor moves past it and a short page means the table is exhausted.
            rows = CANDIDATES[sweep.kind](sweep, int(sweep.cursor or 0), page)
            exhausted = len(rows) < page
            items = [item for _pk, item in rows if item is not None]
            for item in items:
                item.sweep_id, item.dry_run = sweep.pk, sweep.dry_run
            SweepItem.objects.bulk_create(items, ignore_conflicts=True)
            cursor = str(rows[-1][0]) if rows else sweep.cursor
        update = {"cursor": cursor}
        if exhausted:
            update.update(planned_at=timezone.now(), cursor="",
                          planned_count=SweepItem.objects.unscoped().filter(sweep=sweep).count())
        Sweep.objects.unscoped().filter(pk=sweep.pk).update(**update)
    for name, value in update.items():
        setattr(sweep, name, value)
    return exhausted


# --- sweeps: processing one item -------------------------------------------------------------------------


@dataclass
class _Check:
    outcome: str | None  # None: still a candidate
    detail: str = ""
    last_activity_at: dt.datetime | None = None
    not_found: bool = False  # OpenAI answered 404 (in the project asked)
    expired: bool = False  # a vector store OpenAI has as expired: no longer billed, so deleting it saves nothing


def _cutoff_for(item: SweepItem, sweep: Sweep, tenant: Tenant | None) -> dt.datetime:
    if item.resource_type in (ResourceType.THREAD, ResourceType.CONVERSATION):
        return moment_shifted(sweep.as_of, days=-tenant.thread_retention_days)
    if item.resource_type == ResourceType.VECTOR_STORE:
        days = tenant.vector_store_idle_days if tenant else setting("LIFECYCLE_UNASSIGNED_VECTOR_STORE_IDLE_DAYS")
        return moment_shifted(sweep.as_of, days=-days)
    if item.resource_type == ResourceType.CONTAINER:
        return moment_shifted(sweep.as_of, minutes=-setting("LIFECYCLE_CONTAINER_IDLE_MINUTES"))
    return moment_shifted(sweep.as_of, days=-setting("LIFECYCLE_FILE_MIN_AGE_DAYS"))


def _recheck(provider, item: SweepItem, sweep: Sweep, tenant: Tenant | None) -> _Check:
    """Ask OpenAI (and the ledger, which ingest keeps current) whether the resource is still a candidate,
    immediately before deleting it."""
    cutoff = _cutoff_for(item, sweep, tenant)
    try:
        if item.resource_type == ResourceType.THREAD:
            return _recheck_thread(provider, item, sweep, cutoff)
        if item.resource_type == ResourceType.CONVERSATION:
            return _recheck_conversation(provider, item, sweep, cutoff)
        if item.resource_type == ResourceType.VECTOR_STORE:
            return _recheck_vector_store(provider, item, cutoff)
        if item.resource_type == ResourceType.FILE:
            return _recheck_file(provider, item)
        return _recheck_container(provider, item, cutoff)
    except Exception as exc:
        if is_not_found(exc):
            return _Check(Outcome.ALREADY_GONE, "not found at OpenAI", not_found=True)
        raise


_RETRIEVERS = {
    ResourceType.THREAD: "retrieve_thread",
    ResourceType.CONVERSATION: "retrieve_conversation",
    ResourceType.VECTOR_STORE: "retrieve_vector_store",
    ResourceType.FILE: "retrieve_file",
    ResourceType.CONTAINER: "retrieve_container",
}


def _ledger_model(resource_type: str):
    return Thread if resource_type in (ResourceType.THREAD, ResourceType.CONVERSATION) else RESOURCE_MODELS[resource_type]


@dataclass(frozen=True)
class _Recorded:
    """What the ledger has for an item's resource now: its tenant (None: an orphan), whether that tenant is on
    legal hold, the OpenAI project it lives in and, for a thread or conversation, its last activity (ingest
    moves it with every run reported)."""

    tenant_id: int | None
    legal_hold: bool
    openai_project: str
    last_activity_at: dt.datetime | None = None


def _recorded(item: SweepItem) -> _Recorded:
    """The ledger's tenant (with its legal hold) and project for the item's resource now, in one query by the
    resource's unique OpenAI id. Since the sweep was planned, staff may have re-assigned the resource, ingest
    adopted an orphan or a file followed its store into a tenant; the inventory or a later report may have
    corrected the project. A resource no longer in the ledger keeps what the item was planned with; the
    project falls back to the item's own, and "" reads as the default project."""
    model = _ledger_model(item.resource_type)
    activity = ("last_activity_at",) if model is Thread else ()
    row = (model.objects.unscoped().filter(openai_id=item.openai_id)
           .values_list("tenant_id", "tenant__legal_hold", "openai_project", *activity).first())
    if row is None:
        held = item.tenant_id is not None and Tenant.objects.filter(pk=item.tenant_id, legal_hold=True).exists()
        row = (item.tenant_id, held, "")
    tenant_id, legal_hold, project, *last_activity = row
    return _Recorded(tenant_id, bool(legal_hold), project or item.openai_project or settings.OPENAI_PROJECT_ID,
                     last_activity[0] if last_activity else None)


def _ownership_verdict(item: SweepItem, recorded: _Recorded) -> tuple[str, str] | None:
    """(outcome, detail) when who owns the item's resource now forbids deleting it, else None."""
    if recorded.tenant_id != item.tenant_id:
        # The cutoff, legal hold and archiving the item was planned (or previewed) under were another tenant's,
        # or none: the simplest safe answer is to keep it and let the next sweep plan it under its tenant now.
        return Outcome.SKIPPED_ACTIVE, "its tenant changed since the sweep was planned: the next sweep decides"
    if recorded.legal_hold:
        return Outcome.SKIPPED_LEGAL_HOLD, "tenant is on legal hold"
    return None


def _active_since_recheck(item: SweepItem, sweep: Sweep, tenant: Tenant | None,
                          recorded: _Recorded) -> tuple[str, str] | None:
    """(outcome, detail) when ingest recorded activity inside retention on the thread or conversation after
    its re-check (a run started while the archive was being listed, say), else None."""
    if recorded.last_activity_at is None or tenant is None:
        return None
    verdict = _active_verdict(recorded.last_activity_at, _cutoff_for(item, sweep, tenant), "last activity")
    if verdict.outcome is None:
        return None
    item.last_activity_at = recorded.last_activity_at
    return verdict.outcome, f"{verdict.detail} (recorded after its re-check)"


def _project_holding(lease: Callable, project_ids: Iterable[str], resource_type: str,
                     openai_id: str) -> tuple[str | None, dict[str, str]]:
    """project_holding for one resource, asked with its type's retrieve call."""
    holder, _, unreachable = project_holding(lease, project_ids,
                                             lambda provider: getattr(provider, _RETRIEVERS[resource_type])(openai_id))
    return holder, unreachable


def _project_correct(resource_type: str, openai_id: str, project: str, *, actor=None, actor_label: str = "") -> None:
    """Record that a resource lives in OpenAI `project`, not where the ledger had it (found there after a 404
    in the recorded one), audited. Only rows not already corrected are written, so two workers finding it
    together audit it once."""
    model = _ledger_model(resource_type)
    with transaction.atomic():
        rows = model.objects.unscoped().filter(openai_id=openai_id).exclude(openai_project=project)
        recorded = list(rows.select_for_update().values_list("openai_project", "tenant_id"))
        if not recorded or not rows.update(openai_project=project):
            return
        previous, tenant_id = recorded[0]
        audit_record(action="lifecycle.resource.project_correct", target_type=resource_type, target_id=openai_id,
                     actor=actor, actor_label=actor_label, tenant_id=tenant_id,
                     data={"openai_project": project, "previous": previous or settings.OPENAI_PROJECT_ID,
                           "why": "not found in the recorded OpenAI project; found in this one"})


def _ledger_thread(openai_id: str) -> Thread | None:
    return Thread.objects.unscoped().filter(openai_id=openai_id).first()


def _active_verdict(last: dt.datetime | None, cutoff: dt.datetime, what: str) -> _Check:
    if last is not None and last >= cutoff:
        return _Check(Outcome.SKIPPED_ACTIVE, f"{what} {last:%Y-%m-%d %H:%M:%S} UTC is inside retention", last)
    return _Check(None, last_activity_at=last)


def _recheck_thread(provider, item: SweepItem, sweep: Sweep, cutoff: dt.datetime) -> _Check:
    ledger = _ledger_thread(item.openai_id)
    if ledger is not None and ledger.status == Thread.Status.DELETED:
        return _Check(Outcome.ALREADY_GONE, "already deleted in the ledger")
    thread_obj = _as_dict(provider.retrieve_thread(item.openai_id))
    if ledger is not None and not sweep.dry_run:  # a dry run writes nothing but its own list
        _thread_attachments_record(ledger, thread_obj)
    candidates = [ledger.last_activity_at if ledger else None, _moment(thread_obj.get("created_at")),
                  _newest_timestamp(_first(provider.list_thread_runs(item.openai_id), 100)),
                  _newest_timestamp(_first(provider.list_thread_messages(item.openai_id), 100))]
    last = max((c for c in candidates if c), default=None)
    return _active_verdict(last, cutoff, "last activity")


def _recheck_conversation(provider, item: SweepItem, sweep: Sweep, cutoff: dt.datetime) -> _Check:
    """Conversation items carry no timestamps: an application can append to a conversation without RunLedger
    hearing of it (no response yet, or one not reported), so the ledger's last activity may be stale. The
    newest item's id is the conversation's fingerprint; a conversation is deleted only when it matches the one
    an earlier look recorded (its dry run, or an earlier sweep), i.e. nothing was added since. A real sweep
    that looks at a conversation for the first time keeps it: the next sweep deletes it if it is unchanged."""
    ledger = _ledger_thread(item.openai_id)
    if ledger is not None and ledger.status == Thread.Status.DELETED:
        return _Check(Outcome.ALREADY_GONE, "already deleted in the ledger")
    conversation = _as_dict(provider.retrieve_conversation(item.openai_id))
    newest = _first(provider.list_conversation_items(item.openai_id), 1)  # newest first
    fingerprint = str(_as_dict(newest[0]).get("id") or "") if newest else "empty"
    baseline = item.fingerprint or _earlier_fingerprint(item)
    item.fingerprint = fingerprint
    if baseline and baseline != fingerprint:
        seen = max(timezone.now(), sweep.as_of)
        if sweep.dry_run:
            # A dry run writes nothing, so it must not become the baseline of activity it did not act on either:
            # the next real sweep would find this fingerprint unchanged and delete a conversation in use.
            item.fingerprint = baseline
            return _Check(Outcome.SKIPPED_ACTIVE, "new items since RunLedger last looked at it: a real sweep "
                          "restarts its retention", seen)
        if ledger is not None:
            # Activity RunLedger was not told about: the conversation's retention restarts from when a sweep saw
            # it. Otherwise the next sweep, taking this new fingerprint as its baseline, would delete a
            # conversation in use.
            Thread.objects.unscoped().filter(pk=ledger.pk, last_activity_at__lt=seen).update(last_activity_at=seen)
        return _Check(Outcome.SKIPPED_ACTIVE, "new items since RunLedger last looked at it: retention restarts now",
                      seen)
    candidates = [ledger.last_activity_at if ledger else None, _moment(conversation.get("created_at")),
                  _newest_timestamp(newest)]
    last = max((c for c in candidates if c), default=None)
    verdict = _active_verdict(last, cutoff, "last activity")
    if verdict.outcome is None and not baseline and not sweep.dry_run:
        return _Check(Outcome.SKIPPED_ACTIVE, "first look at its items: deleted by a later sweep if none is added",
                      last)
    return verdict


def _earlier_fingerprint(item: SweepItem) -> str:
    """The newest item id an earlier sweep (dry or real) recorded for this conversation, if any."""
    return (
        SweepItem.objects.unscoped()
        .filter(resource_type=ResourceType.CONVERSATION, openai_id=item.openai_id, processed_at__isnull=False)
        .exclude(pk=item.pk).exclude(fingerprint="").order_by("-processed_at")
        .values_list("fingerprint", flat=True).first()
    ) or ""


def _recheck_vector_store(provider, item: SweepItem, cutoff: dt.datetime) -> _Check:
    store_obj = _as_dict(provider.retrieve_vector_store(item.openai_id))
    store = VectorStore.objects.unscoped().filter(openai_id=item.openai_id).first()
    if store is not None and store.status == ResourceStatus.DELETED:
        return _Check(Outcome.ALREADY_GONE, "already deleted")
    last = _moment(store_obj.get("last_active_at")) or _moment(store_obj.get("created_at"))
    if store_obj.get("usage_bytes") is not None:
        # OpenAI's figure now, 0 included (a store emptied since the last listing saves nothing); the planned
        # (ledger) bytes only when OpenAI does not say.
        item.usage_bytes = int(store_obj["usage_bytes"])
    verdict = _active_verdict(last, cutoff, "last active")
    expires_at = _moment(store_obj.get("expires_at"))
    verdict.expired = store_obj.get("status") == "expired" or (expires_at is not None and expires_at <= timezone.now())
    threads = _threads_of([store])[store.openai_id] if store is not None else _threads_naming(item.openai_id)
    if verdict.outcome is None and _live_thread_ids(threads):
        return _Check(Outcome.SKIPPED_ATTACHED, "attached to a live thread", last)
    return verdict


def _recheck_file(provider, item: SweepItem) -> _Check:
    provider.retrieve_file(item.openai_id)
    file = StoredFile.objects.unscoped().filter(openai_id=item.openai_id).first()
    if file is None:
        return _Check(None)
    if file.status == ResourceStatus.DELETED:
        return _Check(Outcome.ALREADY_GONE, "already deleted")
    live_store = VectorStore.objects.unscoped().filter(
        status=ResourceStatus.ACTIVE, openai_id__in=file.vector_store_openai_ids or []
    ).exists()
    if live_store or _live_thread_ids(_threads_of([file])[file.openai_id]):
        return _Check(Outcome.SKIPPED_ATTACHED, "attached to a live vector store or thread")
    # The ledger's attachments are as old as the last inventory sync (hourly): ask OpenAI whether any live
    # store the file could be in holds it now. A file in a store of its own tenant, or any store when the file
    # belongs to nobody; more stores than the bound to ask and the file is kept.
    # Only stores of the file's own project can hold it (and only they answer with this project's key).
    # A store recorded without its project (until the inventory lists it) may be in the file's too.
    stores = VectorStore.objects.unscoped().filter(
        project_q(item.openai_project or settings.OPENAI_PROJECT_ID) | Q(openai_project=""),
        status=ResourceStatus.ACTIVE)
    if file.tenant_id is not None:
        stores = stores.filter(Q(tenant_id=file.tenant_id) | Q(tenant__isnull=True))
    limit = setting("LIFECYCLE_FILE_RECHECK_MAX_STORES")
    store_ids = list(stores.order_by("openai_id").values_list("openai_id", flat=True)[:limit + 1])
    if len(store_ids) > limit:
        return _Check(Outcome.SKIPPED_ATTACHED, f"more than {limit} live vector stores to ask whether they hold it")
    for store_id in store_ids:
        try:
            provider.retrieve_vector_store_file(store_id, item.openai_id)
        except Exception as exc:
            if is_not_found(exc):
                continue
            raise
        return _Check(Outcome.SKIPPED_ATTACHED, f"attached to live vector store {store_id} at OpenAI")
    return _Check(None, last_activity_at=file.created_at)


def _recheck_container(provider, item: SweepItem, cutoff: dt.datetime) -> _Check:
    container_obj = _as_dict(provider.retrieve_container(item.openai_id))
    if container_obj.get("status") == "expired":
        return _Check(None, "expired at OpenAI", _moment(container_obj.get("last_active_at")))
    last = _moment(container_obj.get("last_active_at")) or _moment(container_obj.get("created_at"))
    return _active_verdict(last, cutoff, "last active")


def _archive_rows(provider, item: SweepItem) -> list | None:
    """The thread's messages (or conversation's items) to archive before deleting it, newest first as OpenAI
    lists them, or None when there are more than LIFECYCLE_ARCHIVE_MAX_ITEMS: an archive cut short would lose
    the oldest ones for good once the thread is deleted. Reads only, at most the limit + 1 rows."""
    limit = setting("LIFECYCLE_ARCHIVE_MAX_ITEMS")
    if item.resource_type == ResourceType.THREAD:
        rows = _first(provider.list_thread_messages(item.openai_id), limit + 1)
    else:
        rows = _first(provider.list_conversation_items(item.openai_id), limit + 1)
    return None if len(rows) > limit else rows


def _archive_store(item: SweepItem, rows: list) -> int:
    """Copy the rows _archive_rows read into RunLedger, oldest first; the number copied."""
    # OpenAI lists newest first: reversed, they are oldest first. Conversation items carry no timestamp, so
    # that order is the only one there is; thread messages are then sorted by time, and the stable sort keeps
    # messages of the same second in the order they were written.
    data = [_as_dict(row) for row in reversed(rows)]
    data.sort(key=lambda d: (d.get("created_at") or 0))
    ArchivedItem.objects.bulk_create([
        ArchivedItem(
            tenant_id=item.tenant_id, thread_openai_id=item.openai_id,
            item_openai_id=str(d.get("id") or f"position-{position}"), position=position,
            item_created_at=_moment(d.get("created_at")), data=d, sweep_item=item,
        ) for position, d in enumerate(data)
    ], ignore_conflicts=True)
    return len(data)


def storage_rate(on_date: dt.date):
    """The tool price version in effect on the date (its vector-storage price and free GB), or None: one
    query, read once by whatever prices many stores."""
    from apps.pricing.pricebook import PriceBook
    from apps.pricing.selectors import tool_rates_all

    return PriceBook([], tool_rates_all()).tool_rate(on_date)


def storage_daily_cost(total_bytes: int, rate) -> Decimal:
    """The organisation's storage bill for a day with `total_bytes` stored, at `rate` (storage_rate)."""
    from apps.pricing.rating import bytes_to_gb, rate_vector_storage

    if rate is None:
        return ZERO
    return rate_vector_storage(bytes_to_gb(total_bytes), 1, rate)


def storage_daily_saving(total_bytes: int, removed_bytes: int, rate) -> Decimal:
    """What the organisation's storage bill for a day drops by when `removed_bytes` of its `total_bytes` go (the
    free GB applied: nothing while what is left stays within it), at `rate` (storage_rate); exact, unquantized."""
    return storage_daily_cost(total_bytes, rate) - storage_daily_cost(total_bytes - removed_bytes, rate)


def billed_stores(at: dt.datetime) -> Q:
    """The vector stores OpenAI bills at `at`: it stops at a store's expires_at (an expired store keeps its
    bytes)."""
    return Q(expires_at__isnull=True) | Q(expires_at__gt=at)


def billed_storage_bytes(at: dt.datetime) -> int:
    """The bytes of every live store OpenAI bills at `at`: the bill the free GB comes off. Summed by the
    database: one row back, not one per live store (a sweep asks for every store it handles)."""
    return VectorStore.objects.unscoped().filter(billed_stores(at), status=ResourceStatus.ACTIVE).aggregate(
        total=Coalesce(Sum("usage_bytes"), 0))["total"]


def _vector_store_saving(usage_bytes: int, at: dt.datetime, *, openai_id: str, expired: bool = False) -> Decimal:
    """The drop in the organisation's daily storage bill from deleting the store `openai_id` of `usage_bytes`
    at `at` (free GB applied). An expired store (`expired`: OpenAI says so; or its recorded expires_at has
    passed) is no longer billed, so it saves nothing, and expired stores are no part of the bill it drops from."""
    if expired or VectorStore.objects.unscoped().filter(openai_id=openai_id, expires_at__lte=at).exists():
        return ZERO
    total = max(billed_storage_bytes(at), usage_bytes)
    rate = storage_rate(at.date())
    return quantize_ledger(storage_daily_saving(total, usage_bytes, rate))


class _ClaimLost(Exception):
    """This worker no longer holds its item or its sweep: another worker took it over after the lease or the
    heartbeat ran out (one provider call slower than the lease). It stops without writing anything; the new
    holder re-checks the item at OpenAI first and records the one outcome."""


def _claim_renew(*, sweep: Sweep, item: SweepItem, worker: str) -> None:
    """Push this worker's lease on the item and the sweep's heartbeat (and the kind lock) forward: two
    conditional UPDATEs, run before every provider call of the item. One item may need several slow calls
    (a thread's re-check is 3, then archive and delete; each can spend ~4 minutes in 429 retries), so a lease
    renewed only between items ran out while the item was still being worked on, and another worker
    claimed and deleted it too. The lease now only has to outlast a single call."""
    now = timezone.now()
    held = SweepItem.objects.unscoped().filter(
        pk=item.pk, state=SweepItem.State.CLAIMED, claimed_by=worker,
    ).update(claimed_at=now)
    if not held:
        raise _ClaimLost(f"sweep {sweep.pk}: {worker} lost its claim on item {item.pk} ({item.openai_id})")
    _sweep_heartbeat(sweep, worker, now)


def _sweep_heartbeat(sweep: Sweep, worker: str, now: dt.datetime) -> None:
    """This worker still runs the sweep: its heartbeat (and, for a real sweep, the kind lock) moves forward;
    _ClaimLost when another worker has taken the sweep over."""
    if not Sweep.objects.unscoped().filter(pk=sweep.pk, claimed_by=worker).update(heartbeat_at=now):
        raise _ClaimLost(f"sweep {sweep.pk} was taken over from {worker}")
    if not sweep.dry_run:
        _lock_refresh(sweep.kind, worker)


class _LeasedProvider:
    """The provider as one claimed item's processing sees it: every call renews the claim first, and so does
    every further page of a list (OpenAI lists are read 100 rows a request), where the work of a call is
    done while it is iterated."""

    PAGE_ROWS = 100

    def __init__(self, provider, renew: Callable[[], None]):
        self._provider = provider
        self._renew = renew

    def __getattr__(self, name):
        attribute = getattr(self._provider, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            self._renew()
            result = attribute(*args, **kwargs)
            return self._renewing(result) if isinstance(result, Iterator) else result

        return call

    def _renewing(self, rows: Iterator):
        for position, row in enumerate(rows, 1):
            yield row
            if position % self.PAGE_ROWS == 0:
                self._renew()  # the next row may need the next page


class _Transient(Exception):
    def __init__(self, message: str, *, rate_limited: bool = False, delete_sent: bool = False):
        super().__init__(message)
        # A rate limit says nothing about the item: it only slows the sweep and never uses up its attempts.
        self.rate_limited = rate_limited
        # The error answered the delete call itself, which OpenAI may have carried out all the same.
        self.delete_sent = delete_sent


def _process_item(providers: ProjectProviders, renew: Callable[[], None], sweep: Sweep, item: SweepItem,
                  tenants: dict[int, Tenant]) -> str:
    now = timezone.now()
    recorded = _recorded(item)
    kept = _ownership_verdict(item, recorded)
    if kept is not None:
        return _finish_item(item, *kept, now)
    # The tenant is the item's (checked just above): its policy as it is now decides the cutoff and archiving.
    tenant = tenants.get(item.tenant_id) if item.tenant_id else None
    if item.tenant_id and tenant is None:
        tenant = tenants[item.tenant_id] = Tenant.objects.get(pk=item.tenant_id)
    if tenant is not None:
        tenant.refresh_from_db(fields=["archive_before_delete", "thread_retention_days", "vector_store_idle_days"])

    def lease(project_id: str) -> _LeasedProvider:
        return _LeasedProvider(providers.for_project(project_id), renew)

    item.openai_project = recorded.openai_project
    try:
        # Only the resource's own project's key reaches it: with any other, OpenAI answers 404 ("gone").
        provider = lease(item.openai_project)
    except ProjectKeyMissing as exc:
        return _finish_item(item, Outcome.FAILED, f"kept: {exc}", now)
    try:
        check = _recheck(provider, item, sweep, tenant)
        if check.not_found:
            holder, unreachable = _project_holding(lease, other_projects(item.openai_project), item.resource_type,
                                                   item.openai_id)
            if holder is not None:
                # Recorded under the wrong project (reported without one, say): asked there, and the ledger
                # corrected, except by a dry run, which changes nothing and says what it found.
                recorded, item.openai_project = item.openai_project, holder
                if not sweep.dry_run:
                    _project_correct(item.resource_type, item.openai_id, holder, actor_label=f"sweep {sweep.pk}")
                provider = lease(holder)
                check = _recheck(provider, item, sweep, tenant)
                if sweep.dry_run:
                    check.detail = (f"{check.detail}; " if check.detail else "") + (
                        f"in OpenAI project {holder}, recorded under {recorded}: a real sweep corrects the ledger")
            elif unreachable:
                return _finish_item(item, Outcome.FAILED,
                                    f"kept: {not_found_unasked(item.openai_project, unreachable)}", now)
        if check.last_activity_at:
            item.last_activity_at = check.last_activity_at
        if check.outcome == Outcome.ALREADY_GONE and not sweep.dry_run:
            if item.delete_sent:  # our earlier delete went through; OpenAI only failed to say so
                if item.resource_type == ResourceType.VECTOR_STORE:
                    item.saved_usd_per_day = _vector_store_saving(item.usage_bytes, now, openai_id=item.openai_id)
                return _finish_deleted(item, sweep, Outcome.DELETED,
                                       "deleted: an earlier delete call went through, though OpenAI answered it "
                                       "with an error", now)
            return _finish_deleted(item, sweep, check.outcome, check.detail, now)
        if check.outcome is not None:
            return _finish_item(item, check.outcome, check.detail, now)
        if sweep.preview_of_id and _previewed_gone(sweep, item):
            # The preview offered it as already gone, not for deletion, yet OpenAI answers for it now (a project
            # whose key was configured since, say). A confirmation deletes only what its preview listed to delete.
            return _finish_item(item, Outcome.SKIPPED_ACTIVE, "its dry run found it already gone at OpenAI, so "
                                "did not list it to delete; it is there now: the next sweep decides", now)
        archiving = (item.resource_type in (ResourceType.THREAD, ResourceType.CONVERSATION)
                     and tenant is not None and tenant.archive_before_delete)
        # A dry run reads what the archive would copy too (the same bounded listing, nothing written): a thread
        # with more than the archive holds is kept by the real run, so its preview must not list it to delete.
        archive_rows = _archive_rows(provider, item) if archiving else None
        if archiving and archive_rows is None:
            return _finish_item(item, Outcome.FAILED, f"more than {setting('LIFECYCLE_ARCHIVE_MAX_ITEMS')} items "
                                "to archive: kept (raise LIFECYCLE_ARCHIVE_MAX_ITEMS or archive it by hand)", now)
        # Checked again after the last read at OpenAI, right before anything is archived or deleted: the
        # re-check and the archive's listing can take minutes of calls, and a hold placed, a re-assignment
        # made or a run reported meanwhile must still stop the delete. One query by the resource's unique id.
        recorded = _recorded(item)
        kept = _ownership_verdict(item, recorded) or _active_since_recheck(item, sweep, tenant, recorded)
        if kept is not None:
            return _finish_item(item, *kept, now)
        if item.resource_type == ResourceType.VECTOR_STORE:  # what deleting it saves, previewed or done
            item.saved_usd_per_day = _vector_store_saving(item.usage_bytes, now, openai_id=item.openai_id,
                                                          expired=check.expired)
        if sweep.dry_run:
            return _finish_item(item, Outcome.WOULD_DELETE, check.detail, now)
        if archiving:
            item.detail = f"archived {_archive_store(item, archive_rows)} items"
            item.archived = True
        # Recorded before the call: a worker killed after OpenAI carried the delete out, before the outcome
        # is written, leaves the item claimed; the worker that takes it over finds the resource gone, and this
        # says the delete was ours (deleted, with its saving), not someone else's (already_gone). Only a worker
        # killed between this write and the call while someone else deletes the resource would take their
        # delete for ours, a far narrower window than the one it closes.
        sent_before = item.delete_sent
        _item_delete_sent(item, True)
        try:
            outcome = _provider_delete(provider, item.resource_type, item.openai_id)
        except Exception as exc:
            # A 429 is a refusal, as is any error that is not transient: OpenAI did not carry the delete out,
            # so a 404 after it is someone else's delete (already_gone), not ours going through. Unless an
            # earlier try of the same call was answered with a 5xx or lost: that one may have deleted it.
            refused = not is_transient(exc) or (error_status(exc) == 429
                                                and not getattr(exc, "maybe_carried_out", False))
            if refused and not sent_before:
                _item_delete_sent(item, False)
            if is_transient(exc):
                raise _Transient(str(exc), rate_limited=error_status(exc) == 429, delete_sent=not refused) from exc
            raise
    except (_ClaimLost, _Transient):
        raise
    except Exception as exc:
        if is_transient(exc):
            raise _Transient(str(exc), rate_limited=error_status(exc) == 429) from exc
        logger.exception("sweep %s: %s %s failed", sweep.pk, item.resource_type, item.openai_id)
        return _finish_item(item, Outcome.FAILED, f"{type(exc).__name__}: {exc}"[:500], now)
    if outcome == Outcome.ALREADY_GONE:
        item.saved_usd_per_day = ZERO
    return _finish_deleted(item, sweep, outcome, item.detail, now)


def _previewed_gone(sweep: Sweep, item: SweepItem) -> bool:
    """Whether the dry run this sweep confirms found the item's resource already gone (one query by the
    preview item's unique key)."""
    return SweepItem.objects.unscoped().filter(
        sweep_id=sweep.preview_of_id, resource_type=item.resource_type, openai_id=item.openai_id,
        outcome=Outcome.ALREADY_GONE,
    ).exists()


def _item_delete_sent(item: SweepItem, sent: bool) -> None:
    """Whether a delete call for the item may have reached OpenAI, written while this worker holds its claim
    (else _ClaimLost: another worker has the item, and this one must not call OpenAI for it)."""
    if not SweepItem.objects.unscoped().filter(
        pk=item.pk, state=SweepItem.State.CLAIMED, claimed_by=item.claimed_by,
    ).update(delete_sent=sent):
        raise _ClaimLost(f"item {item.pk} ({item.openai_id}) is no longer claimed by {item.claimed_by}")
    item.delete_sent = sent


def _finish_deleted(item: SweepItem, sweep: Sweep, outcome: str, detail: str, now: dt.datetime) -> str:
    """Record a resource deleted now (or found gone) on the item and in the ledger, together: a worker that
    lost its claim meanwhile writes neither, so the ledger's deletion reason is the new holder's too."""
    reason = f"{item.rule} (sweep {sweep.pk})" if outcome == Outcome.DELETED else f"{GONE_REASON} (sweep {sweep.pk})"
    with transaction.atomic():
        _finish_item(item, outcome, detail, now)
        _resource_mark_deleted(resource_type=item.resource_type, openai_id=item.openai_id, reason=reason, at=now)
    return outcome


def _finish_item(item: SweepItem, outcome: str, detail: str, now: dt.datetime) -> str:
    """Record the item's outcome, only while this worker still holds its claim (`item.claimed_by` is the
    worker that claimed it): a worker whose claim was taken over writes nothing (_ClaimLost), so a late
    answer can never overwrite the audit the new holder wrote, and a recorded `deleted` is never replaced."""
    written = SweepItem.objects.unscoped().filter(
        pk=item.pk, state=SweepItem.State.CLAIMED, claimed_by=item.claimed_by,
    ).exclude(outcome=Outcome.DELETED).update(
        state=SweepItem.State.DONE, outcome=outcome, detail=(detail or "")[:500], processed_at=now,
        last_activity_at=item.last_activity_at, usage_bytes=item.usage_bytes,
        saved_usd_per_day=item.saved_usd_per_day, archived=item.archived, fingerprint=item.fingerprint,
        openai_project=item.openai_project,
    )
    if not written:
        raise _ClaimLost(f"item {item.pk} ({item.openai_id}) is no longer claimed by {item.claimed_by}")
    return outcome


# --- sweeps: batches, claiming, resumption ------------------------------------------------------------


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _claim_sweep(sweep_id: int, worker: str) -> bool:
    now = timezone.now()
    stale = now - dt.timedelta(seconds=setting("LIFECYCLE_SWEEP_STALE_SECONDS"))
    return bool(
        Sweep.objects.unscoped()
        .filter(pk=sweep_id, status__in=[Sweep.Status.PENDING, Sweep.Status.RUNNING])
        .filter(Q(claimed_by="") | Q(claimed_by=worker) | Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True))
        .update(claimed_by=worker, heartbeat_at=now, status=Sweep.Status.RUNNING,
                started_at=Coalesce(F("started_at"), now))
    )


def _claim_next_item(sweep: Sweep, worker: str) -> SweepItem | None:
    """The next unprocessed item, claimed with a conditional UPDATE so two workers never process one item.
    An item claimed by a worker that died (its lease ran out) is offered again."""
    lease = timezone.now() - dt.timedelta(seconds=setting("LIFECYCLE_ITEM_LEASE_SECONDS"))
    claimable = Q(state=SweepItem.State.PENDING) | Q(state=SweepItem.State.CLAIMED, claimed_at__lte=lease)
    # The first 20 claimable items by id, read as two ordered scans of (sweep, state, id) merged here: one
    # query with the OR read every pending item of the sweep to sort them (a million in a big sweep).
    items = SweepItem.objects.unscoped().filter(sweep=sweep).order_by("pk").values_list("pk", flat=True)
    pending = list(items.filter(state=SweepItem.State.PENDING)[:20])
    expired = list(items.filter(state=SweepItem.State.CLAIMED, claimed_at__lte=lease)[:20])
    for pk in sorted(pending + expired)[:20]:
        won = SweepItem.objects.unscoped().filter(pk=pk).filter(claimable).update(
            state=SweepItem.State.CLAIMED, claimed_by=worker, claimed_at=timezone.now(), attempts=F("attempts") + 1
        )
        if won:
            return SweepItem.objects.unscoped().get(pk=pk)
    return None


def _lock_acquire(kind: str, worker: str) -> bool:
    ttl = setting("LIFECYCLE_SWEEP_LOCK_SECONDS")
    if cache.add(_lock_key(kind), worker, ttl):
        return True
    holder = cache.get(_lock_key(kind))
    if holder == worker:
        return True
    if holder and _holder_is_dead(kind, holder):
        # The holder claimed a sweep of this kind and stopped heart-beating (a killed worker): its lock
        # would otherwise block the resumed sweep until the TTL runs out. The sweep claim (a conditional
        # UPDATE) still decides which of two stealers works.
        logger.warning("sweep lock %s: taking over from %s (its sweep's heartbeat is stale)", kind, holder)
        cache.set(_lock_key(kind), worker, ttl)
        return True
    return False


def _holder_is_dead(kind: str, holder: str) -> bool:
    stale = timezone.now() - dt.timedelta(seconds=setting("LIFECYCLE_SWEEP_STALE_SECONDS"))
    return Sweep.objects.unscoped().filter(
        kind=kind, dry_run=False, claimed_by=holder, status__in=[Sweep.Status.PENDING, Sweep.Status.RUNNING],
    ).filter(Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True)).exists()


def _lock_refresh(kind: str, worker: str) -> None:
    if cache.get(_lock_key(kind)) == worker:
        cache.touch(_lock_key(kind), setting("LIFECYCLE_SWEEP_LOCK_SECONDS"))


def _lock_release(kind: str, worker: str) -> None:
    if cache.get(_lock_key(kind)) == worker:
        cache.delete(_lock_key(kind))


def sweep_counts(sweep: Sweep) -> dict[str, int]:
    rows = SweepItem.objects.unscoped().filter(sweep=sweep).values("state", "outcome").annotate(n=Count("pk"))
    counts: dict[str, int] = {}
    for row in rows:
        key = row["outcome"] if row["state"] == SweepItem.State.DONE else row["state"]
        counts[key] = counts.get(key, 0) + row["n"]
    return counts


@dataclass
class BatchResult:
    sweep_id: int
    status: str  # "busy", "more", "waiting", "retry_later", "finished", "failed"
    processed: int
    counts: dict
    retry_reason: str = ""  # retry_later: "a rate limit", or what made OpenAI unreachable

    @property
    def wait_seconds(self) -> float:
        """How long to wait before the next batch: a rate limit's retry delay, or (status "waiting") until
        the oldest claim of a dead worker runs out of lease."""
        if self.status == "retry_later":
            return float(setting("LIFECYCLE_TRANSIENT_RETRY_SECONDS"))
        if self.status == "waiting":
            return sweep_lease_wait_seconds(sweep_id=self.sweep_id)
        return 0.0


def sweep_lease_wait_seconds(*, sweep_id: int) -> float:
    lease = setting("LIFECYCLE_ITEM_LEASE_SECONDS")
    oldest = (SweepItem.objects.unscoped().filter(sweep_id=sweep_id, state=SweepItem.State.CLAIMED)
              .order_by("claimed_at").values_list("claimed_at", flat=True).first())
    if oldest is None:
        return 0.0
    return max(0.5, (oldest + dt.timedelta(seconds=lease) - timezone.now()).total_seconds() + 0.5)


def sweep_run_batch(*, sweep_id: int, worker: str | None = None, provider=None,
                    batch_size: int | None = None,
                    after_item: Callable[[SweepItem, str], None] | None = None) -> BatchResult:
    """Plan and/or process one bounded batch of a sweep. Safe to call again at any time, from any worker:
    it only acts if it wins the sweep (and, for a real sweep, the per-kind lock), and it stops, writing
    nothing more, as soon as another worker has taken the sweep or its item over."""
    worker = worker or worker_id()
    sweep = Sweep.objects.unscoped().select_related("tenant").filter(pk=sweep_id).first()
    if sweep is None or sweep.is_done:
        return BatchResult(sweep_id, sweep.status if sweep else "missing", 0, sweep.counts if sweep else {})
    locked = sweep.dry_run or _lock_acquire(sweep.kind, worker)
    if not locked or not _claim_sweep(sweep.pk, worker):
        if locked and not sweep.dry_run:
            _lock_release(sweep.kind, worker)
        return BatchResult(sweep.pk, "busy", 0, sweep.counts)
    batch_size = batch_size or setting("LIFECYCLE_SWEEP_BATCH_SIZE")
    processed, status, retry_reason = 0, "more", ""
    # Every write of the batch to the sweep is conditional on this worker still holding it.
    mine = Sweep.objects.unscoped().filter(pk=sweep.pk, claimed_by=worker)
    try:
        sweep.refresh_from_db()
        if sweep.planned_at is None:
            # Planning pages count against the batch too, so one task invocation stays bounded.
            for _ in range(max(1, batch_size // 10)):
                if _plan_step(sweep):
                    break
            if sweep.planned_at is None:
                # Free the sweep, so the next batch (another worker id) plans on instead of reading "busy".
                mine.update(claimed_by="", batch_failures=0)
                return BatchResult(sweep.pk, "more", 0, sweep_counts(sweep))
        providers = _providers(provider)
        tenants: dict[int, Tenant] = {}
        max_attempts = setting("LIFECYCLE_MAX_ITEM_ATTEMPTS")
        ran_out = False
        while processed < batch_size:
            item = _claim_next_item(sweep, worker)
            if item is None:
                ran_out = True
                break
            if item.attempts > max_attempts:
                # Claimed again after every earlier worker stopped on it (killed, or its batch raised): an item
                # that keeps stopping its worker is given up like one whose transient errors never end.
                outcome = _finish_item(item, Outcome.FAILED, f"gave up after {item.attempts - 1} attempts: "
                                       "its worker stopped while processing it", timezone.now())
            else:
                renew = functools.partial(_claim_renew, sweep=sweep, item=item, worker=worker)
                try:
                    outcome = _process_item(providers, renew, sweep, item, tenants)
                except _Transient as exc:
                    if not exc.rate_limited and item.attempts >= max_attempts:
                        outcome = _finish_item(item, Outcome.FAILED,
                                               f"gave up after {item.attempts} attempts: {exc}"[:500], timezone.now())
                    else:
                        SweepItem.objects.unscoped().filter(pk=item.pk, claimed_by=worker).update(
                            state=SweepItem.State.PENDING, claimed_by="", claimed_at=None, detail=str(exc)[:500],
                            attempts=F("attempts") - (1 if exc.rate_limited else 0),
                            **({"delete_sent": True} if exc.delete_sent else {}))
                        status = "retry_later"
                        retry_reason = "a rate limit" if exc.rate_limited else f"an error reaching OpenAI ({exc})"
                        break
            processed += 1
            _sweep_heartbeat(sweep, worker, timezone.now())
            if after_item is not None:
                after_item(item, outcome)
        counts = sweep_counts(sweep)
        remaining = counts.get(SweepItem.State.PENDING, 0) + counts.get(SweepItem.State.CLAIMED, 0)
        if status == "more" and remaining == 0:
            # Items that failed are listed in the sweep's errors; the sweep itself finished its work.
            status = "finished"
            errors = list(
                SweepItem.objects.unscoped().filter(sweep=sweep, outcome=Outcome.FAILED)
                .values_list("openai_id", "detail")[:100]
            )
            if not mine.update(
                status=Sweep.Status.FINISHED, finished_at=timezone.now(), counts=counts, claimed_by="",
                batch_failures=0, errors=[{"openai_id": oid, "error": detail} for oid, detail in errors],
            ):
                raise _ClaimLost(f"sweep {sweep.pk} was taken over from {worker}")
            audit_record(action="lifecycle.sweep.finish", target_type="sweep", target_id=sweep.pk,
                         actor_label="task:sweep", tenant_id=sweep.tenant_id,
                         data={"kind": sweep.kind, "dry_run": sweep.dry_run, "counts": counts})
            if sweep.kind == SweepKind.VECTOR_STORES and not sweep.dry_run:
                # Deleted stores (orphans among them, with LIFECYCLE_SWEEP_UNASSIGNED) change what the orphans
                # cost: their alerts resolve now, not at the next hourly inventory sync. The sweep is finished
                # whatever happens here; that sync refreshes them anyway.
                try:
                    orphan_alerts_refresh()
                except Exception:
                    logger.exception("sweep %s finished; its orphan alerts wait for the next inventory sync", sweep.pk)
        else:
            if status == "more" and ran_out:
                # Only items claimed by a worker that died are left: wait for their lease instead of
                # re-enqueueing in a tight loop until it runs out.
                status = "waiting"
            mine.update(counts=counts, claimed_by="", batch_failures=0)
        return BatchResult(sweep.pk, status, processed, counts, retry_reason=retry_reason)
    except _ClaimLost as exc:
        # Another worker resumed this sweep (our heartbeat or lease looked dead): it carries on, we stop.
        logger.warning("%s; stopping this batch", exc)
        mine.update(claimed_by="")
        # Cancelled while this worker had an item in hand: sweep_fail counted before that item's outcome was
        # written, so count again. Counting only reads the items, so a repeat writes the same; a sweep still
        # running belongs to its new holder, which writes its own counts.
        Sweep.objects.unscoped().filter(pk=sweep.pk, status=Sweep.Status.FAILED).update(counts=sweep_counts(sweep))
        return BatchResult(sweep.pk, "busy", processed, sweep.counts)
    except Exception as exc:
        # An error outside the per-item handling (no API key on this worker, a database error writing an
        # item): without a limit the reaper would resume the sweep every few minutes for ever.
        if _batch_failed(sweep, worker, exc):
            return BatchResult(sweep.pk, "failed", processed, sweep_counts(sweep))
        raise
    except BaseException:
        # A killed worker: leave the claims for the lease/reaper; free the sweep so another worker resumes it.
        mine.update(claimed_by="")
        raise
    finally:
        if not sweep.dry_run:
            _lock_release(sweep.kind, worker)


def _batch_failed(sweep: Sweep, worker: str, exc: Exception) -> bool:
    """Count a batch that raised; after LIFECYCLE_MAX_BATCH_FAILURES in a row the sweep is failed (audited)
    and True is returned. Below that the sweep is freed for the reaper to resume; any batch that gets
    through resets the count, so a long sweep survives an occasional blip."""
    logger.exception("sweep %s: batch failed", sweep.pk)
    Sweep.objects.unscoped().filter(pk=sweep.pk, claimed_by=worker).update(
        claimed_by="", batch_failures=F("batch_failures") + 1)
    sweep.refresh_from_db(fields=["batch_failures", "errors", "status"])
    limit = setting("LIFECYCLE_MAX_BATCH_FAILURES")
    if sweep.batch_failures < limit:
        return False
    sweep_fail(sweep=sweep, reason=f"{sweep.batch_failures} batches failed in a row; the last: "
                                   f"{type(exc).__name__}: {exc}"[:500])
    return True


def sweep_run_to_completion(*, sweep_id: int, provider=None, progress: Callable[[BatchResult], None] | None = None,
                            sleep: Callable[[float], None] | None = None, max_batches: int | None = None) -> BatchResult:
    """Run a sweep's batches in this process until it finishes (the management command, tests)."""
    import time

    sleep = sleep or time.sleep
    worker = worker_id()
    batches = 0
    while True:
        result = sweep_run_batch(sweep_id=sweep_id, worker=worker, provider=provider)
        batches += 1
        if progress:
            progress(result)
        if result.status in ("finished", "failed", "missing"):
            return result
        if max_batches is not None and batches >= max_batches:
            return result
        if result.status in ("retry_later", "waiting"):
            sleep(result.wait_seconds)
        elif result.status == "busy":
            sleep(1.0)


def sweep_cancel(*, sweep_id: int, actor=None, actor_label: str = "") -> Sweep:
    """Stop a pending or running sweep (one started by mistake, say): it is failed, audited, and a worker
    running it stops after the item in hand (its next heartbeat finds the sweep no longer its own). What was
    deleted stays in the audit; nothing else is."""
    sweep = Sweep.objects.unscoped().filter(pk=sweep_id).first()
    if sweep is None:
        raise LifecycleError(f"No sweep {sweep_id}.")
    if sweep.is_done:
        raise SweepRefused(f"Sweep {sweep_id} is already {sweep.status}; there is nothing to stop.")
    who = getattr(actor, "username", "") or actor_label or "someone"
    sweep_fail(sweep=sweep, reason=f"cancelled by {who}", actor=actor)
    sweep.refresh_from_db()
    return sweep


def sweep_fail(*, sweep: Sweep, reason: str, actor=None) -> None:
    # The counts too: a batch writes them only when it ends, so a sweep cancelled or failed mid-batch would
    # otherwise show its last finished batch's, not what it deleted.
    Sweep.objects.unscoped().filter(pk=sweep.pk, status__in=[Sweep.Status.PENDING, Sweep.Status.RUNNING]).update(
        status=Sweep.Status.FAILED, finished_at=timezone.now(), claimed_by="", counts=sweep_counts(sweep),
        errors=[*sweep.errors, {"error": reason}],
    )
    audit_record(action="lifecycle.sweep.fail", target_type="sweep", target_id=sweep.pk, actor=actor,
                 actor_label="" if actor else "task:sweep", tenant_id=sweep.tenant_id, data={"reason": reason})


def sweeps_reap() -> list[int]:
    """Sweeps whose worker died (a stale heartbeat) or whose first task was lost: free them and return their
    ids so the caller re-enqueues them. Their stale item claims are offered again once the lease runs out."""
    now = timezone.now()
    stale = now - dt.timedelta(seconds=setting("LIFECYCLE_SWEEP_STALE_SECONDS"))
    stuck = Sweep.objects.unscoped().filter(status__in=[Sweep.Status.PENDING, Sweep.Status.RUNNING]).filter(
        Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, created_at__lt=stale)
    )
    # A sweep whose only items left are claimed by a worker that died, inside their lease, is waiting for it
    # (its chain resumes when the lease runs out, BatchResult.wait_seconds): re-enqueued now, it only waited
    # again, audited as a reap at every tick. One with an item a worker could take now (pending, or a claim
    # whose lease ran out) is reaped like any other.
    items = SweepItem.objects.unscoped().filter(sweep=OuterRef("pk"))
    in_lease = now - dt.timedelta(seconds=setting("LIFECYCLE_ITEM_LEASE_SECONDS"))
    claimed = items.filter(state=SweepItem.State.CLAIMED)
    takeable = items.filter(Q(state=SweepItem.State.PENDING) | Q(state=SweepItem.State.CLAIMED, claimed_at__lt=in_lease))
    stuck = stuck.exclude(Exists(claimed.filter(claimed_at__gte=in_lease)) & ~Exists(takeable))
    ids = list(stuck.values_list("pk", flat=True))
    for kind, holder in stuck.exclude(claimed_by="").filter(dry_run=False).values_list("kind", "claimed_by"):
        # The dead worker's kind lock goes with its claim, so the re-enqueued batch is not "busy".
        if cache.get(_lock_key(kind)) == holder:
            cache.delete(_lock_key(kind))
    if ids:
        Sweep.objects.unscoped().filter(pk__in=ids).update(claimed_by="")
        for sweep_id in ids:
            audit_record(action="lifecycle.sweep.reap", target_type="sweep", target_id=sweep_id,
                         actor_label="task:sweep_reap")
    return ids


# --- vector-storage metering -------------------------------------------------------------------------


FREE_GB_RULE = ("OpenAI's free GB applies once to the organisation's total; each tenant (and the unassigned "
                "stores) bears the day's cost and the free GB in proportion to its bytes.")


def storage_snapshot_exists(*, day: dt.date) -> bool:
    """Whether the day has been metered (its stores' sizes recorded, or its meter rows written)."""
    return (VectorStoreDay.objects.unscoped().filter(day=day).exists()
            or StorageMeter.objects.unscoped().filter(day=day).exists())


def storage_meter_day(*, day: dt.date, snapshot: bool = True, check_budgets: bool = True) -> list[StorageMeter]:
    """Meter vector storage for one UTC day. With `snapshot`, each store that existed at some moment of the
    day is recorded at its latest known usage_bytes (run it at the end of the day, after a sync); then the day
    is rated from the snapshot. Re-metering a day replaces its rows.

    "Existed during the day" is how OpenAI bills storage: a store created, deleted or expiring during the
    day is billed for that day; one deleted or expired before the day began is not (an expired store keeps
    its bytes but stops being billed at `expires_at`)."""
    from apps.pricing.rating import bytes_to_gb

    if day > timezone.now().date():
        raise LifecycleError(f"{day} has not begun yet (UTC): meter a day that has, at its end.")
    if not snapshot and not storage_snapshot_exists(day=day):
        # Rated from nothing, the day would be billed $0 and then count as metered, so never caught up.
        raise LifecycleError(f"{day} has no storage snapshot to re-rate: meter it first (without --rerate).")
    with transaction.atomic():
        if snapshot:
            VectorStoreDay.objects.unscoped().filter(day=day).delete()
            start = day_start(day)
            end = start + dt.timedelta(days=1)
            existed = (
                Q(status=ResourceStatus.ACTIVE) | Q(status=ResourceStatus.DELETED, deleted_at__gt=start)
            ) & billed_stores(start)
            VectorStoreDay.objects.bulk_create([
                VectorStoreDay(day=day, vector_store_id=pk, tenant_id=tenant_id, usage_bytes=usage_bytes)
                for pk, tenant_id, usage_bytes in VectorStore.objects.unscoped()
                .filter(existed, created_at__lt=end)
                .values_list("pk", "tenant_id", "usage_bytes")
            ])
        bytes_by_tenant: dict[int | None, int] = {}
        stores_by_tenant: dict[int | None, int] = {}
        for tenant_id, usage_bytes in VectorStoreDay.objects.unscoped().filter(day=day).values_list("tenant_id", "usage_bytes"):
            bytes_by_tenant[tenant_id] = bytes_by_tenant.get(tenant_id, 0) + usage_bytes
            stores_by_tenant[tenant_id] = stores_by_tenant.get(tenant_id, 0) + 1
        saved_by_tenant = _savings_by_tenant(day)
        rate = storage_rate(day)
        total_bytes = sum(bytes_by_tenant.values())
        total_gb = bytes_to_gb(total_bytes)
        org_cost = quantize_ledger(storage_daily_cost(total_bytes, rate))
        cost_shares = allocate(org_cost, bytes_by_tenant)
        free_total = min(total_gb, rate.vector_storage_free_gb) if rate else ZERO
        StorageMeter.objects.unscoped().filter(day=day).delete()
        rows = []
        for tenant_id in sorted(set(bytes_by_tenant) | set(saved_by_tenant), key=lambda k: (k is None, k or 0)):
            usage_bytes = bytes_by_tenant.get(tenant_id, 0)
            free_share = free_total * Decimal(usage_bytes) / Decimal(total_bytes) if total_bytes else ZERO
            rows.append(StorageMeter(
                tenant_id=tenant_id, day=day, usage_bytes=usage_bytes, store_count=stores_by_tenant.get(tenant_id, 0),
                gb_days=quantize_ledger(bytes_to_gb(usage_bytes)), free_gb_share=quantize_ledger(free_share),
                cost_usd=cost_shares.get(tenant_id, ZERO), saved_usd=saved_by_tenant.get(tenant_id, ZERO),
                price_version=rate.version if rate else "unpriced", rule=FREE_GB_RULE[:300],
            ))
        StorageMeter.objects.bulk_create(rows)
        storage_daily_total_refresh(day=day)
    if check_budgets:
        _storage_budgets_check(rows)
    return rows


def _tenants_storage_by_day(meters: QuerySet) -> dict[dt.date, Decimal]:
    """{day: its tenants' meters' cost added up} (the unassigned stores left out), in Python: exact Decimals on
    SQLite too. What a StorageDailyTotal holds."""
    totals: dict[dt.date, Decimal] = {}
    for day, cost in (meters.filter(tenant__isnull=False).order_by().values_list("day", "cost_usd")
                      .iterator(chunk_size=5000)):
        totals[day] = totals.get(day, ZERO) + cost
    return totals


def storage_daily_total_refresh(*, day: dt.date) -> None:
    """The day's StorageDailyTotal from its tenants' meter rows, as they are now (none: no total row). Called
    wherever a day's meter rows are written, in the same transaction."""
    total = _tenants_storage_by_day(StorageMeter.objects.unscoped().filter(day=day)).get(day)
    StorageDailyTotal.objects.filter(day=day).delete()
    if total is not None:
        StorageDailyTotal.objects.create(day=day, cost_usd=total)


def storage_daily_total_differences() -> list[tuple[dt.date, Decimal | None, Decimal | None]]:
    """(day, stored total, what the day's tenant meters add up to; None: no row / no meter) of every day whose
    StorageDailyTotal is wrong (ledger_check reports and fixes them)."""
    expected = _tenants_storage_by_day(StorageMeter.objects.unscoped())
    stored = dict(StorageDailyTotal.objects.values_list("day", "cost_usd"))

    def same(a: Decimal | None, b: Decimal | None) -> bool:
        return a is b or (a is not None and b is not None and quantize_ledger(a) == quantize_ledger(b))

    return [(day, stored.get(day), expected.get(day)) for day in sorted(set(stored) | set(expected))
            if not same(stored.get(day), expected.get(day))]


def _storage_budgets_check(rows: list[StorageMeter]) -> None:
    """Storage is part of a tenant's spend: metered days can take a tenant past a budget threshold. Only the
    months the nightly meter can still be filling (this one, and the last while its end is caught up): a day
    of a long-past month re-rated by hand would otherwise raise that month's alerts, critical included, when
    its statement is long closed. A failure here is logged and leaves the meter as written: the next night's
    meter checks the same months again."""
    from apps.alerts.services import alerts_for_budgets

    recent = month_start(timezone.now().date() - dt.timedelta(days=METER_CATCH_UP_DAYS))
    months: dict[int, set[dt.date]] = {}
    for row in rows:
        if row.tenant_id is not None and row.cost_usd > ZERO and row.day >= recent:
            months.setdefault(row.tenant_id, set()).add(month_start(row.day))
    try:
        alerts_for_budgets(months=months)
    except Exception:  # noqa: BLE001 - the meter is written; alerts must not undo or stop it
        logger.exception("storage meter: checking budgets failed; the next meter checks them again")


# How far back the nightly meter fills in days nobody metered (worker or broker down): reconciliation
# re-checks the last 7 days, so a day metered within them is still compared.
METER_CATCH_UP_DAYS = 7


def storage_meter_scheduled(*, now: dt.datetime) -> list[StorageMeter]:
    """The nightly meter (beat, 23:50 UTC). It meters the day it was scheduled for even when delivered late,
    after midnight (queued behind other work, a worker restart; the entry expires after 36 hours): before
    noon UTC that is yesterday. The days before it, back to METER_CATCH_UP_DAYS, that hold no meter rows
    while stores existed are metered too, at the stores' latest known usage: a missed night is then billed
    instead of silently free. Days already metered are left as they are."""
    utc = now.astimezone(dt.UTC)
    scheduled = utc.date() - dt.timedelta(days=1 if utc.hour < 12 else 0)
    first = scheduled - dt.timedelta(days=METER_CATCH_UP_DAYS)
    metered = set(StorageMeter.objects.unscoped().filter(day__gte=first, day__lt=scheduled)
                  .values_list("day", flat=True).distinct())
    rows: list[StorageMeter] = []
    for offset in range(METER_CATCH_UP_DAYS, 0, -1):
        day = scheduled - dt.timedelta(days=offset)
        if day not in metered:
            rows.extend(storage_meter_day(day=day, check_budgets=False))
    rows.extend(storage_meter_day(day=scheduled, check_budgets=False))
    _storage_budgets_check(rows)  # once for the whole catch-up
    return rows


def _savings_by_tenant(day: dt.date) -> dict[int | None, Decimal]:
    """Each vector store a real sweep deleted before `day` saves its daily cost (as valued when it was
    deleted) on every day after its deletion day: the deletion day itself is still billed (a store that
    existed at some moment of a day is), so it saves nothing yet."""
    saved: dict[int | None, Decimal] = {}
    for tenant_id, amount in SweepItem.objects.unscoped().filter(
        resource_type=ResourceType.VECTOR_STORE, outcome=Outcome.DELETED, dry_run=False,
        processed_at__lt=day_start(day),
    ).values_list("tenant_id", "saved_usd_per_day"):
        saved[tenant_id] = saved.get(tenant_id, ZERO) + amount
    return saved


# --- run-expiry watch ---------------------------------------------------------------------------------


# Overdue runs alerted per minute: the oldest not yet alerted, so a backlog drains in steps of this size.
WATCH_EXPIRED_PAGE = 5000


def runs_requires_action_watch(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Flag runs waiting in requires_action for longer than REQUIRES_ACTION_WARN_MINUTES, before OpenAI
    expires them at 10 minutes (the alerts app's scan, one alert per run), and flag runs still recorded as
    requires_action past their expiry as wasted spend (the same cause key the ledger uses when it later
    learns the run expired, so it is never alerted twice)."""
    from apps.alerts.models import Alert
    from apps.alerts.services import (
        AlertSpec,
        alerts_raise_many,
        alerts_requires_action_scan,
        alerts_unpruned_since,
    )

    now = now or timezone.now()
    flagged = len(alerts_requires_action_scan())
    # Runs OpenAI no longer answers for stay requires_action in the ledger for ever: the ones already alerted
    # are left out here, or the same oldest page would be re-read every minute and newer runs never reached.
    # (The alerts app has no selector for "cause raised"; this subquery reads its unique cause_key index.)
    alerted = Alert.unscoped_objects.filter(cause_key=Concat(Value("wasted_spend:"), OuterRef("openai_id")))
    overdue = Run.objects.unscoped().filter(status=RunStatus.REQUIRES_ACTION, expires_at__lte=now)
    if (since := alerts_unpruned_since(now)) is not None:
        # Not the runs whose alert retention may have deleted: each would be alerted anew, every retention period.
        overdue = overdue.filter(expires_at__gt=since)
    overdue = (overdue.filter(~Exists(alerted)).order_by("expires_at")
               .values("openai_id", "tenant_id", "expires_at", "cost_total_usd")[:WATCH_EXPIRED_PAGE])
    created = alerts_raise_many(AlertSpec(
        tenant_id=run["tenant_id"], kind="wasted_spend", severity="warning",
        cause_key=f"wasted_spend:{run['openai_id']}",
        title=f"Run {run['openai_id']} expired waiting for tool outputs",
        # Whatever it cost (unlike a failed run's wasted-spend alert, WASTED_SPEND_ALERT_MIN_USD): a run lost
        # waiting for tool outputs is an integration that stopped answering, which matters at $0 too.
        message=(f"It sat in requires_action past its expiry at {run['expires_at']:%Y-%m-%d %H:%M:%S} UTC; "
                 f"what it cost ({money_text(run['cost_total_usd'])}) is wasted spend."),
        data={"run": run["openai_id"], "status": "expired", "expires_at": run["expires_at"].isoformat(),
              "cost_usd": str(run["cost_total_usd"])},
    ) for run in overdue)
    return {"flagged": flagged, "expired": len(created)}
