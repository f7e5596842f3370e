"""`manage.py sweep --kind threads|vector_stores|files|containers [--tenant SLUG] [--dry-run]`, `--resume ID`, `--cancel ID`."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from apps.lifecycle import services
from apps.lifecycle.models import Outcome, SweepItem, SweepKind
from apps.tenants.models import Tenant


class Command(BaseCommand):
    help = ("Run a retention/cleanup sweep now, in this process, with progress. --dry-run lists what would be "
            "deleted and deletes nothing; --enqueue hands the sweep to the Celery workers instead.")

    def add_arguments(self, parser):
        # Needed to start a sweep only: --resume and --cancel find the sweep by its id.
        parser.add_argument("--kind", choices=SweepKind.values, help="What to sweep (to start one).")
        parser.add_argument("--tenant", metavar="SLUG", help="Only this tenant (default: every tenant not on legal hold).")
        parser.add_argument("--dry-run", action="store_true", help="Re-check and list, delete nothing.")
        parser.add_argument("--confirm", type=int, metavar="SWEEP_ID",
                            help="Delete exactly what this finished dry run listed (each re-checked first).")
        parser.add_argument("--resume", type=int, metavar="SWEEP_ID", help="Carry on an unfinished sweep.")
        parser.add_argument("--cancel", type=int, metavar="SWEEP_ID",
                            help="Stop a pending or running sweep; a worker running it stops after the item in hand.")
        parser.add_argument("--enqueue", action="store_true", help="Run it on the Celery workers.")

    def handle(self, *args, kind=None, tenant=None, dry_run=False, confirm=None, resume=None, enqueue=False, cancel=None,
               **options):
        if cancel:
            try:
                stopped = services.sweep_cancel(sweep_id=cancel, actor_label="command:sweep")
            except services.LifecycleError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(self.style.SUCCESS(f"sweep {stopped.pk} cancelled: {services.sweep_counts(stopped)}"))
            return
        if not kind and not resume:
            raise CommandError(f"Name what to sweep: --kind {'|'.join(SweepKind.values)}.")
        tenant_obj = None
        if tenant:
            tenant_obj = Tenant.objects.filter(slug=tenant).first()
            if tenant_obj is None:
                raise CommandError(f"No tenant with slug {tenant!r}; list them with the admin or GET /api/v1/tenants/.")
        if resume:
            # A resumed sweep carries on as it was created: other flags would only seem to apply.
            given = [flag for flag, value in (("--tenant", tenant), ("--dry-run", dry_run), ("--confirm", confirm)) if value]
            if given:
                raise CommandError(f"--resume carries on sweep {resume} as it was created; leave out {', '.join(given)}.")
            sweep = services.Sweep.objects.unscoped().filter(pk=resume, **({"kind": kind} if kind else {})).first()
            if sweep is None:
                raise CommandError(f"No {kind + ' ' if kind else ''}sweep {resume}.")
        else:
            preview = None
            if confirm:
                preview = services.Sweep.objects.unscoped().filter(pk=confirm).first()
                if preview is None:
                    raise CommandError(f"No sweep {confirm} to confirm.")
            try:
                sweep = services.sweep_create(kind=kind, tenant=tenant_obj, dry_run=dry_run, preview_of=preview,
                                              requested_label="command:sweep")
            except services.LifecycleError as exc:
                raise CommandError(str(exc)) from exc
        label = "dry run" if sweep.dry_run else "sweep"
        # The sweep's own scope (a confirmation takes its dry run's), not the arguments.
        scope = sweep.tenant.slug if sweep.tenant_id else "all (not on legal hold)"
        self.stdout.write(f"{label} {sweep.pk}: {kind}, tenant {scope}, as of {sweep.as_of:%Y-%m-%d %H:%M:%S} UTC")
        if enqueue:
            from apps.lifecycle.tasks import sweep_batch

            sweep_batch.apply_async((sweep.pk,))
            self.stdout.write(f"enqueued; follow it at /lifecycle/sweeps/{sweep.pk}/")
            return

        def progress(result):
            done = sum(v for k, v in result.counts.items() if k not in ("pending", "claimed"))
            total = sum(result.counts.values())
            parts = ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items()) if k not in ("pending", "claimed"))
            waiting = f" — waiting to retry after {result.retry_reason}" if result.status == "retry_later" else ""
            self.stdout.write(f"  {done}/{total} processed ({parts or 'planning'}){waiting}")

        try:
            result = services.sweep_run_to_completion(sweep_id=sweep.pk, progress=progress)
        except Exception as exc:  # noqa: BLE001 - a batch that raised (no API key here, a database error)
            # The sweep is left running for a resume (after LIFECYCLE_MAX_BATCH_FAILURES in a row it is failed): say
            # so, rather than end in a traceback that names neither the sweep nor the way on.
            raise CommandError(f"{label} {sweep.pk} stopped: {type(exc).__name__}: {str(exc).rstrip('.')}. Fix the cause, then carry it "
                               f"on with --resume {sweep.pk} (the workers' reaper also resumes it).") from exc
        if result.status == services.Sweep.Status.FAILED:
            sweep.refresh_from_db()
            reason = sweep.errors[-1].get("error", "") if sweep.errors else ""
            raise CommandError(f"{label} {sweep.pk} failed{f': {reason}' if reason else ''}. A failed sweep stays "
                               f"failed; fix the cause, then start a new one (a dry run first: --dry-run).")
        if result.status != "finished":
            raise CommandError(f"{label} {sweep.pk} is {result.status}; resume it with --resume {sweep.pk}.")
        wanted = Outcome.WOULD_DELETE if sweep.dry_run else Outcome.DELETED
        # Streamed in pages: a sweep can hold a million items, too many to load at once just to print them.
        listed = SweepItem.objects.unscoped().filter(sweep=sweep, outcome=wanted).select_related("tenant")
        for item in listed.iterator(chunk_size=2000):
            self.stdout.write(f"  {wanted}: {item.resource_type} {item.openai_id} ({item.tenant.slug if item.tenant else 'unassigned'}) — {item.rule}")
        self.stdout.write(self.style.SUCCESS(f"{label} {sweep.pk} finished: {result.counts}"))
        if sweep.dry_run:
            self.stdout.write(f"To delete exactly these, run: manage.py sweep --kind {kind} --confirm {sweep.pk}")
