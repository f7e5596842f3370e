"""`manage.py import_runs FILE.jsonl [--tenant SLUG]`: historical exports through the ingest path."""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.ledger.services import ingest_events
from apps.tenants.models import Tenant

BATCH = 1000


class Command(BaseCommand):
    help = ("Import a JSON Lines file: each line a raw run/response/thread/conversation object, or an ingest event "
            "{tenant, object, attribution}. Batched through the ingest path; safe to re-run (idempotent on ids).")

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--tenant", help="tenant slug for lines that name none (event.tenant or metadata.tenant)")
        parser.add_argument("--batch-size", type=int, default=BATCH)
        parser.add_argument("--show-errors", type=int, default=20, help="rejected lines to print (default 20)")

    def handle(self, *args, file, tenant, batch_size, show_errors, **options):
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"No file {file}.")
        default_tenant = None
        if tenant:
            default_tenant = Tenant.objects.filter(slug=tenant).first()
            if default_tenant is None:
                raise CommandError(f"No tenant '{tenant}'.")
        totals = {"created": 0, "updated": 0, "unchanged": 0, "rejected": 0}
        printed = 0
        batch: list[tuple[int, dict]] = []

        def flush():
            nonlocal printed
            if not batch:
                return
            result = ingest_events(events=[event for _, event in batch])
            for event_result in result.results:
                totals[event_result.outcome] += 1
                if event_result.outcome == "rejected" and printed < show_errors:
                    line_number = batch[event_result.index][0]
                    error = event_result.error or {}
                    self.stderr.write(f"line {line_number}: {error.get('field') or ''} {error.get('message')}")
                    printed += 1
            batch.clear()

        size = path.stat().st_size
        with path.open("rb") as handle, tqdm(total=size, unit="B", unit_scale=True, disable=None, file=self.stderr) as bar:
            for line_number, raw in enumerate(handle, start=1):
                bar.update(len(raw))
                if not raw.strip():
                    continue
                try:
                    item = json.loads(raw)
                except ValueError as exc:
                    totals["rejected"] += 1
                    if printed < show_errors:
                        self.stderr.write(f"line {line_number}: not JSON ({exc})")
                        printed += 1
                    continue
                event = item if isinstance(item, dict) and "object" in item and isinstance(item["object"], dict) \
                    else {"object": item}
                if default_tenant is not None and "tenant" not in event:
                    metadata = event["object"].get("metadata") if isinstance(event["object"], dict) else None
                    if not (isinstance(metadata, dict) and metadata.get("tenant")):
                        event["tenant"] = default_tenant.slug
                batch.append((line_number, event))
                if len(batch) >= batch_size:
                    flush()
            flush()
        self.stdout.write(self.style.SUCCESS(
            f"{totals['created']} created, {totals['updated']} updated, {totals['unchanged']} unchanged, "
            f"{totals['rejected']} rejected."
        ))
        if totals["rejected"]:
            self.stdout.write("Fix the rejected lines and run the import again; stored ones are skipped.")
