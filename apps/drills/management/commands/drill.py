"""`manage.py drill <name>`: run one reliability/security drill and print its result (exit 1 if it failed).

Drills that need servers start PRIVATE ones (PostgreSQL via initdb, redis-server, gunicorn, Celery) on free
loopback ports and stop them when they end; the machine's shared services are never touched."""

from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand, CommandError

DRILLS = ("load", "redis-outage", "worker-kill", "postgres-restart", "openai-faults", "isolation", "bad-input")


class Command(BaseCommand):
    help = "Run a reliability or security drill: " + ", ".join(DRILLS) + " (see docs/reliability.md)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="drill", required=True, metavar="DRILL")
        load = sub.add_parser("load", help="50 clients x 60 s of ingest; every run once, no 5xx")
        load.add_argument("--clients", type=int, default=50)
        load.add_argument("--seconds", type=float, default=60)
        load.add_argument("--batch-size", type=int, default=20)
        load.add_argument("--workers", type=int, default=3, help="gunicorn workers")
        redis = sub.add_parser("redis-outage", help="private Redis stops during ingest; alerts catch up")
        redis.add_argument("--clients", type=int, default=10)
        redis.add_argument("--seconds", type=float, default=20)
        pg = sub.add_parser("postgres-restart", help="private PostgreSQL stops and restarts under load: 503s")
        pg.add_argument("--clients", type=int, default=20)
        pg.add_argument("--seconds", type=float, default=20)
        kill = sub.add_parser("worker-kill", help="SIGKILL a real Celery worker mid-sweep and mid-reconciliation: "
                              "no delete twice, none skipped, no partial day")
        kill.add_argument("--fast", action="store_true",
                          help="SQLite file + SQLAlchemy broker instead of private PostgreSQL + Redis")
        kill.add_argument("--threads", type=int, default=None, help="threads past retention (default 40; 12 fast)")
        sub.add_parser("openai-faults", help="429 storms, 5xx, slow answers, timeouts from the sandbox")
        sub.add_parser("isolation", help="tenant isolation matrix over every URL, role and key")
        bad = sub.add_parser("bad-input", help="schemathesis over the whole API + hypothesis ingest bodies")
        bad.add_argument("--examples", type=int, default=200)
        # Internal: run inside a drill's environment (its private database) by the drill itself.
        fixture = sub.add_parser("fixture", help="(internal) tenants and an ingest key in the drill database")
        fixture.add_argument("--tenants", type=int, default=4)
        fixture.add_argument("--high-cost-usd", default="1000")
        enqueue = sub.add_parser("enqueue", help="(internal) send a task through the broker, as beat does")
        enqueue.add_argument("task")
        enqueue.add_argument("task_args", nargs="*")
        step = sub.add_parser("worker-kill-step", help="(internal) one database step of the worker-kill drill")
        step.add_argument("step")
        step.add_argument("--data", default="{}")

    def say(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()

    def handle(self, *args, drill, **options):
        if drill == "fixture":
            return self._fixture(options["tenants"], options["high_cost_usd"])
        if drill == "worker-kill-step":
            from apps.drills.worker_kill import run_step

            self.stdout.write(json.dumps(run_step(options["step"], json.loads(options["data"])), default=str))
            return None
        if drill == "enqueue":
            from config.celery import app

            app.send_task(options["task"], args=[json.loads(a) for a in options["task_args"]])
            return None
        self.say(f"==> drill {drill}")
        result = self._run(drill, options)
        self.say(json.dumps(result, indent=2, default=str))
        if result.get("ok"):
            self.say(self.style.SUCCESS(f"==> drill {drill}: PASSED"))
            return None
        self.stderr.write(self.style.ERROR(f"==> drill {drill}: FAILED (see the result above)"))
        sys.exit(1)

    def _run(self, drill: str, options: dict) -> dict:
        from apps.drills import ingest_drills, security, worker_kill
        from apps.drills.infra import DrillError

        try:
            if drill == "load":
                return ingest_drills.drill_load(clients=options["clients"], seconds=options["seconds"],
                                                batch_size=options["batch_size"], workers=options["workers"],
                                                say=self.say)
            if drill == "redis-outage":
                return ingest_drills.drill_redis_outage(clients=options["clients"], seconds=options["seconds"],
                                                        say=self.say)
            if drill == "postgres-restart":
                return ingest_drills.drill_postgres_restart(clients=options["clients"], seconds=options["seconds"],
                                                            say=self.say)
            if drill == "worker-kill":
                return worker_kill.drill_worker_kill(fast=options["fast"], threads=options["threads"], say=self.say)
            if drill == "openai-faults":
                return security.drill_pytest("openai-faults", say=self.say)
            if drill == "isolation":
                return security.drill_pytest("isolation", say=self.say)
            if drill == "bad-input":
                return security.drill_pytest("bad-input", say=self.say, examples=options["examples"])
        except DrillError as exc:
            raise CommandError(str(exc)) from exc
        raise CommandError(f"unknown drill {drill}")

    def _fixture(self, tenants: int, high_cost_usd: str) -> None:
        from decimal import Decimal

        from apps.tenants.models import ApiKey, Tenant
        from apps.tenants.services import api_key_create

        slugs = []
        for index in range(1, tenants + 1):
            tenant, _ = Tenant.objects.get_or_create(slug=f"drill-{index}", defaults={"name": f"Drill tenant {index}"})
            tenant.high_cost_run_usd = Decimal(high_cost_usd)
            tenant.save(update_fields=["high_cost_run_usd"])
            slugs.append(tenant.slug)
        _, key = api_key_create(name="drill ingest", scope=ApiKey.Scope.INGEST)
        self.stdout.write(json.dumps({"tenants": slugs, "ingest_key": key}))
