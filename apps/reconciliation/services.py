"""Writes of reconciliation: run a range of days for each OpenAI project, swap each day's result in atomically,
keep every attempt as history, and raise one drift alert per (day, project, line).

The order matters for a worker killed at any moment: an attempt row is committed first (status running);
then everything is fetched and computed in memory; only then, per day, one transaction writes the lines,
demotes the previous current run and promotes this one. A partial day is never visible. An error marks the
attempt's unfinished days failed at once; a killed worker's attempt stays 'running' until the next attempt
(which holds the project's lock) marks it failed. The lock has a
short TTL refreshed by a heartbeat, so a killed worker's lock lapses within LOCK_TTL_SECONDS."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.core.money import money_text
from apps.core.services import audit_record
from apps.core.timeutils import day_start
from apps.ledger import bulk
from apps.pricing.rating import bytes_to_gb

from .comparison import (
    KIND_COST,
    KIND_UNATTRIBUTED,
    ZERO,
    LineSpec,
    Observations,
    Tolerance,
    compare_day,
    day_totals,
    unattributed_explanation,
)
from .models import LateLedgerDay, ReconciliationLine, ReconciliationRun
from .openai_side import openai_observations
from .projects import ProjectConfig, object_project_ids
from .selectors import ResultFilters, failed_attempts, ledger_observations, reconciliation_projects

logger = logging.getLogger(__name__)

# OpenAI's numbers for a day keep changing for a while: each daily run re-checks this many earlier days.
RECHECK_DAYS = 7
# The per-project lock lives this long and a heartbeat refreshes it while its process works, so the lock of
# a killed worker lapses within this time instead of blocking the redelivered task for an hour.
LOCK_TTL_SECONDS = 120

Progress = Callable[[str], None]


class ReconciliationError(RuntimeError):
    """Reconciliation could not run; the message says what to do next."""


class ReconciliationLocked(ReconciliationError):
    pass


@dataclass
class ProjectOutcome:
    project_id: str
    runs: list[ReconciliationRun] = field(default_factory=list)
    error: str = ""
    skipped: bool = False


def reconciliation_days(*, end_day: dt.date, days: int) -> tuple[dt.date, dt.date]:
    """(first day, day after the last): `days` UTC days ending with end_day."""
    if days < 1:
        raise ValueError("days must be at least 1")
    return end_day - dt.timedelta(days=days - 1), end_day + dt.timedelta(days=1)


def default_end_day(now: dt.datetime | None = None) -> dt.date:
    """Yesterday (UTC): today's numbers are still arriving."""
    return (now or timezone.now()).astimezone(dt.UTC).date() - dt.timedelta(days=1)


def _provider_for(project: ProjectConfig):
    return project.provider(admin=True)


def _lock_key(project_id: str) -> str:
    return f"reconciliation:lock:{hashlib.sha256(project_id.encode()).hexdigest()[:24]}"


def lock_ttl_seconds() -> int:
    return int(getattr(settings, "RECONCILIATION_LOCK_SECONDS", LOCK_TTL_SECONDS))


def reconciliation_lock_owner(*, project_id: str) -> str | None:
    """Who holds the project's lock ("" for a command or test, else the Celery task id), None if nobody."""
    value = cache.get(_lock_key(project_id))
    return None if value is None else str(value).partition("|")[2]


class _ProjectLock:
    """A cache lock with a short TTL that a heartbeat thread refreshes while the holder's process runs.
    The value records the owner (the Celery task id), so a redelivered copy of a task whose worker was killed
    can tell its own dead lock from another live run and retry rather than skip."""

    def __init__(self, project_id: str, owner: str = ""):
        self.key = _lock_key(project_id)
        self.value = f"{uuid.uuid4().hex}|{owner}"
        self.ttl = lock_ttl_seconds()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        if not cache.add(self.key, self.value, self.ttl):
            return False
        self._thread = threading.Thread(target=self._beat, name=f"reconciliation-lock-{self.key[-8:]}", daemon=True)
        self._thread.start()
        return True

    def _beat(self) -> None:
        try:
            while not self._stop.wait(max(1.0, self.ttl / 4)):
                if cache.get(self.key) != self.value:
                    logger.warning("reconciliation lock %s was lost; another attempt may run", self.key)
                    return
                cache.touch(self.key, self.ttl)
        except Exception:  # noqa: BLE001 - a cache outage must not kill the work; the TTL then decides
            logger.exception("reconciliation lock heartbeat failed")
        finally:
            from django.db import connections

            connections.close_all()  # this thread's own connections (the database cache)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if cache.get(self.key) == self.value:
            cache.delete(self.key)


def reconciliation_reconcile(
    *,
    end_day: dt.date | None = None,
    days: int = RECHECK_DAYS + 1,
    project_id: str | None = None,
    trigger: str = "",
    progress: Progress | None = None,
    provider_factory: Callable[[ProjectConfig], object] | None = None,
    raise_errors: bool = False,
    lock_owner: str = "",
) -> list[ProjectOutcome]:
    """Reconcile `days` UTC days ending with end_day (default: yesterday and the 7 days before) for every
    configured project, or only `project_id`. A project that fails does not stop the others unless
    raise_errors; its attempt rows are marked failed with the reason."""
    say = progress or (lambda message: None)
    end_day = end_day or default_end_day()
    start, end = reconciliation_days(end_day=end_day, days=days)
    projects = reconciliation_projects(project_id=project_id)
    if project_id is not None and not projects:
        raise ReconciliationError(
            f"No active OpenAI project {project_id!r}: add it in the admin (Reconciliation › OpenAI projects) "
            f"or leave --project out to reconcile every configured project."
        )
    outcomes = []
    for project in projects:
        try:
            outcomes.append(reconciliation_reconcile_project(
                project=project, start=start, end=end, trigger=trigger, progress=say,
                provider_factory=provider_factory, lock_owner=lock_owner,
            ))
        except ReconciliationLocked as exc:
            say(str(exc))
            outcomes.append(ProjectOutcome(project_id=project.project_id, error=str(exc), skipped=True))
        except Exception as exc:  # noqa: BLE001 - one project's outage must not hide the others' drift
            from apps.provider.client import ProviderError

            if isinstance(exc, ProviderError):  # OpenAI unreachable or refusing: its message says it all
                logger.warning("reconciliation of %s failed: %s", project.project_id, exc)
            else:
                logger.exception("reconciliation of %s failed", project.project_id)
            if raise_errors:
                raise
            outcomes.append(ProjectOutcome(project_id=project.project_id, error=str(exc)))
    return outcomes


def reconciliation_reconcile_project(
    *,
    project: ProjectConfig,
    start: dt.date,
    end: dt.date,
    trigger: str = "",
    progress: Progress | None = None,
    provider_factory: Callable[[ProjectConfig], object] | None = None,
    now: dt.datetime | None = None,
    lock_owner: str = "",
) -> ProjectOutcome:
    """Reconcile the days start..end (exclusive) of one project, holding that project's lock."""
    say = progress or (lambda message: None)
    lock = _ProjectLock(project.project_id, owner=lock_owner)
    if not lock.acquire():
        raise ReconciliationLocked(
            f"Another reconciliation of project {project.project_id} is running; try again when it finishes "
            f"(if its worker died, the lock lapses within {lock.ttl} seconds)."
        )
    try:
        return _reconcile_locked(project=project, start=start, end=end, trigger=trigger, say=say,
                                 provider_factory=provider_factory or _provider_for, now=now)
    finally:
        lock.release()


def _reconcile_locked(*, project, start, end, trigger, say, provider_factory, now) -> ProjectOutcome:
    started_at = now or timezone.now()
    days = [start + dt.timedelta(days=offset) for offset in range((end - start).days)]
    _mark_abandoned(project_id=project.project_id, now=started_at)
    runs = {
        day: ReconciliationRun.objects.create(
            day=day, openai_project=project.project_id, trigger=trigger, started_at=started_at,
            tolerance_percent=project.tolerance.percent, tolerance_usd=project.tolerance.usd,
        )
        for day in days
    }
    say(f"{project.project_id}: reconciling {start.isoformat()} to {(end - dt.timedelta(days=1)).isoformat()} "
        f"({len(days)} days)")
    try:
        provider = provider_factory(project)
        openai = openai_observations(provider=provider, start=start, end=end, project_id=project.project_id,
                                     progress=lambda message: say(f"{project.project_id}: {message}"))
        say(f"{project.project_id}: reading the ledger")
        ledger, notes = ledger_observations(start=start, end=end, project_id=project.project_id)
        listed_projects = set(object_project_ids())  # once, not per day: every day's storage note reads it
    except Exception as exc:
        _mark_failed(runs.values(), exc, project_id=project.project_id, say=say)
        raise

    outcome = ProjectOutcome(project_id=project.project_id)
    try:
        for day in days:
            run = _swap_in(run=runs[day], project=project, openai=openai, ledger=ledger,
                           notes=notes.get(day, []), listed_projects=listed_projects)
            outcome.runs.append(run)
            say(f"{project.project_id} {day.isoformat()}: {run.line_count} lines, {run.flagged_count} flagged, "
                f"ledger {money_text(run.ledger_total_usd)} vs OpenAI {money_text(run.openai_total_usd)}, "
                f"unattributed {money_text(run.unattributed_usd)}")
    except Exception as exc:
        # The day whose save failed (its transaction rolled back) and the days after it were never swapped
        # in. Left 'running', the page would show them in progress until the next attempt noticed.
        _mark_failed(list(runs.values())[len(outcome.runs):], exc, project_id=project.project_id, say=say)
        raise
    audit_record(
        action="reconciliation.run", target_type="openai_project", target_id=project.project_id,
        actor_label=trigger or "reconciliation",
        data={"start": start.isoformat(), "end": end.isoformat(), "runs": [run.pk for run in outcome.runs],
              "flagged": sum(run.flagged_count for run in outcome.runs)},
    )
    _resolve_failure_alerts(project.project_id)
    return outcome


def _mark_failed(runs, exc: Exception, *, project_id: str, say: Callable[[str], None]) -> None:
    """This attempt's runs that an error stopped: failed, with the error, their lines never written."""
    message = f"{type(exc).__name__}: {exc}"
    ReconciliationRun.objects.filter(pk__in=[run.pk for run in runs]).update(
        status=ReconciliationRun.Status.FAILED, finished_at=timezone.now(), error=message[:5000],
    )
    say(f"{project_id}: failed: {message}")


def _mark_abandoned(*, project_id: str, now: dt.datetime) -> None:
    """Called holding the project's lock, which a live attempt keeps refreshing: any other attempt of the
    project still 'running' lost its worker (killed, or the machine went away)."""
    ReconciliationRun.objects.filter(
        openai_project=project_id, status=ReconciliationRun.Status.RUNNING,
    ).update(status=ReconciliationRun.Status.FAILED, finished_at=now,
             error="Abandoned: the worker stopped before finishing; a later attempt replaced it.")


def _storage_text(usage_bytes: int) -> str:
    """Bytes as people read them, with the exact count beside: "60.80 GiB (65,282,036,896 bytes)". GiB, as
    OpenAI meters vector storage."""
    return f"{bytes_to_gb(usage_bytes):,.2f} GiB ({usage_bytes:,} bytes)"


def _unlisted_storage_note(bytes_by_project: dict[str, int], listed_projects: set[str]) -> str:
    """Vector storage in projects RunLedger cannot list is never metered, yet shares the organization's free
    GB (docs/lifecycle.md, "Free-GB rule"): every project's storage line then reads lower in the ledger than
    at OpenAI. Says so, and what to do, rather than leaving a daily drift unexplained."""
    unlisted = {project: size for project, size in bytes_by_project.items()
                if project not in listed_projects and size > 0}
    if not unlisted:
        return ""
    names = ", ".join(sorted(unlisted))
    return (f"OpenAI reports {_storage_text(sum(unlisted.values()))} of vector storage in projects RunLedger cannot list "
            f"({names}). The free GB is shared with them, so vector storage reads lower in the ledger than at "
            f"OpenAI: configure those projects with an API key (admin: OpenAI projects) so their stores are metered.")


def _swap_in(*, run: ReconciliationRun, project: ProjectConfig, openai: Observations, ledger: Observations,
             notes: list[str], listed_projects: set[str]) -> ReconciliationRun:
    results = compare_day(day=run.day, project=project.project_id, ledger=ledger, openai=openai,
                          tolerance=project.tolerance)
    totals = day_totals(results)
    day_notes = list(notes)
    explanation = unattributed_explanation(results, openai.unmapped.get((run.day, project.project_id), {}))
    if explanation:
        day_notes.append(explanation)
    storage_bytes = openai.storage_bytes.get(run.day)
    if storage_bytes is not None:
        day_notes.append(f"OpenAI reports {_storage_text(storage_bytes)} of vector storage.")
    unlisted_note = _unlisted_storage_note(openai.storage_bytes_by_project.get(run.day, {}), listed_projects)
    if unlisted_note:
        day_notes.append(unlisted_note)
    lines = [
        ReconciliationLine(
            run=run, day=result.day, openai_project=result.openai_project, line=result.line, kind=result.kind,
            unit=result.unit, model=result.model, ledger_value=result.ledger_value, openai_value=result.openai_value,
            difference=result.difference, difference_pct=result.difference_pct, status=result.status,
        )
        for result in results
    ]
    flagged = [line for line in lines if line.is_flagged]
    with transaction.atomic():
        ReconciliationLine.objects.bulk_create(lines, batch_size=500)
        ReconciliationRun.objects.filter(
            day=run.day, openai_project=run.openai_project, is_current=True
        ).exclude(pk=run.pk).update(is_current=False)
        run.status = ReconciliationRun.Status.COMPLETE
        run.is_current = True
        run.finished_at = timezone.now()
        run.ledger_total_usd = totals["ledger_total_usd"]
        run.openai_total_usd = totals["openai_total_usd"]
        run.unattributed_usd = totals["unattributed_usd"]
        run.line_count = len(lines)
        run.flagged_count = len(flagged)
        run.notes = day_notes
        run.openai_extras = _openai_extras(openai, run.day, project.project_id)
        run.save()
        transaction.on_commit(lambda: _alert_drift(run=run, lines=flagged))
    return run


def _openai_extras(openai: Observations, day: dt.date, project_id: str) -> dict:
    """What of OpenAI's side of the day the lines do not hold (ReconciliationRun.openai_extras)."""
    return {
        "unmapped": {item: str(amount) for item, amount in sorted(openai.unmapped.get((day, project_id), {}).items())},
        "storage_bytes_by_project": dict(sorted(openai.storage_bytes_by_project.get(day, {}).items())),
    }


# --- after a re-rating ---------------------------------------------------------------------------

# A result compares OpenAI's figures with the ledger's cost as it was then. A re-rating (a price added or
# changed: `reprice`, `load_price_book`, the prices API, the admin) changes the ledger's cost of past days, and
# the daily run re-checks only the last RECHECK_DAYS + 1 days: an older result would keep showing drift that
# is gone (or hide drift that is new). Every OpenAI figure a day was compared with is stored (the lines'
# openai_value and the run's openai_extras), so such a day is compared again here, with the ledger as it is
# now and without asking OpenAI.

# Days of the ledger read at once: consecutive re-rated days share one read, a sparse set is read in spans.
RECOMPARE_SPAN_DAYS = 31
RECOMPARE_TRIGGER = "service:reprice"
# Days whose runs changed after the daily run stopped re-checking them (reported late) are compared again by
# the hourly task under this trigger, at most this many marked days a pass (the oldest marks first).
LATE_RUNS_TRIGGER = "task:reconciliation.recompare_late_days"
LATE_DAYS_PER_PASS = 400
# Names the spend on line items the ledger cannot hold of a result saved before openai_extras itemised it.
LEGACY_UNMAPPED_ITEM = "line items the ledger cannot hold"


@dataclass
class RecompareOutcome:
    runs: list[ReconciliationRun] = field(default_factory=list)
    locked: dict[str, list[dt.date]] = field(default_factory=dict)  # project -> days left for a retry
    failed: dict[str, str] = field(default_factory=dict)  # project -> error (the late-runs pass goes on)


def reconciliation_recompare(*, changed_days: dict[str, set[dt.date] | frozenset[dt.date] | list[dt.date]],
                             trigger: str = RECOMPARE_TRIGGER, lock_owner: str = "") -> RecompareOutcome:
    """Compare again, with the ledger as it is now, the current results of the re-rated days
    ({OpenAI project as runs record it ("" for the default one): days}), from the OpenAI figures each
    result stored: no OpenAI call. Each day gets a new attempt swapped in as a reconciliation swaps one in (its
    history kept, its drift alerted once per cause), marked `recompared_from` the result whose figures it
    reused; one `reconciliation.recompare` audit record per project. Days with no result are left alone (no
    reconciliation has looked at them yet). A project another reconciliation holds is left out and
    returned in `locked`, for a retry once it is free."""
    by_project: dict[str, set[dt.date]] = defaultdict(set)
    for project_id, days in changed_days.items():
        # Runs recorded without a project belong to the default one (projects.project_q).
        by_project[project_id or settings.OPENAI_PROJECT_ID].update(days)
    outcome = RecompareOutcome()
    for project_id, days in sorted(by_project.items()):
        if not days or not project_id:
            continue
        results = _current_results_of(project_id, days)
        if not results:
            continue
        lock = _ProjectLock(project_id, owner=lock_owner)
        if not lock.acquire():
            outcome.locked[project_id] = sorted(days)
            continue
        try:
            # Read again under the lock: a reconciliation that just finished may have replaced them.
            outcome.runs += _recompare_locked(project_id=project_id, results=_current_results_of(project_id, days),
                                              trigger=trigger)
        finally:
            lock.release()
    return outcome


def _current_results_of(project_id: str, days: set[dt.date]) -> list[ReconciliationRun]:
    runs = ReconciliationRun.objects.filter(
        is_current=True, openai_project=project_id, day__gte=min(days), day__lte=max(days),
    ).select_related("recompared_from").order_by("day")
    return [run for run in runs if run.day in days]


def _recompare_project(project_id: str, tolerance_of: ReconciliationRun) -> ProjectConfig:
    """The project's configuration (its tolerance now, as the daily run would use); a project no longer
    configured keeps the tolerance its result was computed with."""
    configured = reconciliation_projects(project_id=project_id, include_inactive=True)
    if configured:
        return configured[0]
    return ProjectConfig(project_id=project_id, name="", admin_key_env="", api_key_env="", base_url="",
                         tolerance=Tolerance(percent=tolerance_of.tolerance_percent, usd=tolerance_of.tolerance_usd),
                         configured=False)


def _recompare_locked(*, project_id: str, results: list[ReconciliationRun], trigger: str) -> list[ReconciliationRun]:
    if not results:
        return []
    project = _recompare_project(project_id, results[0])
    listed_projects = set(object_project_ids())
    started_at = timezone.now()
    recompared: list[ReconciliationRun] = []
    try:
        for span in _spans(results):
            start, end = span[0].day, span[-1].day + dt.timedelta(days=1)
            ledger, ledger_notes = ledger_observations(start=start, end=end, project_id=project_id)
            lines: dict[int, list[ReconciliationLine]] = defaultdict(list)
            for line in ReconciliationLine.objects.filter(run__in=span):
                lines[line.run_id].append(line)
            for earlier in span:
                openai, kept_notes = _stored_openai_side(earlier, lines[earlier.pk])
                attempt = ReconciliationRun.objects.create(
                    day=earlier.day, openai_project=project_id, trigger=trigger, started_at=started_at,
                    tolerance_percent=project.tolerance.percent, tolerance_usd=project.tolerance.usd,
                    # The run that fetched the figures: a result compared again twice still names that fetch.
                    recompared_from_id=earlier.recompared_from_id or earlier.pk,
                )
                notes = [*ledger_notes.get(earlier.day, []), *kept_notes, _recompare_note(earlier, trigger)]
                try:
                    recompared.append(_swap_in(run=attempt, project=project, openai=openai, ledger=ledger,
                                               notes=notes, listed_projects=listed_projects))
                except Exception as exc:
                    # The failure card names the day and the command that fetches it anew.
                    _mark_failed([attempt], exc, project_id=project_id,
                                 say=lambda message: logger.error("%s", message))
                    raise
        _resolve_failure_alerts(project_id)  # a failed re-compare of a day is settled by one that succeeded
    finally:
        # Whatever stopped it, the days already swapped in are audited (each is its own committed change).
        if recompared:
            audit_record(
                action="reconciliation.recompare", target_type="openai_project", target_id=project_id,
                actor_label=trigger or RECOMPARE_TRIGGER,
                data={"days": [run.day.isoformat() for run in recompared], "runs": [run.pk for run in recompared],
                      "recompared_from": [run.recompared_from_id for run in recompared],
                      "flagged": sum(run.flagged_count for run in recompared)},
            )
    return recompared


def _spans(results: list[ReconciliationRun]) -> list[list[ReconciliationRun]]:
    """Results (sorted by day) in groups spanning at most RECOMPARE_SPAN_DAYS days: one ledger read each."""
    spans: list[list[ReconciliationRun]] = []
    for run in results:
        if spans and (run.day - spans[-1][0].day).days < RECOMPARE_SPAN_DAYS:
            spans[-1].append(run)
        else:
            spans.append([run])
    return spans


def _stored_openai_side(run: ReconciliationRun, lines: list[ReconciliationLine]) -> tuple[Observations, list[str]]:
    """OpenAI's side of the day as the run compared it, rebuilt from its lines and openai_extras; plus the
    OpenAI-side notes to keep for a run saved before openai_extras existed. A line OpenAI did not report is
    stored as 0, which the comparison treats as it treats nothing reported."""
    day, project_id = run.day, run.openai_project
    openai = Observations()
    cost_total = ZERO
    for line in lines:
        if line.kind == KIND_UNATTRIBUTED:
            continue
        openai.add(day, project_id, line.line, line.openai_value, LineSpec(line.kind, line.unit, line.model))
        if line.kind == KIND_COST:
            cost_total += line.openai_value
    extras = run.openai_extras
    if extras is None:
        # Saved before openai_extras: the spend on line items no ledger line holds is known only as a total
        # (OpenAI's day total minus its lines), and the storage figures only as the notes that stated them.
        unmapped = run.openai_total_usd - cost_total
        if unmapped:
            openai.add_unmapped(day, project_id, LEGACY_UNMAPPED_ITEM, unmapped)
        kept = [note for note in run.notes if isinstance(note, str) and note.startswith("OpenAI reports")]
        return openai, kept
    for item, amount in (extras.get("unmapped") or {}).items():
        openai.add_unmapped(day, project_id, item, Decimal(amount))
    by_project = {project: int(size) for project, size in (extras.get("storage_bytes_by_project") or {}).items()}
    if by_project:
        openai.storage_bytes_by_project[day] = by_project
        if project_id in by_project:
            openai.storage_bytes[day] = by_project[project_id]
    return openai, []


def _recompare_note(earlier: ReconciliationRun, trigger: str) -> str:
    fetch = earlier.recompared_from if earlier.recompared_from_id and earlier.recompared_from else earlier
    fetched = fetch.finished_at or fetch.started_at
    cause = ("runs of this day were reported late (after the daily run's re-checks)" if trigger == LATE_RUNS_TRIGGER
             else "a re-rating")
    return (f"Compared again with the ledger after {cause}, with OpenAI's figures as fetched "
            f"{fetched.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC (no new call to OpenAI). To fetch them anew: python "
            f"manage.py reconcile --date {earlier.day.isoformat()} --days 1 --project {earlier.openai_project}")


def reconciliation_after_repricing(sender=None, *, changed_days: dict, **kwargs) -> None:
    """Receiver of apps.ledger.services.runs_repriced (connected in apps.py): hand the re-rated days to the
    recompare task, which compares them again in a worker. Done here, it ran inside the request that added a
    price (the prices API, the admin), for as many days as the price re-rated, under the web server's timeout,
    and a request killed midway left the rest stale. Only when the task cannot be queued (no broker) are the
    days compared here. The re-rating has committed whatever happens, so nothing is raised to its caller."""
    pending = {project: sorted(days) for project, days in changed_days.items() if days}
    if not pending or recompare_later(pending, countdown=0):
        return
    try:
        outcome = reconciliation_recompare(changed_days=changed_days)
    except Exception:  # noqa: BLE001 - the re-rating is in; its caller must not see it fail
        logger.exception("comparing re-rated days %s again failed; run `manage.py reconcile` for them", pending)
        return
    if outcome.locked:
        logger.error("re-rated days %s are held by another reconciliation and no task could be queued; run "
                     "`manage.py reconcile` for them", outcome.locked)


def late_ledger_days_mark(sender=None, *, changes: list[dict], now: dt.datetime | None = None, **kwargs) -> None:
    """Receiver of apps.ledger.services.runs_ingested (connected in apps.py), inside the ingest transaction:
    mark each (project, day) of the changed runs that no daily run will fetch again, so that the hourly
    `recompare_late_days` task compares its result with the ledger as it is now. Tomorrow's daily run re-checks
    today and the RECHECK_DAYS days before it; anything older is marked. A batch of recent runs costs one
    comparison per run and writes nothing."""
    now = now or timezone.now()
    cutoff = day_start(now.astimezone(dt.UTC).date() - dt.timedelta(days=RECHECK_DAYS))
    days: set[tuple[str, dt.date]] = set()
    for change in changes:
        for state in (change["old"], change["new"]):
            if state is not None and state["created_at"] < cutoff:
                # Runs recorded without a project belong to the default one (projects.project_q).
                days.add((state["openai_project"] or settings.OPENAI_PROJECT_ID,
                          state["created_at"].astimezone(dt.UTC).date()))
    if not days:
        return
    marks = sorted(days)
    if bulk.is_postgres():
        # One statement with two array parameters: the ORM's upsert cost about 1.5 ms a batch under the ingest
        # lock (a batch of 30 days of traffic marks ~23 days), this about 0.6.
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {LateLedgerDay._meta.db_table} (openai_project, day, marked_at) "
                "SELECT project, day, %s FROM unnest(%s::text[], %s::date[]) AS mark(project, day) "
                # In key order: import_runs' workers write side by side and must lock shared marks alike.
                "ORDER BY project, day ON CONFLICT (openai_project, day) DO UPDATE SET marked_at = excluded.marked_at",
                [now, [project for project, _ in marks], [day for _, day in marks]])
    else:
        LateLedgerDay.objects.bulk_create(
            [LateLedgerDay(openai_project=project, day=day, marked_at=now) for project, day in marks],
            update_conflicts=True, unique_fields=["openai_project", "day"], update_fields=["marked_at"])


def reconciliation_recompare_late(*, lock_owner: str = "", limit: int = LATE_DAYS_PER_PASS) -> RecompareOutcome:
    """Compare again the current results of the days marked by late runs (at most `limit` marks, the oldest
    first), from the OpenAI figures each stored, as after a re-rating; then delete the marks handled. Days
    with no result yet are only unmarked (a reconciliation will see their runs). A project another
    reconciliation holds keeps its marks for the next pass, and so does a day re-marked meanwhile: this pass
    may have read its ledger before the newer change committed. A day whose comparison fails is recorded as a
    failed attempt (its failure card names the command that settles it) and unmarked with the days compared
    before it; the project's days after it keep their marks, and the other projects go on: one bad day must
    not hold the pass on the same marks every hour."""
    marks = list(LateLedgerDay.objects.order_by("marked_at", "id")[:limit])
    outcome = RecompareOutcome()
    if not marks:
        return outcome
    changed: dict[str, set[dt.date]] = defaultdict(set)
    for mark in marks:
        changed[mark.openai_project].add(mark.day)
    started_at = timezone.now()
    handled: dict[str, set[dt.date]] = {}
    for project_id, days in sorted(changed.items()):
        try:
            compared = reconciliation_recompare(changed_days={project_id: days}, trigger=LATE_RUNS_TRIGGER,
                                                lock_owner=lock_owner)
        except Exception as exc:  # noqa: BLE001 - one project's failure must not stop the others'
            logger.exception("comparing the days late runs reached in %s failed; the failed day's card on "
                             "/reconciliation/ names the command that settles it", project_id)
            outcome.failed[project_id] = f"{type(exc).__name__}: {exc}"
            # Unmarked: the days this pass swapped in, and the one whose attempt failed (recorded as such).
            handled[project_id] = set(ReconciliationRun.objects.filter(
                openai_project=project_id, trigger=LATE_RUNS_TRIGGER, started_at__gte=started_at,
            ).values_list("day", flat=True))
            continue
        outcome.runs += compared.runs
        outcome.locked.update(compared.locked)
        handled[project_id] = days - set(compared.locked.get(project_id, ()))
    done = Q(pk__in=[])
    for mark in marks:
        if mark.day in handled.get(mark.openai_project, ()):
            done |= Q(pk=mark.pk, marked_at=mark.marked_at)
    LateLedgerDay.objects.filter(done).delete()
    return outcome


def late_ledger_days_forget(*, results: list[ReconciliationRun]) -> int:
    """Unmark the days these fresh results compared. Only for a caller that knows no run of those days changed
    after their ledger was read: seed_demo, which loads months of history (every old day marked) and then
    reconciles it, with nothing else running. Returns how many marks went."""
    forget = Q(pk__in=[])
    for result in results:
        forget |= Q(openai_project=result.openai_project, day=result.day)
    return LateLedgerDay.objects.filter(forget).delete()[0]


def recompare_later(pending: dict[str, list[dt.date]], *, countdown: int, attempt: int = 0) -> bool:
    """Queue the recompare task for these days (`attempt`: how many times they were found locked already);
    False when the broker cannot take it (logged). The one place the task is queued from."""
    from .tasks import recompare_days

    kwargs: dict = {"changed_days": {project: [day.isoformat() for day in days] for project, days in pending.items()}}
    if attempt:
        kwargs["attempt"] = attempt
    try:
        recompare_days.apply_async(kwargs=kwargs, countdown=countdown)
    except Exception:  # noqa: BLE001 - a broker outage: said, and the caller decides what else to do
        logger.exception("could not queue the comparison of re-rated days %s", pending)
        return False
    return True


def _drift_cause(line: ReconciliationLine) -> str:
    # The status is part of the cause: a line first flagged "missing at OpenAI" (its numbers not in yet) that
    # later shows real drift raises again instead of hiding behind the first alert.
    cause = f"reconciliation:{line.openai_project}:{line.day.isoformat()}:{line.line}:{line.status}"
    return cause if len(cause) <= 255 else f"reconciliation:{hashlib.sha256(cause.encode()).hexdigest()}"


def _alert_drift(*, run: ReconciliationRun, lines: list[ReconciliationLine]) -> None:
    """One alert per (day, project, line) cause: re-running the day, or seeing it again tomorrow, adds none.
    The day's drift alerts this result no longer flags are resolved (a late run, a price correction or
    OpenAI's own late numbers explained them); one it flags again is opened again."""
    from apps.alerts.models import Alert
    from apps.alerts.services import alert_raise, alerts_resolve

    for line in lines:
        kind = "Unattributed spend" if line.kind == KIND_UNATTRIBUTED else "Reconciliation drift"
        alert_raise(
            kind="reconciliation_drift",
            cause_key=_drift_cause(line),
            tenant=None,
            title=f"{kind}: {line.line} on {line.day.isoformat()} ({line.openai_project})",
            message=(
                f"{line.status.replace('_', ' ')}: ledger {_text(line.ledger_value, line.unit)} vs OpenAI "
                f"{_text(line.openai_value, line.unit)} ({line.unit}); difference {_text(line.difference, line.unit)}"
                + (f" ({line.difference_pct}%)" if line.difference_pct is not None else "")
                + ". See /reconciliation/ for the day."
            ),
            severity="critical" if line.kind == KIND_UNATTRIBUTED and line.difference > 0 else "warning",
            data={
                "day": line.day.isoformat(), "openai_project": line.openai_project, "line": line.line,
                "status": line.status, "unit": line.unit, "ledger_value": _plain(line.ledger_value),
                "openai_value": _plain(line.openai_value), "difference": _plain(line.difference),
                "run_id": run.pk,
            },
        )
    explained = (Alert.unscoped_objects.filter(kind=Alert.Kind.RECONCILIATION_DRIFT, resolved_at__isnull=True,
                                               data__day=run.day.isoformat(), data__openai_project=run.openai_project)
                 .exclude(cause_key__in=[_drift_cause(line) for line in lines]))
    alerts_resolve(alerts=explained, reason=f"The day's result #{run.pk} no longer flags this line.")


def _resolve_failure_alerts(project_id: str) -> None:
    """Resolve the project's reconciliation-failed alerts none of whose days is still failing (the page's
    failure card for them is gone: a later fetch, or a later re-compare of a failed re-compare, succeeded)."""
    from apps.alerts.models import Alert
    from apps.alerts.services import alerts_resolve

    settled = []
    for alert in Alert.unscoped_objects.filter(kind=Alert.Kind.RECONCILIATION_FAILED, resolved_at__isnull=True,
                                               data__project=project_id):
        end_day = dt.date.fromisoformat(alert.data["end_day"])
        start = end_day - dt.timedelta(days=int(alert.data["days"]) - 1)
        if not failed_attempts(ResultFilters(start=start, end=end_day + dt.timedelta(days=1), project_id=project_id)):
            settled.append(alert.pk)
    alerts_resolve(alerts=Alert.unscoped_objects.filter(pk__in=settled),
                   reason="Every day it named has been reconciled since.")


def reconciliation_failure_alert(*, project_id: str, end_day: dt.date, days: int, error: str) -> None:
    """Raise one critical alert for a project whose daily reconciliation still failed after its retries: a
    revoked admin key or a Costs API down for days would otherwise stop reconciliation without a word."""
    from apps.alerts.services import alert_raise

    first_day = end_day - dt.timedelta(days=days - 1)
    alert_raise(
        kind="reconciliation_failed",
        cause_key=f"reconciliation-failed:{project_id}:{end_day.isoformat()}"[:255],
        tenant=None,
        title=f"Reconciliation failed: {project_id}, {first_day.isoformat()} to {end_day.isoformat()}",
        message=(f"{error or 'no error recorded'}. Fix the cause (often the project's admin key: Reconciliation › "
                 f"OpenAI projects in the admin), then run: python manage.py reconcile --date {end_day.isoformat()} "
                 f"--days {days} --project {project_id}"),
        severity="critical",
        data={"project": project_id, "end_day": end_day.isoformat(), "days": days, "error": error},
    )


def _text(value, unit: str) -> str:
    """A line's value in an alert's text: dollars as every page and alert writes them (money_text: "-$1.25",
    where "$-1.25" was written), counts as plain numbers. The alert's data keeps the exact values."""
    return money_text(value) if unit == "usd" else _plain(value)


def _plain(value) -> str:
    return format(value.normalize(), "f")
