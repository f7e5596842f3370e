"""`manage.py recheck_gone [--dry-run] [--limit N]`: restore threads and conversations a sweep took for gone
that another OpenAI project still holds (see services.threads_recheck_gone)."""

from django.core.management.base import BaseCommand, CommandError

from apps.lifecycle import services


class Command(BaseCommand):
    help = ("Ask every OpenAI project RunLedger can reach about the threads and conversations recorded as gone "
            "at OpenAI, and restore those a project still holds (the next sweep deletes them with its key). "
            "Run once after configuring API keys for more projects.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="List what would be restored; change nothing.")
        parser.add_argument("--limit", type=int, help="Ask about at most this many (default: all).")
        parser.add_argument("--after", type=int, default=0, metavar="ID",
                            help="Start after this thread id (a bounded run prints where to continue).")

    def handle(self, *args, dry_run=False, limit=None, after=0, **options):
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1.")
        result = services.threads_recheck_gone(dry_run=dry_run, limit=limit, after=after, progress=self.stdout.write)
        for openai_id, project_id in result.restored:
            self.stdout.write(f"  {'would restore' if dry_run else 'restored'} {openai_id} (OpenAI project {project_id})")
        for project_id, reason in sorted(result.unreachable.items()):
            self.stdout.write(self.style.WARNING(f"OpenAI project {project_id} not asked: {reason}"))
        verb = "would be restored" if dry_run else "restored"
        self.stdout.write(self.style.SUCCESS(
            f"{result.asked} gone thread(s) asked, {len(result.restored)} {verb}."
            + ("" if dry_run or not result.restored else " Threads sweeps now reach them with their project's key "
               "(a conversation is deleted by the second sweep that finds it unchanged).")
        ))
        if result.stopped:
            self.stdout.write(self.style.WARNING(
                f"Stopped early ({result.stopped}): run again later with --after {result.last_pk}."))
        elif limit is not None and result.asked == limit:
            self.stdout.write(f"Stopped at the limit: continue with --after {result.last_pk}.")
        if result.unreachable:
            self.stdout.write("Threads asked after a project was left out were not asked there: once its key "
                              "works, run again from the start.")
