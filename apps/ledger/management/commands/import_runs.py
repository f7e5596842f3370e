"""`manage.py import_runs FILE.jsonl [--tenant SLUG] [--workers N]`: historical exports through the ingest path.

With more than one worker, this process reads and parses the file and hands each line to the worker that
owns its object id (crc32 of the id modulo the workers), so no two workers ever write the same run and a
run's reports keep their order; lines without an id go to worker 0. Workers ingest in batches (each its
own transaction, as the API does) and report counts and rejected lines back; the bar follows the bytes
ingested, not merely read."""

import json
import multiprocessing
import os
import queue
import sys
import threading
import time
import traceback
import zlib
from pathlib import Path

import orjson
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, connections
from tqdm import tqdm

from apps.ledger.services import ingest_events
from apps.tenants.models import Tenant

BATCH = 1000
MAX_WORKERS = 8
_DONE = None


def _parse_line(raw: bytes) -> tuple[object, bool]:
    """A line's JSON, and whether it took `json` to read it (a worker then reads it the same way). ValueError
    for any line that is not readable JSON, so that one line is rejected and the import goes on."""
    try:
        return orjson.loads(raw), False
    except orjson.JSONDecodeError:
        pass
    # orjson refuses lone surrogate escapes that json reads (ingest then rejects the event with its field).
    try:
        return json.loads(raw), True
    except RecursionError:
        # orjson refuses nesting past 1,024 levels, and json recurses until Python's limit stops it.
        raise ValueError("nested too deeply") from None


def _event_from(item, default_slug: str | None) -> dict:
    event = item if isinstance(item, dict) and "object" in item and isinstance(item["object"], dict) \
        else {"object": item}
    # A line names no tenant when it has none or sends it null or empty (as the API reads it: then metadata's,
    # then the key's): --tenant is for those lines.
    if default_slug is not None and event.get("tenant") in (None, ""):
        metadata = event["object"].get("metadata") if isinstance(event["object"], dict) else None
        if not (isinstance(metadata, dict) and metadata.get("tenant")):
            event["tenant"] = default_slug
    return event


def _ingest_batch(batch: list[tuple[int, dict]], show_errors: int, *, partitioned: bool = False) -> tuple[dict, list[str]]:
    """Ingest one batch; (outcome counts, up to `show_errors` rejection lines). `partitioned`: this is one
    of several workers that never share a run, so their batches may write at the same time."""
    counts = {"created": 0, "updated": 0, "unchanged": 0, "rejected": 0}
    errors: list[str] = []
    result = ingest_events(events=[event for _, event in batch], partitioned=partitioned)
    for event_result in result.results:
        counts[event_result.outcome] += 1
        if event_result.outcome == "rejected" and len(errors) < show_errors:
            error = event_result.error or {}
            errors.append(f"line {batch[event_result.index][0]}: {error.get('field') or ''} {error.get('message')}")
    return counts, errors


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker once the command that started it is gone (kill -9, the OOM killer, a plain kill).
    Nobody would send _DONE, and a batch the command was handing over when it died stays half-written in the
    pipe, so the worker would wait for ever, holding a database connection. A batch being written is rolled
    back with the connection; a re-run stores it."""
    while os.getppid() == parent_pid:
        time.sleep(1)
    os._exit(1)


# A forked worker's copies of database connections that were open in the command when it forked.
_INHERITED_CONNECTIONS: list = []


def _forget_inherited_connections() -> None:
    """Make a forked worker open its own database connections. The command closes its connections before it
    forks, but that reaches only the ones its current context sees: Django keeps them per thread, and per
    asyncio context where the thread has a running event loop (an embedding program's, or a test's browser).
    A worker that used a copy of an open one shared the command's socket with its sibling: each read the
    other's answers ("the last operation didn't produce records (command status: BEGIN)"). The copies are
    kept referenced, never closed: closing or collecting one would end the command's own session."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            _INHERITED_CONNECTIONS.append(conn.connection)
            conn.connection = None


def _worker(inbox, outbox, default_slug: str | None, show_errors: int) -> None:
    """A worker process: batches of (line number, raw line) in, (bytes, counts, errors) out per batch."""
    _forget_inherited_connections()
    parent = multiprocessing.parent_process()
    if parent is not None:
        # The parent's pid as the parent recorded it, not os.getppid() now: the command may already be gone.
        threading.Thread(target=_exit_with_parent, args=(parent.pid,), daemon=True).start()
    try:
        while True:
            item = inbox.get()
            if item is _DONE:
                break
            lines, size = item
            batch = [(number, _event_from(orjson.loads(raw) if raw[:1] != b"\x00" else json.loads(raw[1:]),
                                          default_slug)) for number, raw in lines]
            counts, errors = _ingest_batch(batch, show_errors, partitioned=True)
            outbox.put((size, counts, errors, None))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the import
        # The traceback goes to stderr here: the parent gets only the one-line reason, and a worker's failure
        # without where it happened cannot be reported or fixed.
        traceback.print_exc(file=sys.stderr)
        outbox.put((0, {}, [], f"{type(exc).__name__}: {exc}"))
    finally:
        connections.close_all()


class Command(BaseCommand):
    help = ("Import a JSON Lines file: each line a raw run/response/thread/conversation object, or an ingest event "
            "{tenant, object, attribution}. Batched through the ingest path; safe to re-run (idempotent on ids).")

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--tenant", help="tenant slug for lines that name none (event.tenant or metadata.tenant)")
        parser.add_argument("--batch-size", type=int, default=BATCH)
        parser.add_argument("--show-errors", type=int, default=20, help="rejected lines to print (default 20)")
        parser.add_argument(
            "--workers", type=int, default=0,
            help="worker processes (default 0 = one per core on PostgreSQL, 1 on SQLite); runs are partitioned "
                 "by id, so no two workers write the same run",
        )

    def handle(self, *args, file, tenant, batch_size, show_errors, workers, **options):
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No file {file}.")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        if workers < 0:
            raise CommandError("--workers must be 0 (automatic) or more.")
        default_slug = None
        if tenant:
            default_tenant = Tenant.objects.filter(slug=tenant).first()
            if default_tenant is None:
                raise CommandError(f"No tenant '{tenant}'.")
            default_slug = default_tenant.slug
        workers = self._workers(workers)
        self.totals = {"created": 0, "updated": 0, "unchanged": 0, "rejected": 0}
        self.printed = 0
        self.show_errors = show_errors
        self.lines_read = 0
        size = path.stat().st_size
        try:
            # The bar draws on the stream itself: Django's wrapper ends every write with a newline, which turned
            # each redraw into a new line.
            with path.open("rb") as handle, tqdm(total=size, unit="B", unit_scale=True, disable=None,
                                                 file=self.stderr._out) as bar:
                if workers == 1:
                    self._import_here(handle, bar, default_slug, batch_size)
                else:
                    self._import_parallel(handle, bar, default_slug, batch_size, workers)
        except (Exception, KeyboardInterrupt):
            # Whatever stopped it, Ctrl-C included, say how far it got: what is counted is stored (a batch
            # interrupted while being written is rolled back and not counted), and a re-run skips it.
            self.stdout.write(self.style.ERROR(
                f"Import stopped after reading line {self.lines_read}: {self._counts()} Run it again to finish; "
                "stored lines come back unchanged."))
            raise
        self.stdout.write(self.style.SUCCESS(
            self._counts() + (f" ({workers} worker processes)" if workers > 1 else "")
        ))
        if self.totals["rejected"]:
            # Exit status 1, as ledger_check's on differences: a cron job or a CI step must notice lost lines.
            raise CommandError(f"{self.totals['rejected']} line(s) rejected (named above): fix them and run the "
                               "import again; stored lines are skipped.")

    def _counts(self) -> str:
        return (f"{self.totals['created']} created, {self.totals['updated']} updated, {self.totals['unchanged']} "
                f"unchanged, {self.totals['rejected']} rejected.")

    def _workers(self, requested: int) -> int:
        if connection.vendor != "postgresql" or connection.in_atomic_block:
            # SQLite has one writer; inside a transaction, forked workers could not see its uncommitted rows.
            if requested > 1:
                self.stderr.write("--workers needs PostgreSQL outside a transaction: importing in this process.")
            return 1
        if requested == 0:
            return max(1, min(os.cpu_count() or 1, MAX_WORKERS))
        return min(requested, MAX_WORKERS)

    def _note(self, counts: dict, errors: list[str]) -> None:
        for name, count in counts.items():
            self.totals[name] += count
        for line in errors:
            if self.printed < self.show_errors:
                self._error_line(line)
                self.printed += 1

    def _bad_line(self, line_number: int, exc: Exception) -> None:
        self.totals["rejected"] += 1
        if self.printed < self.show_errors:
            self._error_line(f"line {line_number}: not JSON ({exc})")
            self.printed += 1

    def _error_line(self, text: str) -> None:
        """A rejected line, on a line of its own above the progress bar (which is redrawn below it)."""
        tqdm.write(text, file=self.stderr._out)

    def _import_here(self, handle, bar, default_slug, batch_size) -> None:
        batch: list[tuple[int, dict]] = []
        pending = 0

        def flush():
            nonlocal pending
            if batch:
                ready = batch.copy()
                batch.clear()  # before ingesting: a batch whose ingest failed is not sent again below
                self._note(*_ingest_batch(ready, self.show_errors))
            bar.update(pending)
            pending = 0

        try:
            for line_number, raw in enumerate(handle, start=1):
                self.lines_read = line_number
                pending += len(raw)
                if not raw.strip():
                    continue
                try:
                    item, _ = _parse_line(raw)
                except ValueError as exc:
                    self._bad_line(line_number, exc)
                    continue
                batch.append((line_number, _event_from(item, default_slug)))
                if len(batch) >= batch_size:
                    flush()
        except Exception:
            flush()  # the lines read before the crash are stored all the same: a re-run starts past them
            raise
        flush()

    def _import_parallel(self, handle, bar, default_slug, batch_size, workers) -> None:
        context = multiprocessing.get_context("fork")
        # The children open their own connections; a socket shared across fork would interleave protocols.
        connections.close_all()
        inboxes = [context.Queue(maxsize=4) for _ in range(workers)]
        outbox = context.Queue()
        processes = [context.Process(target=_worker, args=(inboxes[n], outbox, default_slug, self.show_errors),
                                     daemon=True) for n in range(workers)]
        for process in processes:
            process.start()
        pending: list[list[tuple[int, bytes]]] = [[] for _ in range(workers)]
        sizes = [0] * workers
        in_flight = 0
        failure: str | None = None

        def collect(until: int) -> None:
            """Take results until at most `until` batches are out (waiting), then whatever else is ready."""
            nonlocal in_flight, failure
            while in_flight:
                must_wait = in_flight > until
                try:
                    size, counts, errors, error = outbox.get(timeout=1) if must_wait else outbox.get_nowait()
                except queue.Empty:
                    if not must_wait:
                        return
                    if any(p.exitcode not in (None, 0) for p in processes) or not any(p.is_alive() for p in processes):
                        failure = failure or "a worker process died; run the import again (it is idempotent)"
                        return
                    continue
                in_flight -= 1
                if error:
                    failure = failure or error
                self._note(counts, errors)
                bar.update(size)

        def check() -> None:
            if failure:
                raise CommandError(f"import stopped: {failure}. Stored batches stay stored; run it again.")

        def put(worker: int, item) -> None:
            """Hand a worker an item, taking results meanwhile: a full inbox waits for that worker, and one
            whose worker died must stop the import (check), never block it for ever."""
            nonlocal failure
            while True:
                try:
                    inboxes[worker].put(item, timeout=1)
                    return
                except queue.Full:
                    collect(until=max(0, in_flight - 1))
                    if not processes[worker].is_alive():
                        failure = failure or f"worker process {worker} died"
                    check()

        def send(worker: int) -> None:
            nonlocal in_flight
            put(worker, (pending[worker], sizes[worker]))
            in_flight += 1
            pending[worker] = []
            sizes[worker] = 0

        def finish() -> None:
            """The last batches to their workers, then wait for every worker to write what it was given."""
            for worker in range(workers):
                if pending[worker]:
                    send(worker)
            for worker in range(workers):
                put(worker, _DONE)
            collect(until=0)
            check()

        try:
            try:
                skipped = 0
                for line_number, raw in enumerate(handle, start=1):
                    self.lines_read = line_number
                    if not raw.strip():
                        skipped += len(raw)
                        continue
                    size = len(raw)
                    try:
                        item, read_by_json = _parse_line(raw)
                    except ValueError as exc:
                        self._bad_line(line_number, exc)
                        skipped += size
                        continue
                    if read_by_json:
                        raw = b"\x00" + raw  # tells the worker to read it with json, as here
                    obj = item.get("object") if isinstance(item, dict) and isinstance(item.get("object"), dict) \
                        else item
                    openai_id = obj.get("id") if isinstance(obj, dict) else None
                    worker = zlib.crc32(openai_id.encode("utf-8", "surrogatepass")) % workers \
                        if isinstance(openai_id, str) else 0
                    pending[worker].append((line_number, raw))
                    sizes[worker] += size
                    if len(pending[worker]) >= batch_size:
                        send(worker)
                        collect(until=in_flight)
                        check()
                bar.update(skipped)
            except Exception:
                if failure is None:
                    finish()  # the workers are sound: the lines read before the crash are stored all the same
                raise
            finish()
        except BaseException:
            failure = failure or "stopped"
            raise
        finally:
            for process in processes:
                process.join(timeout=30 if failure is None else 1)
                if process.is_alive():
                    process.terminate()
                    process.join()
            if failure is not None:
                # Batches a dead worker never read stay in its inbox: without this, exiting would wait for the
                # queues' feeder threads to hand them over, for ever.
                for pipe in (*inboxes, outbox):
                    pipe.cancel_join_thread()
                    pipe.close()
