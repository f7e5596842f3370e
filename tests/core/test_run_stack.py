"""`make run` end to end: from an empty var/ directory the stack migrates, seeds the demo, serves the
login page, accepts the demo login, and stops every process it started on Ctrl-C."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _embedded_environment(var_dir: Path) -> dict:
    # Exactly what a fresh clone gets: no service URLs, local settings, everything under var/.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DJANGO_", "OPENAI_", "RUNLEDGER_")) and key not in {"DATABASE_URL", "REDIS_URL"}}
    return {**env, "RUNLEDGER_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "config.settings.local"}


@pytest.mark.parametrize("taken", ["web", "sandbox"])
def test_a_port_in_use_stops_the_stack_at_once_saying_what_to_run_instead(taken, settings):
    settings.SANDBOX_ENABLED = True
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy, free = holder.getsockname()[1], _free_port()
        ports = {"port": busy, "sandbox_port": free} if taken == "web" else {"port": free, "sandbox_port": busy}
        started = time.monotonic()
        with pytest.raises(CommandError) as refused:
            call_command("run_stack", **ports)
    assert time.monotonic() - started < 5  # nothing was started, nothing waited for
    variable = "PORT" if taken == "web" else "SANDBOX_PORT"
    assert f"port {busy} for" in str(refused.value) and f"make run {variable}=" in str(refused.value)


@pytest.mark.slow
def test_run_stack_serves_the_demo_and_stops_everything_on_ctrl_c(tmp_path):
    env = _embedded_environment(tmp_path)
    for command in (["migrate", "--noinput", "-v0"], ["createcachetable"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, timeout=180)
    port, sandbox_port = _free_port(), _free_port()
    log = open(tmp_path / "stack.log", "w")
    stack = subprocess.Popen(
        [sys.executable, "manage.py", "run_stack", "--port", str(port), "--sandbox-port", str(sandbox_port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        started = time.monotonic()
        output = ""
        while "RunLedger is running" not in output:
            assert stack.poll() is None, (tmp_path / "stack.log").read_text()[-3000:]
            assert time.monotonic() - started < 180, "stack did not come up in 180 s"
            time.sleep(0.5)
            output = (tmp_path / "stack.log").read_text()
        assert f"http://127.0.0.1:{port}/" in output and "ops / runledger-demo" in output

        jar = CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        login_page = opener.open(f"http://127.0.0.1:{port}/accounts/login/", timeout=10).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page).group(1)
        form = urlencode({"username": "ops", "password": "runledger-demo", "csrfmiddlewaretoken": token}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/accounts/login/", data=form,
                                         headers={"Referer": f"http://127.0.0.1:{port}/accounts/login/"})
        overview = opener.open(request, timeout=30)
        body = overview.read().decode()
        assert overview.url.rstrip("/") == f"http://127.0.0.1:{port}", overview.url
        assert "Acme Corp" in body or "acme" in body  # demo tenants are on the overview
    finally:
        stack.send_signal(signal.SIGINT)
        try:
            stack.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stack.kill()
        log.close()
        # Whatever the stack left behind is counted below, then killed here: a failing run must not leave a
        # worker, web server or sandbox running on the machine (they would skew everything measured after it).
        left_behind = _processes_with_environment(f"RUNLEDGER_VAR_DIR={tmp_path}")
        for pid in left_behind:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    output = (tmp_path / "stack.log").read_text()
    assert "stopped every process" in output
    assert left_behind == []


def _processes_with_environment(marker: str) -> list[int]:
    """Every live process started with this environment entry: web, worker, pool, beat, sandbox."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_the_sandbox_serves_the_scenario_the_ledger_was_first_seeded_with():
    from apps.core.management.commands.run_stack import sandbox_command

    fresh = sandbox_command("python", 8765, 42, scenario_end=None)
    seeded = sandbox_command("python", 8765, 42, scenario_end=1796686344.25)

    assert "--scenario-end" not in fresh
    assert seeded[-2:] == ["--scenario-end", "1796686344.25"] and seeded[:-2] == fresh
