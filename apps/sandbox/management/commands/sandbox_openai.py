"""`manage.py sandbox_openai`: serve the OpenAI sandbox on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.sandbox.clock import SandboxClock
from apps.sandbox.faults import FaultRule
from apps.sandbox.server import DEFAULT_ADMIN_KEY, DEFAULT_API_KEY, Sandbox, SandboxServer


class Command(BaseCommand):
    help = ("Start the OpenAI sandbox (a local stand-in for the OpenAI API) on 127.0.0.1. Point the SDK at "
            "http://127.0.0.1:PORT/v1. See docs/sandbox.md.")

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=getattr(settings, "SANDBOX_PORT", 8765),
                            help="port on 127.0.0.1 (0 picks a free one; default SANDBOX_PORT or 8765)")
        parser.add_argument("--api-key", default=DEFAULT_API_KEY, help=f"project API key (default {DEFAULT_API_KEY})")
        parser.add_argument("--admin-key", default=DEFAULT_ADMIN_KEY,
                            help=f"admin key for the Costs/Usage API (default {DEFAULT_ADMIN_KEY})")
        parser.add_argument("--scenario", choices=["none", "demo"], default="none",
                            help="load generated data at start: 'demo' is 8 tenants over 120 days with a little "
                                 "spend without tenant metadata injected on two recent days (see --no-drift)")
        parser.add_argument("--no-drift", action="store_true",
                            help="with --scenario demo: inject no billing drift (every reconciliation line matches)")
        parser.add_argument("--seed", type=int, default=0, help="seed for the scenario and for served objects")
        parser.add_argument("--tenants", type=int, default=None, help="scenario tenants (implies a scenario)")
        parser.add_argument("--days", type=int, default=None, help="scenario days ending now (implies a scenario)")
        parser.add_argument("--fault", action="append", default=[], metavar="SPEC",
                            help="inject a fault, e.g. 'rate_limit:path=^/v1/threads:times=3:retry_after=1' or "
                                 "'server_error:fraction=0.05:status=503' or 'latency:latency_ms=300' (repeatable)")
        parser.add_argument("--frozen-at", default=None, help="freeze the clock at this ISO time (default: real time)")
        parser.add_argument("--scenario-end", type=float, default=None, metavar="UNIX_SECONDS",
                            help="with --scenario demo: the moment its traffic ends (default: now). The same seed and "
                                 "end serve the same objects and ids on any day (make run passes its first seeding's)")

    def handle(self, *args, **options):
        if not getattr(settings, "SANDBOX_ENABLED", False):
            raise CommandError("The sandbox is disabled in these settings (SANDBOX_ENABLED is false).")
        # Ctrl-C stops it even when started from a background script, whose shell hands SIGINT over ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        clock = SandboxClock()
        if options["frozen_at"]:
            clock.freeze(options["frozen_at"])
        sandbox = Sandbox(api_key=options["api_key"], admin_key=options["admin_key"], seed=options["seed"], clock=clock)
        for spec in options["fault"]:
            try:
                rule = FaultRule.parse(spec)
            except (ValueError, TypeError) as error:
                raise CommandError(f"bad --fault {spec!r}: {error}") from None
            sandbox.faults.add(rule.kind, **{key: value for key, value in rule.to_dict().items()
                                             if key not in {"kind", "fired", "id"}})
        if options["scenario"] == "demo" and not (options["tenants"] or options["days"]):
            from apps.sandbox.scenario import DEMO_DAYS, DEMO_TENANTS

            self.stdout.write(f"Generating the demo scenario: {DEMO_TENANTS} tenants x {DEMO_DAYS} days "
                              f"(seed {options['seed']})...")
            started = time.monotonic()
            summary = sandbox.load_demo(seed=options["seed"], drift=not options["no_drift"], end=options["scenario_end"])
            self._describe(summary, started)
            for rule in summary["drift"]:
                self.stdout.write(f"  billing drift: ${rule['amount_usd']} of spend with no tenant metadata on {rule['day']}")
        elif options["scenario"] == "demo" or options["tenants"] or options["days"]:
            tenants = options["tenants"] or 8
            days = options["days"] or 60
            self.stdout.write(f"Generating scenario: {tenants} tenants x {days} days (seed {options['seed']})...")
            started = time.monotonic()
            summary = sandbox.load_scenario(tenants=tenants, days=days, seed=options["seed"],
                                            name=options["scenario"] if options["scenario"] != "none" else "custom")
            self._describe(summary, started)
        try:
            server = SandboxServer(sandbox, port=options["port"])
        except OSError as error:
            raise CommandError(f"cannot listen on 127.0.0.1:{options['port']}: {error}. Pick another --port.") from None
        self.stdout.write(self.style.SUCCESS(f"OpenAI sandbox listening on {server.base_url}"))
        self.stdout.write(f"  API key:   {sandbox.api_key}\n  admin key: {sandbox.admin_key}\n"
                          f"  control:   {server.url}/_sandbox/health  (clock, faults, drift, reset, scenario, export)\n"
                          "Ctrl-C stops it.")
        sys.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            self.stdout.write("Stopping the sandbox.")
        finally:
            server.httpd.server_close()

    def _describe(self, summary: dict, started: float) -> None:
        self.stdout.write(f"  {summary['runs']} runs, {summary['responses']} responses, {summary['threads']} threads, "
                          f"{summary['conversations']} conversations, {summary['vector_stores']} vector stores, "
                          f"{summary['files']} files, {summary['containers']} containers "
                          f"in {time.monotonic() - started:.1f}s")
