"""`make run`: start the OpenAI sandbox, seed demo data, then the web app, Celery worker and beat.

One foreground command that owns every process it starts; Ctrl-C (or SIGTERM) stops them all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.test.utils import override_settings

from apps.core.broker import broker_queues_declare
from apps.core.timeutils import from_unix
from apps.sandbox.demo import demo_scenario_end


def sandbox_command(python: str, port: int, seed: int, *, scenario_end: float | None) -> list[str]:
    """The sandbox's command line. With `scenario_end` (demo_scenario_end: the scenario this ledger was first
    seeded with), the same scenario whatever the day, so the seeding finds every object already recorded; its
    traffic ends when it did then, and the days since have none."""
    argv = [python, "manage.py", "sandbox_openai", "--port", str(port), "--scenario", "demo", "--seed", str(seed)]
    return argv if scenario_end is None else [*argv, "--scenario-end", repr(scenario_end)]


DEMO_USERNAME = "ops"
DEMO_PASSWORD = "runledger-demo"


def _wait_for(url: str, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise CommandError(f"{what} did not answer at {url} within {seconds:.0f}s; see its output above.")


def _in_use(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:`port` (binding it is the only sure test)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port left in TIME_WAIT is free
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _check_ports(port: int, sandbox_port: int) -> None:
    """Refuse at once, saying what to run instead, when a port is taken: the sandbox or web server would
    otherwise fail in their own output, after the demo seeding, and the stack would wait a minute for them."""
    if port == sandbox_port:
        raise CommandError(f"the web app and the OpenAI sandbox cannot share port {port}: "
                           "pick two ports (make run PORT=... SANDBOX_PORT=...).")
    for number, what, variable, option in ((port, "the web app", "PORT", "--port"),
                                           (sandbox_port, "the OpenAI sandbox", "SANDBOX_PORT", "--sandbox-port")):
        if _in_use(number):
            raise CommandError(f"port {number} for {what} is already in use (another RunLedger, or another "
                               f"program): run `make run {variable}=<a free port>` (manage.py run_stack "
                               f"{option} <port>).")


class Command(BaseCommand):
    help = "Run the whole product locally: sandbox, demo data, web app, worker and beat."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--sandbox-port", type=int, default=getattr(settings, "SANDBOX_PORT", 8765))
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--no-demo", action="store_true", help="start without seeding demo data")

    def handle(self, *args, port, sandbox_port, seed, no_demo, **options):
        if not settings.SANDBOX_ENABLED:
            raise CommandError("run_stack is for local use; SANDBOX_ENABLED is off in these settings.")
        _check_ports(port, sandbox_port)
        python = sys.executable
        sandbox_url = f"http://127.0.0.1:{sandbox_port}/v1"
        # Every process (and the seeding below) talks to this sandbox, whatever port was chosen.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OPENAI_BASE_URL": sandbox_url, "SANDBOX_PORT": str(sandbox_port)}
        processes: list[tuple[str, subprocess.Popen]] = []

        def start(name: str, argv: list[str]) -> None:
            self.stdout.write(f"==> starting {name}")
            processes.append((name, subprocess.Popen(argv, env=env, start_new_session=True)))

        def stop_all(*_):
            # SIGTERM to each main process only: Celery then shuts its own pool down warmly.
            for _name, process in reversed(processes):
                if process.poll() is None:
                    process.terminate()
            for _name, process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
            self.stdout.write("==> stopped every process")

        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        # Ctrl-C must stop the stack even when it was started from a script in the background, where the shell
        # hands every child SIGINT already ignored (Python then installs no KeyboardInterrupt handler).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        scenario_end = None if no_demo else demo_scenario_end(seed)
        sandbox_argv = sandbox_command(python, sandbox_port, seed, scenario_end=scenario_end)
        if scenario_end is not None:
            self.stdout.write(f"==> serving the demo scenario first seeded here (its traffic ends "
                              f"{from_unix(scenario_end):%Y-%m-%d %H:%M} UTC; an empty database gets a new one)")
        try:
            start("OpenAI sandbox", sandbox_argv)
            _wait_for(f"http://127.0.0.1:{sandbox_port}/_sandbox/health", 60, "The OpenAI sandbox")
            if not no_demo:
                self.stdout.write("==> seeding demo data (safe to repeat)")
                with override_settings(OPENAI_BASE_URL=sandbox_url):
                    call_command("seed_demo", seed=seed, username=DEMO_USERNAME, password=DEMO_PASSWORD)
            broker_queues_declare()  # before the worker and beat declare them at once (apps/core/broker.py)
            start("web app", [python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"])
            start("celery worker", [python, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
                                     "--concurrency", "2", "--hostname", "runledger@%h"])
            start("celery beat", [python, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"])
            _wait_for(f"http://127.0.0.1:{port}/healthz", 60, "The web app")
            self.stdout.write(self.style.SUCCESS(
                f"\nRunLedger is running at http://127.0.0.1:{port}/\n"
                f"  demo login: {DEMO_USERNAME} / {DEMO_PASSWORD}   (staff: every tenant)\n"
                f"  tenant logins: acme-admin, acme-viewer / {DEMO_PASSWORD}   (only Acme Corp)\n"
                f"  API docs:   http://127.0.0.1:{port}/api/docs/\n"
                f"  sandbox:    http://127.0.0.1:{sandbox_port}/v1 (the OpenAI stand-in)\n"
                f"Press Ctrl-C to stop everything.\n"
            ))
            while True:
                for name, process in processes:
                    if process.poll() is not None:
                        raise CommandError(f"{name} exited with code {process.returncode}; see its output above.")
                time.sleep(1)
        except KeyboardInterrupt:
            self.stdout.write("\n==> stopping")
        finally:
            stop_all()
