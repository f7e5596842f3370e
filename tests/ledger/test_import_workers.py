"""import_runs with several worker processes (PostgreSQL): runs partitioned by id, same totals and ledger
as one process, a run's later report still wins, safe to re-run."""

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.ledger.models import Run
from apps.ledger.services import ledger_check
from apps.tenants.models import Tenant
from tests import builders

WHEN = dt.datetime(2026, 11, 10, 9, 0, 0, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parents[2]


def _command(*args: str) -> list[str]:
    return [sys.executable, "manage.py", "import_runs", *args]


def _env() -> dict:
    """This test's database (DATABASE_URL with the test database's name) for a process of its own."""
    url = urlsplit(os.environ["DATABASE_URL"])._replace(path="/" + connection.settings_dict["NAME"])
    return {**os.environ, "DATABASE_URL": urlunsplit(url), "DJANGO_SETTINGS_MODULE": "config.settings.test"}


def _import_runs(*args: str) -> subprocess.CompletedProcess:
    """`manage.py import_runs` in a process of its own, as people run it, on this test's database. Forking
    workers from the test process itself would copy its other threads' locks (xdist's, a live server's, the
    browser's), and a worker that inherits one held blocks for ever: once in several hundred runs here."""
    with subprocess.Popen(_command(*args), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the workers too: they hold connections to the database
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_import_runs_with_workers_partitions_runs_and_is_safe_to_rerun(tmp_path):
    Tenant.objects.create(slug="acme", name="Acme Corp", external_id="cus_acme")
    lines = []
    for i in range(60):
        lines.append(json.dumps(builders.assistants_run(run_id=f"run_w_{i}", created_at=WHEN, status="in_progress",
                                                        thread_id=f"thread_w_{i % 7}")))
    for i in range(0, 60, 2):  # the terminal report of every other run, later in the file
        lines.append(json.dumps(builders.assistants_run(run_id=f"run_w_{i}", created_at=WHEN, status="completed",
                                                        thread_id=f"thread_w_{i % 7}", prompt_tokens=5000)))
    lines.append(json.dumps({"tenant": "acme", "object": builders.response(response_id="resp_w", created_at=WHEN)}))
    lines.append("{broken")
    lines.append(json.dumps(builders.assistants_run(run_id="run_w_bad", created_at=WHEN, model="")))
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")

    captured = _import_runs(str(path), "--tenant", "acme", "--workers", "3", "--batch-size", "7")
    assert "61 created, 30 updated, 0 unchanged, 2 rejected. (3 worker processes)" in captured.stdout, captured
    assert "line 92: not JSON" in captured.stderr
    assert "line 93: object.model" in captured.stderr
    assert Run.objects.unscoped().filter(openai_id__startswith="run_w_", status="completed").count() == 30
    assert Run.objects.unscoped().get(openai_id="run_w_0").input_tokens == 5000
    assert ledger_check() == []

    captured = _import_runs(str(path), "--tenant", "acme", "--workers", "3", "--batch-size", "7")
    assert "0 created, 0 updated, 91 unchanged, 2 rejected." in captured.stdout, captured
    assert Run.objects.unscoped().count() == 61
    assert ledger_check() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_import_runs_with_workers_rejects_a_line_nested_too_deeply_to_read_and_imports_the_rest(tmp_path):
    # The parent reads every line: orjson refuses past 1,024 levels and json's fallback raised RecursionError,
    # which ended the import there, the lines before it still waiting in the parent's batches unstored.
    Tenant.objects.create(slug="acme", name="Acme Corp")
    lines = [json.dumps(builders.response(response_id=f"resp_deep_{i}", created_at=WHEN)) for i in range(3)]
    lines.insert(2, "[" * 100_000 + "]" * 100_000)
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")

    captured = _import_runs(str(path), "--tenant", "acme", "--workers", "2")

    assert "3 created, 0 updated, 0 unchanged, 1 rejected. (2 worker processes)" in captured.stdout, captured
    assert "line 3: not JSON (nested too deeply)" in captured.stderr
    assert Run.objects.unscoped().count() == 3


@pytest.mark.postgres
@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_a_worker_that_dies_stops_the_import_with_a_message_instead_of_hanging(tmp_path, monkeypatch):
    from apps.ledger.management.commands import import_runs

    Tenant.objects.create(slug="acme", name="Acme Corp")
    # Four runs for each of the two workers: every batch fits in the inboxes (4 deep), so the import reaches
    # its final "done" message to a worker whose inbox stays full because the worker is dead.
    lines = [json.dumps(builders.assistants_run(run_id=f"run_d_{i}", created_at=WHEN)) for i in range(8)]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(import_runs, "_worker", lambda *args: os._exit(3))  # every forked worker dies at once

    with pytest.raises(CommandError, match="died"):
        call_command("import_runs", str(path), "--tenant", "acme", "--workers", "2", "--batch-size", "1")


def _big_export(tmp_path, prefix: str) -> Path:
    """60,000 Assistants runs, `<prefix>_0` on: enough that an import with two workers is still busy a second in."""
    run = json.dumps(builders.assistants_run(run_id=f"{prefix}_0", created_at=WHEN))
    path = tmp_path / "export.jsonl"
    path.write_text("".join(run.replace(f"{prefix}_0", f"{prefix}_{i}") + "\n" for i in range(60_000)))
    return path


def _two_busy_workers(process) -> list[int]:
    """The pids of the import command's two worker processes, once both have started and taken batches."""
    workers: list[int] = []
    deadline = time.monotonic() + 60
    while len(workers) < 2 and time.monotonic() < deadline and process.poll() is None:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        workers = [int(pid) for pid in children.read_text().split()] if children.exists() else []
        time.sleep(0.05)
    assert len(workers) == 2, "the workers never started"
    time.sleep(1)  # let them take batches
    return workers


@pytest.mark.postgres
@pytest.mark.timeout(180)
@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_stops_the_command_and_it_exits(tmp_path):
    """Its batches stay unread in its inbox; the command says so and exits (it used to wait for ever)."""
    Tenant.objects.create(slug="acme", name="Acme Corp")
    path = _big_export(tmp_path, "run_k")
    with subprocess.Popen(_command(str(path), "--tenant", "acme", "--workers", "2"), cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:
        try:
            workers = _two_busy_workers(process)
            os.kill(workers[0], signal.SIGKILL)
            stdout, stderr = process.communicate(timeout=120)
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert process.returncode != 0 and "import stopped: " in stderr and "died" in stderr, (stdout, stderr[-2000:])


def _running(pid: int) -> bool:
    """Whether `pid` still runs (an exited process nobody reaped yet is a zombie: it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.postgres
@pytest.mark.timeout(180)
@pytest.mark.django_db(transaction=True)
def test_workers_exit_when_the_command_itself_is_killed(tmp_path):
    """`kill -9`, the OOM killer or a plain `kill` ends the command without telling its workers: they must
    notice and exit, not wait for ever on their inboxes, each holding a database connection."""
    Tenant.objects.create(slug="acme", name="Acme Corp")
    path = _big_export(tmp_path, "run_o")
    with subprocess.Popen(_command(str(path), "--tenant", "acme", "--workers", "2"), cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True) as process:
        try:
            workers = _two_busy_workers(process)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            deadline = time.monotonic() + 30
            while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not any(_running(pid) for pid in workers), "orphaned workers kept running"
        finally:
            with contextlib.suppress(ProcessLookupError):  # whatever is left of the group
                os.killpg(process.pid, signal.SIGKILL)


_KEEPS_A_CONNECTION_OPEN = """
import sys
import django
django.setup()
from django.core.management import call_command
from django.db import connection, connections
from apps.ledger.management.commands import import_runs

connection.ensure_connection()
# As when the connection lives where the command's close_all does not reach it (another asyncio context of
# this thread: an embedding program's event loop, a test's browser): the workers are forked with it open.
connections.close_all = lambda: None
call_command("import_runs", sys.argv[1], workers=2, batch_size=5)
with connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM ledger_run")
    print("runs", cursor.fetchone()[0])
"""


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_workers_never_use_a_connection_the_command_had_open_when_it_forked(tmp_path):
    """A worker that used its copy of the command's open connection shared one socket with its sibling and
    the command (each read the other's answers: "the last operation didn't produce records (command status:
    BEGIN)"), and closing it at the end ended the command's own session."""
    Tenant.objects.create(slug="acme", name="Acme Corp", external_id="cus_acme")
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(builders.assistants_run(run_id=f"run_open_{i}", created_at=WHEN,
                                                               metadata={"tenant": "acme"})) + "\n"
                            for i in range(40)))
    done = subprocess.run([sys.executable, "-c", _KEEPS_A_CONNECTION_OPEN, str(path)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "runs 40"
