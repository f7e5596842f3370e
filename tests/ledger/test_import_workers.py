"""import_runs with several worker processes (PostgreSQL): runs partitioned by id, same totals and ledger
as one process, a run's later report still wins, safe to re-run."""

import datetime as dt
import json

import pytest
from django.core.management import call_command

from apps.ledger.models import Run
from apps.ledger.services import ledger_check
from apps.tenants.models import Tenant
from tests import builders

WHEN = dt.datetime(2026, 11, 10, 9, 0, 0, tzinfo=dt.UTC)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_import_runs_with_workers_partitions_runs_and_is_safe_to_rerun(tmp_path, capsys):
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

    call_command("import_runs", str(path), "--tenant", "acme", "--workers", "3", "--batch-size", "7")
    captured = capsys.readouterr()
    assert "61 created, 30 updated, 0 unchanged, 2 rejected. (3 worker processes)" in captured.out
    assert "line 92: not JSON" in captured.err
    assert "line 93: object.model" in captured.err
    assert Run.objects.unscoped().filter(openai_id__startswith="run_w_", status="completed").count() == 30
    assert Run.objects.unscoped().get(openai_id="run_w_0").input_tokens == 5000
    assert ledger_check() == []

    call_command("import_runs", str(path), "--tenant", "acme", "--workers", "3", "--batch-size", "7")
    assert "0 created, 0 updated, 91 unchanged, 2 rejected." in capsys.readouterr().out
    assert Run.objects.unscoped().count() == 61
    assert ledger_check() == []
