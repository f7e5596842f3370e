"""import_runs with several worker processes (PostgreSQL): runs partitioned by id, same totals and ledger
as one process, a run's later report still wins, safe to re-run."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.ledger.models import Run
from apps.ledger.services import ledger_check
from apps.tenants.models import Tenant
from tests import builders

WHEN = dt.datetime(2026, 11, 10, 9, 0, 0, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parents[2]


def _import_runs(*args: str) -> subprocess.CompletedProcess:
    """`manage.py import_runs` in a process of its own, as people run it, on this test's database. Forking
    workers from the test process itself would copy its other threads' locks (xdist's, a live server's, the
    browser's), and a worker that inherits one held blocks for ever: once in several hundred runs here."""
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    return subprocess.run([sys.executable, "manage.py", "import_runs", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


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
